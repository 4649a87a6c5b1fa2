"""The reproduction extension on a real node: real replica, real sandboxed training runs of the tiny
task at a small budget, votes signed and stored by the node.

Run: .venv/bin/python -m pytest tests/node/test_reproduce.py -q
The claims are written by another key from a real run at budget scale 0.05 (10,000 tokens, of which
whole batches deliver 9,216); the node spot-checks them with the claim's seed and runs them in full at
its own fresh seed for the claim (protocol/SPEC.md 5.4.1), at the claim's budget, result.tokens.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from node.baseline_time import BaselineTime, BaselineTimes
from node.daemon import Node
from node.reproduce import Reproducer, WorkerSettings
from node.scheduler import SchedulerSettings
from node.settings import NetworkSettings, NodeSettings
from protocol import Identity, build, check_seed_proof, fresh_seed
from tests.timing import PROCESS_SLACK_S, SLACK_S
from trainer.experiment import run_experiment
from trainer.patches import make_patch, source_sha256
from trainer.settings import RunSettings
from trainer.sandbox import detect_sandbox
from trainer.tasks import builtin_tasks, load_data

pytestmark = pytest.mark.slow
TINY = builtin_tasks()["tiny"]
SCALE = 0.05
BUDGET = int(TINY.budget_tokens * SCALE)
SEED = 3
AUTHOR = Identity.from_seed(b"\x07" * 32)
FAST = WorkerSettings(debounce_s=0.05, poll_s=0.2)
# Strangers' code runs only in a working sandbox; where none works here the operator vouches for all.
POLICY = "sandbox" if detect_sandbox() != "none" else "trusted"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    load_data(TINY, path)
    return path


@pytest.fixture(scope="module")
def honest(cache):
    """A real patch and its real result, as an honest node would have claimed it."""
    source = TINY.source.replace("MATRIX_LR = 0.03", "MATRIX_LR = 0.045")
    assert source != TINY.source
    run = run_experiment(TINY, source, seed=SEED, budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert run.outcome_ok, run.reason
    assert run.result["tokens"] == BUDGET  # result.tokens is the budget ...
    assert BUDGET * 0.75 < run.result["curve"][-1][0] < BUDGET  # ... whole batches deliver a little less
    return source, run.result


def claim_env(source: str, result: dict, *, author: Identity = AUTHOR, note: str = "higher matrix lr"):
    body = {"task": TINY.id, "parent": None, "patch": make_patch(TINY.source, source),
            "source_sha256": source_sha256(source), "note": note, "outcome": "improved", "result": result}
    return build(author, "public", "claim", body)


async def start_node(tmp_path: Path, cache: Path, *, policy: str = POLICY, extra: list | None = None,
                     ralph: bool = False, scheduler: SchedulerSettings | None = None):
    shutil.copytree(cache, tmp_path / "cache")  # the tiny dataset, generated once per module
    settings = NodeSettings(home=tmp_path, network=NetworkSettings(port=0, lan=False), ralph=ralph,
                            run_untrusted=policy, device="cpu", budget_scale=SCALE)
    node = Node(settings, Identity.from_seed(b"\x01" * 32), echo=lambda _: None)
    # The compute cap has its own tests (test_reproduce_budget.py). Here the baseline's time is known
    # and generous, so that no baseline run is needed and timing noise cannot touch val_bpb verdicts.
    times = BaselineTimes(tmp_path)
    times.put(TINY.id, "cpu", BUDGET, BaselineTime("1000.000", "cpu"))
    rep = Reproducer(scheduler, worker=FAST, baseline_times=times)
    node.extensions.extend([*(extra or []), rep])
    await node.start()
    return node, rep


async def own_votes(node: Node, claim_id: str) -> list:
    return [v for v in await node.replica.votes(claim_id) if v.author == node.identity.pubkey]


async def wait_vote(node: Node, claim_id: str, timeout: float = 150.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        votes = await own_votes(node, claim_id)
        if votes:
            return votes[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no vote on {claim_id[:12]} within {timeout} s; activity {node.telemetry.activity}")


async def offer(node: Node, env) -> None:
    """The claim arrives as if gossiped by a peer."""
    report = await node.gossip.ingest([env.canonical()])
    assert report.accepted, report.rejected


async def test_honest_claim_is_reproduced(tmp_path, cache, honest):
    source, result = honest
    node, rep = await start_node(tmp_path, cache)
    try:
        env = claim_env(source, result)
        await offer(node, env)
        vote = await wait_vote(node, env.id)
        assert vote.body["verdict"] == "reproduced", vote.body["reason"]
        # The spot check ran at the claim's seed, bit for bit; the full run at this node's fresh seed,
        # which the vote proves and anyone can check with the node's key.
        fresh, proof = fresh_seed(node.identity, env.id)
        assert vote.body["seed_proof"] == proof and vote.body["result"]["seed"] == fresh != SEED
        assert check_seed_proof(node.identity.pubkey, env.id, proof)
        assert vote.body["result"]["tokens"] == result["tokens"]
        threshold = rep._threshold(TINY, result, "cpu")  # the seed noise of both runs at this budget (SPEC 5.8)
        assert abs(float(vote.body["result"]["val_bpb"]) - float(result["val_bpb"])) <= threshold
        assert "spot check passed" in vote.body["reason"] and "within the compute cap" in vote.body["reason"]
        assert "at a fresh seed" in vote.body["reason"]
        status = await node.replica.claim_status(env.id)
        assert status.status == "verified" and status.reproduced_bpb == vote.body["result"]["val_bpb"]
        assert status.estimate.n == 1 and f"{status.estimate.mean:.6f}" == vote.body["result"]["val_bpb"]
        assert (await node.replica.trust()).get(AUTHOR.pubkey, 0.0) > 0
        assert node.telemetry.counters["reproduce_full_runs"] == 1 and node.telemetry.counters["votes_reproduced"] == 1
        assert node.telemetry.activity["experiment"] is None
        assert any(line.get("verdict") == "reproduced" for line in node.telemetry.activity["recent"])
        await rep.rebuild()
        assert node.telemetry.activity["queue"] == []  # voted on: not queued again
    finally:
        await node.stop()


async def test_falsified_val_bpb_is_a_full_run_mismatch(tmp_path, cache, honest):
    source, result = honest
    fake = dict(result, val_bpb=f"{float(result['val_bpb']) - 0.3:.6f}")  # same real curve, better number
    node, rep = await start_node(tmp_path, cache)
    try:
        env = claim_env(source, fake)
        await offer(node, env)
        vote = await wait_vote(node, env.id)
        assert vote.body["verdict"] == "mismatch", vote.body["reason"]
        # What was really measured, at the node's fresh seed: an honest value, 0.3 off the claimed one.
        assert abs(float(vote.body["result"]["val_bpb"]) - float(result["val_bpb"])) <= rep._threshold(TINY, result, "cpu")
        assert vote.body["result"]["seed"] == fresh_seed(node.identity, env.id)[0]
        assert "spot check passed" in vote.body["reason"] and "seed noise" in vote.body["reason"]
        assert node.telemetry.counters["reproduce_full_runs"] == 1
        status = await node.replica.claim_status(env.id)
        assert status.status != "verified" and status.own_vote == "mismatch"
        assert (await node.replica.trust()).get(AUTHOR.pubkey, 0.0) == 0.0
        assert env.id not in [e.claim.id for e in (await node.replica.leaderboard(TINY.id)).verified]
    finally:
        await node.stop()


async def test_falsified_curve_is_caught_by_the_spot_check_alone(tmp_path, cache, honest):
    source, result = honest
    curve = [[t, f"{float(loss) - 0.5:.6f}"] for t, loss in result["curve"]]
    node, _ = await start_node(tmp_path, cache)
    try:
        env = claim_env(source, dict(result, curve=curve))
        await offer(node, env)
        vote = await wait_vote(node, env.id)
        assert vote.body["verdict"] == "mismatch", vote.body["reason"]
        assert vote.body["result"] is None and "curve diverges" in vote.body["reason"]
        assert node.telemetry.counters["reproduce_spot_checks"] == 1
        assert "reproduce_full_runs" not in node.telemetry.counters  # the full run never started
    finally:
        await node.stop()


class BusyLoop:
    """Stands in for the node's own Ralph loop: only its ``busy`` flag matters to the scheduler."""

    busy = True

    async def start(self, node) -> None:
        pass

    async def stop(self) -> None:
        pass

    def describe(self) -> str:
        return "busy loop"

    def on_accepted(self, envelopes) -> None:
        pass


