"""A small signed corpus for the dashboard tests: one task (by id only, no task message), a lineage
of claims, and votes that make some claims verified, one disputed, one pending and one over budget
from the point of view of a node started with ``--trusted TRUSTED.pubkey``.

Beside it, the luck task (``Luck``, docs/design.md, "Luck is not progress"): a task message, its
baseline claim and four children with votes at the voters' fresh seeds (protocol/SPEC.md 5.4.1) from
TRUSTED and TRUSTED2, so that, for a node trusting both, each claim has an estimate and a state:
significant, not significant yet, no gain (verified), and no gain (a seed-hacked claim, disputed)."""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from protocol import Identity, build, fresh_seed, task_id

SWARM = "public"
TASK = "a" * 64  # no task message for it: the dashboard must still list and rank it
AUTHOR = Identity.from_seed(b"\x21" * 32)
TRUSTED = Identity.from_seed(b"\x22" * 32)  # the node under test runs with --trusted TRUSTED.pubkey
STRANGER = Identity.from_seed(b"\x23" * 32)  # nobody trusts this key: its votes count for nothing
TRUSTED2 = Identity.from_seed(b"\x24" * 32)  # the second fresh-seed voter of the luck task; trusted too
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


# The luck task. No noise table holds it, so its seed noise is tolerance / 3 = 0.003 (store/stats.py)
# and a fresh run is `reproduced` within 2.576 * sqrt(2) * 0.003 = 0.0109 of the claimed value.
LUCK_SOURCE = "# train.py: the luck task's baseline\nLR = 3e-3\n"
LUCK_BODY = {
    "name": "luck", "description": "a task for the dashboard's fresh-seed estimates", "source": LUCK_SOURCE,
    "harness": "ralphswarm-bytes-v2 context=256 val_bytes=4096",
    "data": {"name": "luck.bin", "sha256": "cd" * 32, "bytes": 100000}, "metric": "val_bpb", "direction": "min",
    "budget": {"tokens": TOKENS}, "tolerance": "0.009", "compute_cap": "2.0",
}
LUCK = task_id(LUCK_BODY)


def _luck_claim(name: str, note: str, parent: str | None, claimed: str, created_at: int) -> object:
    source = LUCK_SOURCE if parent is None else f"{LUCK_SOURCE}# {name}\n"
    patch = "" if parent is None else f"--- a/train.py\n+++ b/train.py\n@@ -2,0 +3 @@\n+# {name}\n"
    body = {"task": LUCK, "parent": parent, "patch": patch,
            "source_sha256": hashlib.sha256(source.encode()).hexdigest(), "note": note, "outcome": "improved",
            "result": result(claimed, float(claimed))}
    return build(AUTHOR, SWARM, "claim", body, created_at=created_at)


def _fresh_vote(voter: Identity, claim, verdict: str, val_bpb: str, created_at: int):
    """A full run at the voter's fresh seed: it carries the seed_proof, so it is a sample (SPEC 5.9)."""
    seed, proof = fresh_seed(voter, claim.id)
    res = result(val_bpb, float(val_bpb), seed=3)
    res["seed"] = seed
    body = {"claim": claim.id, "verdict": verdict, "reason": f"fresh seed {seed}", "result": res, "seed_proof": proof}
    return build(voter, SWARM, "vote", body, created_at=created_at)


@dataclass
class Luck:
    task: object  # the task message
    baseline: object  # the task's own source: fresh runs 1.500, 1.504 -> 1.502 ± 0.0021 (n 2), state baseline
    significant: object  # claimed 1.470; fresh 1.476, 1.480 -> 1.478 ± 0.0021 (n 2): p ~ 1e-15, significant
    not_yet: object  # claimed 1.493; fresh 1.497 -> 1.497 ± 0.0030 (n 1): p 0.43, not significant yet
    no_gain: object  # claimed 1.497; fresh 1.506, 1.502 -> 1.504 (n 2), no lower than 1.502: no gain, verified
    hacked: object  # claimed 1.470, "the best of 20 seeds"; fresh 1.505, 1.503: mismatch, disputed, no gain
    votes: list

    @property
    def messages(self) -> list:
        return [self.task, self.baseline, self.significant, self.not_yet, self.no_gain, self.hacked, *self.votes]


def make_luck(t: int) -> Luck:
    task = build(AUTHOR, SWARM, "task", LUCK_BODY, created_at=t)
    base = _luck_claim("baseline", "the task baseline", None, "1.501000", t + 10)
    sig = _luck_claim("warmup", "Warm the learning rate up over 200 steps.", base.id, "1.470000", t + 20)
    nyet = _luck_claim("clip", "Clip gradients at 1.0.", base.id, "1.493000", t + 30)
    gain0 = _luck_claim("beta2", "beta2 0.95 -> 0.99.", base.id, "1.497000", t + 40)
    hack = _luck_claim("seed", "Nothing changed but the seed: the best of 20.", base.id, "1.470000", t + 50)
    votes = [
        _fresh_vote(TRUSTED, base, "reproduced", "1.500000", t + 100),
        _fresh_vote(TRUSTED2, base, "reproduced", "1.504000", t + 101),
        _fresh_vote(TRUSTED, sig, "reproduced", "1.476000", t + 102),
        _fresh_vote(TRUSTED2, sig, "reproduced", "1.480000", t + 103),
        _fresh_vote(TRUSTED, nyet, "reproduced", "1.497000", t + 104),
        _fresh_vote(TRUSTED, gain0, "reproduced", "1.506000", t + 105),
        _fresh_vote(TRUSTED2, gain0, "reproduced", "1.502000", t + 106),
        _fresh_vote(TRUSTED, hack, "mismatch", "1.505000", t + 107),
        _fresh_vote(TRUSTED2, hack, "mismatch", "1.503000", t + 108),
    ]
    return Luck(task, base, sig, nyet, gain0, hack, votes)


@dataclass
class Corpus:
    verified: object  # c1: reproduced by TRUSTED
    best: object  # c2: child of c1, reproduced by TRUSTED with a lower val_bpb: rank 1
    disputed: object  # c3: a mismatch from TRUSTED; its note and patch carry HTML
    pending: object  # c4: only a stranger reproduced it
    crashed: object  # c5: a negative result
    over_budget: object  # c6: the lowest val_bpb, but TRUSTED's run took 3x the baseline's time
    votes: list
    luck: Luck  # the second task, with fresh-seed votes

    @property
    def messages(self) -> list:
        return [self.verified, self.best, self.disputed, self.pending, self.crashed, self.over_budget, *self.votes,
                *self.luck.messages]


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
    return Corpus(c1, c2, c3, c4, c5, c6, votes, make_luck(t - 600))
