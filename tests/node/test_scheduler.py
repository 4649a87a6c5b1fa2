"""The reproduction queue and verdicts: pure logic, no I/O.

Run: .venv/bin/python -m pytest tests/node/test_scheduler.py -q
"""
from __future__ import annotations

import random

import pytest

from node.scheduler import (VERDICTS, Candidate, Scheduler, SchedulerSettings, author_runs, expected_gain,
                            may_reproduce, verdict_from_budget, verdict_from_full, verdict_from_spot)
from node.telemetry import vote_counter

ME = "e" * 64
T = "t" * 64


def cand(n: int, value: float, *, author: str = "a" * 64, status: str = "pending", task: str = T,
         outcome: str = "improved", tokens: int | None = 8192, created_at: int | None = None, **kw) -> Candidate:
    return Candidate(claim=f"{n:064x}", task=task, author=author, created_at=created_at or 1000 + n,
                     outcome=outcome, status=status, value=value, tokens=tokens, **kw)


def verified(values: list[float], start: int = 100, author: str = "v" * 64) -> list[Candidate]:
    return [cand(start + i, v, author=author, status="verified") for i, v in enumerate(values)]


def ids(queue) -> list[int]:
    return [int(item.claim, 16) for item in queue]


def build(candidates, trust=None, voted=frozenset(), top_k=5, audit=False, rng=None):
    s = Scheduler(ME, SchedulerSettings(top_k=top_k, audit=audit), rng or random.Random(0))
    return s.build(candidates, trust or {}, voted=set(voted))


def test_ordered_by_expected_gain():
    board = verified([1.0, 1.1, 1.2, 1.3, 1.4])
    queue = build(board + [cand(1, 1.35), cand(2, 0.9), cand(3, 1.2)])
    assert ids(queue) == [2, 3, 1]
    # 0.9: 0.5 under the 5th entry + 0.1 under the best
    assert queue[0].priority == pytest.approx(0.6)
    assert "best" in queue[0].reason and "pending" in queue[0].reason


def test_trust_breaks_equal_gain_and_weighs_in():
    board = verified([1.0, 1.1, 1.2, 1.3, 1.4])
    trusted, stranger = "b" * 64, "c" * 64
    queue = build(board + [cand(1, 1.2, author=stranger), cand(2, 1.2, author=trusted)], trust={trusted: 1.0})
    assert ids(queue) == [2, 1]
    assert queue[0].priority == pytest.approx(2 * queue[1].priority)
    # a much larger gain from a stranger no longer jumps the queue: strangers share a capped part of it
    queue = build(board + [cand(1, 1.05, author=stranger), cand(2, 1.35, author=trusted)], trust={trusted: 1.0})
    assert ids(queue) == [2, 1]


def test_authors_without_trust_share_a_quarter_of_the_queue():
    # issue 17: five junk claims from fresh keys claiming a huge gain went ahead of an honest pending one
    board = verified([1.0, 1.1, 1.2, 1.3, 1.4])
    honest = [cand(10 + i, 1.35 - 0.01 * i, author="b" * 64) for i in range(6)]
    junk = [cand(20 + i, 0.1 + 0.01 * i, author=f"{i:x}" * 64) for i in range(5)]
    trust = {"b" * 64: 0.05, "v" * 64: 1.0}
    queue = build(board + honest + junk, trust=trust)
    order = ids(queue)
    assert order[0] in range(10, 16)  # an honest claim first, whatever the junk promises
    places = [i for i, n in enumerate(order) if n >= 20]
    for k in range(1, len(order) + 1):  # at most a quarter of every prefix while honest ones are left
        if k <= len(honest) + len(places):
            assert sum(1 for i in places if i < k) <= max(0, int(k * SchedulerSettings().untrusted_share + 1e-9)) \
                or all(n >= 20 for n in order[k - 1:])
    assert [n for n in order if n >= 20] == [20, 21, 22, 23, 24]  # among themselves, by priority
    assert sorted(order) == sorted(list(range(10, 16)) + list(range(20, 25)))  # nobody dropped
    # without anyone trusted (a new swarm), strangers fill the queue by priority
    assert ids(build(board + junk)) == [20, 21, 22, 23, 24]


def test_only_claims_that_would_enter_the_top_k():
    board = verified([1.0, 1.1, 1.2])
    assert ids(build(board + [cand(1, 1.05), cand(2, 1.15)], top_k=2)) == [1]  # the 2nd is 1.1
    # fewer than K verified: everything improved enters, the best claimed value first
    assert ids(build(board + [cand(1, 1.5), cand(2, 1.25)], top_k=5)) == [2, 1]
    assert ids(build([cand(1, 1.5), cand(2, 1.25)])) == [2, 1]  # nothing verified yet