async def test_never_policy_refuses_once_and_waits_for_the_share(tmp_path, cache, honest):
    source, result = honest
    loop = BusyLoop()
    # verify_share 0: while the own loop works, reproduction gets nothing
    node, rep = await start_node(tmp_path, cache, policy="never", extra=[loop], ralph=True,
                                 scheduler=SchedulerSettings(verify_share=0.0))
    try:
        env = claim_env(source, result)
        await offer(node, env)
        for _ in range(100):
            if node.telemetry.activity["queue"]:
                break
            await asyncio.sleep(0.05)
        [item] = node.telemetry.activity["queue"]
        assert item["claim"] == env.id and item["task"] == TINY.id and "pending" in item["reason"]
        await asyncio.sleep(1.0)  # several worker polls
        assert await own_votes(node, env.id) == []
        loop.busy = False
        vote = await wait_vote(node, env.id, timeout=10)
        assert vote.body["verdict"] == "refused" and vote.body["result"] is None
        assert "never" in vote.body["reason"]
        assert "reproductions_run" not in node.telemetry.counters
        await rep.rebuild()
        await asyncio.sleep(1.0)
        assert len(await own_votes(node, env.id)) == 1 and node.telemetry.activity["queue"] == []
    finally:
        await node.stop()


async def test_unbuildable_source_fails_without_running(tmp_path, cache, honest):
    source, result = honest
    node, _ = await start_node(tmp_path, cache)
    try:
        body = dict(claim_env(source, result).body, source_sha256="0" * 64)
        env = build(AUTHOR, "public", "claim", body)
        await offer(node, env)
        vote = await wait_vote(node, env.id, timeout=20)
        assert vote.body["verdict"] == "failed" and "source_sha256" in vote.body["reason"]
        assert "reproductions_run" not in node.telemetry.counters
    finally:
        await node.stop()


