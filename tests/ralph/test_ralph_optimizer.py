"""The optimizer proposers (TPE, CMA-ES through optuna) and their search space (ralph/space.py):
knob coordinates, the divisibility constraints, the FLOPs estimate against the compute cap, the
swarm corpus as trial history, normalized duplicates, the study file (corrupt: one line, moved
aside, next proposal fresh). Loops run over tests/ralph/test_ralph_support.py's smooth toy bowl.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_optimizer.py"""
from __future__ import annotations

import asyncio
import math
import random

import pytest

from ralph.corpus import InMemoryCorpus, observation_of
from ralph.hyperparams import parse_constants
from ralph.loop import RalphLoop
from ralph.memory import Memory
from ralph.proposers import OptimizerProposer, ProposalError
from ralph.settings import RalphSettings
from ralph.space import Space, cost_per_token, skeleton_key, source_key, within_cap
from tests.ralph.test_ralph_support import SCRIPT, ToyRunner, ToyTask, make_context, toy_bpb
from trainer.patches import apply_patch, source_sha256
from trainer.tasks import BASELINE_PATH


def values_of(source: str) -> dict:
    return {n: c.value for n, c in parse_constants(source).items()}


def test_knob_coordinates():
    space = Space.of(SCRIPT)
    kinds = {k.name: k.kind for k in space.knobs}
    assert kinds == {"DEPTH": "int", "MODEL_DIM": "pow2", "N_HEADS": "pow2", "MATRIX_LR": "log", "EMBED_LR": "log",
                     "ADAM_BETA2": "one_minus_log", "WARMDOWN_FRAC": "linear", "DEVICE_BATCH_SIZE": "pow2",
                     "SEQ_LEN": "pow2", "TOTAL_BATCH_SIZE": "pow2"}  # SEED is not a knob
    knobs = {k.name: k for k in space.knobs}
    assert knobs["MATRIX_LR"].low == pytest.approx(0.002) and knobs["MATRIX_LR"].high == pytest.approx(0.2)
    assert (knobs["MODEL_DIM"].low, knobs["MODEL_DIM"].high) == (4, 8)  # 2^4 = 16 .. 2^8 = 256
    beta = knobs["ADAM_BETA2"]
    assert beta.to_value(beta.to_coordinate(0.95)) == pytest.approx(0.95)
    assert beta.to_value(beta.low) == pytest.approx(0.995) and beta.to_value(beta.high) == pytest.approx(0.5)
    # The centre round-trips: the point of the seed itself gives back the seed's values.
    coords = space.coordinates(SCRIPT)
    assert space.values(coords) == values_of(SCRIPT)
    # Out-of-range values (someone tried MATRIX_LR 5.0) are clipped into the space, not refused.
    assert space.coordinates(SCRIPT.replace("MATRIX_LR = 0.02", "MATRIX_LR = 5.0"))["MATRIX_LR"] == pytest.approx(0.2)


def test_divisibility_constraints_hold():
    space = Space.of(SCRIPT)
    base = values_of(SCRIPT)
    assert space.feasible(base)
    assert not space.feasible(dict(base, N_HEADS=128))  # 64 % 128 != 0
    assert not space.feasible(dict(base, MODEL_DIM=32, N_HEADS=32))  # head dim 1: odd, rotary needs even
    assert not space.feasible(dict(base, TOTAL_BATCH_SIZE=1024, DEVICE_BATCH_SIZE=32, SEQ_LEN=64))  # 1024 % 2048


@pytest.mark.slow  # builds the real model in torch (seconds of import on a busy machine)
def test_cost_estimate_matches_the_real_models_matmul_parameters():
    """The 6 x params term counts what the real baseline model's matmuls hold (torch, not a guess)."""
    torch = pytest.importorskip("torch")
    source = BASELINE_PATH.read_text()
    namespace: dict = {}
    exec(compile(source, "train.py", "exec"), namespace)
    for changes in ({}, {"DEPTH": 4, "MODEL_DIM": 128, "MLP_RATIO": 2}):
        for name, v in changes.items():
            namespace[name] = v
        model = namespace["build_model"](256, 64)
        matmul = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 and not n.startswith("embed"))
        values = dict(values_of(source), **changes)
        est = cost_per_token(dict(values, SEQ_LEN=0, TOTAL_BATCH_SIZE=10**18))  # matmuls only
        assert est == pytest.approx(6 * matmul, rel=1e-9)
    del torch


