"""Hostile train scripts against the trusted evaluation: each trick (tests/hostile_scripts.py) runs
through run_experiment and, for a representative subset, through a node's reproduction of a claim
that says it scored 1.0.

Every case must end ``crashed`` with a reason that names the rule it broke, or ``over budget``, or
score no better than the same model without the trick (the honest baseline at the same budget and
seed, less the task's tolerance); training past the budget must show in the measured times. A trick
that wins anyway is a hole: its case is an xfail(strict=True) that says so, never a weaker test.

Budgets are 0.2 of tiny's (60,000 tokens: a few seconds of training each). The hunts for the
validation split are only as good as the hunter: test_the_hunters_find_the_split_where_it_is_reachable
shows, outside any sandbox, that the file hunt finds the split and that the exploit turns a found
split into a clear win that passes the probes and the floor, so a leak would show as a win here,
not as a crash.

Run: .venv/bin/python -m pytest tests/trainer/test_hostile.py -q -s   (-s prints each case's figures)
"""
from __future__ import annotations

import asyncio
import inspect
import random
import shutil
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import hostile_scripts as hostile
from protocol import Identity, build
from protocol.schemas import VERDICTS
from trainer.experiment import RunSettings, run_experiment, spot_check
from trainer.patches import make_patch, source_sha256
from trainer.sandbox import detect_sandbox, mode_works
from trainer.scorer import Scorer, ScoreError, bits_per_byte
from trainer.tasks import builtin_tasks, load_data, split_data

pytestmark = pytest.mark.slow
TINY = builtin_tasks()["tiny"]
SCALE = 0.2
BUDGET = int(TINY.budget_tokens * SCALE)  # 60,000 tokens
SEED = 0
LIMIT_S = RunSettings().train_timeout(BUDGET, "cpu")  # the run's own training timeout
TINY_ALPHABET = b"abcdefghijklmno "  # the chain's symbols (trainer/markov.py MarkovSpec)
PASSES = 6  # training past the budget: this many passes (or optimizer steps per batch)

# What a crash reason says when a rule catches a trick.
FUTURE = "sees the future"
MIXING = "change with what else it is asked"
FLOOR = "below the floor"
WEIGHTS = "weights: "
HANDOVER = "cannot hand over the weights"
MEMORY = "out of memory"
READS = (FUTURE, MIXING, FLOOR)  # the model read what it predicts


@dataclass(frozen=True)
class Honest:
    val_bpb: float
    wall_s: float  # the least training wall time of the honest runs (the strictest reference)
    cpu_s: float | None  # the least CPU time
    typical_wall_s: float  # the median: what a node would have measured as the baseline's time
    result: dict


def _figures(name: str, run) -> None:
    """One line per case for the report (visible with -s)."""
    if run.outcome_ok:
        r = run.result
        print(f"\n[hostile] {name}: ok val_bpb {r['val_bpb']} wall_s {r['wall_s']} cpu_s {r.get('cpu_s')} "
              f"tokens {r['tokens']} (experiment {run.wall_s:.1f} s)")
    else:
        print(f"\n[hostile] {name}: crashed: {run.reason} (experiment {run.wall_s:.1f} s)")