async def test_stop_during_a_run_returns_within_seconds(tmp_path, cache, honest):
    source, result = honest
    node, _ = await start_node(tmp_path, cache)
    env = claim_env(source, result)
    await offer(node, env)
    for _ in range(300):
        if node.telemetry.activity["experiment"] is not None:
            break
        await asyncio.sleep(0.05)
    assert node.telemetry.activity["experiment"]["claim"] == env.id
    started = time.monotonic()
    await node.stop()
    # stop() waits at most stop_timeout_s for the reproducer (the training thread is abandoned, not
    # joined); the rest of stop (loops cancelled, server and database closed) is in-process work
    assert time.monotonic() - started < FAST.stop_timeout_s + SLACK_S
    assert not node.slots.in_use  # the slot was handed back


async def test_a_missing_parent_is_waited_for_not_voted_failed(tmp_path, cache):
    # A claim whose parent this node lacks gets no vote (issue 17: every reproducer used to vote it
    # failed): the node's replica holds it back (store/pending.py) until the parent arrives, and a
    # claim whose ancestor went missing otherwise waits in the reproducer (MissingAncestor). Both are
    # unbuildable here (a wrong source_sha256): voted failed at once, without a run, once buildable.
    node, rep = await start_node(tmp_path, cache)
    try:
        new = TINY.source + "# parent\n"
        parent = build(AUTHOR, "public", "claim", {
            "task": TINY.id, "parent": None, "patch": make_patch(TINY.source, new), "source_sha256": "0" * 64,
            "note": "parent", "outcome": "improved", "result": claim_env(new, _fake_result()).body["result"]})
        child = build(AUTHOR, "public", "claim", {
            **parent.body, "parent": parent.id, "patch": make_patch(new, new + "# child\n"), "note": "child",
            "source_sha256": "2" * 64})  # wrong as well, and not the parent's (a duplicate is not queued)
        report = await node.gossip.ingest([child.canonical()])
        assert report.duplicate == [child.id] and child.id in node.replica.pending  # held, not stored
        assert await node.replica.get(child.id) is None
        await offer(node, parent)
        vote = await wait_vote(node, child.id, timeout=20)
        assert vote.body["verdict"] == "failed" and "source_sha256" in vote.body["reason"]
        # a claim stored without its parent (an import stores at once, with the library's settings):
        # the reproducer waits for the parent instead of voting
        orphan = build(AUTHOR, "public", "claim", {
            **parent.body, "parent": "ab" * 32, "patch": make_patch(new, new + "# orphan\n"), "note": "orphan",
            "source_sha256": "3" * 64})
        held, node.replica.pending = node.replica.pending, None
        try:
            await offer(node, orphan)
        finally:
            node.replica.pending = held
        deadline = time.monotonic() + 20
        while "ab" * 32 not in rep._waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert rep._waiting.get("ab" * 32) == {orphan.id} and await own_votes(node, orphan.id) == []
    finally:
        await node.stop()


