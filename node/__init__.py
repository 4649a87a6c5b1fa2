"""The node: the composition root (daemon), its settings, home, device slots, reproduction scheduler
and extensions, beside three wings: ``net`` (wire API, transports, gossip), ``web`` (dashboard,
metrics, JSON shapes) and ``cli`` (the ``ralphswarm`` command)."""

VERSION = "0.1.0"  # the software's version (the protocol's is protocol.PROTOCOL_VERSION)
