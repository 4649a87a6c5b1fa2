"""The mission end to end: real node processes on loopback, offline proposer, tiny task at a small
budget. An improved claim is reproduced by the other nodes before anyone believes it; a fabricated
one is caught.

    .venv/bin/python -m pytest tests/node/test_swarm_e2e.py -q
"""
from __future__ import annotations

import asyncio
import json

import pytest

from protocol import Identity, build
from tests.nodeproc import NodeProcess, cli, wait_until

pytestmark = pytest.mark.slow
SCALE = "0.05"
COMMON = ("--no-lan", "--sync-interval", "1", "--budget-scale", SCALE, "--verify-share", "1.0")


def board(node, task: str | None = None):
    out = cli("leaderboard", *(["--task", task] if task else []), "--json", home=node.home)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def votes_on(node, claim_id):
    out = cli("show", claim_id, "--json", home=node.home)
    return json.loads(out.stdout)["votes"] if out.returncode == 0 else []


def fixed_identity(home, seed: bytes):
    """Give a home a known key before its first start, so its loop's choices are reproducible."""
    assert cli("init", home=home).returncode == 0
    (home / "identity.key").unlink()
    Identity.from_seed(seed).save(home / "identity.key")


def uncapped_tiny(*homes) -> str:
    """tiny with a compute cap that does not bind, in every home's replica and data cache: at this
    budget the offline proposer's first gains are wider models, which tiny's own 2x cap (tested in
    test_reproduce_budget.py and test_hostile.py) rightly turns down; here the path of a kept claim
    through the swarm is under test. Returns the task's id."""
    from protocol import task_id
    from trainer.tasks import builtin_tasks, load_data

    tiny = builtin_tasks()["tiny"]
    body = dict(tiny.body, name="tiny-uncapped", compute_cap="100.0")
    env = build(Identity.from_seed(b"\x0b" * 32), "public", "task", body)
    for home in homes:
        if not (home / "config.json").exists():
            assert cli("init", home=home).returncode == 0
        load_data(tiny, home / "cache")
        out = cli("import", "-", home=home, input=env.canonical() + b"\n")
        assert out.returncode == 0, out.stderr.decode()
    return task_id(body)


@pytest.mark.timeout(300 + 400 + 60)  # the two waits below, plus start and stop
def test_three_nodes_agree_on_a_reproduced_claim(tmp_path):
    fixed_identity(tmp_path / "a", b"\x0a" * 32)
    task = uncapped_tiny(tmp_path / "a", tmp_path / "b", tmp_path / "c")
    a = NodeProcess(tmp_path / "a", *COMMON, "--task", task, "--ralph-steps", "12", "--no-reproduce").start()
    b = NodeProcess(tmp_path / "b", *COMMON, "--no-ralph", "--bootstrap", a.address).start()
    c = NodeProcess(tmp_path / "c", *COMMON, "--no-ralph", "--bootstrap", a.address).start()
    nodes = (a, b, c)
    try:
        # a's loop publishes until it has improved on the baseline; its own run verifies its claims
        wait_until(lambda: board(a, task)["verified"], timeout=300, interval=2, what="an improved claim from a's loop")

        def agreed():
            tops = [(board(n, task)["verified"] or [{}])[0].get("claim") for n in nodes]
            return tops if tops[0] and all(t == tops[0] for t in tops) else False

        claim = wait_until(agreed, timeout=400, interval=2, what="all three leaderboards to agree on a top claim")[0]
        top_a = board(a, task)["verified"][0]
        assert top_a["outcome"] == "improved" and top_a["author"] == a.pubkey
        voters = {v["voter"]: v for v in votes_on(a, claim)}
        assert {b.pubkey, c.pubkey} <= set(voters)
        assert all(voters[k]["verdict"] == "reproduced" for k in (b.pubkey, c.pubkey))
        # The full runs were at each voter's fresh seed (protocol/SPEC.md 5.4.1): samples of the claim's
        # value, not repeats of the claimant's run; within the seed-noise threshold of the claimed value.
        assert all(voters[k]["fresh"] for k in (b.pubkey, c.pubkey))
        assert all(abs(float(voters[k]["val_bpb"]) - float(top_a["claimed_bpb"])) <= 0.05 for k in (b.pubkey, c.pubkey))
    finally:
        for n in nodes:
            n.stop()


def _author_trust(home, author):
    from store import Replica

    async def read():
        config = json.loads((home / "config.json").read_text())
        me = Identity.load(home / "identity.key").pubkey
        r = await Replica.open(home / "replica.sqlite3", swarm=config["swarm"], self_key=me)
        try:
            return (await r.trust()).get(author, 0.0)
        finally:
            await r.close()

    return asyncio.run(read())


def test_fabricated_claim_gets_mismatch_votes_and_costs_its_author_trust(tmp_path):
    from trainer.experiment import run_experiment
    from trainer.patches import make_patch, source_sha256
    from trainer.tasks import resolve_task

    task = resolve_task("tiny")
    source = task.source.replace("MATRIX_LR = ", "MATRIX_LR = 1.1 * ", 1)
    assert source != task.source
    real = run_experiment(task, source, seed=0, budget_scale=float(SCALE), device="cpu")
    assert real.outcome_ok, real.reason
    fake = dict(real.result, val_bpb=f"{float(real.result['val_bpb']) * 0.8:.6f}")  # 20% better than true
    mallory = Identity.from_seed(b"\x66" * 32)
    env = build(mallory, "public", "claim", {
        "task": task.id, "parent": None, "patch": make_patch(task.source, source),
        "source_sha256": source_sha256(source), "note": "MATRIX_LR x1.1 (falsified result)",
        "outcome": "improved", "result": fake})
    b = NodeProcess(tmp_path / "b", *COMMON, "--no-ralph").start()
    c = NodeProcess(tmp_path / "c", *COMMON, "--no-ralph", "--bootstrap", b.address).start()
    try:
        assert b.push([env.canonical()])["accepted"] == [env.id]

        def both_voted():
            verdicts = {v["voter"]: v["verdict"] for v in votes_on(b, env.id)}
            return verdicts if {b.pubkey, c.pubkey} <= set(verdicts) else False

        verdicts = wait_until(both_voted, timeout=240, interval=2, what="b and c to vote on the fabricated claim")
        assert verdicts[b.pubkey] == verdicts[c.pubkey] == "mismatch"
        for n in (b, c):
            lb = board(n)
            assert env.id not in [e["claim"] for e in lb["verified"]]
            assert env.id in [e["claim"] for e in lb["disputed"]]
    finally:
        b.stop()
        c.stop()
    assert _author_trust(b.home, mallory.pubkey) == 0.0
    assert _author_trust(c.home, mallory.pubkey) == 0.0
