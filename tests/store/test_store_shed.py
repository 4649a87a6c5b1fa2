"""What a replica may forget under a disk budget (issue 17 item 1; store/shed.py, store/replica.py
``delete``, ``tombstones``): never a message of a key this node relies on, a claim such a key voted on
(verified or not), its ancestors or its task; the newcomers' part oldest first, negative results
first, and after a TTL when nothing trusted touched it. What was shed is not taken back by ingest
until a trusted vote asks for it. Real replicas on real SQLite files.

    .venv/bin/python -m pytest tests/store/test_store_shed.py -q
"""
from __future__ import annotations

from store import Replica, StoreSettings
from store.shed import ROW_OVERHEAD, Row, Tombstones, plan
from tests.store.test_store_factory import NOW, SWARM, claim, key, peer, task, tid, vote

ME, P, A, B, C = key(0), key(1), key(2), key(3), key(4)  # self, pre-trusted, three strangers


async def _open(tmp_path, **kw) -> Replica:
    return await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey, trusted=[P.pubkey],
                              settings=StoreSettings(pending_max_messages=100, **kw))


async def _corpus(r: Replica):
    """A task of this node's; a stranger's claim P voted on (and its parent, unvoted), one this node
    voted on (verified), strangers' junk with and without votes, an expired peer record."""
    t = task(ME)
    parent = claim(A, tid(t), "0.990000", at=NOW - 900, note="parent")
    kept = claim(A, tid(t), "0.980000", parent=parent.id, at=NOW - 800, note="kept by P's vote")
    verified = claim(B, tid(t), "0.970000", at=NOW - 700, note="verified")
    junk_old = claim(C, tid(t), "0.960000", at=NOW - 600, note="junk old")
    junk_worse = claim(C, tid(t), "1.100000", at=NOW - 550, outcome="worse", note="junk negative")
    junk_new = claim(B, tid(t), "0.950000", at=NOW - 500, note="junk new")
    p_vote = vote(P, kept.id, "failed", None, at=NOW - 400)
    my_vote = vote(ME, verified.id, at=NOW - 390)
    stranger_on_kept = vote(C, kept.id, at=NOW - 380)
    stranger_on_junk = vote(A, junk_old.id, at=NOW - 370)
    expired = peer(C, 1, expires_at=NOW - 1)
    everything = [t, parent, kept, verified, junk_old, junk_worse, junk_new, p_vote, my_vote, stranger_on_kept,
                  stranger_on_junk, expired]
    for n, env in enumerate(everything):  # one at a time: receipt order is the list's
        report = await r.ingest([env.canonical()], now=NOW)
        assert report.accepted, report.rejected
        await r._writer.execute("UPDATE messages SET received_at = ? WHERE id = ?", (NOW - 1000 + n, env.id))
    return dict(t=t, parent=parent, kept=kept, verified=verified, junk_old=junk_old, junk_worse=junk_worse,
                junk_new=junk_new, p_vote=p_vote, my_vote=my_vote, stranger_on_kept=stranger_on_kept,
                stranger_on_junk=stranger_on_junk, expired=expired)


def _trusted(r: Replica):
    return lambda k: r.relied_on(k)


async def test_everything_shed_in_order_never_what_the_node_relies_on(tmp_path):
    r = await _open(tmp_path)
    try:
        m = await _corpus(r)
        rows = [Row(*row) for row in await r.shed_rows()]
        assert len(rows) == len(m)
        # no target: the whole newcomers' part goes, in order
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=0)
        ids = {v.id: k for k, v in m.items()}
        order = [ids[i] for i in out.shed]
        assert order == ["expired",  # expired peer record: age, not space
                         "junk_worse",  # a negative result first ...
                         "junk_old", "stranger_on_junk",  # ... then the oldest received, with the votes on it
                         "junk_new",
                         "stranger_on_kept"]  # a stranger's vote on a kept claim last
        assert out.expired == 1 and out.newcomer_bytes == 0
        assert out.touched == {m["kept"].id, m["verified"].id}
        never = {"t", "parent", "kept", "verified", "p_vote", "my_vote"}
        assert not never & set(order) and out.kept == len(never)
        # a target: only as much as needed, oldest first after what expired
        size = {row.id: row.size + ROW_OVERHEAD for row in rows}
        newcomer = sum(size[m[k].id] for k in order[1:])
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=newcomer - 1)
        assert [ids[i] for i in out.shed] == ["expired", "junk_worse"]
        assert out.newcomer_bytes == newcomer - size[m["junk_worse"].id]
        assert out.author_bytes == {C.pubkey: size[m["junk_old"].id] + size[m["stranger_on_kept"].id],
                                    A.pubkey: size[m["stranger_on_junk"].id], B.pubkey: size[m["junk_new"].id]}
        # the whole replica over its budget: newcomers shed until enough is freed, the rest never
        total = sum(size.values())
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=10 ** 9, total_target=0)
        assert [ids[i] for i in out.shed] == order and out.total_bytes == total - out.shed_bytes
        # ... or only as much as brings it to its target, once over its limit
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=10 ** 9,
                   total_target=total - size[m["expired"].id] - 1, total_limit=total - size[m["expired"].id] - 1)
        assert [ids[i] for i in out.shed] == ["expired", "junk_worse"]
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=10 ** 9,
                   total_target=0, total_limit=total)  # not over its limit: nothing but what expired
        assert [ids[i] for i in out.shed] == ["expired"]
        # the TTL: untouched junk received before it goes without any budget pressure
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=1000 - 5, newcomer_target=10 ** 9)
        assert {ids[i] for i in out.shed} == {"expired", "junk_old", "stranger_on_junk"}
    finally:
        await r.close()


