"""Who may enter the peer table (issue 17 item 5): addresses a stranger hands us are checked before the
node dials them or keeps them. docs/design.md, "Discovery and swarms".

- **Ranges**: outside a LAN or private swarm, an address whose host is a loopback, private, link-local,
  multicast, reserved or unspecified IP (or ``localhost``, ``*.local``) is refused: a stranger must not
  make the node dial into its operator's network. A node that itself listens on such an address is in
  a local swarm and takes them (tests, a lab).
- **Per author**: at most ``max_per_author`` addresses of one key in the table (a peer record lists a
  few; a farm of fresh keys each listing many cannot fill it).
- **Per announcing peer**: at most ``max_per_origin`` addresses learned from the records one peer (or
  one client address) sent us, so one request of many fresh-key records plants a handful, not the
  table.
- **Inbound** (``X-Ralphswarm-Peer``): the address is only a candidate, at most ``max_pending`` at a
  time, and only at the IP the request came from (a DNS name is not dialled: such a node is learned
  from its peer record); the node dials it back (``Node._dial_back``) and adds it only if it answers ``/v1/status``
  in our swarm with a key that is not ours.
"""
from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class AdmissionSettings:
    max_per_author: int = 4
    max_per_origin: int = 16
    max_origins: int = 1024  # origins remembered (the oldest forgotten first)
    origin_window_s: float = 3600.0  # an origin's share starts again after this long
    max_pending: int = 64  # inbound candidates waiting to be dialled back


def host_of(address: str) -> str | None:
    """The host of an ``http://host:port`` address, or None when it is not one."""
    if not isinstance(address, str) or not address.startswith("http://") or len(address) > 255:
        return None
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return parts.hostname


def is_public_host(host: str) -> bool:
    """A host a public node may dial: a global IP, or a DNS name that is not local by its form."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        return not (name == "localhost" or name.endswith((".localhost", ".local", ".internal", ".lan"))
                    or "." not in name)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def network_group(address: str) -> str:
    """The network an address (``http://host:port``) or a bare host/origin label is in, for bucketing
    the peer table (node/net/peers.py) as Bitcoin Core's addrman does: one machine owner rarely holds
    addresses in many of them. A public IPv4 address: its /16; IPv6: its /32 (an IPv4-mapped one as
    IPv4); a DNS name: its last two labels; a non-public IP or local name (only ever admitted in a LAN
    or private swarm, where the operator vouches for the network): the address itself, each its own
    group; anything else (``"direct"``: clients that are no peer) is its own label."""
    if not isinstance(address, str):
        return "?"
    host = host_of(address)
    if host is None:
        host, whole = address, address
    else:
        whole = address.rstrip("/")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host_of(address) is None:
            return "label:" + address
        name = host.lower().rstrip(".")
        if not is_public_host(name):
            return "addr:" + whole
        return "dns:" + ".".join(name.split(".")[-2:])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not (ip.is_global and not ip.is_multicast):
        return "addr:" + whole
    if isinstance(ip, ipaddress.IPv4Address):
        a, b = ip.packed[:2]
        return f"v4:{a}.{b}"
    return "v6:" + ip.packed[:4].hex()


def _same_ip(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a.split("%", 1)[0]), ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False
    x = x.ipv4_mapped or x if isinstance(x, ipaddress.IPv6Address) else x
    y = y.ipv4_mapped or y if isinstance(y, ipaddress.IPv6Address) else y
    return x == y


class Admission:
    def __init__(self, *, allow_private: bool, settings: AdmissionSettings | None = None):
        self.allow_private = allow_private
        self.settings = settings or AdmissionSettings()
        self.by_origin: OrderedDict[str, tuple[float, set[str]]] = OrderedDict()  # origin -> (since, addresses)
        self.counters: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def address_ok(self, address: str) -> bool:
        host = host_of(address)
        if host is None:
            self._count("refused_malformed")
            return False
        if not self.allow_private and not is_public_host(host):
            self._count("refused_range")
            return False
        return True

    def from_sender(self, address: str, remote: str) -> bool:
        """An inbound address (X-Ralphswarm-Peer) is dialled only at the IP its request came from."""
        host = host_of(address)
        if host is None:
            return True  # address_ok refuses it and counts it
        if _same_ip(host, remote):
            return True
        self._count("refused_not_sender")
        return False

    def from_record(self, address: str, author: str, origin: str, author_addresses: int,
                    now: float | None = None) -> bool:
        """May ``address`` from ``author``'s peer record, sent by ``origin``, enter the table, given that
        ``author_addresses`` of the author's are in it already? An origin plants at most
        ``max_per_origin`` addresses per ``origin_window_s``."""
        if not self.address_ok(address):
            return False
        if author_addresses >= self.settings.max_per_author:
            self._count("refused_per_author")
            return False
        now = time.monotonic() if now is None else now
        entry = self.by_origin.get(origin)
        if entry is None or now - entry[0] > self.settings.origin_window_s:
            self.by_origin.pop(origin, None)
            entry = self.by_origin[origin] = (now, set())
            while len(self.by_origin) > self.settings.max_origins:
                self.by_origin.popitem(last=False)
        learned = entry[1]
        if address not in learned and len(learned) >= self.settings.max_per_origin:
            self._count("refused_per_origin")
            return False
        learned.add(address)
        return True
