"""Votes for unknown claims and claims with a missing parent wait in a bounded pending set (issue 17
item 2; store/pending.py, store/replica.py ``ingest``): not stored, reported with the duplicates (so a
fetching peer is not blamed, and nothing is relayed), stored as soon as what they wait for is; the set
is bounded in count and bytes, the oldest forgotten first. Real replicas on real SQLite files.

    .venv/bin/python -m pytest tests/store/test_store_pending.py -q
"""
from __future__ import annotations

import os

from store import Replica, StoreSettings
from store.pending import PendingSet
from tests.store.test_store_factory import NOW, SWARM, claim, key, task, tid, vote

ME, A, B = key(0), key(1), key(2)


async def _open(tmp_path, max_messages: int = 100, max_bytes: int = 32 * 1024 * 1024) -> Replica:
    return await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey,
                              settings=StoreSettings(pending_max_messages=max_messages, pending_max_bytes=max_bytes))


async def test_a_vote_waits_for_its_claim(tmp_path):
    r = await _open(tmp_path)
    try:
        t = task(ME)
        x = claim(A, tid(t), "0.970000")
        v = vote(B, x.id)
        report = await r.ingest([t.canonical(), v.canonical()], now=NOW)
        assert [e.id for e in report.accepted] == [t.id] and report.duplicate == [v.id]
        assert await r.get(v.id) is None and v.id in r.pending and (await r.counts())["vote"] == 0
        # the claim arrives: the vote is stored right after it, in the same ingest's report
        report = await r.ingest([x.canonical()], now=NOW)
        assert [e.id for e in report.accepted] == [x.id, v.id]
        assert await r.get(v.id) is not None and v.id not in r.pending and len(r.pending) == 0
        assert [e.id for e in await r.votes(x.id)] == [v.id]
    finally:
        await r.close()


async def test_a_chain_waits_for_its_root_in_any_order(tmp_path):
    r = await _open(tmp_path)
    try:
        t = task(ME)
        await r.ingest([t.canonical()], now=NOW)
        c1 = claim(A, tid(t), "0.970000", at=NOW - 500)
        c2 = claim(A, tid(t), "0.960000", parent=c1.id, at=NOW - 400)
        c3 = claim(A, tid(t), "0.950000", parent=c2.id, at=NOW - 300)
        v3 = vote(B, c3.id)
        # the child, its child and a vote first (c2 and c3 in one batch: c3 waits for a held c2)
        report = await r.ingest([c3.canonical(), c2.canonical(), v3.canonical()], now=NOW)
        assert report.accepted == [] and set(report.duplicate) == {c2.id, c3.id, v3.id}
        assert (await r.counts())["claim"] == 0
        report = await r.ingest([c1.canonical()], now=NOW)
        assert {e.id for e in report.accepted} == {c1.id, c2.id, c3.id, v3.id}
        assert (await r.counts())["claim"] == 3 and len(r.pending) == 0
        # a vote whose claim is in the same batch is stored at once
        v1 = vote(B, c1.id)
        c4 = claim(B, tid(t), "0.940000", at=NOW - 200)
        report = await r.ingest([vote(A, c4.id).canonical(), c4.canonical(), v1.canonical()], now=NOW)
        assert len(report.accepted) == 3 and report.duplicate == []
    finally:
        await r.close()


async def test_a_flood_of_votes_for_claims_that_do_not_exist_stays_in_the_bound(tmp_path):
    (tmp_path / "empty").mkdir()
    empty = await _open(tmp_path / "empty")
    await empty.close()
    before = os.path.getsize(tmp_path / "empty" / "r.sqlite3")  # an empty replica, its schema on disk
    r = await _open(tmp_path, max_messages=500, max_bytes=200_000)
    try:
        votes = [vote(key(10 + i % 50), os.urandom(32).hex(), at=NOW - i) for i in range(2000)]
        for i in range(0, len(votes), 500):
            report = await r.ingest([v.canonical() for v in votes[i:i + 500]], now=NOW)
            assert report.accepted == [] and len(report.duplicate) == 500
            assert len(r.pending) <= 500 and r.pending.bytes <= 200_000
        assert (await r.counts())["vote"] == 0
        assert r.pending.stats.held == 2000 and r.pending.stats.forgotten == 2000 - len(r.pending)
        assert votes[-1].id in r.pending and votes[0].id not in r.pending  # the oldest went first
        await r.close()
        assert os.path.getsize(tmp_path / "r.sqlite3") <= before + 64 * 1024  # nothing of the flood on disk
        r = await _open(tmp_path)
        assert len(r.pending) == 0 and (await r.counts())["vote"] == 0  # kept in memory only
    finally:
        await r.close()


async def test_without_a_bound_the_library_stores_at_once(tmp_path):
    r = await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey)
    try:
        v = vote(B, "ab" * 32)
        report = await r.ingest([v.canonical()], now=NOW)
        assert [e.id for e in report.accepted] == [v.id] and r.pending is None
    finally:
        await r.close()


def test_pending_set_bounds():
    p = PendingSet(max_messages=3, max_bytes=100)
    for i in range(5):
        p.hold(f"m{i}", "need", b"x" * 10)
    assert len(p) == 3 and p.bytes == 30 and "m0" not in p and "m4" in p
    p.hold("big", "other", b"y" * 101)  # bigger than the whole bound: never held
    assert "big" not in p
    p.hold("m5", "other", b"z" * 90)  # pushes out by bytes
    assert p.bytes <= 100 and "m5" in p
    waiting = len(p) - 1  # all but m5 wait for "need"
    assert p.release(["need"]) == [b"x" * 10] * waiting and p.release(["other"]) == [b"z" * 90]
    assert len(p) == 0 and p.bytes == 0
