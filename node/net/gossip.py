"""The gossip core: push (announce -> want -> send), pull (Negentropy v1 reconciliation), fetch.

Transport-agnostic: it talks to peers only through ``Transport`` and to the replica only through
``MessageStore`` (node/net/transport.py). docs/design.md, "Gossip and sync":
- Push: a newly stored message goes, in batches, to about ``fanout`` random peers (the node's own
  messages to all peers). To keep bytes per message near 1x we announce ids first and send bodies
  only to peers that want them (the inv/getdata pattern), and never announce back to a peer known
  to hold the id.
- Pull: reconcile with a peer over (created_at, id) speaking Negentropy v1; fetch what we lack,
  send what they lack.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Sequence

from node.net.negentropy import Negentropy, NegentropyError, Storage
from node.net.peers import PeerTable
from node.net.transport import MessageStore, PeerMisbehaved, PeerUnavailable, Transport


@dataclass(frozen=True)
class GossipSettings:
    fanout: int = 6  # peers a relayed message is announced to
    max_batch: int = 256  # ids per announce, envelopes per send/fetch
    flush_interval_s: float = 0.05  # batching window for pushes
    sync_interval_s: float = 30.0  # pull period (one random peer each time)
    frame_size_limit: int = 0  # Negentropy frame limit (0 = none)
    max_sync_rounds: int = 64  # a peer that never lets a reconciliation end is cut off
    promise_s: float = 5.0  # after we answer "want", how long we wait for that body before asking others


@dataclass
class GossipStats:
    announced: int = 0  # ids offered to peers
    sent: int = 0  # envelopes pushed
    fetched: int = 0  # envelopes pulled
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    syncs: int = 0
    sync_rounds: int = 0
    sync_bytes: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class SyncResult:
    peer: str
    rounds: int
    bytes_sent: int
    bytes_received: int
    have: int  # we had, they lacked (sent)
    need: int  # they had, we lacked (fetched)
    fetched: int


@dataclass
class _Out:
    own: bool
    exclude: set[str]


def _hex(ids: Iterable[bytes]) -> list[str]:
    return [i.hex() for i in ids]


class Gossip:
    def __init__(self, store: MessageStore, transport: Transport, peers: PeerTable, *, own_key: str,
                 settings: GossipSettings | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time,
                 on_accepted: Callable[[list[Any], str | None], Awaitable[None] | None] | None = None):
        self.store = store
        self.transport = transport
        self.peers = peers
        self.own_key = own_key
        self.settings = settings or GossipSettings()
        self.rng = rng or random.Random()
        self.clock = clock
        self.on_accepted = on_accepted
        self.stats = GossipStats()
        self._outbox: OrderedDict[str, _Out] = OrderedDict()
        self._inflight: set[str] = set()
        self._promised: dict[str, float] = {}  # id -> until when an announcer owes us its body
        self._wake = asyncio.Event()
        self._snapshot: tuple[int, Storage] | None = None
        self._version = 0  # bumped on every accepted message; keys the reconciliation snapshot

    # -- receiving -------------------------------------------------------------------------
    async def ingest(self, items: Sequence[Any], origin: str | None = None) -> Any:
        """Store items from ``origin`` (None = local), relay what was new, score the origin."""
        report = await self.store.ingest(items)
        accepted = report.accepted
        self.stats.accepted += len(accepted)
        self.stats.duplicate += len(report.duplicate)
        self.stats.rejected += len(report.rejected)
        for _id, reason in report.rejected:
            key = reason.split(" (")[0]
            self.stats.rejected_by_reason[key] = self.stats.rejected_by_reason.get(key, 0) + 1
        if origin is not None:
            now = self.clock()
            if report.rejected:
                self.peers.record(origin, "invalid", now, count=len(report.rejected), error=report.rejected[0][1])
            elif accepted:
                self.peers.record(origin, "ok", now)
            self.peers.mark_has(origin, [e.id for e in accepted] + list(report.duplicate))
        for env in accepted:
            self._promised.pop(env.id, None)
        if accepted:
            self._version += 1
            for env in accepted:
                self._outbox[env.id] = _Out(own=env.author == self.own_key,
                                            exclude={origin} if origin else set())
            self._wake.set()
            if self.on_accepted is not None:
                result = self.on_accepted(accepted, origin)
                if asyncio.iscoroutine(result):
                    await result
        return report

    async def handle_announce(self, ids: Sequence[str], origin: str | None) -> list[str]:
        """Answer an announcement: the ids we neither hold nor are already fetching."""
        have = await self.store.has_ids(ids)
        if origin is not None:
            self.peers.mark_has(origin, ids)
        now = self.clock()
        want = [i for i in dict.fromkeys(ids)
                if i not in have and i not in self._inflight and self._promised.get(i, -1.0) < now]
        # The announcer now owes us these bodies; don't ask a second announcer meanwhile (a broken
        # promise only delays the id until the deadline or the next reconciliation).
        for i in want:
            self._promised[i] = now + self.settings.promise_s
        if len(self._promised) > 100_000:
            self._promised = {k: v for k, v in self._promised.items() if v >= now}
        return want

    # -- pushing ---------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self._outbox)

    def take_outbox(self) -> OrderedDict[str, _Out]:
        batch, self._outbox = self._outbox, OrderedDict()
        return batch

    async def flush(self) -> int:
        """One push round over everything queued. Returns the number of envelopes sent."""
        if not self._outbox:
            return 0
        return await self.push_batch(self.take_outbox())

    async def push_batch(self, batch: OrderedDict[str, _Out]) -> int:
        now = self.clock()
        active = self.peers.active(now)
        plan: dict[str, list[str]] = {}
        for msg_id, out in batch.items():
            candidates = [p for p in active if p.address not in out.exclude and msg_id not in p.has]
            if not out.own and len(candidates) > self.settings.fanout:
                candidates = self.rng.sample(candidates, self.settings.fanout)
            for peer in candidates:
                plan.setdefault(peer.address, []).append(msg_id)
        results = await asyncio.gather(*(self._push_to(addr, ids) for addr, ids in plan.items()))
        return sum(results)

    async def _push_to(self, address: str, ids: list[str]) -> int:
        sent = 0
        for start in range(0, len(ids), self.settings.max_batch):
            chunk = ids[start:start + self.settings.max_batch]
            try:
                self.stats.announced += len(chunk)
                wanted = await self.transport.announce(address, chunk)
                wanted = [i for i in wanted if i in set(chunk)]
                self.peers.mark_has(address, [i for i in chunk if i not in set(wanted)])
                if wanted:
                    raws = await self.store.get_many_raw(wanted)
                    await self.transport.send(address, raws)
                    sent += len(raws)
                    self.peers.mark_has(address, wanted)
                self.peers.record(address, "ok", self.clock())
            except PeerMisbehaved as exc:
                self.peers.record(address, "invalid", self.clock(), error=exc.reason)
                break
            except PeerUnavailable as exc:
                self.peers.record(address, "timeout", self.clock(), error=exc.reason)
                break
        self.stats.sent += sent
        return sent

    async def run_push_loop(self) -> None:
        """Owned by the node: flush the outbox whenever something new arrives (batched)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.settings.flush_interval_s)
            await self.flush()

    # -- pulling ---------------------------------------------------------------------------
    async def snapshot(self) -> Storage:
        """A reconciliation snapshot of the replica, rebuilt only when something was accepted."""
        if self._snapshot is None or self._snapshot[0] != self._version:
            version = self._version
            items = await self.store.items()
            self._snapshot = (version, Storage((ts, bytes.fromhex(i)) for ts, i in items))
        return self._snapshot[1]

    async def handle_sync(self, msg: bytes) -> bytes:
        """Server side of one reconciliation round. Raises NegentropyError on a malformed message."""
        storage = await self.snapshot()
        return Negentropy(storage, self.settings.frame_size_limit).reconcile(msg)

    async def sync_with(self, address: str) -> SyncResult:
        """Reconcile with one peer, then fetch what we lack and send what it lacks."""
        storage = await self.snapshot()
        ne = Negentropy(storage, self.settings.frame_size_limit)
        msg: bytes | None = ne.initiate()
        have: list[bytes] = []
        need: list[bytes] = []
        rounds = sent_bytes = recv_bytes = 0
        try:
            while msg is not None:
                if rounds >= self.settings.max_sync_rounds:
                    raise PeerMisbehaved("reconciliation did not converge")
                sent_bytes += len(msg)
                answer = await self.transport.sync(address, msg)
                recv_bytes += len(answer)
                rounds += 1
                try:
                    msg, h, n = ne.reconcile_client(answer)
                except NegentropyError as exc:
                    raise PeerMisbehaved(f"bad reconciliation message: {exc}") from None
                have.extend(h)
                need.extend(n)
            fetched = await self._fetch_from(address, _hex(need))
            await self._send_missing(address, _hex(have))
            self.peers.record(address, "ok", self.clock())
        except PeerMisbehaved as exc:
            self.peers.record(address, "invalid", self.clock(), error=exc.reason)
            raise
        except PeerUnavailable as exc:
            self.peers.record(address, "timeout", self.clock(), error=exc.reason)
            raise
        self.stats.syncs += 1
        self.stats.sync_rounds += rounds
        self.stats.sync_bytes += sent_bytes + recv_bytes
        return SyncResult(address, rounds, sent_bytes, recv_bytes, len(have), len(need), fetched)

    async def _fetch_from(self, address: str, ids: list[str]) -> int:
        fetched = 0
        for start in range(0, len(ids), self.settings.max_batch):
            chunk = [i for i in ids[start:start + self.settings.max_batch] if i not in self._inflight]
            if not chunk:
                continue
            self._inflight.update(chunk)
            try:
                got = await self.transport.fetch(address, chunk)
                report = await self.ingest(got, origin=address)
            finally:
                self._inflight.difference_update(chunk)
            delivered = {e.id for e in report.accepted} | set(report.duplicate)
            missing = [i for i in chunk if i not in delivered]
            if missing:
                self.peers.record(address, "broken_promise", self.clock(), error=f"{len(missing)} ids not delivered")
            fetched += len(report.accepted)
        self.stats.fetched += fetched
        return fetched

    async def _send_missing(self, address: str, ids: list[str]) -> None:
        for start in range(0, len(ids), self.settings.max_batch):
            raws = await self.store.get_many_raw(ids[start:start + self.settings.max_batch])
            if raws:
                await self.transport.send(address, raws)
                self.stats.sent += len(raws)
                self.peers.mark_has(address, ids[start:start + self.settings.max_batch])

    async def sync_random(self) -> SyncResult | None:
        candidates = self.peers.active(self.clock())
        if not candidates:
            return None
        peer = self.rng.choice(candidates)
        try:
            return await self.sync_with(peer.address)
        except PeerUnavailable:
            return None

    async def run_sync_loop(self) -> None:
        """Owned by the node: reconcile with a random peer every ``sync_interval_s`` (jittered)."""
        while True:
            await self.sync_random()
            interval = self.settings.sync_interval_s
            await asyncio.sleep(interval * (0.75 + 0.5 * self.rng.random()))