async def test_a_stranger_with_earned_trust_is_kept(tmp_path):
    r = await _open(tmp_path)
    try:
        m = await _corpus(r)
        rows = await r.shed_rows()
        out = plan(rows, lambda k: r.relied_on(k) or k == C.pubkey, ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=0)
        shed = set(out.shed)
        assert m["junk_old"].id not in shed and m["junk_worse"].id not in shed  # C's own claims
        assert m["junk_new"].id in shed
    finally:
        await r.close()


async def test_delete_tombstones_and_a_trusted_vote_lifts_one(tmp_path):
    r = await _open(tmp_path)
    try:
        m = await _corpus(r)
        before = await r.disk_usage()
        assert before["used"] > 0 and before["file"] >= before["used"]
        gone = [m["junk_old"].id, m["stranger_on_junk"].id, m["junk_new"].id]
        assert await r.delete(gone) == 3
        assert await r.has_ids(gone) == set() and all(i in r.tombstones for i in gone)
        # a push or fetch of a shed message is a duplicate: not stored again
        report = await r.ingest([m["junk_old"].canonical(), m["junk_new"].canonical()], now=NOW)
        assert report.accepted == [] and set(report.duplicate) == {m["junk_old"].id, m["junk_new"].id}
        assert await r.has_ids(gone) == set()
        # a stranger's vote for a shed claim waits, the claim stays shed
        report = await r.ingest([vote(A, m["junk_new"].id, at=NOW - 50).canonical()], now=NOW)
        assert m["junk_new"].id in r.tombstones
        # a vote of a pre-trusted key for a shed claim waits for it, and lifts its tombstone
        trusted_vote = vote(P, m["junk_old"].id, at=NOW - 40)
        report = await r.ingest([trusted_vote.canonical()], now=NOW)
        assert report.duplicate == [trusted_vote.id] and trusted_vote.id in r.pending
        assert m["junk_old"].id not in r.tombstones and r.tombstones.lifted == 1
        report = await r.ingest([m["junk_old"].canonical()], now=NOW)
        assert {e.id for e in report.accepted} == {m["junk_old"].id, trusted_vote.id}
    finally:
        await r.close()


async def test_admit_refuses_what_it_names_and_stores_the_rest(tmp_path):
    r = await _open(tmp_path)
    try:
        t = task(ME)
        a, b = claim(A, tid(t), "0.9", at=NOW - 10), claim(B, tid(t), "0.8", at=NOW - 9)
        seen = []

        async def admit(envs):
            seen.extend(e.id for e in envs)
            return {a.id: "refused: newcomer budget (test)"}
        report = await r.ingest([t.canonical(), a.canonical(), b.canonical()], now=NOW, admit=admit)
        assert seen == [t.id, a.id, b.id]
        assert {e.id for e in report.accepted} == {t.id, b.id}
        assert report.rejected == [(a.id, "refused: newcomer budget (test)")]
        assert await r.get(a.id) is None
    finally:
        await r.close()


def test_tombstones_are_bounded():
    t = Tombstones(capacity=3)
    t.add(["a", "b", "c", "d"])
    assert len(t) == 3 and "a" not in t and t.among(["b", "x", None]) == {"b"}
    assert t.lift("b") and not t.lift("b") and t.lifted == 1


async def test_the_plan_says_what_is_held_out_of_reconciliation(tmp_path):
    """Of the newcomers' part, what a trusted vote did not touch is held (node/newcomers.py: not offered
    to peers): a stranger's claim no trusted key voted on with the votes on it, a stranger's task no
    kept claim belongs to; not a kept claim's ancestor, nor a stranger's vote on a kept claim, nor a
    peer record; and nothing shed is also held."""
    r = await _open(tmp_path)
    try:
        m = await _corpus(r)
        other = task(C, name="other")  # a stranger's task no kept claim belongs to
        copy = task(C, at=NOW - 10)  # a stranger publishing the task this node published: kept, offered
        assert tid(copy) == tid(m["t"]) and copy.id != m["t"].id
        assert len((await r.ingest([other.canonical(), copy.canonical()], now=NOW)).accepted) == 2
        rows = [Row(*row) for row in await r.shed_rows()]
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=10 ** 9)
        assert out.shed == [m["expired"].id]
        t = tid(m["t"])
        assert out.held == {
            m["junk_old"].id: ("claim", None, t), m["junk_worse"].id: ("claim", None, t),
            m["junk_new"].id: ("claim", None, t), m["stranger_on_junk"].id: ("vote", m["junk_old"].id, None),
            other.id: ("task", tid(other), None)}
        assert out.offered_tasks == {tid(m["t"])}
        # ... and the copy is shed like junk under pressure: the trusted one holds the definition
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=0)
        assert copy.id in out.shed and m["t"].id not in out.shed
        out = plan(rows, _trusted(r), ME.pubkey, NOW, ttl_s=10 ** 9, newcomer_target=0)
        assert m["junk_old"].id in out.shed and out.held == {}
    finally:
        await r.close()

