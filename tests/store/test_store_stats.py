"""Luck is not progress (protocol/SPEC.md 5.4.1, 5.8, 5.9): properties of the fresh seed, the
estimate, the test and the noise table, over generated votes.

Run: .venv/bin/python -m pytest tests/store/test_store_stats.py
"""
from __future__ import annotations

import hashlib
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from protocol import Identity, ProtocolError, build, decode
from protocol.seeds import fresh_seed, seed_from_proof
from store.ingest import prepare
from store.extract import COLUMNS
from store.ranking import RankingSettings, claim_status, significances
from store.stats import (
    ALPHA, MAX_SAMPLES, MIN_NO_GAIN, NO_GAIN, NOT_YET, SIGNIFICANT, Estimate, NoiseTable, estimate, significance,
)
from store.trust import TrustView, VoteFact, latest_votes
from tests.store.test_store_factory import NOW, SWARM, claim, key, result

TASK = "ab" * 32
TOLERANCE = 0.01
NOISE = NoiseTable({(TASK, "cpu"): 0.003, (TASK, "cuda"): 0.0015})
ME, AUTHOR = key(0).pubkey, key(1).pubkey
VOTERS = [key(i).pubkey for i in range(2, 8)]  # trusted: 1.0, 0.6, 0.25, ...
UNTRUSTED = [key(i).pubkey for i in range(8, 11)]  # weight 0, or not in the view at all
NEWCOMERS = [key(i).pubkey for i in range(11, 14)]  # trusted, but no vote of theirs is generated
TRUST = TrustView({ME: 1.0, AUTHOR: 1.0, UNTRUSTED[0]: 0.0,
                   **{k: w for k, w in zip(VOTERS + NEWCOMERS, [1.0, 0.6, 0.25, 0.1, 0.05, 0.01, 1.0, 0.5, 0.2])}},
                  frozenset(), frozenset({ME}))
BASE = claim(key(1), TASK, "1.400000", patch="", outcome="worse", at=NOW - 900)  # the task's baseline claim
CHILD = claim(key(1), TASK, "1.350000", parent=BASE.id, at=NOW - 800)  # tested against BASE
CLAIMS = (BASE, CHILD)


def sigma_of(device: str | None) -> float:
    return NOISE.sigma(TASK, device, TOLERANCE)


def fact(n: int, voter: str, claim_id: str, verdict: str, value: str | None, at: int, *, fresh: bool = True,
         device: str | None = "cpu") -> VoteFact:
    return VoteFact(hashlib.sha256(f"vote-{n}-{voter}".encode()).hexdigest(), voter, claim_id, verdict, value, at,
                    fresh, device)


def evaluate(votes: list[VoteFact]) -> tuple:
    """(BASE's estimate, CHILD's estimate, CHILD's test) from this node's point of view."""
    statuses = {c.id: claim_status(c, [v for v in votes if v.claim == c.id], TRUST, ME, RankingSettings(), sigma_of)
                for c in CLAIMS}
    return statuses[BASE.id].estimate, statuses[CHILD.id].estimate, significances(CLAIMS, statuses, BASE.body['source_sha256'])[CHILD.id]


VERDICTS = st.sampled_from(["reproduced", "reproduced", "mismatch", "failed", "over budget"])
RAW_VOTE = st.tuples(st.integers(0, len(VOTERS)), st.integers(0, 1), VERDICTS, st.integers(-30, 30),
                     st.sampled_from(["cpu", "cuda", "mps"]), st.booleans(), st.integers(0, 5))


def make_votes(raw: list[tuple]) -> list[VoteFact]:
    """Generated votes: voter index len(VOTERS) is this node; a ``failed`` vote carries no value."""
    out = []
    for n, (who, which, verdict, offset, device, fresh, at) in enumerate(raw):
        voter = ME if who == len(VOTERS) else VOTERS[who]
        value = None if verdict == "failed" else f"{1.39 + offset * 0.001:.6f}"
        out.append(fact(n, voter, CLAIMS[which].id, verdict, value, at, fresh=fresh and value is not None,
                        device=None if value is None else device))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(RAW_VOTE, max_size=24), st.randoms())
