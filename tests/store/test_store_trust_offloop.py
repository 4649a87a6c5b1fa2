"""Trust off the event loop, at most every few seconds (issue 17 item 4; store/replica.py
``_trust_view``): the computation runs in a worker thread while the loop keeps answering; readers
arriving meanwhile share one computation; with ``trust_min_interval_s`` a reader within the interval
gets the last view, and boards computed from such a stale view are not kept.

    .venv/bin/python -m pytest tests/store/test_store_trust_offloop.py -q
"""
from __future__ import annotations

import asyncio
import time

import pytest

import store.replica as replica_module
from store import Replica, StoreSettings
from store.trust import TrustState, compute_trust
from tests.store.test_store_factory import NOW, SWARM, claim, key, task, tid, vote

ME = key(0)
TRUSTED = [key(i) for i in range(1, 6)]
VOTERS = [key(i) for i in range(6, 46)]


async def _corpus(r: Replica, claims: int) -> tuple[str, list]:
    t = task(ME)
    await r.ingest([t.canonical()], now=NOW)
    envs = []
    for c in range(claims):
        x = claim(key(100 + c % 20), tid(t), "0.970000", at=NOW - 900 + c, patch=f"+{c}\n")
        envs.append(x)
        envs.extend(vote(v, x.id, val="0.970100", at=NOW - 100 + c) for v in TRUSTED + VOTERS)
    for i in range(0, len(envs), 1000):
        await r.ingest([e.canonical() for e in envs[i:i + 1000]], now=NOW, check_sig=False)
    return tid(t), envs


class CountingCompute:
    """Counts the trust computations (store.trust.TrustState.view, as the replica calls it) and their time."""

    def __init__(self, monkeypatch):
        self.inner, self.calls, self.seconds = TrustState.view, 0, 0.0
        counter = self

        def view(state):
            counter.calls += 1
            t0 = time.perf_counter()
            try:
                return counter.inner(state)
            finally:
                counter.seconds += time.perf_counter() - t0

        monkeypatch.setattr(TrustState, "view", view)


@pytest.mark.slow  # a corpus of ~14,000 votes
async def test_the_loop_keeps_turning_while_trust_is_computed(tmp_path, monkeypatch):
    r = await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey,
                           trusted=[k.pubkey for k in TRUSTED])
    try:
        await _corpus(r, 300)
        rows = await r._fetchall(f"SELECT {replica_module.VOTE_COLUMNS} FROM messages WHERE kind = 'vote'")
        claims = await r._fetchall("SELECT id, author, claimed_bpb FROM messages WHERE kind = 'claim'")

        async def inline() -> None:  # the computation as it was: rows to facts and compute_trust, on the loop
            compute_trust(ME.pubkey, r.trusted_set(), {c[0]: c[1] for c in claims},
                                         [replica_module._vote(row) for row in rows], r.settings.trust,
                                         {c[0]: c[2] for c in claims})

        async def longest_stall(work) -> tuple[float, object]:
            """The longest the loop went without turning while ``work`` ran (a 2 ms ticker's gaps)."""
            gaps, stop = [], asyncio.Event()

            async def ticker():
                last = time.perf_counter()
                while not stop.is_set():
                    await asyncio.sleep(0.002)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.05)
            out = await work()
            stop.set()
            await tick
            return max(gaps), out

        # the same machine, the same load, one after the other: inline, then as the replica does it
        inline_stall, _ = await longest_stall(inline)
        counting = CountingCompute(monkeypatch)
        thread_stall, readers = await longest_stall(lambda: asyncio.gather(*(r.trust() for _ in range(5))))
        assert counting.calls == 1 and all(w == readers[0] for w in readers)  # five readers, one computation
        r._invalidate_trust()  # once more, the better of two (a busy machine preempts the process now and then)
        again, _ = await longest_stall(r.trust)
        thread_stall = min(thread_stall, again)
        assert inline_stall > 0.05, inline_stall  # a computation worth measuring
        assert thread_stall < inline_stall / 2, (thread_stall, inline_stall)
    finally:
        await r.close()


async def test_at_most_one_computation_per_interval(tmp_path, monkeypatch):
    interval = 1.0
    r = await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey,
                           trusted=[k.pubkey for k in TRUSTED], settings=StoreSettings(trust_min_interval_s=interval))
    try:
        task_id, envs = await _corpus(r, 3)
        counting = CountingCompute(monkeypatch)
        first = await r.trust()
        board = await r.leaderboard(task_id)
        assert counting.calls == 1 and r.trust_current
        # a vote flood within the interval: readers get the last view; nothing is recomputed
        t0 = time.monotonic()
        extra = claim(key(200), task_id, "0.960000", at=NOW - 50)
        await r.ingest([extra.canonical()], now=NOW)
        for v in TRUSTED:
            await r.ingest([vote(v, extra.id, val="0.960100").canonical()], now=NOW)
            assert await r.trust() == first
        stale_board = await r.leaderboard(task_id)
        if time.monotonic() - t0 < interval:
            assert counting.calls == 1 and not r.trust_current
            assert await r.leaderboard(task_id) is not stale_board  # a board from a stale view is not kept
        # past the interval: one computation, current again, and the new claim counts
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)) + 0.05)
        fresh = await r.trust()
        assert counting.calls == 2 and r.trust_current
        after = await r.leaderboard(task_id)
        assert extra.id in [e.claim.id for e in after.verified] and after is not board
        assert await r.leaderboard(task_id) is after  # kept again
    finally:
        await r.close()


async def test_without_an_interval_every_reader_sees_the_latest_votes(tmp_path):
    r = await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey, trusted=[TRUSTED[0].pubkey])
    try:
        task_id, _ = await _corpus(r, 2)
        x = claim(key(201), task_id, "0.950000", at=NOW - 40)
        await r.ingest([x.canonical()], now=NOW)
        assert x.id in [e.claim.id for e in (await r.leaderboard(task_id)).pending]
        await r.ingest([vote(TRUSTED[0], x.id, val="0.950100").canonical()], now=NOW)
        assert r.trust_current is False
        assert x.id in [e.claim.id for e in (await r.leaderboard(task_id)).verified]
        assert r.trust_current
    finally:
        await r.close()
