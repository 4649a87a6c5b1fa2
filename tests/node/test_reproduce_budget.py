"""The compute cap in reproduction (protocol/SPEC.md 5.2 task.compute_cap, 5.4 verdict ``over budget``):
a real node and its Reproducer vote ``over budget`` on a claim whose training takes more than the
task's cap x the baseline's time on this node's hardware, whatever its val_bpb; the baseline's time
is measured once per (task, device, budget) and kept in the node's home (node/baseline_time.py).

The trainer is a stand-in here (its times are chosen per source); tests/node/test_reproduce_budget.py's
last test runs the real trainer end to end (slow).

Run: .venv/bin/python -m pytest tests/node/test_reproduce_budget.py -q
"""
from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import trainer.experiment
from node.baseline_time import FILE_NAME, BaselineTime, BaselineTimes
from node.daemon import Node
from node.reproduce import Reproducer, WorkerSettings
from node.settings import NetworkSettings, NodeSettings
from protocol import Identity, build
from protocol.schemas import validate_vote
from trainer.patches import make_patch, source_sha256
from trainer.tasks import builtin_tasks

TINY = builtin_tasks()["tiny"]
AUTHOR = Identity.from_seed(b"\x07" * 32)
FAST = WorkerSettings(debounce_s=0.05, poll_s=0.2)
BUDGET = 15_000


@dataclass
class FakeRun:
    outcome_ok: bool
    result: dict | None
    reason: str = ""


@dataclass
class FakeSpot:
    ok: bool
    reason: str
    curve: list


def result(val_bpb: str, wall_s: str, *, device: str = "cpu", seed: int = 3) -> dict:
    return {"val_bpb": val_bpb, "curve": [[1024, "4.100000"], [8192, "3.200000"], [14336, "2.900000"]],
            "tokens": BUDGET, "seed": seed, "wall_s": wall_s, "cpu_s": wall_s, "device": device, "torch": "test",
            "flops_per_token": 1000, "sandbox": "none"}


class FakeTrainer:
    """Stands in for trainer.experiment: each source trains for the time the test sets; every spot
    check passes; records the runs."""

    def __init__(self, walls: dict[str, str | list[str]], bpb: dict[str, str] | None = None,
                 crash: set[str] = frozenset()):
        self.walls, self.bpb, self.crash = walls, bpb or {}, crash
        self.runs: list[tuple[str, int, str]] = []

    def run_experiment(self, task, source, *, seed=0, budget_tokens=None, device="auto", on_progress=None, **_):
        sha = source_sha256(source)
        self.runs.append((sha, budget_tokens, device))
        if sha in self.crash:
            return FakeRun(False, None, "RuntimeError: boom")
        wall = self.walls[sha]
        if isinstance(wall, list):  # one time per run, in turn
            wall = wall[sum(1 for r in self.runs if r[0] == sha) - 1]
        return FakeRun(True, result(self.bpb.get(sha, "3.000000"), wall, seed=seed))

    def spot_check(self, task, source, *, reference_curve, **_):
        return FakeSpot(True, "2 curve points within 0.012", reference_curve[:2])


@pytest.fixture
def fake(monkeypatch):
    def install(walls, **kw) -> FakeTrainer:
        t = FakeTrainer({source_sha256(s): w for s, w in walls.items()}, **kw)
        monkeypatch.setattr(trainer.experiment, "run_experiment", t.run_experiment)
        monkeypatch.setattr(trainer.experiment, "spot_check", t.spot_check)
        return t
    return install


def variant(n: int) -> str:
    source = TINY.source.replace("MATRIX_LR = 0.03", f"MATRIX_LR = 0.0{n}")
    assert source != TINY.source
    return source


def claim_env(source: str, res: dict, *, task=TINY):
    body = {"task": task.id, "parent": None, "patch": make_patch(task.source, source),
            "source_sha256": source_sha256(source), "note": "a change", "outcome": "improved", "result": res}
    return build(AUTHOR, "public", "claim", body)