def _run(cache: Path, source: str, **kw):
    return run_experiment(TINY, source, seed=SEED, budget_scale=SCALE, device="cpu", cache_dir=cache, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    load_data(TINY, path)
    return path


@pytest.fixture(scope="module")
def honest(cache) -> Honest:
    """The baseline at the same budget and seed, three times: the same bits each time; its times vary
    with the machine's load and with whether a warm process was ready (the first run starts cold)."""
    runs = [_run(cache, TINY.source) for _ in range(3)]
    for run in runs:
        assert run.outcome_ok, run.reason
        _figures("honest baseline", run)
    assert len({r.result["val_bpb"] for r in runs}) == 1
    walls = sorted(float(r.result["wall_s"]) for r in runs)
    cpus = [float(r.result["cpu_s"]) for r in runs if r.result.get("cpu_s") is not None]
    return Honest(runs[0].val_bpb, walls[0], min(cpus) if cpus else None, walls[1], runs[0].result)


def assert_no_win(run, honest: Honest, rules: tuple[str, ...]) -> None:
    """Crashed with a reason naming one of ``rules``, or scored no better than the honest baseline."""
    if not run.outcome_ok:
        assert any(rule in run.reason for rule in rules), run.reason
        return
    r = run.result
    assert r["tokens"] == BUDGET and r["seed"] == SEED
    assert run.val_bpb >= honest.val_bpb - TINY.tolerance, (
        f"the trick wins: val_bpb {run.val_bpb} against the honest {honest.val_bpb} (tolerance {TINY.tolerance})")


# --- the hunters work where the split is reachable ------------------------------------------------------

def _module(source: str) -> types.ModuleType:
    module = types.ModuleType("hostile_train")
    exec(compile(source, "train.py", "exec"), module.__dict__)  # noqa: S102 - our own test scripts
    return module


def test_the_hunters_find_the_split_where_it_is_reachable(cache):
    train, val = split_data(TINY, load_data(TINY, cache))
    alphabet = np.zeros(256, bool)
    alphabet[np.frombuffer(TINY_ALPHABET, np.uint8)] = True
    # The file hunt, unsandboxed, pointed at the data cache: it finds the dataset, the split is its tail.
    proc = _module(hostile.proc_and_files())
    found = proc.file_sources(alphabet, [str(cache)], time.monotonic() + 30)
    assert any(a[-len(val):].tobytes() == val for a in found)
    # The exploit with the split as its loot: causal, so it passes the probes, and a clear win that
    # stays above the floor (an untrained model keeps this fast; the gain is relative).
    module = _module(hostile.generator_inline())
    torch.manual_seed(0)
    model = module.build_model(256, TINY.harness.context).eval()
    model.seen[torch.tensor(list(TINY_ALPHABET))] = 1

    def score() -> float:
        scorer = Scorer(val, train, context=TINY.harness.context, rows=64, rng=random.Random(0))
        with torch.inference_mode():
            for queue in scorer.plan():
                for batch in queue:
                    scorer.take(batch, model(torch.from_numpy(batch.inputs.astype(np.int64))).float().numpy())
        return bits_per_byte(*scorer.result())

    plain = score()
    model.stash([np.frombuffer(val, np.uint8).copy()], np.frombuffer(train[:BUDGET + 1], np.uint8))
    model._base = None
    assert int(model.loot_len) == len(val)
    try:
        looted = score()
    except ScoreError as exc:  # pragma: no cover - the exploit must be causal
        pytest.fail(f"the exploit is caught by the probes, so a leak would be masked: {exc}")
    print(f"\n[hostile] control: untrained model {plain:.4f} bpb, with the split as loot {looted:.4f}")
    assert looted < plain - 0.1 * plain


# --- hunting for the validation split ---------------------------------------------------------------------

@pytest.mark.parametrize("name, make", [
    ("frame inspection", hostile.frames),
    ("gc scanning", hostile.gc_scan),
    ("/proc and file reads", hostile.proc_and_files),
    ("generator import, honest fallback", hostile.generator_import),
], ids=["frames", "gc", "proc-files", "generator-import"])
def test_a_hunt_for_the_split_finds_nothing(cache, honest, name, make):
    run = _run(cache, make())
    _figures(name, run)
    assert_no_win(run, honest, READS)


@pytest.mark.parametrize("name, make", [
    ("frame inspection", lambda: hostile.frames(mask_own=False)),
    ("gc scanning", lambda: hostile.gc_scan(mask_own=False)),
], ids=["frames", "gc"])
def test_the_hunts_see_what_the_model_process_holds(cache, name, make):
    """Control: the same hunts, using the rows they are asked about too, find them (in the shared
    memory, the input tensor) and so look ahead, which the probes catch: the hunts do reach the
    model process's memory."""
    run = _run(cache, make())
    _figures(f"{name}, own rows used", run)
    assert not run.outcome_ok
    assert any(rule in run.reason for rule in (FUTURE, MIXING)), run.reason


@pytest.mark.parametrize("mode", ["bwrap", "namespaces"])
def test_the_task_generator_cannot_be_imported(cache, mode):
    # namespaces mode shows the machine read-only: the project's own packages (an editable checkout
    # or site-packages) are hidden from it as from bwrap (trainer.sandbox._our_packages).
    if not mode_works(mode):
        pytest.skip(f"sandbox mode {mode} does not work here")
    run = _run(cache, hostile.generator_import(fallback=False), settings=RunSettings(sandbox_mode=mode))
    _figures(f"generator import, no fallback ({mode})", run)
    assert not run.outcome_ok
    assert "No module named 'trainer.tasks'" in run.reason, run.reason


@pytest.mark.xfail(strict=True, reason=(
    "known hole (README, 'What a hostile script still can do'): tiny's generator is public, so a script "
    "that carries a copy of trainer/markov.py regenerates the validation split in training, ships it in "
    "its weights and predicts from it causally on a quarter of the windows: 2.65 against the honest "
    "3.38 at 60k tokens, above the floor (1.915), passing every probe"))
def test_a_copied_generator_does_not_win(cache, honest):
    run = _run(cache, hostile.generator_inline())
    _figures("generator copied into the script", run)
    assert_no_win(run, honest, READS)


# --- what the runner reads: files, messages, the clock ------------------------------------------------------

def test_a_written_result_file_is_ignored(cache, honest):
    run = _run(cache, hostile.result_file())
    _figures("result file", run)
    assert run.outcome_ok, run.reason
    assert run.result["val_bpb"] == honest.result["val_bpb"]  # the same model, measured: not "0.1"
    assert run.result["curve"] == honest.result["curve"] and run.result["tokens"] == BUDGET


def test_a_patched_channel_changes_only_the_scripts_own_report(cache, honest):
    run = _run(cache, hostile.channel_patch())
    _figures("harness monkeypatched at import", run)
    assert run.outcome_ok, run.reason
    r = run.result
    assert r["val_bpb"] == honest.result["val_bpb"]
    assert r["tokens"] == BUDGET and r["seed"] == SEED
    assert r["flops_per_token"] == honest.result["flops_per_token"]
    assert r["entropy_bpb"] == honest.result["entropy_bpb"]
    assert float(r["wall_s"]) > 0.5 and (r.get("cpu_s") is None or float(r["cpu_s"]) > 0.5)
    # The curve is the script's own word (protocol: result.curve), checked for shape only; a
    # reproduction re-runs the same script, so a made-up curve buys a claim nothing.
    assert r["curve"][-1] == [BUDGET, "0.010000"]


def test_an_early_done_does_not_stop_the_clock(cache, honest):
    run = _run(cache, hostile.early_done())
    _figures("fake done before training", run)
    if not run.outcome_ok:  # killed for training on past the runner's patience
        assert any(word in run.reason for word in ("killed", "weights", "timeout")), run.reason
        return
    r = run.result
    assert r["tokens"] == BUDGET
    # Two passes were trained after the fake outcome (the CPU time says so), and the clock ran until
    # the process ended: the one training thread's wall time covers its CPU time.
    if r.get("cpu_s") is not None and honest.cpu_s is not None:
        assert float(r["cpu_s"]) > 1.2 * honest.cpu_s, (r["cpu_s"], honest.cpu_s)
        assert float(r["wall_s"]) >= 0.8 * float(r["cpu_s"]), (r["wall_s"], r["cpu_s"])
    else:
        assert float(r["wall_s"]) > honest.wall_s, (r["wall_s"], honest.wall_s)


# --- training past the budget ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, make", [
    ("loader rewound", lambda: hostile.past_budget_loader(PASSES)),
    ("token file re-read", lambda: hostile.past_budget_tokens_file(PASSES)),
    ("many steps per batch", lambda: hostile.many_steps(PASSES)),
], ids=["loader-rewound", "tokens-file", "many-steps"])
def test_training_past_the_budget_shows_in_the_measured_time(cache, honest, name, make):
    run = _run(cache, make())
    _figures(name, run)
    assert run.outcome_ok, run.reason
    r = run.result
    assert r["tokens"] == BUDGET  # the budget, never what the script made of it
    # PASSES times the training compute: well over twice the honest run's time, on a loaded machine too
    # (a node votes ``over budget`` past the task's compute cap, 2x the baseline's time).
    assert float(r["wall_s"]) > 2 * honest.wall_s, (r["wall_s"], honest.wall_s)
    if r.get("cpu_s") is not None and honest.cpu_s is not None:
        assert float(r["cpu_s"]) > 2 * honest.cpu_s, (r["cpu_s"], honest.cpu_s)


