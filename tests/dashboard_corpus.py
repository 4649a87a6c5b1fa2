"""A small signed corpus for the dashboard tests: one task (by id only, no task message), a lineage
of claims, and votes that make some claims verified, one disputed, one pending and one over budget
from the point of view of a node started with ``--trusted TRUSTED.pubkey``."""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from protocol import Identity, build

SWARM = "public"
TASK = "a" * 64  # no task message for it: the dashboard must still list and rank it
AUTHOR = Identity.from_seed(b"\x21" * 32)
TRUSTED = Identity.from_seed(b"\x22" * 32)  # the node under test runs with --trusted TRUSTED.pubkey
STRANGER = Identity.from_seed(b"\x23" * 32)  # nobody trusts this key: its votes count for nothing
TOKENS = 65536
XSS = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'


def curve(start: float, end: float, seed: int = 0, points: int = 24) -> list[list]:
    """A plausible loss curve (exponential decay with a deterministic wobble), as the wire carries it."""
    out = []
    for i in range(points):
        t = i * TOKENS // (points - 1)
        wobble = 0.02 * math.sin(i * 1.7 + seed) * (1 - i / points)
        out.append([t, f"{end + (start - end) * math.exp(-4.5 * t / TOKENS) + wobble:.6f}"])
    return out


def result(val_bpb: str, end: float, seed: int = 0, wall_s: str = "12.5") -> dict:
    return {"val_bpb": val_bpb, "curve": curve(5.55, end, seed), "tokens": TOKENS, "seed": 0,
            "wall_s": wall_s, "device": "cpu", "torch": "2.13.0", "flops_per_token": 1000}


def _claim(n: int, note: str, parent: str | None, val_bpb: str | None, end: float, created_at: int,
           outcome: str = "improved", patch_line: str = "") -> object:
    source = f"# train.py v{n}\nLR = {n}\n"
    patch = f"--- a/train.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n # train.py\n-LR = 3e-3\n+LR = {n}e-3\n{patch_line}"
    body = {"task": TASK, "parent": parent, "patch": patch,
            "source_sha256": hashlib.sha256(source.encode()).hexdigest(), "note": note, "outcome": outcome,
            "result": result(val_bpb, end, seed=n) if val_bpb else None}
    return build(AUTHOR, SWARM, "claim", body, created_at=created_at)


def _vote(voter: Identity, claim, verdict: str, val_bpb: str | None, end: float, reason: str, created_at: int,
          wall_s: str = "12.5"):
    body = {"claim": claim.id, "verdict": verdict, "reason": reason,
            "result": result(val_bpb, end, seed=7, wall_s=wall_s) if val_bpb else None}
    return build(voter, SWARM, "vote", body, created_at=created_at)


@dataclass
class Corpus:
    verified: object  # c1: reproduced by TRUSTED
    best: object  # c2: child of c1, reproduced by TRUSTED with a lower val_bpb: rank 1
    disputed: object  # c3: a mismatch from TRUSTED; its note and patch carry HTML
    pending: object  # c4: only a stranger reproduced it
    crashed: object  # c5: a negative result
    over_budget: object  # c6: the lowest val_bpb, but TRUSTED's run took 3x the baseline's time
    votes: list

    @property
    def messages(self) -> list:
        return [self.verified, self.best, self.disputed, self.pending, self.crashed, self.over_budget, *self.votes]


def make_corpus(now: int | None = None) -> Corpus:
    t = int(time.time() if now is None else now) - 3600
    c1 = _claim(4, "Raise the learning rate from 3e-3 to 4e-3: the loss was still falling fast at the end.",
                None, "1.412000", 1.41, t)
    c2 = _claim(5, "Linear warmup over the first 5% of tokens on top of the higher LR.", c1.id, "1.390000", 1.39,
                t + 600)
    c3 = _claim(6, f"Wider MLP {XSS} (4x -> 6x hidden)", c1.id, "1.300000", 1.30, t + 900, patch_line=f"+# {XSS}\n")
    c4 = _claim(7, "Cosine decay to 10% instead of linear.", c2.id, "1.385000", 1.385, t + 1200)
    c5 = _claim(8, "bf16 everywhere including the softmax: NaN at step 40.", c2.id, None, 0, t + 1500,
                outcome="crashed")
    c6 = _claim(9, "Three optimizer passes over every batch.", c2.id, "1.350000", 1.35, t + 1600)
    votes = [
        _vote(TRUSTED, c1, "reproduced", "1.415000", 1.415, "within tolerance", t + 1800),
        _vote(TRUSTED, c2, "reproduced", "1.392000", 1.392, "within tolerance", t + 1900),
        _vote(TRUSTED, c3, "mismatch", "1.472000", 1.472, "val_bpb 1.472 vs claimed 1.300", t + 2000),
        _vote(STRANGER, c4, "reproduced", "1.386000", 1.386, "within tolerance", t + 2100),
        _vote(STRANGER, c1, "failed", None, 0, "out of memory", t + 2200),
        _vote(TRUSTED, c6, "over budget", "1.351000", 1.351, "training took 37.5 s, over the compute cap: 2.0 x "
              "the baseline's 12.5 s on this hardware = 25.0 s", t + 2300, wall_s="37.5"),
    ]
    return Corpus(c1, c2, c3, c4, c5, c6, votes)