def test_estimate_and_test_do_not_depend_on_vote_order(raw, rnd):
    votes = make_votes(raw)
    shuffled = list(votes)
    rnd.shuffle(shuffled)
    assert evaluate(shuffled) == evaluate(votes)
    samples = [(float(v.val_bpb), sigma_of(v.device)) for v in votes if v.val_bpb is not None]
    rnd.shuffle(samples)
    assert estimate(samples) == estimate(sorted(samples, reverse=True))


@settings(max_examples=60, deadline=None)
@given(st.lists(RAW_VOTE, min_size=1, max_size=20), st.data())
def test_a_duplicate_vote_changes_nothing(raw, data):
    votes = make_votes(raw)
    again = votes + [data.draw(st.sampled_from(votes)) for _ in range(data.draw(st.integers(1, 3)))]
    assert latest_votes(again) == latest_votes(votes)
    assert evaluate(again) == evaluate(votes)


@settings(max_examples=60, deadline=None)
@given(st.lists(RAW_VOTE, max_size=20), st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), VERDICTS,
                                                             st.integers(-30, 30), st.booleans()), max_size=10))
# Found by hypothesis: a trusted key's "reproduced" at CHILD's own seed, far from its claimed value,
# leaves the samples alone but keeps CHILD from being verified, hence from being shown significant.
@example(raw=[(0, 0, "reproduced", 0, "cpu", False, 0)] * 6 + [(0, 0, "reproduced", 0, "cpu", True, 0)]
         + [(0, 0, "reproduced", 0, "cpu", False, 0)] * 2 + [(1, 1, "reproduced", -10, "cuda", True, 0)],
         extra=[(0, 0, "reproduced", 0, False)] * 6 + [(0, 1, "reproduced", 0, False)])
def test_untrusted_and_not_fresh_votes_are_ignored(raw, extra):
    """A fresh vote by a key of trust 0 (or unknown), and a vote at the claim's own seed, a ``failed`` or
    an ``over budget`` vote by a trusted key that has no other vote, are no samples."""
    votes = make_votes(raw)
    noise = []
    for n, (who, which, verdict, offset, untrusted) in enumerate(extra, start=1000):
        value = None if verdict == "failed" else f"{1.2 + offset * 0.001:.6f}"
        if untrusted:
            noise.append(fact(n, UNTRUSTED[who], CLAIMS[which].id, verdict, value, 9, fresh=value is not None))
        elif verdict in ("reproduced", "mismatch"):  # trusted, but at the claim's seed
            noise.append(fact(n, NEWCOMERS[who], CLAIMS[which].id, verdict, value, 9, fresh=False))
        else:  # trusted and fresh, but not a measurement of the value
            noise.append(fact(n, NEWCOMERS[who], CLAIMS[which].id, verdict, value, 9, fresh=value is not None))
    # A newcomer's latest vote on a claim decides: keep only those that are no samples themselves.
    assert sample_view(votes + noise) == sample_view(votes)
    # Votes of keys without trust change nothing at all, the claims' status included.
    untrusted = [f for f in noise if f.voter in UNTRUSTED]
    assert evaluate(votes + untrusted) == evaluate(votes)


def sample_view(votes: list[VoteFact]) -> tuple:
    """(BASE's estimate, CHILD's estimate, CHILD's test on those two alone): what the samples decide.
    The significance a node shows also waits for CHILD to be verified (store/ranking.py), which
    trusted votes at the claim's own seed decide: they are no samples, but they are votes."""
    base, child, _ = evaluate(votes)
    return base, child, significance(child, base, BASE.id)


@settings(max_examples=60, deadline=None)
@given(st.lists(RAW_VOTE, max_size=20), st.lists(st.tuples(st.integers(0, 1), st.integers(-100, 100)), min_size=1,
                                                   max_size=5))
def test_the_claim_authors_votes_are_ignored(raw, own):
    """The author is trusted (weight 1) and votes fresh, any value: still no sample of its own claim."""
    votes = make_votes(raw)
    mine = [fact(2000 + n, AUTHOR, CLAIMS[which].id, "reproduced", f"{1.2 + offset * 0.001:.6f}", 9)
            for n, (which, offset) in enumerate(own)]
    assert CHILD.author == BASE.author == AUTHOR and TRUST.of(AUTHOR) == 1.0
    assert evaluate(votes + mine) == evaluate(votes)


ESTIMATE = st.builds(Estimate, st.floats(0.5, 3.0), st.floats(1e-5, 0.05), st.integers(1, 8), st.floats(1e-4, 0.1))


