"""What a proposer sees: task text, seed source, top entries, recent negatives, memory.

Split in two on purpose: the *fixed* part (task text and seed source) changes only when the seed
does, so the Anthropic proposer can cache it; the *variable* part (leaderboard, negatives, memory)
changes every step.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from trainer.patches import source_sha256

from .corpus import CorpusEntry, CorpusView

MAX_PATCH_CHARS_IN_CONTEXT = 4000  # a huge diff in the leaderboard would crowd out everything else


@dataclass(frozen=True)
class Seed:
    """The entry a step starts from: a corpus claim, or the task baseline (claim_id None)."""

    claim_id: str | None
    source: str
    source_sha256: str
    val_bpb: float | None  # None until the baseline has been measured
    origin: str  # "top" | "own" | "baseline"
    note: str = ""


@dataclass(frozen=True)
class Context:
    task_id: str
    task_name: str
    task_text: str
    seed: Seed
    top: tuple[CorpusEntry, ...]
    negatives: tuple[CorpusEntry, ...]
    memory: str
    keep_threshold: float

    def variable_text(self) -> str:
        """Leaderboard, negatives and memory as plain text, for any proposer that reads prose."""
        parts = ["## Top verified entries (lower val_bpb is better)"]
        parts += [_entry_text(e) for e in self.top] or ["(none yet)"]
        parts.append("## Recent negative results (do not repeat these)")
        parts += [_entry_text(e, with_patch=False) for e in self.negatives] or ["(none yet)"]
        parts.append("## Your memory")
        parts.append(self.memory or "(empty: this is the first experiment)")
        return "\n\n".join(parts)


def _entry_text(e: CorpusEntry, *, with_patch: bool = True) -> str:
    bpb = "crashed" if e.val_bpb is None else f"val_bpb {e.val_bpb:.6f}"
    head = f"- {e.claim_id[:12]} [{e.outcome}, {bpb}] {e.note.strip()}"
    if not with_patch or not e.patch:
        return head
    patch = e.patch if len(e.patch) <= MAX_PATCH_CHARS_IN_CONTEXT else e.patch[:MAX_PATCH_CHARS_IN_CONTEXT] + "\n... (truncated)"
    return f"{head}\n```diff\n{patch.rstrip()}\n```"


def task_text(task: Any) -> str:
    body = task.body
    return (
        f"Task {task.name} ({task.id[:12]}): {body.get('description', '').strip()}\n"
        f"Metric: {body.get('metric', 'val_bpb')} on the fixed validation split, lower is better.\n"
        f"Budget: {body['budget']['tokens']} training tokens; the harness stops the loader there.\n"
        f"Noise tolerance: {task.tolerance}; smaller differences are luck, not progress."
    )


def baseline_seed(task: Any, val_bpb: float | None) -> Seed:
    src = task.body["source"]
    return Seed(None, src, source_sha256(src), val_bpb, "baseline", "task baseline")


async def pick_seed(task: Any, corpus: CorpusView, top: list[CorpusEntry], rng: random.Random,
                    exploration: float, baseline_bpb: float | None) -> Seed:
    """Epsilon-greedy over top-K verified entries, own best and the baseline (docs/design.md, "The loop").

    Greedy picks the lowest known val_bpb; with probability ``exploration`` any candidate, uniformly,
    so a swarm does not collapse on one lineage."""
    candidates: list[tuple[CorpusEntry | None, str]] = [(e, "top") for e in top if e.val_bpb is not None]
    own = await corpus.own_best(task.id)
    if own is not None and own.val_bpb is not None and all(own.claim_id != e.claim_id for e, _ in candidates):
        candidates.append((own, "own"))
    candidates.append((None, "baseline"))
    if rng.random() < exploration:
        entry, origin = rng.choice(candidates)
    else:
        def key(c: tuple[CorpusEntry | None, str]) -> float:
            bpb = baseline_bpb if c[0] is None else c[0].val_bpb
            return float("inf") if bpb is None else bpb
        entry, origin = min(candidates, key=key)
    if entry is None:
        return baseline_seed(task, baseline_bpb)
    source = await corpus.source_of(entry.claim_id)
    return Seed(entry.claim_id, source, source_sha256(source), entry.val_bpb, origin, entry.note)


async def build_context(task: Any, seed: Seed, top: list[CorpusEntry], corpus: CorpusView,
                        memory_text: str, keep_threshold: float, n_negatives: int) -> Context:
    negatives = await corpus.recent_negatives(task.id, n_negatives)
    return Context(task.id, task.name, task_text(task), seed, tuple(top), tuple(negatives),
                   memory_text, keep_threshold)
