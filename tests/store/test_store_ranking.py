"""Claim status and leaderboard, through a real replica file (docs/design.md, "Ranking and trust").

Run: .venv/bin/python -m pytest tests/store/test_store_ranking.py
"""
from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings, strategies as st

from store import Replica
from store.ranking import RankingSettings, weighted_median
from tests.store.test_store_factory import NOW, SWARM, claim, key, task, vote, tid

ME, OP, AUTHOR = key(0), key(1), key(2)


def source_of(task_env) -> str:
    """The source hash of a run of the task's own source: a baseline claim's (protocol/SPEC.md 5.9)."""
    return hashlib.sha256(task_env.body["source"].encode()).hexdigest()


async def replica(tmp_path, trusted=()):
    return await Replica.open(tmp_path / "db.sqlite3", swarm=SWARM, self_key=ME.pubkey, trusted=trusted)


async def put(r, *envs):
    report = await r.ingest([e.canonical() for e in envs], now=NOW)
    assert not report.rejected, report.rejected
    return report


async def test_sybil_votes_leave_fabricated_claim_pending_trusted_vote_verifies(tmp_path):
    r = await replica(tmp_path)
    t = task(ME)
    fake = claim(AUTHOR, tid(t), "0.100000")  # an implausible result
    sybils = [vote(key(1000 + i), fake.id, "reproduced", "0.100000") for i in range(500)]
    await put(r, t, fake, *sybils)
    st = await r.claim_status(fake.id)
    assert st.status == "pending" and st.support == 0.0 and st.votes == 500
    board = await r.leaderboard(tid(t))
    assert board.verified == [] and [e.claim.id for e in board.pending] == [fake.id]

    await put(r, vote(OP, fake.id, "reproduced", "0.100000"))
    assert (await r.claim_status(fake.id)).status == "pending"  # OP is not trusted yet
    await r.set_trusted(OP.pubkey, True)
    assert await r.trusted_keys() == [OP.pubkey]
    st = await r.claim_status(fake.id)
    assert st.status == "verified" and st.support >= 1.0 and st.reproduced_bpb == "0.100000"
    await r.close()

    r = await replica(tmp_path)  # the trusted key is persisted
    assert (await r.claim_status(fake.id)).status == "verified"
    await put(r, vote(ME, fake.id, "mismatch", "1.500000"))
    st = await r.claim_status(fake.id)
    assert st.status == "disputed" and st.own_vote == "mismatch"  # our own run decides
    # An operator-trusted key and this node measured it differently: charged to the claim (a
    # machine-dependent script), not to either; OP loses nothing for one disagreement.
    trust = await r.trust()
    assert trust[OP.pubkey] == 1.0
    assert (await r.leaderboard(tid(t))).disputed[0].claim.id == fake.id
    await r.close()


async def test_trusted_mismatches_dispute(tmp_path):
    r = await replica(tmp_path, trusted=[OP.pubkey])
    t = task(ME)
    c = claim(AUTHOR, tid(t), "1.000000")
    await put(r, t, c, vote(OP, c.id, "mismatch", "1.400000"))
    st = await r.claim_status(c.id)
    assert st.status == "disputed" and st.against == 1.0
    await r.close()


async def test_leaderboard_order_duplicates_and_own_measurement(tmp_path):
    r = await replica(tmp_path, trusted=[OP.pubkey])
    t = task(ME)
    src = hashlib.sha256(b"same source").hexdigest()
    a = claim(key(3), tid(t), "1.300000", at=NOW - 900)
    b = claim(key(4), tid(t), "1.100000", at=NOW - 800, source=src)
    copy = claim(key(5), tid(t), "1.050000", at=NOW - 700, source=src)  # later claim of b's source
    c = claim(key(6), tid(t), "1.200000", at=NOW - 600)
    pend = claim(key(7), tid(t), "0.900000", at=NOW - 500)
    crashed = claim(key(8), tid(t), "0", at=NOW - 400, outcome="crashed")
    mine = claim(ME, tid(t), "1.250000", at=NOW - 300)
    await put(r, t, a, b, copy, c, pend, crashed, mine,
              vote(OP, a.id, val="1.300000"), vote(OP, b.id, val="1.110000"), vote(OP, copy.id, val="1.050000"),
              vote(OP, c.id, val="1.500000"), vote(ME, c.id, val="1.190000"))
    board = await r.leaderboard(tid(t))
    assert [e.claim.id for e in board.verified] == [b.id, c.id, mine.id, a.id]
    assert [e.val_bpb for e in board.verified] == ["1.110000", "1.190000", "1.250000", "1.300000"]
    assert [e.claim.id for e in board.pending] == [pend.id] and board.disputed == []
    assert [(e.claim.id, e.duplicate_of) for e in board.duplicates] == [(copy.id, b.id)]
    assert await r.source_hashes(tid(t)) >= {src}

    # Verified is not better: with no fresh-seed reproduction and no baseline run nothing is shown
    # to beat its reference, so nothing is a seed (store/stats.py).
    assert await r.top_entries(tid(t), 3) == []
    assert {e.significance.state for e in board.verified} == {"not significant yet"}
    await r.close()