def test_the_issue_example_is_over_the_cap():
    """DEPTH 2 -> 4 and MODEL_DIM 64 -> 256 is ~24x the baseline's FLOPs per token: refused at cap 2."""
    base = values_of(BASELINE_PATH.read_text())
    ok, ratio = within_cap(dict(base, DEPTH=4, MODEL_DIM=256), base, 2.0)
    assert not ok and ratio > 10
    assert within_cap(dict(base, MATRIX_LR=0.05), base, 2.0) == (True, pytest.approx(1.0))
    assert within_cap(dict(base, DEPTH=4), base, None) == (True, None)  # no cap: nothing to check
    assert within_cap({"LR": 1.0}, {"LR": 2.0}, 2.0) == (True, None)  # no architecture names: no estimate


def test_source_key_ignores_comments_spacing_and_number_spelling():
    variant = SCRIPT.replace("MATRIX_LR = 0.02  # Muon learning rate", "MATRIX_LR   =   0.020\n# a new comment\n")
    assert source_key(variant) == source_key(SCRIPT)
    assert source_key(SCRIPT.replace("2048", "2_048")) == source_key(SCRIPT)
    assert source_key(SCRIPT.replace("0.02", "0.03")) != source_key(SCRIPT)
    assert source_key(SCRIPT.replace("min(1.0,", "max(1.0,")) != source_key(SCRIPT)
    # the skeleton forgets the constants' values, not the code
    assert skeleton_key(SCRIPT.replace("0.02", "0.03")) == skeleton_key(SCRIPT)
    assert skeleton_key(SCRIPT.replace("min(1.0,", "max(1.0,")) != skeleton_key(SCRIPT)
    assert source_key("def broken(:\n") == source_key("def broken(:   # x\n")  # untokenizable: by lines


class Swarm:
    """An in-memory corpus with publish() that rebuilds the claim's source like a node does."""

    def __init__(self) -> None:
        self.corpus = InMemoryCorpus()

    async def publish(self, body: dict) -> str:
        parent = SCRIPT if body["parent"] is None else await self.corpus.source_of(body["parent"])
        source = apply_patch(parent, body["patch"]) if body["patch"] else SCRIPT
        assert source_sha256(source) == body["source_sha256"]
        return self.corpus.add(body, source)


def make_loop(tmp_path, swarm, proposer, *, cap="2.0", seed=0):
    task = ToyTask(compute_cap=cap)
    runner = ToyRunner()
    loop = RalphLoop(task, swarm.corpus, proposer, RalphSettings(), Memory(tmp_path / f"m{seed}.json"),
                     swarm.publish, runner, rng=random.Random(seed))
    return loop, runner


@pytest.mark.slow  # 20 steps of a sampler over 10 dimensions: ~5 s each
@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_optimizer_descends_the_bowl_within_constraints_and_cap(tmp_path, sampler):
    swarm = Swarm()
    proposer = OptimizerProposer(sampler, seed=3, study_path=tmp_path / "study.journal")
    loop, runner = make_loop(tmp_path, swarm, proposer, cap="1.5")
    reports = asyncio.run(_steps(loop, 20))
    assert all(r.status == "published" for r in reports), [r.reason for r in reports if r.status != "published"]
    base = toy_bpb(SCRIPT)
    best = min(r.val_bpb for r in reports)
    assert best < base - 0.1  # the bowl's minimum is 1.5 (MATRIX_LR 0.04); the baseline is at 1.98
    space = Space.of(SCRIPT)
    keys = set()
    for sha, _scale in runner.calls[1:]:  # every candidate run (the first is the baseline)
        source = next(s for s in _sources(swarm) if source_sha256(s) == sha)
        values = values_of(source)
        assert space.feasible(values)
        assert within_cap(values, values_of(SCRIPT), 1.5)[0]
        keys.add(source_key(source))
    assert len(keys) == len(runner.calls) - 1  # nothing ran twice


def _sources(swarm: Swarm) -> list[str]:
    return [c[2] for c in swarm.corpus._claims]


async def _steps(loop, n):
    return [await loop.step() for _ in range(n)]


