"""The one error type of the protocol: its message is a machine-readable reason.

Reasons follow NIP-01's convention of a short prefix and a human tail:
``invalid: bad signature``, ``invalid: wrong swarm``, ``invalid: schema: body.note`` ...
"""
from __future__ import annotations


class ProtocolError(ValueError):
    """A message, key or value that protocol v1 does not accept.

    ``reason`` is the machine-readable text, always starting with ``invalid:``.
    """

    def __init__(self, reason: str):
        if not reason.startswith("invalid:"):
            reason = f"invalid: {reason}"
        super().__init__(reason)
        self.reason = reason


def invalid(detail: str) -> ProtocolError:
    return ProtocolError(f"invalid: {detail}")


def schema_error(field: str, why: str | None = None) -> ProtocolError:
    return ProtocolError(f"invalid: schema: {field}" + (f" ({why})" if why else ""))