def test_what_is_not_worth_reproducing():
    board = verified([1.0, 1.1, 1.2, 1.3, 1.4])
    skipped = [
        cand(1, 0.9, author=ME),  # own claim
        cand(2, 0.9),  # already voted on (see voted below)
        cand(3, 0.9, outcome="worse"),
        cand(4, 0.9, outcome="crashed"),
        cand(5, 0.9, tokens=None),  # no result
        cand(6, 0.9, has_curve=False),  # nothing to spot-check against
        cand(7, 0.9, status="disputed"),
        cand(11, 0.9, status="over budget"),  # trained past the task's compute cap: never ranked
        cand(8, 0.9, duplicate=True),  # a copy of an earlier claim's source
        cand(9, None),
    ]
    assert ids(build(board + skipped + [cand(10, 0.95)], voted={f"{2:064x}"})) == [10]


def test_claims_over_the_task_budget_or_of_unknown_tasks_are_skipped():
    s = Scheduler(ME, SchedulerSettings(audit=False), random.Random(0))
    other = "f" * 64
    queue = s.build([cand(1, 1.0, tokens=300_000), cand(2, 1.0, tokens=200_000), cand(3, 1.0, task=other)], {},
                    task_budgets={T: 200_000})
    assert ids(queue) == [2]


def test_verified_claims_are_skipped_without_audits():
    assert build(verified([1.0, 1.1]), audit=False) == []


def test_audits_hit_about_one_in_n():
    n = 20
    author = "d" * 64
    rng = random.Random(1234)
    hits = 0
    trials = 400
    for trial in range(trials):
        history = [cand(trial * 100 + i, 1.0 + i / 100, author=author, status="verified") for i in range(n)]
        s = Scheduler(ME, SchedulerSettings(top_k=n + 1, audit=True), rng)
        queue = s.build(history, {})
        hits += len(queue)
        assert all(item.audit and f"p=1/{n}" in item.reason for item in queue)
    rate = hits / (trials * n)
    assert 1 / n * 0.8 < rate < 1 / n * 1.2


def test_audit_draw_is_made_once_per_claim():
    s = Scheduler(ME, SchedulerSettings(audit=True), random.Random(7))
    history = verified([1.0, 1.1, 1.2, 1.3], author="d" * 64)
    first = ids(s.build(history, {}))
    for _ in range(50):  # redrawing at every rebuild would audit everything sooner or later
        assert ids(s.build(history, {})) == first


def test_an_audit_weighs_half_a_pending_claim_of_the_same_gain():
    others = verified([1.0, 1.1, 1.2, 1.4, 1.5])
    voted = {c.claim for c in others}  # reproduced by this node already: they only set the bar
    pending = build(others + [cand(1, 1.3, author="d" * 64)], voted=voted, audit=True)
    audited = build(others + [cand(1, 1.3, author="d" * 64, status="verified")], voted=voted, audit=True)
    assert [i.audit for i in pending] == [False] and [i.audit for i in audited] == [True]
    assert "p=1/1" in audited[0].reason  # a run of one verified claim: always re-checked
    assert audited[0].priority == pytest.approx(0.5 * pending[0].priority) and pending[0].priority > 0


def test_author_runs_reset_at_a_disputed_claim():
    a = "a" * 64
    rows = [cand(1, 1.0, author=a, status="verified"), cand(2, 1.0, author=a, status="disputed"),
            cand(3, 1.0, author=a, status="verified"), cand(4, 1.0, author=a, status="verified"),
            cand(5, 1.0, author=a, status="pending")]
    assert author_runs(rows) == {a: 2}


def test_max_queue():
    s = Scheduler(ME, SchedulerSettings(max_queue=3, audit=False), random.Random(0))
    assert len(s.build([cand(i, 1.0 + i / 100) for i in range(10)], {})) == 3


def test_expected_gain_edges():
    assert expected_gain(1.4, [1.0, 1.1, 1.2, 1.3, 1.4], 5)[0] is False  # ties the 5th: does not enter
    enters, gain, _ = expected_gain(1.39, [1.0, 1.1, 1.2, 1.3, 1.4], 5)
    assert enters and gain == pytest.approx(0.01)


# -- compute share -----------------------------------------------------------------------------

def test_compute_share():
    assert may_reproduce(0.29, 0.3, own_loop_busy=True)
    assert not may_reproduce(0.3, 0.3, own_loop_busy=True)
    assert may_reproduce(0.9, 0.3, own_loop_busy=False)


# -- budgets -----------------------------------------------------------------------------------

def test_verdict_from_full_at_the_tolerance_edges():
    assert verdict_from_full("1.500000", "1.520000", "0.02")[0] == "reproduced"
    assert verdict_from_full("1.500000", "1.480000", "0.02")[0] == "reproduced"
    assert verdict_from_full("1.500000", "1.520001", "0.02")[0] == "mismatch"
    assert verdict_from_full("1.500000", "1.479999", "0.02")[0] == "mismatch"  # better than claimed is wrong too
    verdict, reason = verdict_from_full("1.000000", "1.500000", "0.02")
    assert verdict == "mismatch" and "0.5" in reason and "0.02" in reason
    with pytest.raises(ValueError):
        verdict_from_full("nope", "1.0", "0.02")