# --- a model that behaves differently when probed ------------------------------------------------------------

def test_a_probe_aware_lookahead_is_caught(cache, honest):
    run = _run(cache, hostile.probe_aware())
    _figures("probe-aware lookahead", run)
    assert not run.outcome_ok
    assert any(rule in run.reason for rule in (FUTURE, MIXING)), run.reason


# --- things planted in scratch ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, says", [
    ("fifo", "not a regular file"),
    ("symlink", "cannot open the trained weights"),
    ("dir", "not a regular file"),
])
def test_planted_weights_are_a_crash_not_a_hang(cache, kind, says):
    run = _run(cache, hostile.planted_weights(kind))
    _figures(f"weights replaced by a {kind}", run)
    assert not run.outcome_ok
    assert run.reason.startswith(WEIGHTS) and says in run.reason, run.reason
    assert run.wall_s < LIMIT_S


def test_a_racing_planter_is_a_crash_or_nothing(cache, honest):
    run = _run(cache, hostile.planted_by_a_racing_child())
    _figures("weights swapped for a FIFO by a racing child", run)
    assert run.wall_s < LIMIT_S
    if run.outcome_ok:  # the run ended before the child struck: the weights were read as written
        assert run.result["val_bpb"] == honest.result["val_bpb"]
    else:
        assert run.reason.startswith(WEIGHTS), run.reason


