"""Trust kept up to date incrementally (store/trust.py TrustState) equals a full recompute
(compute_trust) after every batch: exactly for distrust, the pre-trusted set and split claims, within
the walk's tolerance for weights and voting power. Random sequences from hypothesis, biased towards
the adversarial cases: copied values, reruns that flip a verdict, claims arriving after their votes,
votes on claims never seen, deletions (a vote whose voter's earlier vote counts again, the newest
vote, a claim), voters charged and then forgiven as the decay window moves, and an operator-trusted
key that this node's own run distrusts (the pre-trusted set changes).

    .venv/bin/python -m pytest tests/store/test_store_trust_incremental.py -q
"""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings, strategies as st

from store.trust import TrustSettings, TrustState, VoteFact, compute_trust

ME, OP = "me", "op"
KEYS = [ME, OP, "a", "b", "c", "d", "e"]
CLAIMS = [f"c{i}" for i in range(7)]  # c6 never arrives as a claim: votes for an unknown claim
VALUES = ["1.000000", "0.990000", "0.980000", None]
VERDICTS = ["reproduced", "reproduced", "mismatch", "failed", "refused"]
SETTINGS = TrustSettings(decay_s=100)  # a window the generated times cross
# Warm and cold walks each stop within 4 x tolerance (L1) of the fixed point; a weight is a mass over
# this node's own mass (at least restart / |pre-trusted| = 0.1 here): 8e-10 / 0.1, with room.
WEIGHT_TOL = 1e-7


def check(state: TrustState, trusted: list[str], claims: list, votes: list) -> None:
    authors = {cid: author for cid, author, _ in claims}
    values = {cid: value for cid, _, value in claims}
    full = compute_trust(ME, trusted, authors, votes, SETTINGS, values)
    inc = state.view()
    assert inc.distrusted == full.distrusted
    assert inc.pretrusted == full.pretrusted
    assert inc.split == full.split
    assert set(inc.weights) == set(full.weights)
    for key, w in full.weights.items():
        assert abs(inc.weights[key] - w) <= WEIGHT_TOL, (key, inc.weights[key], w)
    assert set(inc.power) == set(full.power)
    for key, w in full.power.items():
        assert abs(inc.power[key] - w) <= 1e-12, (key, inc.power[key], w)


@st.composite
def histories(draw):
    """A receipt-ordered list of messages and deletions, cut into batches."""
    n = draw(st.integers(1, 60))
    msgs = []
    claimed = set()
    for i in range(n):
        if msgs and draw(st.integers(0, 7)) == 0:  # a deletion (a replica shedding) of an earlier message
            target = draw(st.sampled_from([m for m in msgs if m[0] != "remove"]))
            msgs.append(("remove", target[1][0] if target[0] == "claim" else target[1].id))
            continue
        if draw(st.integers(0, 4)) == 0:
            cid = draw(st.sampled_from(CLAIMS[:-1]))
            if cid in claimed:
                continue
            claimed.add(cid)
            msgs.append(("claim", (cid, draw(st.sampled_from(KEYS)), draw(st.sampled_from(VALUES)))))
            continue
        voter = draw(st.sampled_from(KEYS))
        claim = draw(st.sampled_from(CLAIMS))
        copy_of = [m[1] for m in msgs if m[0] == "vote" and m[1].claim == claim]
        value = (draw(st.sampled_from(copy_of)).val_bpb if copy_of and draw(st.booleans())
                 else draw(st.sampled_from(VALUES)))
        msgs.append(("vote", VoteFact(
            id=f"v{i:03d}", voter=voter, claim=claim, verdict=draw(st.sampled_from(VERDICTS)), val_bpb=value,
            created_at=draw(st.sampled_from([0, 5, 50, 99, 101, 150, 230, 400])), fresh=draw(st.booleans()),
            seq=draw(st.sampled_from([0, i + 1, i + 1, i + 1])))))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(msgs)), max_size=6))) | {len(msgs)})
    return msgs, cuts


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.sampled_from([[], [OP]]))
def test_incremental_trust_equals_a_full_recompute_after_every_batch(history, trusted):
    msgs, cuts = history
    state = TrustState(ME, trusted, SETTINGS)
    claims, votes, start = [], [], 0
    for cut in cuts:
        batch = msgs[start:cut]
        start = cut
        new_claims = [m[1] for m in batch if m[0] == "claim"]
        new_votes = [m[1] for m in batch if m[0] == "vote"]
        removed = {m[1] for m in batch if m[0] == "remove"}
        state.add(new_claims, new_votes)
        state.remove(removed)  # as the replica does: what this batch read, then what was deleted
        claims = [c for c in claims + new_claims if c[0] not in removed]
        votes = [v for v in votes + new_votes if v.id not in removed]
        check(state, trusted, claims, votes)