def _fake_result() -> dict:
    return {"val_bpb": "1.400000", "curve": [[0, "5.545177"], [BUDGET // 2, "2.000000"]], "tokens": BUDGET,
            "seed": 0, "wall_s": "1.0", "device": "cpu", "torch": "2.13.0", "flops_per_token": 1000}


async def test_a_sleeping_script_holds_the_slot_only_for_the_spot_checks_share(tmp_path, cache):
    # issue 17: a claim whose script sleeps held the reproduction slot for the whole budget's limit
    # (360 s on CPU); now the spot check's limit is its share of the budget, from the baseline's time
    worker = WorkerSettings(debounce_s=0.05, poll_s=0.2, spot_fixed_s=8.0)
    shutil.copytree(cache, tmp_path / "cache")
    settings = NodeSettings(home=tmp_path, network=NetworkSettings(port=0, lan=False), ralph=False,
                            run_untrusted=POLICY, device="cpu", budget_scale=SCALE)
    node = Node(settings, Identity.from_seed(b"\x01" * 32), echo=lambda _: None)
    times = BaselineTimes(tmp_path)
    times.put(TINY.id, "cpu", BUDGET, BaselineTime("1.000", "cpu"))
    rep = Reproducer(None, worker=worker, baseline_times=times)
    node.extensions.append(rep)
    await node.start()
    try:
        limit = rep._spot_timeout(TINY, "cpu", BUDGET)
        whole = RunSettings().train_timeout(BUDGET, "cpu")
        assert limit == pytest.approx(8.0 + 1.0 * rep.settings.spot_fraction * TINY.compute_cap * worker.spot_slack)
        assert whole > 3 * limit  # what the sleeper held before
        source = TINY.source + "\nimport time as _t\n_t.sleep(3600)\n"
        env = claim_env(source, _fake_result())
        t0 = time.monotonic()
        await offer(node, env)
        bound = limit + PROCESS_SLACK_S + SLACK_S  # the limit, a harness process started and killed, the loop
        vote = await wait_vote(node, env.id, timeout=bound)
        took = time.monotonic() - t0
        assert vote.body["verdict"] == "failed" and str(int(limit)) in vote.body["reason"], vote.body
        assert took < bound < whole
    finally:
        await node.stop()
