"""Catch-up: fetch the ids reconciliation found missing, pipelined and from several peers at once.

docs/design.md, "Gossip and sync". Each peer that listed missing ids gets a worker that keeps up to
``fetch_window`` fetches in flight, so the next batches travel while earlier ones are
decoded, verified (on every core, store/verify.py) and stored. An id listed by several peers goes
to whichever worker takes it first: faster peers take more. How many ids a fetch asks for adapts to
how fast the peer answers (``GossipSettings.fetch_batch``): bigger batches cost less per message,
smaller ones keep a slow link's answers inside the exchange timeout. A peer that fails a fetch is scored down and
cut off from the catch-up; one that broke the protocol (an answer that is not one, a batch missing
ids it listed, invalid messages) is also cooled off (node/net/peers.py), while one that did not
answer in time or dropped the connection is not (a busy honest peer looks the same). Its ids go
back to the other peers that listed them.
Nothing is half-stored: a batch is stored in one transaction, message by message validated, or not
at all. Ids no remaining peer can give are dropped; the next reconciliation finds them again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.net.transport import PeerMisbehaved, PeerUnavailable

if TYPE_CHECKING:
    from node.net.gossip import Gossip

log = logging.getLogger(__name__)

MAX_BACK_OFF_S = 30.0  # the longest a peer's Retry-After pauses fetching from it


@dataclass
class CatchUpProgress:
    """One catch-up (from the first missing id to the last settled), for status, metrics and the log."""

    started_at: float = 0.0  # monotonic
    wanted: int = 0  # missing ids learned
    stored: int = 0  # of those, now stored (fetched here, or arrived otherwise)
    failed_ids: set[str] = field(default_factory=set, repr=False)  # dropped: no peer that listed them delivered
    bytes: int = 0  # envelope bytes fetched
    peers: set[str] = field(default_factory=set)  # peers fetched from
    cut_off: set[str] = field(default_factory=set)  # peers cut off during it
    finished_at: float | None = None

    def to_json(self, now: float) -> dict[str, Any]:
        elapsed = (self.finished_at or now) - self.started_at
        return {
            "active": self.finished_at is None,
            "wanted": self.wanted,
            "stored": self.stored,
            "failed": len(self.failed_ids),
            "remaining": max(0, self.wanted - self.stored - len(self.failed_ids)),
            "peers": sorted(self.peers),
            "cut_off": sorted(self.cut_off),
            "elapsed_s": round(elapsed, 2),
            "rate_per_s": round(self.stored / elapsed, 1) if elapsed > 0 else 0.0,
        }


class Fetcher:
    def __init__(self, gossip: "Gossip"):
        self.gossip = gossip
        self._holders: dict[str, set[str]] = {}  # missing id -> peers that listed it
        self._queues: dict[str, deque[str]] = {}  # peer -> ids it listed, oldest first
        self._workers: dict[str, asyncio.Task] = {}
        self._cut: set[str] = set()  # peers cut off during the current catch-up
        self._settled = asyncio.Condition()
        self.progress: CatchUpProgress | None = None  # the current or last catch-up
        self._busy = 0  # reconciliations under way that may add to the current catch-up
        self._paused_until: dict[str, float] = {}  # peer -> monotonic time its 429 asked us to wait until
        self._last_report = 0.0
        self._sizes: dict[str, int] = {}  # peer -> ids its fetches ask for now (_adapt)

    # -- the caller's side -------------------------------------------------------------------
    def pending(self) -> int:
        return len(self._holders)

    def coming(self, msg_id: str) -> bool:
        """True while ``msg_id`` is to be fetched from a peer that listed it."""
        return msg_id in self._holders

    def begin(self) -> None:
        """A reconciliation starts: the catch-up it may add to is not over before ``end``."""
        self._busy += 1

    async def end(self) -> None:
        self._busy -= 1
        await self._settle([], [])

    def add(self, peer: str, ids: list[str]) -> None:
        """``peer`` listed these missing ids: fetch each from it or from another that listed it."""
        if peer in self._cut or not ids:
            return
        if self.progress is None or self.progress.finished_at is not None:
            self.progress = CatchUpProgress(started_at=time.monotonic())
            self._sizes.clear()
            verifier = getattr(self.gossip, "verifier", None)
            if verifier is not None:  # its workers start while the first batches travel
                verifier.warm()
        progress = self.progress
        queue = self._queues.setdefault(peer, deque())
        for i in ids:
            holders = self._holders.get(i)
            if holders is None:
                self._holders[i] = {peer}
                if i in progress.failed_ids:
                    progress.failed_ids.discard(i)
                else:
                    progress.wanted += 1
            elif peer in holders:
                continue
            else:
                holders.add(peer)
            queue.append(i)
        self._start(peer)

    async def wait(self, ids: list[str]) -> None:
        """Until each of ``ids`` is stored or given up."""
        holders, at = self._holders, 0
        async with self._settled:
            while True:
                while at < len(ids) and ids[at] not in holders:  # settled ids stay settled: one pass
                    at += 1
                if at == len(ids):
                    return
                await self._settled.wait()

    async def close(self) -> None:
        """Stop every fetch (the node's stop), waiting until each has let go of the store."""
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- workers -----------------------------------------------------------------------------
    def _start(self, peer: str) -> None:
        task = self._workers.get(peer)
        if (task is None or task.done()) and self._queues.get(peer):
            self._workers[peer] = asyncio.get_running_loop().create_task(self._work(peer), name=f"fetch {peer}")

    def batch_size(self, peer: str) -> int:
        """How many ids the next fetch from ``peer`` asks for."""
        s = self.gossip.settings
        return self._sizes.get(peer, max(1, min(s.max_batch, s.fetch_batch)))

    def _adapt(self, peer: str, asked: int, elapsed: float) -> None:
        """After an answer to ``asked`` ids that took ``elapsed`` seconds: at most half what was
        asked if it was slow (the other answers of the same window, as slow, then change nothing
        more), double (up to ``fetch_batch``) if a full batch came back fast."""
        s = self.gossip.settings
        size = self.batch_size(peer)
        if elapsed > s.fetch_slow_s:
            size = min(size, max(1, asked // 2))
        elif elapsed < s.fetch_slow_s / 2 and asked >= size:
            size = min(s.fetch_batch, size * 2)
        self._sizes[peer] = size

    def _take(self, peer: str) -> list[str]:
        queue, chunk = self._queues.get(peer), []
        inflight = self.gossip._inflight
        size = self.batch_size(peer)
        while queue and len(chunk) < size:
            i = queue.popleft()
            holders = self._holders.get(i)
            if holders is not None and peer in holders and i not in inflight:
                chunk.append(i)
                inflight.add(i)
        return chunk

    async def _work(self, peer: str) -> None:
        window = asyncio.Semaphore(max(1, self.gossip.settings.fetch_window))
        running: set[asyncio.Task] = set()
        try:
            while peer not in self._cut:
                await window.acquire()
                pause = self._paused_until.get(peer, 0.0) - time.monotonic()
                if pause > 0:
                    window.release()
                    await asyncio.sleep(pause)
                    continue
                chunk = self._take(peer)
                if not chunk:
                    window.release()
                    if not running:
                        break
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                task = asyncio.get_running_loop().create_task(self._fetch(peer, chunk))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _t: window.release())
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if self._workers.get(peer) is asyncio.current_task():
                del self._workers[peer]

    async def _fetch(self, peer: str, chunk: list[str]) -> None:
        g = self.gossip
        try:
            try:
                asked_at = time.monotonic()
                got = await g.transport.fetch(peer, chunk)
                self._adapt(peer, len(chunk), time.monotonic() - asked_at)
            except PeerMisbehaved as exc:
                await self._cut_off(peer, "invalid", exc.reason, chunk)
                return
            except PeerUnavailable as exc:
                if exc.status == 429:  # its byte budget for us is spent (SPEC.md 10.2.4): not a fault
                    self._back_off(peer, chunk, exc.retry_after)
                else:
                    # No answer in time, or the connection dropped: cut off from this catch-up,
                    # scored as a timeout, but not cooled for it (a busy honest peer looks the same).
                    await self._cut_off(peer, "timeout", exc.reason, chunk, cool=False)
                return
            if self.progress is not None:
                self.progress.peers.add(peer)
                self.progress.bytes += sum(len(x) for x in got if isinstance(x, (bytes, str)))
            report = await g.ingest(got, origin=peer, relay_after=g.clock() - g.settings.push_window_s)
        except asyncio.CancelledError:
            g._inflight.difference_update(chunk)
            raise
        except Exception:  # the store failed (disk full, ...): not the peer's doing; try again later
            log.exception("catch-up: storing a batch from %s failed", peer)
            g._inflight.difference_update(chunk)
            await self._settle([], chunk)
            return
        g._inflight.difference_update(chunk)
        delivered = {e.id for e in report.accepted}
        delivered.update(report.duplicate)
        g.stats.fetched += len(report.accepted)
        asked = set(chunk)
        missing = [i for i in chunk if i not in delivered]
        if missing:  # arrived meanwhile by another way: nothing owed
            stored = await g.store.has_ids(missing)
            delivered.update(stored)
            missing = [i for i in missing if i not in stored]
        await self._settle([i for i in delivered if i in asked], [])
        if not missing:
            return
        if len(missing) < len(chunk) and chunk[len(chunk) - len(missing):] == missing and not report.rejected:
            # A prefix of what was asked, in order: an answer cut at its size cap or at the bytes
            # we may still read (SPEC.md 10.2.4). Ask again for the rest.
            self._requeue(peer, missing)
            return
        if not report.rejected:  # invalid messages were already scored by ingest
            g.peers.record(peer, "broken_promise", g.clock(), error=f"{len(missing)} listed ids not delivered")
        await self._cut_off(peer, None, f"{len(missing)} of {len(chunk)} listed ids not delivered", missing)

    def _requeue(self, peer: str, ids: list[str]) -> None:
        """Give ``ids`` back, first in line, to every peer that listed them, ``peer`` included."""
        for i in reversed(ids):
            for holder in self._holders.get(i, ()):
                self._queues.setdefault(holder, deque()).appendleft(i)
        for holder in {h for i in ids for h in self._holders.get(i, ())}:
            self._start(holder)

    def _back_off(self, peer: str, ids: list[str], retry_after: float | None) -> None:
        """``peer`` asks us to wait: its ids go back (to others first, while it waits)."""
        self.gossip._inflight.difference_update(ids)
        wait = min(MAX_BACK_OFF_S, retry_after if retry_after and retry_after > 0 else 1.0)
        self._paused_until[peer] = max(self._paused_until.get(peer, 0.0), time.monotonic() + wait)
        self._requeue(peer, ids)

    async def _cut_off(self, peer: str, event: str | None, reason: str, ids: list[str], *, cool: bool = True) -> None:
        """Score ``peer`` (event), cut it off from this catch-up (and, ``cool``, from everything for
        the cooling period: it broke the protocol), give its ``ids`` to the other peers that listed them."""
        g = self.gossip
        now = g.clock()
        if event is not None:
            g.peers.record(peer, event, now, error=reason)
        if cool:
            g.peers.cut_off(peer, now, reason)
        self._cut.add(peer)
        if self.progress is not None:
            self.progress.cut_off.add(peer)
        g._inflight.difference_update(ids)
        log.warning("catch-up: cut off %s: %s", peer, reason)
        dropped = []
        for i in ids:
            holders = self._holders.get(i)
            if holders is None:
                continue
            holders.discard(peer)
            if not holders:
                dropped.append(i)
                continue
            for other in holders:
                self._queues.setdefault(other, deque()).appendleft(i)
        # ... and every id only this peer listed, still queued to it, is dropped too
        for i in self._queues.pop(peer, ()):
            holders = self._holders.get(i)
            if holders is not None:
                holders.discard(peer)
                if not holders and i not in g._inflight:
                    dropped.append(i)
        for other in {o for i in ids for o in self._holders.get(i, ())}:
            self._start(other)
        await self._settle([], dropped)

    async def _settle(self, stored: list[str], dropped: list[str]) -> None:
        progress = self.progress
        for i in stored:
            if self._holders.pop(i, None) is not None and progress is not None:
                progress.stored += 1
        for i in dropped:
            if self._holders.pop(i, None) is not None and progress is not None:
                progress.failed_ids.add(i)
        if progress is not None and not self._holders and not self._busy and progress.finished_at is None:
            progress.finished_at = time.monotonic()
            self._cut.clear()
            self._report(final=True)
        elif progress is not None:
            self._report(final=False)
        async with self._settled:
            self._settled.notify_all()

    def _report(self, *, final: bool) -> None:
        """A progress line in the node's log, every few seconds of a big catch-up and at its end."""
        p = self.progress
        now = time.monotonic()
        if p is None or p.wanted < self.gossip.settings.bulk_at:
            return
        if not final and now - self._last_report < 2.0:
            return
        self._last_report = now
        j = p.to_json(now)
        state = "done" if final else "catching up"
        line = (f"{state}: {j['stored']}/{j['wanted']} messages from {len(j['peers'])} peer(s), "
                f"{j['rate_per_s']:.0f}/s" + (f", {j['failed']} not delivered" if j['failed'] else "")
                + (f", cut off {', '.join(j['cut_off'])}" if j['cut_off'] else ""))
        if self.gossip.on_progress is not None:
            self.gossip.on_progress(line)
        else:
            log.info("%s", line)