def test_plants_in_the_model_scratch_do_not_hang(cache, honest):
    run = _run(cache, hostile.planted_in_model_scratch())
    _figures("FIFOs and symlinks in the model processes' scratch", run)
    assert run.wall_s < LIMIT_S
    if run.outcome_ok:
        assert run.result["val_bpb"] == honest.result["val_bpb"]
    else:
        assert HANDOVER in run.reason, run.reason


# --- children that together exceed the memory limit ----------------------------------------------------------

def _run_memory_cap() -> str | None:
    """Why runs here have no memory cap of their own (skip), or None when they have one."""
    try:
        from trainer import cgroups
    except ImportError:
        return "trainer.cgroups does not exist: memory limits are per process"
    from dataclasses import fields

    from trainer.sandbox import SandboxRun

    if "cgroup" not in {f.name for f in fields(SandboxRun)}:
        return "trainer.sandbox gives runs no cgroup of their own"
    kind, where = cgroups.parents()
    if kind is None:
        return "no writable cgroup on this machine: memory limits are per process"
    if kind == "v1" and "memory" not in where:
        return "no writable memory cgroup (v1) on this machine"
    return None


def test_children_that_together_exceed_the_memory_limit(cache):
    why = _run_memory_cap()
    if why is not None:
        pytest.skip(why)
    # Three forked children touch 1.5 GiB each: each under the 4 GiB address-space rlimit, together over
    # the run's 4 GiB memory cap.
    run = _run(cache, hostile.memory_hog(children=3, gib=1.5))
    _figures("3 children x 1.5 GiB", run)
    assert not run.outcome_ok
    assert MEMORY in run.reason, run.reason


# --- through a node's reproduction ------------------------------------------------------------------------------

AUTHOR = Identity.from_seed(b"\x09" * 32)
POLICY = "sandbox" if detect_sandbox() != "none" else "trusted"  # strangers' code runs only in a sandbox
OVER_BUDGET = "over budget"
# Where the full run ends ok, its val_bpb is the honest one (not the claimed 1.0): ``mismatch``; or, where
# its training took over the task's compute cap x the baseline's time (on a loaded machine an honest
# run's time varies by 2x and more), ``over budget``. Either way not ``reproduced``.
SCORED = {"mismatch": ("vs claimed",), OVER_BUDGET: ("compute cap",)}
NODE_CASES = [
    ("frame inspection", hostile.frames, {"failed": READS, **SCORED}),
    ("gc scanning", hostile.gc_scan, {"failed": READS, **SCORED}),
    ("proc and file reads", hostile.proc_and_files, {"failed": READS, **SCORED}),
    ("result file", hostile.result_file, SCORED),
    ("harness monkeypatched", hostile.channel_patch, SCORED),
    ("generator import", hostile.generator_import, SCORED),
    ("loader rewound", lambda: hostile.past_budget_loader(PASSES), SCORED),
    ("many steps per batch", lambda: hostile.many_steps(PASSES), SCORED),
    ("probe-aware lookahead", hostile.probe_aware, {"failed": (FUTURE, MIXING)}),
    ("FIFO for the weights", lambda: hostile.planted_weights("fifo"), {"failed": ("not a regular file",)}),
    ("symlink for the weights", lambda: hostile.planted_weights("symlink"), {"failed": (WEIGHTS,)}),
    ("planted in the model scratch", hostile.planted_in_model_scratch, {"failed": (HANDOVER,), **SCORED}),
]
if _run_memory_cap() is None:  # the run's children together over its memory cap
    NODE_CASES.append(("children over the memory cap",
                       lambda: hostile.memory_hog(children=3, gib=1.5), {"failed": ("out of memory",)}))