async def start_node(home: Path) -> tuple[Node, Reproducer]:
    settings = NodeSettings(home=home, network=NetworkSettings(port=0, lan=False), ralph=False,
                            run_untrusted="trusted", device="cpu")
    node = Node(settings, Identity.from_seed(b"\x01" * 32), echo=lambda _: None)
    rep = Reproducer(worker=FAST)
    node.extensions.append(rep)
    await node.start()
    return node, rep


async def offer(node: Node, *envs) -> None:
    report = await node.gossip.ingest([e.canonical() for e in envs])
    assert report.accepted, report.rejected


async def wait_vote(node: Node, claim_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        votes = [v for v in await node.replica.votes(claim_id) if v.author == node.identity.pubkey]
        if votes:
            return votes[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no vote on {claim_id[:12]} within {timeout} s; activity {node.telemetry.activity}")


# -- the reproducer on a real node -----------------------------------------------------------------

async def test_a_claim_over_the_cap_is_voted_over_budget_whatever_its_val_bpb(tmp_path, fake):
    slow, fair = variant(4), variant(5)
    trainer_ = fake({TINY.source: ["1.400", "1.000"], slow: "3.000", fair: "1.900"})  # the least baseline run counts
    node, rep = await start_node(tmp_path)
    try:
        env = claim_env(slow, result("3.000000", "1.100"))  # claims a fast run; the re-run takes 3 s
        await offer(node, env)
        vote = await wait_vote(node, env.id)
        validate_vote(dict(vote.body))
        assert vote.body["verdict"] == "over budget", vote.body["reason"]
        assert vote.body["result"]["wall_s"] == "3.000" and vote.body["result"]["val_bpb"] == "3.000000"
        reason = vote.body["reason"]
        assert "3.000 s" in reason and "1.000 s" in reason and "2.0 x" in reason and "seed noise" in reason
        # the claim's full run (the spot check is faked apart), the baseline, twice, at the claim's
        # budget on the same device, and the claim once more to confirm its time before the verdict
        claim_run, base_run = (source_sha256(slow), BUDGET, "cpu"), (source_sha256(TINY.source), BUDGET, "cpu")
        assert trainer_.runs == [claim_run, base_run, base_run, claim_run]
        assert node.telemetry.counters["votes_over_budget"] == 1 and node.telemetry.counters["baseline_runs"] == 1
        assert node.telemetry.counters["reproduce_confirm_runs"] == 1 and "lesser of two runs" in reason

        status = await node.replica.claim_status(env.id)
        assert status.status == "over budget" and status.own_vote == "over budget"
        board = await node.replica.leaderboard(TINY.id)
        assert [e.claim.id for e in board.over_budget] == [env.id] and board.verified == []
        assert await node.replica.top_entries(TINY.id, 5) == []
        cached = json.loads((tmp_path / FILE_NAME).read_text())["entries"]
        assert list(cached.values()) == [{"wall_s": "1.000", "cpu_s": "1.000", "device": "cpu",
                                          "measured_at": cached[f"{TINY.id}|cpu|{BUDGET}"]["measured_at"]}]
        await rep.rebuild()
        assert node.telemetry.activity["queue"] == []  # never reproduced again

        within = claim_env(fair, result("3.000000", "1.900"))  # 1.9 x the baseline: within the cap
        await offer(node, within)
        vote = await wait_vote(node, within.id)
        assert vote.body["verdict"] == "reproduced", vote.body["reason"]
        assert "within the compute cap" in vote.body["reason"]
        assert node.telemetry.counters["baseline_runs"] == 1  # the baseline's time came from the cache
        assert node.telemetry.counters["reproduce_confirm_runs"] == 1  # within the cap at once: no confirmation
        assert [e.claim.id for e in (await node.replica.leaderboard(TINY.id)).verified] == [within.id]
    finally:
        await node.stop()


async def test_over_budget_beats_a_val_bpb_mismatch_and_the_cache_survives_a_restart(tmp_path, fake):
    slow = variant(4)
    trainer_ = fake({TINY.source: "1.000", slow: "2.500"}, bpb={source_sha256(slow): "3.500000"})
    BaselineTimes(tmp_path).put(TINY.id, "cpu", BUDGET, BaselineTime("1.000", "cpu", None, 1))  # an earlier run's
    node, _ = await start_node(tmp_path)
    try:
        env = claim_env(slow, result("3.000000", "1.100"))
        await offer(node, env)
        vote = await wait_vote(node, env.id)
        assert vote.body["verdict"] == "over budget" and "off by" in vote.body["reason"]
        assert trainer_.runs == [(source_sha256(slow), BUDGET, "cpu")] * 2 and "baseline_runs" not in node.telemetry.counters
    finally:
        await node.stop()


async def test_a_slow_run_that_is_within_the_cap_when_run_again_is_not_over_budget(tmp_path, fake):
    slow = variant(4)
    trainer_ = fake({TINY.source: "1.000", slow: ["2.600", "1.700"]})  # the first run was slowed down
    node, _ = await start_node(tmp_path)
    try:
        env = claim_env(slow, result("3.000000", "1.700"))
        await offer(node, env)
        vote = await wait_vote(node, env.id)
        assert vote.body["verdict"] == "reproduced", vote.body["reason"]
        assert vote.body["result"]["wall_s"] == "1.700" and "within the compute cap" in vote.body["reason"]
        assert [r[0] for r in trainer_.runs].count(source_sha256(slow)) == 2
    finally:
        await node.stop()


async def test_a_baseline_that_crashes_leaves_the_val_bpb_verdict(tmp_path, fake):
    slow = variant(4)
    fake({TINY.source: "1.000", slow: "9.000"}, crash={source_sha256(TINY.source)})
    node, _ = await start_node(tmp_path)
    try:
        env = claim_env(slow, result("3.000000", "9.000"))
        await offer(node, env)
        vote = await wait_vote(node, env.id)
        assert vote.body["verdict"] == "reproduced" and "compute cap not checked" in vote.body["reason"]
        assert not (tmp_path / FILE_NAME).exists()  # a crash is not cached
    finally:
        await node.stop()


# -- the task field --------------------------------------------------------------------------------

def test_tasks_made_here_carry_a_compute_cap():
    from protocol.schemas import validate_task
    from trainer.tasks import HarnessSpec, TaskError, make_body

    for task in builtin_tasks().values():
        assert task.body["compute_cap"] == "2.0" and task.compute_cap == 2.0
        validate_task(task.body)
    common = dict(name="t", description="", source="x", harness=HarnessSpec(8, 16), data_name="d", data=b"abc",
                  budget_tokens=10, tolerance="0.1")
    assert make_body(**common)["compute_cap"] == "2.0"
    body = make_body(**common, compute_cap="1.5")
    assert body["compute_cap"] == "1.5" and validate_task(body) is body
    for bad in ("0", "0.0", "-1", "2e0", "1.", ""):
        with pytest.raises(TaskError, match="compute cap"):
            make_body(**common, compute_cap=bad)


# -- the cache -------------------------------------------------------------------------------------

def test_baseline_times_cache_by_task_device_budget_and_hardware(tmp_path):
    walls = iter(["2.000", "4.000", "8.000", "7.000"])
    calls = []

    def run(task, source, *, seed, budget_tokens, device, **options):
        calls.append((source == TINY.source, budget_tokens, device, options))
        return FakeRun(True, dict(result("3.0", next(walls)), device=f"{device}-hw"))

    times = BaselineTimes(tmp_path)
    first = times.measure(TINY, device="cpu", budget=1000, run=run, runs=1, cache_dir=tmp_path)
    assert first.wall_s == "2.000" and first.device == "cpu-hw"
    assert times.measure(TINY, device="cpu", budget=1000, run=run).wall_s == "2.000"  # cached
    assert calls == [(True, 1000, "cpu", {"cache_dir": tmp_path})]
    assert times.measure(TINY, device="cpu", budget=2000, run=run, runs=1).wall_s == "4.000"  # another budget
    # a slot name that now stands for other hardware than the entry's: measured again
    assert times.get(TINY.id, "cpu", 1000, hardware="other") is None
    # two runs (the default): the least time is kept
    assert times.measure(TINY, device="cpu", budget=1000, hardware="other", run=run).wall_s == "7.000"
    again = BaselineTimes(tmp_path)  # read back from the file
    assert again.get(TINY.id, "cpu", 2000).wall_s == "4.000" and again.get(TINY.id, "cuda:0", 2000) is None
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # written atomically: no temporary left


def test_a_damaged_cache_file_is_measured_again(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")
    times = BaselineTimes(tmp_path)
    assert times.get(TINY.id, "cpu", 1000) is None
    times.put(TINY.id, "cpu", 1000, BaselineTime("1.5", "cpu"))
    assert BaselineTimes(tmp_path).get(TINY.id, "cpu", 1000).wall_s == "1.5"


# -- end to end through the real trainer -----------------------------------------------------------

OLD_LOOP = """        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        (loss / accum).backward()
        log(loss.detach())
        pending += 1
        if pending == accum:
            step(optimizers, loader.progress)
            pending = 0
"""
THREE_PASSES = """        for _ in range(3):  # three optimizer passes over every batch: three times the compute
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            step(optimizers, loader.progress)
        log(loss.detach())
"""


@pytest.mark.slow
async def test_three_optimizer_passes_per_batch_are_over_a_small_cap_end_to_end(tmp_path):
    """The claim is honest (its result is the real run's) and its val_bpb may well be better: it
    bought it with three times the compute, so the reproducer votes over budget."""
    from trainer.experiment import run_experiment
    from trainer.sandbox import detect_sandbox
    from trainer.tasks import Task, load_data

    # tiny under a small cap: three times the compute is well over it. At 90k tokens the training
    # itself, not the harness's fixed costs inside the measured span, decides the time.
    body = dict(TINY.body, compute_cap="1.2")
    task = Task.from_body(body)
    cache = tmp_path / "cache"
    load_data(TINY, cache)  # the same data, by sha256
    assert OLD_LOOP in task.source
    source = task.source.replace(OLD_LOOP, THREE_PASSES)
    budget = int(TINY.budget_tokens * 0.3)
    run = await asyncio.to_thread(run_experiment, task, source, seed=3, budget_tokens=budget, device="cpu",
                                  cache_dir=cache)
    assert run.outcome_ok, run.reason

    home = tmp_path / "node"
    shutil.copytree(cache, home / "cache")
    settings = NodeSettings(home=home, network=NetworkSettings(port=0, lan=False), ralph=False, device="cpu",
                            run_untrusted="sandbox" if detect_sandbox() != "none" else "trusted")
    node = Node(settings, Identity.from_seed(b"\x01" * 32), echo=lambda _: None)
    node.extensions.append(Reproducer(worker=FAST))
    await node.start()
    try:
        env = claim_env(source, run.result, task=task)
        await offer(node, build(AUTHOR, "public", "task", body), env)
        vote = await wait_vote(node, env.id, timeout=240)
        assert vote.body["verdict"] == "over budget", vote.body["reason"]
        assert "spot check passed" in vote.body["reason"] and "1.2 x the baseline's" in vote.body["reason"]
        assert node.telemetry.counters["baseline_runs"] == 1
        [entry] = json.loads((home / FILE_NAME).read_text())["entries"].values()
        assert float(vote.body["result"]["wall_s"]) > 1.2 * float(entry["wall_s"])
        assert [e.claim.id for e in (await node.replica.leaderboard(task.id)).over_budget] == [env.id]
    finally:
        await node.stop()
