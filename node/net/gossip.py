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

from node.net.fetcher import Fetcher
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
    # A push target that could not take ids (offline, busy): other peers are tried at once, and the
    # target itself again after push_retry_s, each up to push_retries times.
    push_retries: int = 2
    push_retry_s: float = 5.0
    fetch_window: int = 4  # fetches in flight per peer during a catch-up (node/net/fetcher.py)
    # ids per catch-up fetch (node/net/fetcher.py): the first fetches from a peer ask max_batch; an
    # answer that took under half fetch_slow_s doubles the next ones, up to fetch_batch (the most one
    # request may carry, SPEC.md 10.2.4), one that took over fetch_slow_s halves them. Each batch pays
    # a round trip, an id lookup, a pool dispatch and a transaction: 1000 catches up ~15% faster than
    # 256 on loopback (scripts/bench/gossip --catchup 20000); smaller ones keep a slow link's answers,
    # all fetch_window of them sharing it, well inside the exchange timeout (node/net/http.py, 10 s).
    fetch_batch: int = 1000
    fetch_slow_s: float = 2.5
    bulk_at: int = 512  # missing this many ids after a reconciliation: also reconcile with other peers ...
    catchup_peers: int = 3  # ... so that up to this many fetch at once
    # Messages learned by reconciliation and created longer ago than this are not announced onwards:
    # they are no news, and peers that lack them reconcile them themselves.
    push_window_s: float = 600.0


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
    targets: set[str] | None = None  # a retry: only these peers (they were unavailable last time)
    tries: int = 0


def _hex(ids: Iterable[bytes]) -> list[str]:
    return [i.hex() for i in ids]


