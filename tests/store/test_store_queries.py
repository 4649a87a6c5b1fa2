"""Queries over a real replica file: reconciliation ranges, lineage, claims, votes, peers, export.

Run: .venv/bin/python -m pytest tests/store/test_store_queries.py
"""
from __future__ import annotations

import sqlite3

import pytest

from store import Replica, StoreError
from tests.store.test_store_factory import NOW, SWARM, claim, key, peer, task, vote, tid

ME = key(0)


@pytest.fixture
async def corpus(tmp_path):
    t1, t2 = task(ME, "one", at=NOW - 1000), task(ME, "two", at=NOW - 1000)
    root = claim(key(1), tid(t1), "1.300000", at=NOW - 900)
    mid = claim(key(2), tid(t1), "1.200000", parent=root.id, at=NOW - 800)
    leaf_a = claim(key(3), tid(t1), "1.100000", parent=mid.id, at=NOW - 700)
    leaf_b = claim(key(4), tid(t1), "1.150000", parent=mid.id, at=NOW - 700)
    other = claim(key(1), tid(t2), "2.000000", at=NOW - 600)
    votes = [vote(key(5), mid.id, at=NOW - 500), vote(key(6), mid.id, "mismatch", at=NOW - 400),
             vote(key(5), other.id, at=NOW - 300)]
    peers = [peer(key(1), 7001, NOW + 100, at=NOW - 50), peer(key(1), 7002, NOW + 100, at=NOW - 40),
             peer(key(2), 7003, NOW - 1, at=NOW - 30)]
    msgs = dict(t1=t1, t2=t2, root=root, mid=mid, leaf_a=leaf_a, leaf_b=leaf_b, other=other)
    r = await Replica.open(tmp_path / "db.sqlite3", swarm=SWARM, self_key=ME.pubkey)
    report = await r.ingest([m.canonical() for m in [*msgs.values(), *votes, *peers]], now=NOW)
    assert not report.rejected
    yield r, msgs, votes, peers
    await r.close()


async def test_items_ranges(corpus):
    r, msgs, votes, peers = corpus
    everything = sorted((m.created_at, m.id) for m in [*msgs.values(), *votes, *peers])
    assert await r.items() == everything
    mid = everything[5]
    assert await r.items(lo=mid) == everything[5:]
    assert await r.items(hi=mid) == everything[:5]
    assert await r.items(lo=everything[2], hi=everything[7]) == everything[2:7]
    assert await r.items(lo=NOW - 700, hi=NOW - 699) == sorted((m.created_at, m.id) for m in
                                                                (msgs["leaf_a"], msgs["leaf_b"]))
    assert await r.items(lo=mid, hi=mid) == []


async def test_range_query_uses_the_time_index(corpus):
    r = corpus[0]
    with sqlite3.connect(r.path) as db:
        plan = db.execute("EXPLAIN QUERY PLAN SELECT created_at, id FROM messages "
                          "WHERE (created_at, id) >= (?, ?) AND (created_at, id) < (?, ?) ORDER BY created_at, id",
                          (0, "", 1, "")).fetchall()
    assert "messages_by_time" in " ".join(str(p) for p in plan)


async def test_claims_votes_lineage_tasks(corpus):
    r, m, votes, _ = corpus
    assert [c.id for c in await r.claims(tid(m["t1"]))] == [
        m["root"].id, m["mid"].id, *sorted([m["leaf_a"].id, m["leaf_b"].id])]
    assert [v.id for v in await r.votes(m["mid"].id)] == [votes[0].id, votes[1].id]
    assert await r.votes(m["leaf_a"].id) == []
    lin = await r.lineage(m["leaf_a"].id)
    assert [e.id for e in lin["ancestors"]] == [m["root"].id, m["mid"].id] and lin["children"] == []
    lin = await r.lineage(m["mid"].id)
    assert [e.id for e in lin["ancestors"]] == [m["root"].id]
    assert {e.id for e in lin["children"]} == {m["leaf_a"].id, m["leaf_b"].id}
    assert {e.id for e in await r.tasks()} == {m["t1"].id, m["t2"].id}
    assert await r.counts() == {"task": 2, "claim": 5, "vote": 3, "peer": 3}
    assert await r.get_many_raw([m["mid"].id, "f" * 64, m["root"].id]) == [m["mid"].canonical(),
                                                                           m["root"].canonical()]


async def test_task_republished_by_another_author_is_one_task(corpus):
    r, m, _, _ = corpus
    again = task(key(9), "one", at=NOW - 999)
    assert (await r.ingest([again.canonical()], now=NOW)).accepted == [again]
    assert len(await r.tasks()) == 2


async def test_peer_records_newest_unexpired(corpus):
    r, _, _, peers = corpus
    got = await r.peer_records(now=NOW)
    assert [p.id for p in got] == [peers[1].id]  # key(2)'s record has expired
    assert await r.peer_records(now=NOW + 1000) == []


async def test_export_all_and_per_task(corpus, tmp_path):
    r, m, votes, peers = corpus
    everything = [raw async for raw in r.export(page=4)]
    assert len(everything) == 13 and len(set(everything)) == 13
    per_task = [raw async for raw in r.export(tid(m["t1"]), page=2)]
    ids = {m[n].id for n in ("t1", "root", "mid", "leaf_a", "leaf_b")} | {votes[0].id, votes[1].id}
    assert len(per_task) == len(ids)
    # An export imports into a fresh replica unchanged.
    other = await Replica.open(tmp_path / "copy.sqlite3", swarm=SWARM, self_key=key(1).pubkey)
    report = await other.ingest(per_task, now=NOW)
    assert {e.id for e in report.accepted} == ids
    await other.close()


async def test_closed_replica_raises_named_error(tmp_path):
    r = await Replica.open(tmp_path / "db.sqlite3", swarm=SWARM, self_key=ME.pubkey)
    await r.close()
    with pytest.raises(StoreError, match="closed"):
        await r.ingest([task(ME).canonical()], now=NOW)


async def test_memory_replica_works(tmp_path):
    r = await Replica.open(":memory:", swarm=SWARM, self_key=ME.pubkey)
    t = task(ME)
    await r.ingest([t.canonical()], now=NOW)
    assert await r.get(t.id) == t and await r.has_ids([t.id, "0" * 64]) == {t.id}
    await r.close()
