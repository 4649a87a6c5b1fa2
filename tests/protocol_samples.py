"""Valid protocol v1 bodies to start tests from (SPEC.md section 5). Plain functions, fresh dicts."""
from __future__ import annotations

import hashlib

CREATED_AT = 1700000000
NOW = CREATED_AT + 60
SWARM = "public"


def result(**over) -> dict:
    base = {"val_bpb": "1.234567", "curve": [[0, "5.545177"], [1024, "2.3"]], "tokens": 1024, "seed": 7,
            "wall_s": "3.25", "device": "cpu", "torch": "2.13.0", "flops_per_token": 4096}
    return {**base, **over}


def task(**over) -> dict:
    base = {"name": "tiny", "description": "synthetic", "harness": "ralphswarm-harness/1",
            "source": "LR = 3e-3\n", "data": {"name": "tiny-v1", "sha256": hashlib.sha256(b"d").hexdigest(),
                                             "bytes": 4096},
            "metric": "val_bpb", "direction": "min", "budget": {"tokens": 1024}, "tolerance": "0.01",
            "compute_cap": "2.0"}
    return {**base, **over}


def claim(**over) -> dict:
    base = {"task": "ab" * 32, "parent": None, "patch": "-LR = 3e-3\n+LR = 6e-3\n",
            "source_sha256": "cd" * 32, "note": "double the learning rate", "outcome": "improved",
            "result": result()}
    return {**base, **over}


def vote(**over) -> dict:
    base = {"claim": "ef" * 32, "verdict": "reproduced", "result": result(), "reason": ""}
    return {**base, **over}


def peer(**over) -> dict:
    base = {"addresses": ["http://127.0.0.1:7447"], "expires_at": CREATED_AT + 3600}
    return {**base, **over}


BODIES = {"task": task, "claim": claim, "vote": vote, "peer": peer}