def _adversarial(rng: random.Random) -> tuple[list, list]:
    """A larger scripted history: honest peers whose claims this node and OP reproduce, a farm copying
    values and voting before and after the evaluators, a voter that contradicts this node's runs on
    two authors' claims (distrusted) and is forgiven when newer votes move the window past them, and
    OP (operator-trusted) whose claims miss this node's fresh-seed runs twice (OP distrusted, the
    pre-trusted set shrinks) and later reruns that agree."""
    claims, votes = [], []
    seq = 0

    def vote(voter, claim, verdict, value, at, fresh=True):
        nonlocal seq
        seq += 1
        votes.append(VoteFact(f"x{seq:05d}", voter, claim, verdict, value, at, fresh, None, seq))

    for i in range(30):
        author = rng.choice(["h1", "h2", OP])
        cid = f"k{i}"
        claims.append((cid, author, f"0.{900 + i}000"))
        for f in range(rng.randrange(0, 6)):
            vote(f"farm{f}", cid, "reproduced", f"0.{900 + i}000" if rng.random() < 0.5 else f"0.{900 + i}1{f}", 10 + i)
        vote("h1" if author != "h1" else "h2", cid, "reproduced", f"0.{900 + i}5", 10 + i)
        vote(ME, cid, rng.choice(["reproduced", "reproduced", "mismatch"]), f"0.{900 + i}7", 20 + i,
             fresh=rng.random() < 0.5)
        vote(OP, cid, "reproduced", f"0.{900 + i}8", 20 + i)
        vote("liar", cid, "mismatch", "9.0", 30 + i, fresh=False)
        for f in range(rng.randrange(0, 4)):
            vote(f"farm{f}", cid, "reproduced", f"0.{900 + i}7", 40 + i)  # ME's value, copied after it
    claims += [("op1", OP, "0.5"), ("op2", OP, "0.6")]
    vote(ME, "op1", "mismatch", "0.9", 200)  # OP's claims miss this node's fresh-seed runs, twice:
    vote(ME, "op2", "mismatch", "0.9", 200)  # more than chance explains, OP is distrusted
    for f in range(5):  # news for a few batches (at most 4 messages each, below)
        vote(f"h{f}", f"k{f}", "reproduced", "0.9", 210)
    vote(ME, "op1", "reproduced", "0.5", 250)  # reruns: this node now agrees with OP
    vote(ME, "op2", "reproduced", "0.6", 250)
    vote("late", "k0", "reproduced", "0.9", 500)  # the window moves past the liar's votes
    return claims, votes


def test_incremental_trust_on_a_scripted_adversarial_history():
    rng = random.Random(17)
    claims, votes = _adversarial(rng)
    # votes in receipt order, each claim anywhere among them (before or after its votes)
    keyed = [(0 if c[0].startswith("op") else rng.uniform(0, len(votes)), "claim", c) for c in claims]
    keyed += [(v.seq, "vote", v) for v in votes]
    msgs = [(kind, m) for _, kind, m in sorted(keyed, key=lambda k: k[0])]
    for trusted in ([], [OP]):
        state = TrustState(ME, trusted, SETTINGS)
        seen_c, seen_v, seen_bad, seen_pre = [], [], set(), set()
        start = 0
        while start < len(msgs):
            batch = msgs[start:start + rng.randrange(1, 5)]
            start += len(batch)
            cs = [m[1] for m in batch if m[0] == "claim"]
            vs = [m[1] for m in batch if m[0] == "vote"]
            state.add(cs, vs)
            seen_c += cs
            seen_v += vs
            check(state, trusted, seen_c, seen_v)
            seen_bad |= state.view().distrusted
            seen_pre.add(state.view().pretrusted)
        assert "liar" in seen_bad and "liar" not in state.view().distrusted  # charged, then forgiven
        if trusted:
            assert len(seen_pre) > 1 and OP in state.view().pretrusted  # OP left the pre-trusted set, and came back