@settings(max_examples=200, deadline=None)
@given(ESTIMATE, ESTIMATE, st.floats(0.5, 3.0))
def test_a_lower_mean_never_raises_p(claim_est, ref, other_mean):
    lower, higher = sorted([claim_est.mean, other_mean])
    a = significance(Estimate(lower, claim_est.se, claim_est.n, claim_est.sigma), ref)
    b = significance(Estimate(higher, claim_est.se, claim_est.n, claim_est.sigma), ref)
    assert 0.0 <= a.p <= b.p <= 1.0
    assert a.state == SIGNIFICANT or b.state != SIGNIFICANT  # significance is monotone too


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-40, 40), st.sampled_from([0.0015, 0.003, 0.01 / 3])), min_size=1,
                max_size=8), st.integers(1, 40), ESTIMATE)
def test_lower_samples_never_raise_p(raw, shift, ref):
    samples = [(1.39 + k * 0.001, s) for k, s in raw]
    lower = [(x - shift * 0.001, s) for x, s in samples]
    p_lower, p = significance(estimate(lower), ref).p, significance(estimate(samples), ref).p
    assert p_lower <= p * (1 + 1e-9) + 1e-300  # the same scatter, up to the rounding of a shifted sum


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-40, 40), st.sampled_from([0.0015, 0.003, 0.01 / 3])), min_size=1,
                max_size=8), st.randoms())
def test_samples_equal_to_the_references_are_never_significant(raw, rnd):
    samples = [(1.39 + k * 0.001, s) for k, s in raw]
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    test = significance(estimate(shuffled), estimate(samples))
    assert test.z == 0.0 and test.p == 1.0 and test.state != SIGNIFICANT
    assert test.state == (NO_GAIN if len(samples) >= MIN_NO_GAIN else NOT_YET)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VOTERS) - 1), st.integers(-40, 40), st.sampled_from(["cpu", "cuda"])),
                min_size=1, max_size=6, unique_by=lambda t: t[0]))
def test_a_claim_measured_as_its_parent_is_never_significant(raw):
    """The same voters, the same values, on the parent and on the child: the child is no better."""
    votes = [fact(n * 2 + which, VOTERS[who], CLAIMS[which].id, "reproduced", f"{1.39 + k * 0.001:.6f}", 5,
                  device=device)
             for n, (who, k, device) in enumerate(raw) for which in (0, 1)]
    base, child, test = evaluate(votes)
    assert base == child and test.state != SIGNIFICANT and test.p == 1.0
    assert test.reference == BASE.id


def test_the_estimate_pools_the_prior_with_the_scatter():
    one = estimate([(1.4, 0.003)])
    assert one == Estimate(1.4, 0.003, 1, 0.003)  # one sample: the prior alone
    many = estimate([(1.4 + (0.01 if i % 2 else -0.01), 0.003) for i in range(400)])
    assert abs(many.sigma - 0.01) < 0.0002 and many.n == 400  # many: the data
    assert estimate([]) is None


def test_states_at_the_edges():
    ref = Estimate(1.40, 0.001, MAX_SAMPLES, 0.002)
    assert significance(None, ref).p is None and significance(Estimate(1.3, 0.001, 1, 0.002), None).state == NOT_YET
    assert significance(Estimate(1.39, 0.001, 2, 0.0014), ref).state == SIGNIFICANT  # z 7.1
    # Better but not yet shown: more samples may still come, until both sides have MAX_SAMPLES.
    assert significance(Estimate(1.398, 0.001, MAX_SAMPLES - 1, 0.002), ref).state == NOT_YET
    assert significance(Estimate(1.398, 0.001, MAX_SAMPLES, 0.002), ref).state == NO_GAIN
    # Worse: no gain from MIN_NO_GAIN samples on.
    assert significance(Estimate(1.41, 0.001, MIN_NO_GAIN - 1, 0.002), ref).state == NOT_YET
    assert significance(Estimate(1.41, 0.001, MIN_NO_GAIN, 0.002), ref).state == NO_GAIN
    # The Bonferroni factor: z with one-sided Phi(-z) = ALPHA / MAX_SAMPLES sits on the edge.
    edge = significance(Estimate(1.40 - 2.878162 * math.sqrt(2) * 0.001, 0.001, 3, 0.002), ref)
    assert abs(edge.p - ALPHA) < 1e-6


# --- the noise table ------------------------------------------------------------------------------