def test_the_swarm_corpus_is_the_trial_history(tmp_path):
    """Another node's claims are trials of this node's study; CMA-ES counts them in its generation."""
    swarm = Swarm()
    other = {}
    for lr in (0.01, 0.03, 0.05):
        src = SCRIPT.replace("MATRIX_LR = 0.02", f"MATRIX_LR = {lr}")
        body = {"task": "ab" * 32, "parent": None, "source_sha256": source_sha256(src), "patch": "x", "note": "peer",
                "outcome": "worse", "result": {"val_bpb": f"{toy_bpb(src):.6f}", "tokens": 1000}}
        other[swarm.corpus.add(body, src, own=False)] = src
    for sampler in ("tpe", "cmaes"):
        proposer = OptimizerProposer(sampler, seed=1, study_path=tmp_path / f"{sampler}.journal")
        observations = tuple(asyncio.run(swarm.corpus.observations("ab" * 32)))
        context = make_context(val_bpb=toy_bpb(SCRIPT))
        context = _with(context, observations=observations, tokens=1000, baseline_source=SCRIPT)
        proposal = proposer.propose(context)
        assert source_key(proposal.source) not in {source_key(s) for s in other.values()}
        (study, _, _), = proposer._studies.values()
        trials = [t for t in study.get_trials() if t.user_attrs.get("claim") in other]
        assert len(trials) == 3 and sorted(t.value for t in trials) == sorted(round(toy_bpb(s), 6) for s in other.values())
        if sampler == "cmaes":
            assert all("cma:generation" in t.system_attrs for t in trials)
        # at another budget (tokens) the peer's values are not this loop's trials
        again = OptimizerProposer(sampler, seed=1)
        again.propose(_with(context, tokens=5000))
        (study, _, _), = again._studies.values()
        assert not [t for t in study.get_trials() if t.user_attrs.get("claim") in other]


def _with(context, **fields):
    import dataclasses
    return dataclasses.replace(context, **fields)


def test_own_proposal_is_completed_when_its_claim_appears(tmp_path):
    swarm = Swarm()
    proposer = OptimizerProposer("tpe", seed=2, study_path=tmp_path / "s.journal")
    loop, _ = make_loop(tmp_path, swarm, proposer)
    asyncio.run(_steps(loop, 4))
    (study, _, _), = proposer._studies.values()
    from optuna.trial import TrialState
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and "key" in t.user_attrs]
    running = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    # three proposals ran and were told their claim's value; the fourth waits for its claim
    assert len([t for t in done if t.user_attrs.get("claim")]) >= 3 and len(running) == 1
    for t in done:
        obs = next(o for o in asyncio.run(swarm.corpus.observations("ab" * 32)) if o.claim_id == t.user_attrs["claim"])
        assert t.value == pytest.approx(obs.val_bpb)


def test_study_survives_a_restart(tmp_path):
    swarm = Swarm()
    loop, _ = make_loop(tmp_path, swarm, OptimizerProposer("cmaes", seed=5, study_path=tmp_path / "s.journal"))
    asyncio.run(_steps(loop, 5))
    fresh = OptimizerProposer("cmaes", seed=5, study_path=tmp_path / "s.journal")
    loop2, _ = make_loop(tmp_path, swarm, fresh)
    reports = asyncio.run(_steps(loop2, 2))
    assert all(r.status == "published" for r in reports)
    (study, _, _), = fresh._studies.values()
    assert len(study.get_trials()) >= 7  # the journal held the first process' trials