def _reproducer(home: Path, honest: Honest):
    """A Reproducer that polls fast; where it checks the compute cap, it gets the baseline's time at
    this budget from the honest runs above instead of measuring it again."""
    from node.reproduce import Reproducer, WorkerSettings

    kwargs = {"worker": WorkerSettings(debounce_s=0.05, poll_s=0.2)}
    if "baseline_times" in inspect.signature(Reproducer).parameters:
        from node.baseline_time import BaselineTime, BaselineTimes

        times = BaselineTimes(home)
        times.put(TINY.id, "cpu", BUDGET, BaselineTime(f"{honest.typical_wall_s:.3f}", "cpu",
                                                       honest.result.get("cpu_s"), int(time.time())))
        kwargs["baseline_times"] = times
    return Reproducer(None, **kwargs)


async def _wait_vote(node, claim_id: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        votes = [v for v in await node.replica.votes(claim_id) if v.author == node.identity.pubkey]
        if votes:
            return votes[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no vote on {claim_id[:12]} within {timeout} s; activity {node.telemetry.activity}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name, make, verdicts", NODE_CASES, ids=[c[0].replace(" ", "-") for c in NODE_CASES])
async def test_a_node_does_not_reproduce_a_hostile_claim(tmp_path, cache, honest, name, make, verdicts):
    from node.daemon import Node
    from node.settings import NetworkSettings, NodeSettings

    source = make()
    # The claim: the hostile source, its real training curve (same seed, same budget: the spot check
    # agrees with it), and a made-up great score.
    spot = await asyncio.to_thread(spot_check, TINY, source, seed=SEED, fraction=1.0, reference_curve=[[1, "0"]],
                                   budget_tokens=BUDGET, device="cpu", cache_dir=cache)
    # A script that crashes its own training (over the memory cap) has no curve of its own: it claims
    # the honest one, and the reproducer's spot check must fail it for what it does.
    assert spot.curve or "out of memory" in spot.reason, spot.reason
    result = dict(honest.result, val_bpb="1.0", curve=spot.curve or honest.result["curve"], seed=SEED,
                  tokens=BUDGET)
    body = {"task": TINY.id, "parent": None, "patch": make_patch(TINY.source, source),
            "source_sha256": source_sha256(source), "note": f"hostile: {name}", "outcome": "improved",
            "result": result}
    env = build(AUTHOR, "public", "claim", body)

    shutil.copytree(cache, tmp_path / "cache")
    settings = NodeSettings(home=tmp_path, network=NetworkSettings(port=0, lan=False), ralph=False,
                            run_untrusted=POLICY, device="cpu", budget_scale=SCALE)
    node = Node(settings, Identity.from_seed(b"\x01" * 32), echo=lambda _: None)
    node.extensions.append(_reproducer(tmp_path, honest))
    await node.start()
    try:
        report = await node.gossip.ingest([env.canonical()])
        assert report.accepted, report.rejected
        vote = await _wait_vote(node, env.id, timeout=540)
        verdict, reason = vote.body["verdict"], vote.body["reason"]
        print(f"\n[hostile] node, {name}: {verdict}: {reason[:300]}")
        assert verdict != "reproduced"
        assert verdict in verdicts, (verdict, reason)
        assert any(word in reason for word in verdicts[verdict]), reason
        # The node keeps serving: its replica answers, its slot is free, the claim is not verified.
        status = await node.replica.claim_status(env.id)
        assert status.own_vote == verdict and status.status != "verified"
        board = await node.replica.leaderboard(TINY.id)
        assert env.id not in [e.claim.id for e in board.verified]
        assert node.telemetry.activity["experiment"] is None and not node.slots.in_use
    finally:
        await node.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
