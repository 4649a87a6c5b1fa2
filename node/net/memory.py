"""An in-memory transport and message store, so the gossip core can run a thousand nodes in one process.

The same ``Gossip`` class runs here as over HTTP; only the edges differ. Messages in a simulation
are built by the simulation itself, so the memory store skips signature checks (they are measured
elsewhere: scripts/bench/ingest) but keeps every other rule of a replica: grow-only set keyed by id,
idempotent ingest, (created_at, id) order.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from protocol import Envelope, ProtocolError, canon, decode

from node.net.transport import PeerUnavailable


@dataclass
class MemReport:
    accepted: list[Envelope] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    rejected: list[tuple[str | None, str]] = field(default_factory=list)


class MemoryStore:
    def __init__(self, swarm: str):
        self.swarm = swarm
        self._raw: dict[str, bytes] = {}
        self._items: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._raw

    async def ingest(self, items: Iterable[Any], now: int | None = None) -> MemReport:
        report = MemReport()
        for item in items:
            try:
                env = item if isinstance(item, Envelope) else decode(item, swarm=self.swarm, now=now, check_sig=False)
            except ProtocolError as exc:
                report.rejected.append((item.get("id") if isinstance(item, dict) else None, exc.reason))
                continue
            if env.id in self._raw:
                report.duplicate.append(env.id)
                continue
            self._raw[env.id] = env.canonical()
            bisect.insort(self._items, (env.created_at, env.id))
            report.accepted.append(env)
        return report

    async def has_ids(self, ids: Iterable[str]) -> set[str]:
        return {i for i in ids if i in self._raw}

    async def items(self, lo: Any = None, hi: Any = None) -> list[tuple[int, str]]:
        return list(self._items)

    async def get_many_raw(self, ids: Iterable[str]) -> list[bytes]:
        return [self._raw[i] for i in ids if i in self._raw]


@dataclass
class MemStats:
    calls: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class MemNetwork:
    """Routes calls between in-process gossip cores by address; nodes can be taken offline."""

    def __init__(self):
        self.nodes: dict[str, Any] = {}  # address -> Gossip
        self.offline: set[str] = set()
        self.stats = MemStats()

    def transport(self, address: str) -> "MemTransport":
        return MemTransport(self, address)

    def _target(self, src: str, peer: str, kind: str, size: int):
        if peer in self.offline or src in self.offline or peer not in self.nodes:
            raise PeerUnavailable("offline")
        self.stats.calls += 1
        self.stats.bytes += size
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
        return self.nodes[peer]


class MemTransport:
    def __init__(self, network: MemNetwork, address: str):
        self.network = network
        self.address = address

    async def announce(self, peer: str, ids: Sequence[str]) -> list[str]:
        target = self.network._target(self.address, peer, "announce", 66 * len(ids))
        return await target.handle_announce(list(ids), self.address)

    async def send(self, peer: str, raws: Sequence[bytes]) -> dict[str, Any]:
        target = self.network._target(self.address, peer, "send", sum(len(r) for r in raws))
        report = await target.ingest(list(raws), origin=self.address)
        return {"accepted": [e.id for e in report.accepted], "duplicate": report.duplicate, "rejected": []}

    async def fetch(self, peer: str, ids: Sequence[str]) -> list[Any]:
        target = self.network._target(self.address, peer, "fetch", 66 * len(ids))
        raws = await target.store.get_many_raw(ids)
        self.network.stats.bytes += sum(len(r) for r in raws)
        return raws

    async def sync(self, peer: str, msg: bytes) -> bytes:
        target = self.network._target(self.address, peer, "sync", len(msg))
        answer = await target.handle_sync(msg)
        self.network.stats.bytes += len(answer)
        return answer

    async def peer_records(self, peer: str) -> list[Any]:
        self.network._target(self.address, peer, "peers", 0)
        return []

    async def status(self, peer: str) -> dict[str, Any]:
        target = self.network._target(self.address, peer, "status", 0)
        return {"pubkey": target.own_key, "swarm": target.store.swarm}


def canonical_size(obj: Any) -> int:
    return len(canon(obj))