@pytest.mark.parametrize("garbage", [b"\x00\xffnot a journal\n", b'{"op_code": 99, "worker_id": 1}\n{"op_code"'])
def test_corrupt_study_file_is_one_line_then_a_fresh_start(tmp_path, garbage):
    path = tmp_path / "s.journal"
    path.write_bytes(garbage)
    swarm = Swarm()
    proposer = OptimizerProposer("tpe", seed=0, study_path=path)
    loop, runner = make_loop(tmp_path, swarm, proposer)
    first = asyncio.run(loop.step())
    assert first.status == "proposal_failed" and "\n" not in first.reason
    assert "unreadable" in first.reason and "moved aside" in first.reason
    aside = list(tmp_path.glob("s.journal.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage  # the user's file, kept as it was
    second = asyncio.run(loop.step())
    assert second.status == "published"


def test_no_feasible_point_is_a_proposal_error_and_the_loop_backs_off(tmp_path):
    """A cap no point can meet: every ask refused, one line, the loop waits instead of spinning."""
    swarm = Swarm()
    proposer = OptimizerProposer("tpe", seed=0)
    loop, runner = make_loop(tmp_path, swarm, proposer, cap="0.000001")
    stop = asyncio.Event()
    waits = []
    real_wait_for = asyncio.wait_for

    async def recording_wait_for(aw, timeout):
        waits.append(timeout)
        if len(waits) >= 3:
            stop.set()
        return await real_wait_for(aw, 0)

    asyncio.wait_for = recording_wait_for
    try:
        reports = asyncio.run(loop.run(stop, pause_s=5.0))
    finally:
        asyncio.wait_for = real_wait_for
    assert [r.status for r in reports] == ["proposal_failed"] * 3
    assert "no new feasible point" in reports[0].reason and "over the compute cap" in reports[0].reason
    assert waits == [5.0, 10.0, 20.0]
    assert len(runner.calls) == 1  # the baseline's measurement only


def test_observation_of_hostile_numbers():
    body = {"outcome": "worse", "note": "x", "parent": None,
            "result": {"val_bpb": "nan", "tokens": "1000", "curve": [[0, "1.0"], ["x"]]}}
    obs = observation_of("c" * 64, body, SCRIPT, False)
    assert obs.val_bpb is None and obs.tokens is None and obs.curve == ((0, 1.0),)
    assert observation_of("c" * 64, {"outcome": "crashed", "result": None}, SCRIPT, True).val_bpb is None
    assert math.isinf(float("inf")) and observation_of(
        "c" * 64, {"outcome": "worse", "result": {"val_bpb": "inf"}}, SCRIPT, True).val_bpb is None


def test_hostile_observations_cannot_break_the_proposer(tmp_path):
    """Peers' claims with absurd constants and numbers: clipped into the space or left out; the
    proposal stays feasible and within the cap."""
    swarm = Swarm()
    absurd = [("MODEL_DIM = 64", "MODEL_DIM = 0"), ("MATRIX_LR = 0.02", "MATRIX_LR = -5.0"),
              ("ADAM_BETA2 = 0.95", "ADAM_BETA2 = 7.0"), ("DEPTH = 2", "DEPTH = 10" + "0" * 400),
              ("TOTAL_BATCH_SIZE = 2048", "TOTAL_BATCH_SIZE = 3")]
    for n, (old, new) in enumerate(absurd):
        src = SCRIPT.replace(old, new)
        for val in ("-1e308", "nan", "0.000001", "1e308"):
            body = {"task": "ab" * 32, "parent": None, "source_sha256": source_sha256(src + val), "patch": "x",
                    "note": "[over budget: x]" if n == 4 else "peer", "outcome": "improved",
                    "result": {"val_bpb": val, "tokens": 1000, "curve": "not a curve"}}
            swarm.corpus.add(body, src + f"# {val}\n", own=False)
    observations = tuple(asyncio.run(swarm.corpus.observations("ab" * 32)))
    for sampler in ("tpe", "cmaes"):
        proposer = OptimizerProposer(sampler, seed=0)
        context = _with(make_context(val_bpb=toy_bpb(SCRIPT)), observations=observations, tokens=1000,
                        baseline_source=SCRIPT, compute_cap=2.0)
        for _ in range(3):
            proposal = proposer.propose(context)
            values = values_of(proposal.source)
            assert Space.of(SCRIPT).feasible(values) and within_cap(values, values_of(SCRIPT), 2.0)[0]
        (study, _, _), = proposer._studies.values()
        values = [t.value for t in study.get_trials() if t.user_attrs.get("claim")]
        assert values and all(math.isfinite(v) for v in values)  # nan left out; no trial broke the study


def test_tpe_starts_near_the_seed_not_uniformly():
    """TPE's startup points are the seed moved by a Gaussian step of CMA_SIGMA0 of each knob's range:
    a learning rate moves by a median |log ratio| of ~0.47 (sigma 0.15 x ln 100), where a uniform
    draw over its factor-10-either-way range moves by ~1.15. Deterministic given the seed."""
    import statistics

    from ralph.proposers.optimizer import CMA_SIGMA0, TPE_STARTUP, near

    def draws(seed):
        p = OptimizerProposer("tpe", seed=seed)
        return [p.propose(make_context()).source for _ in range(TPE_STARTUP)]

    sources = draws(5) + draws(6)
    assert draws(5) == sources[:TPE_STARTUP]
    steps = [abs(math.log(values_of(s)["MATRIX_LR"] / 0.02)) for s in sources]
    assert statistics.median(steps) < 0.8, steps
    space = Space.of(SCRIPT)
    for s in sources:
        assert space.feasible(values_of(s))
    # the step itself: inside the range, centred on the point, integers rounded
    rng = random.Random(1)
    knob = next(k for k in space.knobs if k.name == "MATRIX_LR")
    xs = [near(knob, 0.02, CMA_SIGMA0, rng) for _ in range(2000)]
    assert all(knob.low <= x <= knob.high for x in xs)
    assert statistics.median(math.log(x / 0.02) for x in xs) == pytest.approx(0.0, abs=0.05)
    assert statistics.pstdev(math.log(x / 0.02) for x in xs) == pytest.approx(CMA_SIGMA0 * math.log(100), rel=0.15)
    depth = next(k for k in space.knobs if k.name == "TOTAL_BATCH_SIZE")
    assert all(isinstance(near(depth, 11, CMA_SIGMA0, rng), int) for _ in range(50))