def test_verdict_from_spot():
    ref = [[1024, "5.0"], [2048, "4.0"], [8192, "2.0"]]
    assert verdict_from_spot(True, "2 points within 0.02", [[1024, "5.0"], [2048, "4.0"]], ref)[0] is None
    verdict, reason = verdict_from_spot(False, "curve diverges at 2048 tokens", [[1024, "5.0"], [2048, "3.0"]], ref)
    assert verdict == "mismatch" and "2048" in reason
    assert verdict_from_spot(False, "timeout after 60 s", [], ref)[0] == "failed"
    # a claimed curve with no point inside the checked part cannot be judged by the spot check
    late = [[8192, "2.0"]]
    verdict, reason = verdict_from_spot(False, "no curve points in common", [[1024, "5.0"]], late)
    assert verdict is None and "inconclusive" in reason


def test_verdict_from_budget_at_the_cap_edge():
    assert verdict_from_budget("2.000", "1.000", "2.0")[0] is None  # exactly at the cap is within it
    assert verdict_from_budget("2.001", "1.000", "2.0")[0] == "over budget"
    assert verdict_from_budget("0.500", "1.000", "2.0")[0] is None  # faster than the baseline: fine
    verdict, reason = verdict_from_budget("31.250", "12.500", "2.0")
    assert verdict == "over budget" and "31.250" in reason and "12.500" in reason and "2.0" in reason
    assert "25.0000" in reason  # the limit, cap x the baseline's time, in decimal arithmetic
    assert "within the compute cap" in verdict_from_budget("1.5", "1.0", "1.5")[1]
    with pytest.raises(ValueError):
        verdict_from_budget("fast", "1.0", "2.0")


def test_verdicts_are_the_protocol_list_and_counters_are_metric_names():
    import re

    from protocol.schemas import VERDICTS as PROTOCOL_VERDICTS

    assert VERDICTS == PROTOCOL_VERDICTS and "over budget" in VERDICTS
    assert vote_counter("over budget") == "votes_over_budget" and vote_counter("mismatch") == "votes_mismatch"
    assert all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", vote_counter(v)) for v in VERDICTS)


# -- sequential testing (store/stats.py; protocol/SPEC.md 5.9) -----------------------------------

def test_an_inconclusive_verified_claim_asks_for_another_fresh_seed_run_until_max_samples():
    from store.stats import MAX_SAMPLES

    board = verified([1.0, 1.1, 1.2, 1.3, 1.4])
    base = cand(50, 1.5, status="verified", significance="baseline", samples=MAX_SAMPLES)
    child = cand(1, 1.05, status="verified", significance="not significant yet", samples=1, reference=base.claim)
    queue = build(board + [base, child])
    assert ids(queue) == [1] and not queue[0].audit and "not significant yet with 1" in queue[0].reason
    full = cand(1, 1.05, status="verified", significance="not significant yet", samples=MAX_SAMPLES,
                reference=base.claim)
    assert build(board + [base, full]) == []  # the swarm has spent what one claim gets


@pytest.mark.parametrize("state", ["significant", "no gain"])
def test_a_clear_win_or_a_clear_loss_asks_for_nothing_more(state):
    board = verified([1.0, 1.1, 1.2, 1.3, 1.4])
    base = cand(50, 1.5, status="verified", significance="baseline", samples=3)
    child = cand(1, 1.05, status="verified", significance=state, samples=2, reference=base.claim)
    assert build(board + [base, child]) == []


def test_the_reference_of_an_inconclusive_claim_is_run_when_it_has_fewer_samples():
    board = verified([1.0, 1.1, 1.2, 1.3, 1.4])
    # The task's baseline claim: on the board as its reference, its outcome whatever its publisher said.
    base = cand(50, 1.5, status="verified", significance="baseline", samples=0, outcome="worse")
    child = cand(1, 1.05, status="verified", significance="not significant yet", samples=1, reference=base.claim)
    queue = build(board + [base, child])
    assert ids(queue)[0] == 50 and "reference of inconclusive" in queue[0].reason
    assert set(ids(queue)) == {1, 50}
    # Voted on already (one sample per node): not again; the child still is.
    assert ids(build(board + [base, child], voted={base.claim})) == [1]
    # A reference with enough samples is left alone, and so is one of a child that could not enter the top-K.
    enough = cand(50, 1.5, status="verified", significance="baseline", samples=3)
    assert ids(build(board + [enough, child])) == [1]
    far = cand(2, 1.45, status="verified", significance="not significant yet", samples=1, reference=base.claim)
    assert build(board + [base, far]) == []


def test_a_baseline_claim_alone_is_not_queued():
    board = verified([1.0, 1.1])
    base = cand(50, 0.9, significance="baseline", samples=0)  # pending, and would lead: still only a reference
    assert build(board + [base]) == []