def test_warm_start_walks_fewer_iterations_to_the_same_vector():
    from store import trust as trust_module

    rng = random.Random(5)
    claims, votes = _adversarial(rng)
    state = TrustState(ME, [], SETTINGS)
    state.add(claims, votes[:-3])
    state.view()
    calls = []
    inner = trust_module.personalized_pagerank

    def counting(edges, restart_set, s, start=None):
        out = inner(edges, restart_set, TrustSettings(decay_s=s.decay_s, max_iterations=1), start)
        calls.append(out)
        return inner(edges, restart_set, s, start)

    state.add((), votes[-3:])
    trust_module.personalized_pagerank, saved = counting, inner
    try:
        warm = state.view()
    finally:
        trust_module.personalized_pagerank = saved
    cold = compute_trust(ME, [], {c: a for c, a, _ in claims}, votes, SETTINGS, {c: v for c, _, v in claims})
    assert all(abs(warm.weights[k] - cold.weights[k]) <= WEIGHT_TOL for k in cold.weights)
    # one step from the previous vector is already close to the fixed point; one from the restart vector is not
    one_warm = calls[0]
    one_cold = inner(*_edges_of(claims, votes), TrustSettings(decay_s=100, max_iterations=1))
    final = inner(*_edges_of(claims, votes), SETTINGS)
    dist = lambda x: sum(abs(x.get(k, 0.0) - final[k]) for k in final)  # noqa: E731
    assert dist(one_warm) < dist(one_cold) / 10


def _edges_of(claims, votes):
    from store.trust import distrusted_keys, evidence_edges, latest_votes

    authors = {c: a for c, a, _ in claims}
    current = list(latest_votes(votes).values())
    bad = distrusted_keys(ME, authors, current, (), SETTINGS)
    pre = frozenset({ME} - bad)
    return evidence_edges(pre, authors, current, bad, {c: v for c, _, v in claims}), pre


async def test_the_replica_keeps_its_trust_state_through_new_rows_and_deletions(tmp_path):
    """store/replica.py: each computation reads only what was stored since the last one and forgets
    what was deleted (store/shed.py) since; another pre-trusted set makes a new state from every row.
    Each view equals a full recompute from every row of the database."""
    from store import Replica
    from store.replica import VOTE_COLUMNS, _vote
    from tests.store.test_store_factory import NOW, SWARM, claim, key, task, tid, vote

    me, trusted, voters = key(0), key(1), [key(i) for i in range(2, 12)]
    r = await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=me.pubkey, trusted=[trusted.pubkey])

    async def full_equals_view() -> None:
        claims = await r._fetchall("SELECT id, author, claimed_bpb FROM messages WHERE kind = 'claim'")
        rows = await r._fetchall(f"SELECT {VOTE_COLUMNS} FROM messages WHERE kind = 'vote' ORDER BY rowid")
        full = compute_trust(me.pubkey, r.trusted_set(), {c[0]: c[1] for c in claims}, [_vote(x) for x in rows],
                             r.settings.trust, {c[0]: c[2] for c in claims})
        view = await r._trust_view()
        assert (view.distrusted, view.pretrusted, view.split) == (full.distrusted, full.pretrusted, full.split)
        assert set(view.weights) == set(full.weights) and set(view.power) == set(full.power)
        assert all(abs(view.weights[k] - w) <= WEIGHT_TOL for k, w in full.weights.items())
        assert all(abs(view.power[k] - w) <= 1e-12 for k, w in full.power.items())

    try:
        t = task(me)
        await r.ingest([t.canonical()], now=NOW)
        envs = []
        for c in range(12):
            x = claim(voters[c % 5], tid(t), f"0.9{c:02d}000", at=NOW - 900 + c, patch=f"+{c}\n")
            envs.append(x)
            envs += [vote(v, x.id, val=f"0.9{c:02d}{i}00", at=NOW - 500 + c) for i, v in enumerate(voters[5:])]
            envs.append(vote(me if c % 2 else trusted, x.id, val=f"0.9{c:02d}900", at=NOW - 400 + c))
        await r.ingest([e.canonical() for e in envs], now=NOW)
        await full_equals_view()
        state = r._trust_state
        assert state is not None and state.votes == sum(1 for e in envs if e.kind == "vote")
        # more votes: the same state takes only them
        x = claim(voters[0], tid(t), "0.890000", at=NOW - 300)
        extra = [x, *(vote(v, x.id, val=f"0.8901{i}0", at=NOW - 200) for i, v in enumerate(voters[5:])),
                 vote(me, x.id, "mismatch", val="0.950000", at=NOW - 100)]
        await r.ingest([e.canonical() for e in extra], now=NOW)
        await full_equals_view()
        assert r._trust_state is state and state.votes == sum(1 for e in envs + extra if e.kind == "vote")
        # deletions: the same state forgets them (votes, this node's own vote among them, and a claim)
        held = state.votes
        gone = [e.id for e in envs if e.kind == "vote" and e.author in (voters[5].pubkey, me.pubkey)]
        assert await r.delete(gone) == len(gone)
        await full_equals_view()
        assert r._trust_state is state and state.votes == held - len(gone)
        assert await r.delete([envs[0].id]) == 1
        await full_equals_view()
        assert r._trust_state is state and envs[0].id not in state._authors
        # the newest row goes and a new vote takes its rowid (SQLite: the highest + 1): still read
        (newest,) = await r._fetchall("SELECT id, rowid FROM messages ORDER BY rowid DESC LIMIT 1")
        assert await r.delete([newest[0]]) == 1
        late = vote(voters[7], x.id, val="0.890777", at=NOW - 50)
        await r.ingest([late.canonical()], now=NOW)
        assert (await r._fetchall("SELECT rowid FROM messages WHERE id = ?", (late.id,)))[0][0] == newest[1]
        await full_equals_view()
        assert r._trust_state is state and late.id in state._vote_at and newest[0] not in state._vote_at
        # another pre-trusted set: a new state too
        await r.set_trusted(voters[6].pubkey)
        await full_equals_view()
        assert r._trust_state is not state and voters[6].pubkey in r._trust_state.trusted
    finally:
        await r.close()