class Gossip:
    def __init__(self, store: MessageStore, transport: Transport, peers: PeerTable, *, own_key: str,
                 settings: GossipSettings | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time,
                 on_accepted: Callable[[list[Any], str | None], Awaitable[None] | None] | None = None,
                 verifier: Any = None, on_progress: Callable[[str], None] | None = None):
        self.store = store
        self.transport = transport
        self.peers = peers
        self.own_key = own_key
        self.settings = settings or GossipSettings()
        self.rng = rng or random.Random()
        self.clock = clock
        self.on_accepted = on_accepted
        self.verifier = verifier  # a store.VerifyPool: big batches' signatures checked on every core
        self.on_progress = on_progress  # catch-up progress lines (the node's terminal)
        self.stats = GossipStats()
        self.fetcher = Fetcher(self)
        self._outbox: OrderedDict[str, _Out] = OrderedDict()
        self._inflight: set[str] = set()
        self._promised: dict[str, float] = {}  # id -> until when an announcer owes us its body
        self._wake = asyncio.Event()
        self._snapshot: tuple[int, Storage] | None = None
        self._version = 0  # bumped on every accepted message; keys the reconciliation snapshot
        self._reconciled_by: dict[str, float] = {}  # peer -> when it last reconciled with us
        self._syncing: set[str] = set()  # peers we are reconciling with now
        # Of the newly stored, what is pushed onward (node/newcomers.py: not a zero-trust author's
        # message no trusted vote touched); None: everything.
        self.relay_filter: Callable[[list[Any]], list[Any]] | None = None
        # Stored ids not offered to reconciliation, nor fetched again when a peer offers them (the same
        # module's ``held``: what the relay filter withholds); None: none.
        self.unoffered: Callable[[], Any] | None = None

    def catchup_json(self) -> dict[str, Any] | None:
        """The current (or last) catch-up's progress: status, /api/stats, metrics."""
        progress = self.fetcher.progress
        return None if progress is None else progress.to_json(time.monotonic())

    # -- receiving -------------------------------------------------------------------------
    async def ingest(self, items: Sequence[Any], origin: str | None = None, *, relay_after: float | None = None,
                     admit: Any = None, screen: Any = None) -> Any:
        """Store items from ``origin`` (None = local), relay what was new, score the origin.

        ``relay_after``: relay only the new messages created at or after this time (a catch-up's
        old messages are no news to anyone). ``admit``: the store's admission hook (a push's budgets,
        node/newcomers.py), and ``screen`` its check before decoding; what they refuse is not the
        origin's fault."""
        kw = {} if admit is None else {"admit": admit}
        if screen is not None:
            kw["screen"] = screen
        if self.verifier is not None:
            report = await self.store.ingest(items, verifier=self.verifier, **kw)
        else:
            report = await self.store.ingest(items, **kw)
        accepted = report.accepted
        self.stats.accepted += len(accepted)
        self.stats.duplicate += len(report.duplicate)
        self.stats.rejected += len(report.rejected)
        for _id, reason in report.rejected:
            key = reason.split(" (")[0]
            self.stats.rejected_by_reason[key] = self.stats.rejected_by_reason.get(key, 0) + 1
        if origin is not None:
            now = self.clock()
            invalid = [r for r in report.rejected if not r[1].startswith("refused")]  # not budgets' refusals
            if invalid:
                self.peers.record(origin, "invalid", now, count=len(invalid), error=invalid[0][1])
            elif accepted:
                self.peers.record(origin, "ok", now)
            self.peers.mark_has(origin, [e.id for e in accepted] + list(report.duplicate))
        for env in accepted:
            self._promised.pop(env.id, None)
        if accepted:
            relayed = accepted if self.relay_filter is None else self.relay_filter(accepted)
            if relayed:  # what is withheld is out of the snapshot as well: then it is unchanged
                self._version += 1
            for env in relayed:
                if relay_after is None or env.created_at >= relay_after:
                    self._outbox[env.id] = _Out(own=env.author == self.own_key,
                                                exclude={origin} if origin else set())
            if self._outbox:
                self._wake.set()
            if self.on_accepted is not None:
                result = self.on_accepted(accepted, origin)
                if asyncio.iscoroutine(result):
                    await result
        return report

    async def handle_announce(self, ids: Sequence[str], origin: str | None) -> list[str]:
        """Answer an announcement: the ids we neither hold nor are already fetching."""
        have = await self.store.has_ids(ids)
        now = self.clock()
        if origin is not None:
            self.peers.mark_has(origin, ids)
            self.peers.heard(origin, now)
        coming, shed = self.fetcher.coming, self._shed()
        want = [i for i in dict.fromkeys(ids)
                if i not in have and i not in shed and i not in self._inflight and not coming(i) and self._promised.get(i, -1.0) < now]
        # The announcer now owes us these bodies; don't ask a second announcer meanwhile (a broken
        # promise only delays the id until the deadline or the next reconciliation).
        for i in want:
            self._promised[i] = now + self.settings.promise_s
        if len(self._promised) > 100_000:
            self._promised = {k: v for k, v in self._promised.items() if v >= now}
        return want

    def _shed(self) -> Any:
        """Ids the store shed to stay within its budget (store/shed.py): not to be fetched again."""
        return getattr(self.store, "tombstones", ())

    def _unoffered(self) -> Any:
        return () if self.unoffered is None else self.unoffered()

    @property
    def version(self) -> int:
        """Bumped whenever what this node offers its peers changed (a message relayed, shed, released)."""
        return self._version

    def changed(self) -> None:
        """The store shed messages or took one back: the next reconciliation snapshot is rebuilt."""
        self._version += 1

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
        """Announce each message to ``fanout`` peers (own ones to all). The ids a target could not
        take because it was unavailable go at once to other peers not tried yet, and are queued for
        that target again (``push_retries`` times each, after ``push_retry_s``): a peer that was
        offline for the wave would otherwise wait for its next reconciliation."""
        now = self.clock()
        active = self.peers.active(now)
        tried: dict[str, set[str]] = {}  # id -> peers already tried
        plan: dict[str, list[str]] = {}
        spare: dict[str, list[Any]] = {}  # id -> candidates left for a retry
        for msg_id, out in batch.items():
            if out.targets is not None:
                candidates = [p for p in active if p.address in out.targets and msg_id not in p.has]
            else:
                candidates = [p for p in active if p.address not in out.exclude and msg_id not in p.has]
                if not out.own and len(candidates) > self.settings.fanout:
                    chosen = self.peers.sample_preferring_tried(candidates, self.settings.fanout, self.rng)
                    spare[msg_id] = [p for p in candidates if p not in chosen]
                    candidates = chosen
            tried[msg_id] = {p.address for p in candidates}
            for peer in candidates:
                plan.setdefault(peer.address, []).append(msg_id)
        total = 0
        later: dict[str, set[str]] = {}  # id -> unavailable targets to try again
        for attempt in range(self.settings.push_retries + 1):
            addresses = list(plan)
            results = await asyncio.gather(*(self._push_to(addr, plan[addr]) for addr in addresses))
            total += sum(sent for sent, _, _ in results)
            plan = {}
            for (_, failed, unavailable), address in zip(results, addresses):
                for msg_id in failed:
                    if unavailable and batch[msg_id].tries < self.settings.push_retries:
                        later.setdefault(msg_id, set()).add(address)
                    left = spare.get(msg_id)
                    while left:
                        peer = left.pop(self.rng.randrange(len(left)))
                        if peer.address not in tried[msg_id] and msg_id not in peer.has \
                                and peer.cooling_until <= self.clock():
                            tried[msg_id].add(peer.address)
                            plan.setdefault(peer.address, []).append(msg_id)
                            break
            if not plan:
                break
        for msg_id, targets in later.items():
            if msg_id in self._outbox:
                queued = self._outbox[msg_id]
                if queued.targets is not None:
                    queued.targets |= targets
                continue
            out = batch[msg_id]
            self._outbox[msg_id] = _Out(own=out.own, exclude=set(), targets=targets, tries=out.tries + 1)
        if later:
            asyncio.get_running_loop().call_later(self.settings.push_retry_s, self._wake.set)
        return total

    async def _push_to(self, address: str, ids: list[str]) -> tuple[int, list[str], bool]:
        """(envelopes sent, ids this peer could not be given, whether it was only unavailable)."""
        sent = 0
        failed: list[str] = []
        unavailable = False
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
                failed.extend(ids[start:])
                break
            except PeerUnavailable as exc:
                self.peers.record(address, "timeout", self.clock(), error=exc.reason)
                failed.extend(ids[start:])
                unavailable = True
                break
        self.stats.sent += sent
        return sent, failed, unavailable

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
            shed = self._shed()  # shed, still stored for a grace period (node/newcomers.py): not offered
            held = self._unoffered()  # held until a trusted vote touches it (node/newcomers.py)
            self._snapshot = (version, Storage((ts, bytes.fromhex(i)) for ts, i in items
                                               if i not in shed and i not in held))
        return self._snapshot[1]

    async def handle_sync(self, msg: bytes, origin: str | None = None) -> bytes:
        """Server side of one reconciliation round. Raises NegentropyError on a malformed message.

        ``origin``, the peer reconciling (when attributed): it now fetches what it lacks and offers
        what we lack, so our own reconciliation with it is skipped for ``sync_interval_s``."""
        storage = await self.snapshot()
        answer = Negentropy(storage, self.settings.frame_size_limit).reconcile(msg)
        if origin is not None:
            now = self.clock()
            self._reconciled_by[origin] = now
            self.peers.heard(origin, now)
            if len(self._reconciled_by) > 4 * self.peers.max_peers:  # bounded: any address may say it is one
                horizon = now - self.settings.sync_interval_s
                self._reconciled_by = {a: t for a, t in self._reconciled_by.items() if t >= horizon}
                if len(self._reconciled_by) > 4 * self.peers.max_peers:
                    self._reconciled_by = {origin: now}
        return answer

    async def reconcile(self, address: str) -> tuple[list[str], list[str], int, int, int]:
        """Negentropy rounds with one peer: (ids only we have, ids only it has, rounds, bytes sent,
        bytes received). A peer that breaks the protocol or never lets it end is cut off."""
        storage = await self.snapshot()
        ne = Negentropy(storage, self.settings.frame_size_limit)
        msg: bytes | None = ne.initiate()
        have: list[bytes] = []
        need: list[bytes] = []
        rounds = sent_bytes = recv_bytes = 0
        try:
            while msg is not None:
                if rounds >= self.settings.max_sync_rounds:
                    raise PeerMisbehaved(f"reconciliation did not converge in {rounds} rounds")
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
        except PeerMisbehaved as exc:
            self.peers.record(address, "invalid", self.clock(), error=exc.reason)
            self.peers.cut_off(address, self.clock(), exc.reason)
            raise
        except PeerUnavailable as exc:
            self.peers.record(address, "timeout", self.clock(), error=exc.reason)
            raise
        self.stats.syncs += 1
        self.stats.sync_rounds += rounds
        self.stats.sync_bytes += sent_bytes + recv_bytes
        shed, held = self._shed(), self._unoffered()  # held: stored, only not offered
        return _hex(have), [i for i in _hex(need) if i not in shed and i not in held], rounds, sent_bytes, recv_bytes

    async def sync_with(self, address: str) -> SyncResult:
        """Reconcile with one peer, fetch what we lack and send what it lacks.

        Missing many (``bulk_at``): a catch-up. Other active peers are reconciled with at once, so
        that every peer holding what is missing fetches a share (node/net/fetcher.py).

        Skipped (rounds 0) while another reconciliation with the same peer is under way (a node
        starting greets its bootstrap peer as its sync loop picks it), and when the peer itself
        reconciled with us in the last ``sync_interval_s``: it took what it lacked and offered what
        we lacked. Either would list every missing id a second time."""
        if address in self._syncing or \
                self._reconciled_by.get(address, float("-inf")) >= self.clock() - self.settings.sync_interval_s:
            return SyncResult(address, 0, 0, 0, 0, 0, 0)
        self._syncing.add(address)
        try:
            return await self._sync_with(address)
        finally:
            self._syncing.discard(address)

    async def _sync_with(self, address: str) -> SyncResult:
        fetcher = self.fetcher
        fetcher.begin()
        helpers = []
        try:
            have, need, rounds, sent_bytes, recv_bytes = await self.reconcile(address)
            fetcher.add(address, need)
            if len(need) >= self.settings.bulk_at and self.settings.catchup_peers > 1:
                others = [p for p in self.peers.active(self.clock()) if p.address != address]
                for peer in self.rng.sample(others, min(len(others), self.settings.catchup_peers - 1)):
                    helpers.append(asyncio.ensure_future(self._help_catch_up(peer.address)))
            await fetcher.wait(need)
        finally:
            if helpers:
                await asyncio.gather(*helpers, return_exceptions=True)
            await fetcher.end()
        fetched = len(await self.store.has_ids(need)) if need else 0
        peer = self.peers.get(address)
        cut = fetcher.progress is not None and address in fetcher.progress.cut_off
        if not cut and (peer is None or peer.cooling_until <= self.clock()):  # not if cut off while fetching
            try:
                await self._send_missing(address, have)
            except PeerMisbehaved as exc:
                self.peers.record(address, "invalid", self.clock(), error=exc.reason)
                raise
            except PeerUnavailable as exc:
                self.peers.record(address, "timeout", self.clock(), error=exc.reason)
                raise
            self.peers.record(address, "ok", self.clock())
        return SyncResult(address, rounds, sent_bytes, recv_bytes, len(have), len(need), fetched)

    async def _help_catch_up(self, address: str) -> None:
        self.fetcher.begin()
        try:
            _, need, *_ = await self.reconcile(address)
            self.fetcher.add(address, need)
            await self.fetcher.wait(need)
        except PeerUnavailable:
            return
        finally:
            await self.fetcher.end()

    async def _send_missing(self, address: str, ids: list[str]) -> None:
        """Offer a peer what reconciliation says it lacks: announce, then send what it wants, up to
        ``fetch_window`` batches at once (a joining node may be given its catch-up this way).

        A peer that wants less than a quarter of a batch already has them coming (it is catching
        up from us or others, node/net/fetcher.py): the rest is not offered, so a joining node does
        not receive every message twice."""
        peer = self.peers.get(address)
        if peer is not None and peer.has:  # it said it holds these (it holds back what it does not trust,
            ids = [i for i in ids if i not in peer.has]  # node/newcomers.py): not announced at every sync
        chunks = [ids[i:i + self.settings.max_batch] for i in range(0, len(ids), self.settings.max_batch)]
        if not chunks:
            return
        slots = asyncio.Semaphore(max(1, self.settings.fetch_window))
        stop = asyncio.Event()

        async def offer(chunk: list[str]) -> None:
            async with slots:
                if stop.is_set():
                    return
                self.stats.announced += len(chunk)
                wanted = set(await self.transport.announce(address, chunk))
                wanted = [i for i in chunk if i in wanted]
                self.peers.mark_has(address, [i for i in chunk if i not in set(wanted)])
                if len(wanted) * 4 < len(chunk):
                    stop.set()
                if wanted:
                    raws = await self.store.get_many_raw(wanted)
                    if raws:
                        await self.transport.send(address, raws)
                        self.stats.sent += len(raws)
                        self.peers.mark_has(address, wanted)

        tasks = [asyncio.ensure_future(offer(chunk)) for chunk in chunks]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def sync_random(self) -> SyncResult | None:
        """Reconcile with one peer, chosen favouring those not heard from recently (peers.pick_for_pull),
        among those sync_with would not skip."""
        now = self.clock()
        skipped = self._syncing | {a for a, t in self._reconciled_by.items() if t >= now - self.settings.sync_interval_s}
        peer = self.peers.pick_for_pull(now, self.rng, horizon_s=2 * self.settings.sync_interval_s, exclude=skipped)
        if peer is None:
            return None
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
