"""Personalized trust (store/trust.py) on plain data, no SQLite.

Run: .venv/bin/python -m pytest tests/store/test_store_trust.py
"""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from store.trust import VoteFact, compute_trust, distrusted_keys, latest_votes, personalized_pagerank, TrustSettings

ME, OP = "a" * 64, "b" * 64


def k(n: int) -> str:
    return f"{n:064x}"


_received = iter(range(1, 10**9))


def v(voter, claim, verdict="reproduced", at=0, val="1.0", fresh=False):
    """A vote fact, received by this node after every one made before it (seq)."""
    return VoteFact(id=f"{voter[:8]}{claim[:8]}{at}", voter=voter, claim=claim, verdict=verdict, val_bpb=val,
                    created_at=at, fresh=fresh, seq=next(_received))


def test_only_self_without_evidence():
    view = compute_trust(ME, [], {}, [])
    assert view.weights == {ME: 1.0} and view.of(k(1)) == 0.0


def test_sybil_cluster_gets_nothing():
    authors = {"c1": k(1)}
    votes = [v(k(100 + i), "c1") for i in range(500)]  # 500 fresh keys vouch for k(1)
    view = compute_trust(ME, [], authors, votes)
    assert view.of(k(1)) == 0.0 and all(view.of(k(100 + i)) == 0.0 for i in range(500))


def test_agreement_and_reproduction_earn_trust():
    # I reproduced c1 by k(1); k(2) agreed with me; k(2) reproduced c2 by k(3).
    authors = {"c1": k(1), "c2": k(3)}
    votes = [v(k(2), "c1"), v(ME, "c1"), v(k(2), "c2")]  # k(2)'s vote reached me before mine was published
    view = compute_trust(ME, [], authors, votes)
    assert view.of(ME) == 1.0
    assert 0 < view.of(k(3)) < view.of(k(2)) <= 1.0  # trust decays along the evidence chain
    assert view.of(k(1)) > 0


def test_own_mismatch_distrusts_author_and_its_supporters():
    authors = {"c1": k(1), "c2": k(5), "c3": k(6)}
    votes = [v(k(2), "c1", "reproduced"), v(k(3), "c1", "mismatch"), v(k(4), "c2", "mismatch"),
             v(ME, "c1", "mismatch"), v(ME, "c2")]
    # Own evidence first: the author of what I refuted; one disagreement charges a voter, no more
    # (a machine-dependent claim must not zero an honest peer).
    assert distrusted_keys(ME, authors, votes) == {k(1)}
    view = compute_trust(ME, [], authors, votes)
    assert view.of(k(1)) == 0.0 and k(2) not in view.distrusted and view.of(k(3)) > 0
    # A second disagreement, on another author's claim: k(2) backed two claims I refuted.
    votes += [v(k(2), "c3", "reproduced"), v(ME, "c3", "failed", val=None)]
    assert distrusted_keys(ME, authors, votes) == {k(1), k(2), k(6)}
    view = compute_trust(ME, [], authors, votes)
    assert view.of(k(2)) == 0.0 and view.of(k(6)) == 0.0 and view.of(k(3)) > 0


def test_operator_trusted_key_weighs_like_self():
    view = compute_trust(ME, [OP], {"c1": k(1)}, [v(OP, "c1")])
    assert view.of(OP) == 1.0 and view.of(k(1)) > 0


def test_latest_vote_of_a_voter_counts():
    votes = [v(k(2), "c1", "reproduced", at=1), v(k(2), "c1", "mismatch", at=2)]
    assert [x.verdict for x in latest_votes(votes).values()] == ["mismatch"]


def test_pagerank_mass_is_conserved_and_dangling_returns_home():
    edges = {ME: {k(1): 1.0, k(2): 3.0}, k(1): {k(2): 1.0}}
    t = personalized_pagerank(edges, [ME], TrustSettings())
    assert abs(sum(t.values()) - 1.0) < 1e-9
    assert t[k(2)] > t[k(1)] > 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.sampled_from(["reproduced", "mismatch", "failed"])),
                max_size=25), st.randoms())
def test_trust_does_not_depend_on_vote_order(raw_votes, rnd):
    keys = [ME] + [k(i) for i in range(1, 7)]
    authors = {f"c{j}": keys[(j + 1) % 7] for j in range(4)}
    votes = [v(keys[a], f"c{c}", verdict, at=i) for i, (a, c, verdict) in enumerate(raw_votes)]
    shuffled = list(votes)
    rnd.shuffle(shuffled)
    one, two = compute_trust(ME, [], authors, votes), compute_trust(ME, [], authors, shuffled)
    assert one.distrusted == two.distrusted
    assert one.weights.keys() == two.weights.keys()
    assert all(abs(one.weights[x] - two.weights[x]) < 1e-9 for x in one.weights)
    assert all(0.0 <= w <= 1.0 for w in one.weights.values()) and one.of(ME) == 1.0
