"""Ingest: idempotency, per-message reports, rejected items never stored, one transaction per batch.

Run: .venv/bin/python -m pytest tests/store/test_store_ingest.py
"""
from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from store import Replica, StoreError
from store.schema import LATEST_VERSION
from tests.store.test_store_factory import NOW, SWARM, claim, key, task, vote, tid

ME = key(0)


async def open_replica(path, **kw):
    return await Replica.open(path, swarm=SWARM, self_key=ME.pubkey, **kw)


def sample():
    t = task(ME)
    c1 = claim(key(1), tid(t), "1.200000", at=NOW - 400)
    c2 = claim(key(2), tid(t), "1.100000", at=NOW - 300)
    return [t, c1, c2, vote(key(3), c1.id, at=NOW - 200), vote(key(3), c2.id, at=NOW - 100)]


async def test_same_batch_twice_is_idempotent(tmp_path):
    msgs = sample()
    r = await open_replica(tmp_path / "db.sqlite3")
    first = await r.ingest([m.canonical() for m in msgs], now=NOW)
    assert [e.id for e in first.accepted] == [m.id for m in msgs]
    assert first.duplicate == [] and first.rejected == []
    second = await r.ingest([m.canonical() for m in msgs], now=NOW)
    assert second.accepted == [] and sorted(second.duplicate) == sorted(m.id for m in msgs)
    assert await r.counts() == {"task": 1, "claim": 2, "vote": 2, "peer": 0}
    await r.close()


async def test_mixed_batch_accepts_new_reports_duplicates_and_rejects(tmp_path):
    msgs = sample()
    r = await open_replica(tmp_path / "db.sqlite3")
    await r.ingest([msgs[0].canonical()], now=NOW)
    tampered = msgs[2].to_dict() | {"sig": "00" * 64}
    other_swarm = json.loads(msgs[3].canonical()) | {"swarm": "elsewhere"}
    batch = [msgs[0].to_dict(), msgs[1].canonical().decode(), tampered, b"{not json", other_swarm,
             msgs[1].canonical(), msgs[4].canonical()]
    report = await r.ingest(batch, now=NOW)
    assert [e.id for e in report.accepted] == [msgs[1].id, msgs[4].id]
    assert sorted(report.duplicate) == sorted([msgs[0].id, msgs[1].id])  # stored before / twice in batch
    assert [i for i, _ in report.rejected] == [msgs[2].id, None, msgs[3].id]
    reasons = [reason for _, reason in report.rejected]
    assert reasons[0] == "invalid: bad signature" and reasons[2] == "invalid: wrong swarm"
    assert reasons[1].startswith("invalid: not JSON")
    assert all(reason.startswith("invalid: ") for _, reason in report.rejected)
    assert await r.has_ids([m.id for m in msgs]) == {msgs[0].id, msgs[1].id, msgs[4].id}
    assert await r.get(msgs[2].id) is None
    await r.close()


async def test_future_and_unknown_kind_rejected_with_reason(tmp_path):
    r = await open_replica(tmp_path / "db.sqlite3")
    late = task(ME, at=NOW + 3600)
    report = await r.ingest([late.canonical()], now=NOW)
    assert report.rejected == [(late.id, "invalid: from the future")]
    assert await r.counts() == {"task": 0, "claim": 0, "vote": 0, "peer": 0}
    await r.close()


async def test_stored_bytes_are_canonical_and_survive_reopen(tmp_path):
    msgs = sample()
    path = tmp_path / "db.sqlite3"
    r = await open_replica(path)
    # Raw input must be exactly canonical (protocol.decode); a parsed dict in any key order is
    # stored as its canonical bytes.
    loose = json.dumps(json.loads(msgs[1].canonical()), indent=1).encode()
    assert (await r.ingest([loose], now=NOW)).rejected == [(msgs[1].id, "invalid: not canonical")]
    shuffled = dict(reversed(list(json.loads(msgs[1].canonical()).items())))
    assert [e.id for e in (await r.ingest([shuffled], now=NOW)).accepted] == [msgs[1].id]
    await r.close()
    r = await open_replica(path)
    assert await r.get_raw(msgs[1].id) == msgs[1].canonical()
    assert await r.get(msgs[1].id) == msgs[1]
    await r.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == LATEST_VERSION


async def test_io_error_mid_batch_leaves_nothing(tmp_path):
    """A failure inside the write transaction rolls the whole batch back."""
    msgs = sample()
    path = tmp_path / "db.sqlite3"
    r = await open_replica(path)
    with sqlite3.connect(path) as db:  # a trigger stands in for a disk error on the 3rd row
        db.execute("CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.kind = 'vote' "
                   "BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END")
    with pytest.raises(sqlite3.DatabaseError):
        await r.ingest([m.canonical() for m in msgs], now=NOW)
    assert await r.counts() == {"task": 0, "claim": 0, "vote": 0, "peer": 0}
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER boom")
    report = await r.ingest([m.canonical() for m in msgs], now=NOW)
    assert len(report.accepted) == len(msgs)
    await r.close()