def test_noise_table_loads_merges_and_falls_back(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({TASK: {"cpu": {"sigma": "0.003", "seeds": 8}, "cuda": {"sigma": "0.002"}}}))
    second.write_text(json.dumps({TASK: {"cuda": {"sigma": "0.0015"}}}))
    table = NoiseTable.load(first, tmp_path / "missing.json", second)
    assert table.sigma(TASK, "cpu", TOLERANCE) == 0.003
    assert table.sigma(TASK, "cuda", TOLERANCE) == 0.0015  # the later file wins
    assert table.sigma(TASK, "mps", TOLERANCE) == TOLERANCE / 3  # a class nobody measured
    assert table.sigma("cd" * 32, "cpu", 0.03) == 0.01  # another task's noise is not this one's
    assert table.sigma(TASK, None, TOLERANCE) == TOLERANCE / 3


BAD_NOISE = [
    b"", b"{", b"[]", b'"text"', b"null", b'{"t": []}', b'{"t": {"cpu": "0.003"}}', b'{"t": {"cpu": {}}}',
    b'{"t": {"cpu": {"sigma": "x"}}}', b'{"t": {"cpu": {"sigma": "0"}}}', b'{"t": {"cpu": {"sigma": "-0.1"}}}',
    b'{"t": {"cpu": {"sigma": NaN}}}', b'{"t": {"cpu": {"sigma": "inf"}}}', b'{"t": {"cpu": {"sigma": 1e400}}}',
    b'{"t": {"cpu": {"sigma": [1]}}}', b'{"t": {"cpu": {"sigma": null}}}', b"\xff\xfe{}",
]


def _refused_in_one_line(path) -> None:
    with pytest.raises(ValueError) as err:
        NoiseTable.load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    assert type(err.value) is ValueError  # not a JSONDecodeError or UnicodeDecodeError leaking through


@pytest.mark.parametrize("raw", BAD_NOISE)
def test_a_malformed_noise_file_is_one_line_naming_it(tmp_path, raw):
    path = tmp_path / "noise.json"
    path.write_bytes(raw)
    _refused_in_one_line(path)


def test_a_noise_path_that_is_a_directory_is_refused_naming_it(tmp_path):
    _refused_in_one_line(tmp_path)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40)))
def test_any_noise_file_loads_or_is_refused_in_one_line(tmp_path, raw):
    path = tmp_path / "noise.json"
    path.write_bytes(raw)
    try:
        table = NoiseTable.load(path)
    except ValueError as exc:
        assert type(exc) is ValueError and str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert all(math.isfinite(s) and s > 0 for s in table.sigmas.values())


# --- the fresh seed (SPEC.md 5.4.1): the store's bulk path refuses what decode refuses ------------------
# (the seed's own properties, and decode's refusals: tests/protocol/test_seeds.py)

@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_ingest_refuses_a_forged_or_borrowed_seed_proof(key_seed, claim_bytes):
    voter, mallory = Identity.from_seed(key_seed), Identity.from_seed(hashlib.sha256(key_seed).digest())
    claim_id = claim_bytes.hex()
    other = hashlib.sha256(claim_bytes).hexdigest()

    def fresh_vote(proof: str):
        body = {"claim": claim_id, "verdict": "reproduced", "reason": "", "seed_proof": proof,
                "result": {**result("1.390000"), "seed": seed_from_proof(proof)}}
        return build(voter, SWARM, "vote", body, created_at=NOW - 10)

    seed, proof = fresh_seed(voter, claim_id)
    assert fresh_seed(Identity.from_seed(key_seed), claim_id) == (seed, proof)  # one seed per voter and claim
    good = fresh_vote(proof)
    forged = [fresh_vote(fresh_seed(mallory, claim_id)[1]), fresh_vote(fresh_seed(voter, other)[1])]
    for env in forged:
        with pytest.raises(ProtocolError, match="^invalid: bad signature$"):
            decode(env.canonical(), swarm=SWARM, now=NOW)
    batch = prepare([good.canonical()] + [env.canonical() for env in forged], swarm=SWARM, now=NOW)
    assert [env.id for env in batch.envelopes] == [good.id]
    assert batch.rejected == [(env.id, "invalid: bad signature") for env in forged]
    assert batch.rows[0][COLUMNS.index("fresh")] == 1  # the replica's fresh column: a sample candidate
