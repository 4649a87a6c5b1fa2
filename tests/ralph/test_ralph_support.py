"""Shared helpers for the ralph tests (no tests of its own): a small real train script, a task-like
object around it, a Context builder, and a deterministic stand-in for the trainer whose val_bpb is a
smooth function of the script's constants (so keep/discard decisions are computed, not scripted)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ralph.context import Context, Seed
from ralph.hyperparams import parse_constants
from trainer.patches import source_sha256

SCRIPT = '''"""A toy train script in the autoresearch layout."""
import math

DEPTH = 2  # transformer blocks
MODEL_DIM = 64  # residual stream width
N_HEADS = 4  # attention heads (MODEL_DIM must divide evenly)
MATRIX_LR = 0.02  # Muon learning rate
EMBED_LR = 0.1  # AdamW learning rate for the embedding
ADAM_BETA2 = 0.95  # AdamW second-moment decay
WARMDOWN_FRAC = 0.4  # share of the budget spent decaying the LR
DEVICE_BATCH_SIZE = 32  # sequences per step
SEQ_LEN = 64  # bytes per sequence
TOTAL_BATCH_SIZE = 2048  # tokens per optimizer step
SEED = 1337  # not a knob


def lr_at(progress):
    return MATRIX_LR * min(1.0, (1.0 - progress) / WARMDOWN_FRAC)
'''


@dataclass
class ToyTask:
    source: str = SCRIPT
    tolerance: float = 0.01
    name: str = "toy"
    id: str = "ab" * 32
    body: dict[str, Any] = field(default_factory=dict)
    compute_cap: str | None = None  # task.compute_cap; None: a task-like object without one (no cap checked)

    def __post_init__(self) -> None:
        self.body = {"name": self.name, "description": "a toy task for tests", "source": self.source,
                     "metric": "val_bpb", "budget": {"tokens": 100000}, "tolerance": f"{self.tolerance}"}
        if self.compute_cap is not None:
            self.body["compute_cap"] = self.compute_cap


def make_context(source: str = SCRIPT, *, val_bpb: float | None = 2.0, claim_id: str | None = None,
                 memory: str = "", top=(), negatives=()) -> Context:
    seed = Seed(claim_id, source, source_sha256(source), val_bpb, "baseline" if claim_id is None else "top")
    return Context("ab" * 32, "toy", "Task toy: a toy task.", seed, tuple(top), tuple(negatives), memory, 0.01)


def toy_bpb(source: str, budget_scale: float = 1.0) -> float:
    """Smooth bowl: best at MATRIX_LR = 0.04, EMBED_LR = 0.1; a smaller budget trains worse."""
    c = {k: v.value for k, v in parse_constants(source).items()}
    return (1.5 + math.log(c["MATRIX_LR"] / 0.04) ** 2 + 0.3 * math.log(c["EMBED_LR"] / 0.1) ** 2
            + 0.2 * (1.0 - budget_scale))


def toy_result(val_bpb: float, seed: int = 0) -> dict:
    return {"val_bpb": f"{val_bpb:.6f}", "curve": [[0, "5.545177"], [1000, f"{val_bpb:.6f}"]], "tokens": 1000,
            "seed": seed, "wall_s": "0.010000", "device": "cpu", "torch": "test", "flops_per_token": 1}


@dataclass
class ToyOutcome:
    outcome_ok: bool
    result: dict | None
    reason: str
    val_bpb: float | None


class ToyRunner:
    """Injected run_experiment: crashes when the script says CRASH, records every call. Training
    takes 1 s per full budget, ``SLOW`` times that when the script sets ``SLOW = n``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, task: Any, source: str, *, seed: int, budget_scale: float) -> ToyOutcome:
        self.calls.append((source_sha256(source), budget_scale))
        if "CRASH" in source:
            return ToyOutcome(False, None, "RuntimeError: boom", None)
        bpb = toy_bpb(source, budget_scale)
        slow = parse_constants(source).get("SLOW")
        wall = budget_scale * (float(slow.value) if slow is not None else 1.0)
        tokens = max(1, round(1000 * budget_scale))  # result.tokens is the run's budget
        return ToyOutcome(True, dict(toy_result(bpb, seed), wall_s=f"{wall:.3f}", tokens=tokens), "", bpb)
