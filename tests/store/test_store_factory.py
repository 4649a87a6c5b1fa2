"""Message factories shared by the store tests (real keys, real signatures).

Run: .venv/bin/python -m pytest tests/store/test_store_factory.py
"""
from __future__ import annotations

import hashlib

from protocol import Identity, build, decode, fresh_seed, task_id

SWARM = "test-swarm"
NOW = 1_700_000_000


def key(n: int) -> Identity:
    """Deterministic identity number ``n`` (seeded, so tests are repeatable)."""
    return Identity.from_seed(hashlib.sha256(f"store-test-key-{n}".encode()).digest())


def tid(task_env) -> str:
    """A task's id is the sha256 of its body, not its envelope id (docs/design.md, "Words")."""
    return task_id(task_env.body)


def result(val_bpb: str, points: int = 8) -> dict:
    return {
        "val_bpb": val_bpb,
        "curve": [[i * 1000, f"{3 - i * 0.1:.4f}"] for i in range(points)],
        "tokens": points * 1000,
        "seed": 0,
        "wall_s": "1.5",
        "device": "cpu",
        "torch": "2.3.0",
        "flops_per_token": 1000,
    }


def task(author: Identity, name: str = "tiny", at: int = NOW - 1000):
    body = {
        "name": name, "description": "test task", "harness": "tiny-v1", "source": "print('hi')\n",
        "data": {"name": "tiny.bin", "sha256": "ab" * 32, "bytes": 1000}, "metric": "val_bpb",
        "direction": "min", "budget": {"tokens": 10000}, "tolerance": "0.01", "compute_cap": "2.0",
    }
    return build(author, SWARM, "task", body, created_at=at)


def claim(author: Identity, task_id: str, val: str, *, parent: str | None = None, source: str | None = None,
          at: int = NOW - 500, outcome: str = "improved", patch: str = "+x\n", note: str = ""):
    body = {
        "task": task_id, "parent": parent, "patch": patch,
        "source_sha256": source or hashlib.sha256(f"{val}{note}{at}{author.pubkey}".encode()).hexdigest(),
        "note": note, "outcome": outcome, "result": None if outcome == "crashed" else result(val),
    }
    return build(author, SWARM, "claim", body, created_at=at)


def vote(voter: Identity, claim_id: str, verdict: str = "reproduced", val: str | None = "1.000000",
         at: int = NOW - 100, *, fresh: bool = False, device: str = "cpu"):
    """A vote; ``fresh``: a full run at the voter's fresh seed (protocol/SPEC.md 5.4.1), a sample for the estimate."""
    body = {"claim": claim_id, "verdict": verdict, "result": result(val) if val else None, "reason": ""}
    if body["result"] is not None:
        body["result"]["device"] = device
    if fresh:
        body["result"]["seed"], body["seed_proof"] = fresh_seed(voter, claim_id)
    return build(voter, SWARM, "vote", body, created_at=at)


def peer(author: Identity, port: int, expires_at: int, at: int = NOW - 10):
    return build(author, SWARM, "peer", {"addresses": [f"http://127.0.0.1:{port}"], "expires_at": expires_at},
                 created_at=at)


def test_factories_build_valid_messages():
    me = key(0)
    t = task(me)
    c = claim(me, "cd" * 32, "1.100000")
    for env in (t, c, vote(key(1), c.id), peer(me, 7447, NOW + 60)):
        assert decode(env.canonical(), swarm=SWARM, now=NOW) == env