def test_deletions_restore_earlier_votes_the_evaluators_order_and_the_window():
    """Deletions a random history rarely hits: the newest vote going (the window's end moves back),
    and an evaluator's first vote going (its place among the evaluators, whose first one a fresh-seed
    verdict is compared with, is its next vote's)."""
    n = iter(range(1, 1000))

    def v(voter, claim, verdict, at, fresh=True, value=None):
        i = next(n)
        return VoteFact(f"w{i:03d}", voter, claim, verdict, value or f"0.{i:03d}", at, fresh, None, i)

    claims = [("c1", "x", "0.5"), ("c2", "y", "0.6"), ("c3", "x", "0.7"), ("c4", "y", "0.8")]
    # the window: a liar contradicts this node's same-seed runs on two authors' claims, a late vote
    # forgives it, and that late vote goes
    votes = [v(ME, "c3", "reproduced", 10, fresh=False), v(ME, "c4", "reproduced", 10, fresh=False),
             v("liar", "c3", "mismatch", 20, fresh=False), v("liar", "c4", "mismatch", 20, fresh=False)]
    late = v("late", "c3", "reproduced", 400)
    state = TrustState(ME, [OP], SETTINGS)
    state.add(claims, votes + [late])
    check(state, [OP], claims, votes + [late])
    assert "liar" not in state.view().distrusted
    state.remove([late.id])
    check(state, [OP], claims, votes)
    assert "liar" in state.view().distrusted
    # the order: ME's fresh "reproduced" first, OP's fresh "mismatch" second; V's fresh "mismatch" is
    # compared with ME's (two misses: distrusted) until ME's first vote on each claim goes and its
    # rerun, received after OP's, puts OP first (two agreements)
    first = [v(ME, c, "reproduced", 30) for c in ("c1", "c2")]
    ops = [v(OP, c, "mismatch", 31) for c in ("c1", "c2")]
    reruns = [v(ME, c, "reproduced", 25) for c in ("c1", "c2")]  # older: the first votes stay the latest
    vs = [v("V", c, "mismatch", 32) for c in ("c1", "c2")]
    state = TrustState(ME, [OP], SETTINGS)
    everything = first + ops + reruns + vs
    state.add(claims, everything)
    check(state, [OP], claims, everything)
    assert "V" in state.view().distrusted
    state.remove([x.id for x in first])
    check(state, [OP], claims, ops + reruns + vs)
    assert "V" not in state.view().distrusted