async def test_open_refuses_bad_file_and_newer_schema(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open replica"):
        await open_replica(junk)
    path = tmp_path / "db.sqlite3"
    await (await open_replica(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    with pytest.raises(StoreError, match="newer"):
        await open_replica(path)
    with pytest.raises(StoreError, match="self_key"):
        await Replica.open(path, swarm=SWARM, self_key="nope")


MSGS = sample()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(len(MSGS))), split=st.integers(0, len(MSGS)), dup=st.integers(0, len(MSGS) - 1))
async def test_order_and_batching_do_not_change_the_final_set(tmp_path_factory, order, split, dup):
    items = [MSGS[i].canonical() for i in order] + [MSGS[dup].canonical()]
    r = await open_replica(tmp_path_factory.mktemp("h") / "db.sqlite3")
    a = await r.ingest(items[:split], now=NOW)
    b = await r.ingest(items[split:], now=NOW)
    assert len(a.accepted) + len(b.accepted) == len(MSGS)
    assert len(a.duplicate) + len(b.duplicate) == 1
    assert await r.items() == sorted((m.created_at, m.id) for m in MSGS)
    assert await r.trust() == {ME.pubkey: 1.0}
    await r.close()


def test_quick_id_finds_the_envelope_id_not_one_in_the_body():
    from store.ingest import quick_id
    tricky = claim(key(1), "cd" * 32, "1.000000", note=',"id":"' + "e" * 64 + '"')
    assert quick_id(tricky.canonical()) == tricky.id
    assert quick_id(tricky.canonical().decode()) == tricky.id
    assert quick_id(tricky.to_dict()) == tricky.id
    assert quick_id(b"garbage") is None and quick_id({"id": "xyz"}) is None


async def test_item_naming_a_stored_id_is_a_duplicate_and_changes_nothing(tmp_path):
    msgs = sample()
    r = await open_replica(tmp_path / "db.sqlite3")
    await r.ingest([msgs[1].canonical()], now=NOW)
    forged = msgs[1].canonical().replace(b"1.200000", b"0.200000")  # same id, other content
    report = await r.ingest([forged, msgs[1].canonical()], now=NOW)
    assert report.duplicate == [msgs[1].id, msgs[1].id] and report.accepted == []
    assert await r.get_raw(msgs[1].id) == msgs[1].canonical()
    await r.close()


async def test_rows_stored_after_the_precheck_are_reported_duplicate(tmp_path, monkeypatch):
    """A message stored by another writer between has_ids and the write transaction: the
    unchecked insert stores fewer rows than it was given, so the batch is redone with a check."""
    msgs = sample()
    r = await open_replica(tmp_path / "db.sqlite3")
    await r.ingest([m.canonical() for m in msgs[:2]], now=NOW)

    async def nothing_stored(ids):
        return set()

    monkeypatch.setattr(r, "has_ids", nothing_stored)
    report = await r.ingest([m.canonical() for m in msgs], now=NOW)
    assert report.duplicate == [msgs[0].id, msgs[1].id]
    assert [e.id for e in report.accepted] == [m.id for m in msgs[2:]]
    assert await r.counts() == {"task": 1, "claim": 2, "vote": 2, "peer": 0}
    await r.close()


async def test_concurrent_ingests_of_one_batch_store_each_message_once(tmp_path):
    msgs = sample()
    r = await open_replica(tmp_path / "db.sqlite3")
    a, b = await asyncio.gather(*(r.ingest([m.canonical() for m in msgs], now=NOW) for _ in range(2)))
    assert sorted(e.id for e in a.accepted + b.accepted) == sorted(m.id for m in msgs)
    assert sorted(a.duplicate + b.duplicate) == sorted(m.id for m in msgs)
    assert await r.counts() == {"task": 1, "claim": 2, "vote": 2, "peer": 0}
    await r.close()


def test_decoding_leaves_the_garbage_collector_as_it_found_it():
    import gc
    from store.ingest import prepare
    items = [m.canonical() for m in sample()] + [b"{not json"]
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            batch = prepare(items, swarm=SWARM, now=NOW)
            assert len(batch.rows) == 5 and len(batch.rejected) == 1
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_big_pause_promotes_its_objects_and_cyclic_garbage_is_still_collected(monkeypatch):
    """store.ingest.gc_paused: past GC_PROMOTE_AT new containers, the young generation goes to the
    oldest unexamined (nothing stays frozen), and past GC_FULL_AFTER promoted objects a full
    collection runs at the pause's end, so a cycle made during pauses is freed, not kept."""
    import gc
    import weakref

    from store import ingest

    class Node:
        pass

    was = gc.isenabled()
    gc.enable()
    try:
        gc.collect()
        monkeypatch.setattr(ingest, "_gc_promoted", 0)
        with ingest.gc_paused():
            assert not gc.isenabled()
            kept = [[i] for i in range(ingest.GC_PROMOTE_AT + 100)]  # alive at the end, like a batch
        assert gc.isenabled() and gc.get_freeze_count() == 0
        assert gc.get_count()[0] < ingest.GC_PROMOTE_AT  # promoted, not left to the youngest generation
        assert ingest._gc_promoted >= len(kept)

        monkeypatch.setattr(ingest, "GC_FULL_AFTER", 3 * (ingest.GC_PROMOTE_AT + 100))
        cycles = []
        while ingest._gc_promoted:  # until the bound forces a full collection
            with ingest.gc_paused():
                a, b = Node(), Node()
                a.other, b.other = b, a  # garbage only a collection frees
                cycles.append(weakref.ref(a))
                del a, b
                filler = [[i] for i in range(ingest.GC_PROMOTE_AT + 100)]
            del filler
            assert len(cycles) < 10
        assert len(cycles) > 1 and all(ref() is None for ref in cycles)
        assert gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        (gc.enable if was else gc.disable)()
