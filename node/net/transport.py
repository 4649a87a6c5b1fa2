"""What gossip needs from a network, and what it needs from a replica.

The gossip core (node/net/gossip.py) is written against these two protocols only, so the same code
runs over HTTP (node/net/http.py) and over an in-memory transport (node/net/memory.py)
that lets a simulation drive a thousand nodes (docs/design.md, "Gossip and sync").
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence


class PeerUnavailable(Exception):
    """A peer did not answer, refused, or answered with an error status. ``reason`` is short."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class PeerMisbehaved(PeerUnavailable):
    """A peer answered with something that is not protocol v1 (counts against its score)."""


class Transport(Protocol):
    async def announce(self, peer: str, ids: Sequence[str]) -> list[str]:
        """Offer ids; the peer answers with the ones it wants."""

    async def send(self, peer: str, raws: Sequence[bytes]) -> dict[str, Any]:
        """POST full envelopes (canonical bytes); returns the peer's ingest report."""

    async def fetch(self, peer: str, ids: Sequence[str]) -> list[Any]:
        """Ask for envelopes by id; returns what the peer sent (dicts or bytes, unvalidated)."""

    async def sync(self, peer: str, msg: bytes) -> bytes:
        """One Negentropy v1 round: send a client message, get the server's answer."""

    async def peer_records(self, peer: str) -> list[Any]:
        """The peer's signed peer records (unvalidated)."""

    async def status(self, peer: str) -> dict[str, Any]:
        """The peer's /v1/status."""


class MessageStore(Protocol):
    async def ingest(self, items: Iterable[Any], now: int | None = None) -> Any: ...
    async def has_ids(self, ids: Iterable[str]) -> set[str]: ...
    async def items(self, lo: Any = None, hi: Any = None) -> list[tuple[int, str]]: ...
    async def get_many_raw(self, ids: Iterable[str]) -> list[bytes]: ...
