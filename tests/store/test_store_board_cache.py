"""The replica keeps each task's computed statuses and board until something is stored: a polling
dashboard recomputes nothing in between, and every stored claim, vote, trust change or task shows at
once. Run: .venv/bin/python -m pytest tests/store/test_store_board_cache.py"""
from __future__ import annotations

import hashlib

from protocol import Identity
from store import Replica
from tests.store.test_store_factory import NOW, SWARM, claim, task, tid, vote


def ident(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"board-cache-{name}".encode()).digest())


ME, A, B = ident("me"), ident("a"), ident("b")


class Counting:
    """Counts the replica's reads of vote rows: the work a board costs."""

    def __init__(self, replica: Replica):
        self.reads, self.inner = 0, replica._fetchall

    async def __call__(self, sql, params=()):
        if "kind = 'vote'" in sql:
            self.reads += 1
        return await self.inner(sql, params)


async def test_the_board_is_kept_until_something_is_stored(tmp_path):
    r = await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey)
    try:
        t = task(ME)
        x = claim(A, tid(t), "0.970000", at=NOW - 900)
        await r.ingest([x.canonical()], now=NOW)
        before_task = await r.leaderboard(tid(t))
        assert [e.claim.id for e in before_task.pending] == [x.id]
        await r.ingest([t.canonical()], now=NOW)  # a task bumps no generation: the board must see it anyway
        counting = r._fetchall = Counting(r)
        board = await r.leaderboard(tid(t))
        assert [e.claim.id for e in board.pending] == [x.id] and counting.reads > 0
        reads = counting.reads
        for _ in range(5):
            assert await r.leaderboard(tid(t)) is board
            await r.top_entries(tid(t), 3)
            await r.significance(x.id)
        assert counting.reads == reads  # nothing stored: nothing recomputed

        await r.ingest([vote(ME, x.id, val="0.970200", fresh=True).canonical()], now=NOW)
        board = await r.leaderboard(tid(t))
        assert [e.claim.id for e in board.verified] == [x.id] and counting.reads > reads
        assert board.verified[0].estimate is not None  # the task's noise was there: it arrived before

        y = claim(B, tid(t), "0.960000", at=NOW - 800)
        await r.ingest([y.canonical()], now=NOW)
        assert {e.claim.id for e in (await r.leaderboard(tid(t))).pending} == {y.id}
        await r.set_trusted(B.pubkey)  # a trust change is seen as well
        await r.ingest([vote(B, x.id, "mismatch", None).canonical()], now=NOW)
        st = await r.claim_status(x.id)
        assert st.status == "verified" and st.against == 1.0  # our own run decides; B's weight shows
        verified = {e.claim.id: e for e in (await r.leaderboard(tid(t))).verified}
        assert verified[x.id].against == 1.0 and y.id in verified  # a pre-trusted author's claim: its run
    finally:
        await r.close()