async def test_top_entries_measure_against_baseline_run(tmp_path):
    r = await replica(tmp_path)
    t = task(ME)
    base = claim(ME, tid(t), "1.400000", at=NOW - 900, patch="", source=source_of(t))
    child = claim(ME, tid(t), "1.300000", at=NOW - 800, parent=base.id)
    await put(r, t, base, child)
    assert await r.top_entries(tid(t), 5) == []  # our own runs are not samples: no estimate yet
    await r.set_trusted(OP.pubkey)
    await r.set_trusted(key(9).pubkey)
    await put(r, vote(OP, base.id, val="1.401000", fresh=True), vote(key(9), base.id, val="1.399000", fresh=True),
          vote(OP, child.id, val="1.301000", fresh=True), vote(key(9), child.id, val="1.299000", fresh=True))
    top = await r.top_entries(tid(t), 5)
    assert [e.claim.id for e in top] == [child.id] and abs(top[0].improvement - 0.1) < 1e-9
    assert top[0].estimate.n == 2 and top[0].significance.state == "significant"
    assert (await r.significance(base.id)).state == "baseline"
    await r.close()


def test_weighted_median():
    assert weighted_median([]) is None
    assert weighted_median([("1.0", 0.0), ("3.0", 0.0), ("2.0", 0.0)]) == "2.0"
    assert weighted_median([("1.0", 0.1), ("2.0", 0.1), ("5.0", 1.0)]) == "5.0"
    assert weighted_median([("1.0", 1.0), ("2.0", 1.0)]) == "1.0"
    assert RankingSettings().quorum == 1.0


def _evidence():
    t = task(ME)
    c1 = claim(key(3), tid(t), "1.200000", at=NOW - 900)
    c2 = claim(key(4), tid(t), "1.100000", at=NOW - 800)
    c3 = claim(key(5), tid(t), "1.000000", at=NOW - 700)
    return t, [t, c1, c2, c3, vote(ME, c1.id, val="1.210000", at=NOW - 600), vote(key(6), c1.id, at=NOW - 590),
               vote(key(6), c2.id, val="1.120000", at=NOW - 580), vote(key(7), c2.id, at=NOW - 570),
               vote(ME, c3.id, "mismatch", at=NOW - 560), vote(key(7), c3.id, at=NOW - 550),
               vote(OP, c2.id, val="1.100000", at=NOW - 540)]


EVIDENCE_TASK, EVIDENCE = _evidence()
# This node's own votes are received when published: after the others' here, so that every vote
# of another key could be independent of ours (store/trust.py). Among the others, order is free.
OTHERS = [m for m in EVIDENCE if m.author not in (ME.pubkey, OP.pubkey)]  # OP: operator-trusted, an evaluator too
EVIDENCE = OTHERS + [m for m in EVIDENCE if m.author in (ME.pubkey, OP.pubkey)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(len(OTHERS))), split=st.integers(0, len(EVIDENCE)))
async def test_ingest_order_does_not_change_trust_or_board(tmp_path_factory, order, split):
    async def view(items, cut):
        r = await Replica.open(tmp_path_factory.mktemp("o") / "db.sqlite3", swarm=SWARM, self_key=ME.pubkey,
                               trusted=[OP.pubkey])
        await r.ingest(items[:cut], now=NOW)
        await r.trust()  # warm the cache, so the second batch must invalidate it
        await r.ingest(items[cut:], now=NOW)
        board = await r.leaderboard(tid(EVIDENCE_TASK))
        out = (await r.trust(), [[(e.claim.id, e.val_bpb) for e in part]
                                 for part in (board.verified, board.pending, board.disputed)])
        await r.close()
        return out

    reference = await view([m.canonical() for m in EVIDENCE], len(EVIDENCE))
    trust, board = await view([OTHERS[i].canonical() for i in order] + [m.canonical() for m in EVIDENCE[len(OTHERS):]],
                              split)
    assert board == reference[1]
    assert trust.keys() == reference[0].keys()
    assert all(abs(trust[k] - reference[0][k]) < 1e-9 for k in trust)
    # key 5 wrote the claim we refuted; key 7 backed it, one disagreement: charged, not yet distrusted
    assert trust[key(5).pubkey] == 0.0 and trust[key(6).pubkey] > 0


