"""Signed test messages: real claims and votes from fixed or fresh keys."""
from __future__ import annotations

import hashlib
import random

from protocol import Identity, build


def result(val_bpb: str = "1.500000", seed: int = 0) -> dict:
    return {"val_bpb": val_bpb, "curve": [[0, "5.545177"], [4096, "2.100000"]], "tokens": 4096, "seed": seed,
            "wall_s": "1.0", "device": "cpu", "torch": "2.13.0", "flops_per_token": 1000}


def claim(identity: Identity, swarm: str = "public", *, task: str = "a" * 64, n: int = 0,
          val_bpb: str = "1.500000", created_at: int = 1_700_000_000, parent: str | None = None,
          note: str | None = None) -> object:
    source = f"# source {n}\nLR = {n}\n"
    body = {"task": task, "parent": parent, "patch": f"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-x\n+{n}\n",
            "source_sha256": hashlib.sha256(source.encode()).hexdigest(), "note": note or f"claim {n}",
            "outcome": "improved", "result": result(val_bpb)}
    return build(identity, swarm, "claim", body, created_at=created_at + n)


def claims_author(seed: int = 0) -> Identity:
    """The author of ``claims(..., seed=seed)``: a node that is to relay and offer those claims to its
    peers trusts it (``--trusted``); a zero-trust author's claims stay where they were pushed until a
    trusted vote touches them (node/newcomers.py)."""
    return Identity.from_seed(random.Random(seed).randbytes(32))


def claims(count: int, swarm: str = "public", seed: int = 0, **kw) -> list:
    author = claims_author(seed)
    return [claim(author, swarm, n=seed * 1_000_000 + i, **kw) for i in range(count)]