async def test_over_budget_by_own_vote_or_trusted_quorum_is_never_ranked_nor_a_seed(tmp_path):
    r = await replica(tmp_path, trusted=[OP.pubkey])
    t = task(ME)
    base = claim(key(3), tid(t), "1.400000", at=NOW - 900, patch="", source=source_of(t))  # the baseline's run
    fair = claim(key(4), tid(t), "1.300000", at=NOW - 800)
    mine_over = claim(key(5), tid(t), "1.000000", at=NOW - 700)  # the best value, bought with compute
    op_over = claim(key(6), tid(t), "1.100000", at=NOW - 600)
    stranger_over = claim(key(7), tid(t), "1.200000", at=NOW - 500)
    await put(r, t, base, fair, mine_over, op_over, stranger_over,
              vote(OP, base.id, val="1.400000", fresh=True), vote(OP, fair.id, val="1.300000", fresh=True),
              vote(ME, mine_over.id, "over budget", "1.000000"),
              vote(OP, op_over.id, "over budget", "1.100000"),
              vote(key(8), stranger_over.id, "over budget", "1.200000"))  # nobody trusts key 8
    st = await r.claim_status(mine_over.id)
    assert st.status == "over budget" and st.own_vote == "over budget" and st.over == 1.0
    st = await r.claim_status(op_over.id)
    assert st.status == "over budget" and st.own_vote is None and st.over >= 1.0 and st.support == 0.0
    assert (await r.claim_status(stranger_over.id)).status == "pending"  # untrusted weight: no quorum

    board = await r.leaderboard(tid(t))
    assert [e.claim.id for e in board.verified] == [fair.id, base.id]
    assert [e.claim.id for e in board.over_budget] == [mine_over.id, op_over.id]  # by value, never ranked
    assert [e.status for e in board.over_budget] == ["over budget"] * 2 and board.over_budget[1].over >= 1.0
    assert [e.claim.id for e in board.pending] == [stranger_over.id] and board.disputed == []
    top = await r.top_entries(tid(t), 5)
    assert [e.claim.id for e in top] == [fair.id]  # the over budget claims improve most, and seed nothing

    # This node's own reproduction within the cap outweighs a trusted over budget vote ...
    await put(r, vote(ME, op_over.id, val="1.100000", at=NOW - 50))
    assert (await r.claim_status(op_over.id)).status == "verified"
    # ... and its own later over budget verdict outweighs everybody's reproductions.
    await put(r, vote(ME, fair.id, "over budget", "1.300000", at=NOW - 40))
    assert (await r.claim_status(fair.id)).status == "over budget"
    board = await r.leaderboard(tid(t))
    assert [e.claim.id for e in board.verified] == [op_over.id, base.id]
    assert [e.claim.id for e in board.over_budget] == [mine_over.id, fair.id]
    assert fair.id not in [e.claim.id for e in await r.top_entries(tid(t), 5)]
    await r.close()


async def test_over_budget_quorum_must_exceed_the_support(tmp_path):
    op2 = key(9)
    r = await replica(tmp_path, trusted=[OP.pubkey, op2.pubkey])
    t = task(ME)
    c = claim(AUTHOR, tid(t), "1.200000")
    await put(r, t, c, vote(OP, c.id, "over budget", "1.200000"), vote(op2, c.id, val="1.200000"))
    st = await r.claim_status(c.id)
    assert st.over == 1.0 and st.support == 1.0 and st.status == "verified"  # a tie is not over budget
    await r.close()
