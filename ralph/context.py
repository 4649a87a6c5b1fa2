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

from .corpus import CorpusEntry, CorpusView, Observation

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
    # The trial history and what the loop learned from its own runs (all optional: a bare Context
    # is what a proposer that reads only the above needs).
    observations: tuple[Observation, ...] = ()  # every claim of the task with its source (corpus.py)
    baseline_source: str = ""  # the task's own script: the reference of the compute cap's estimate
    compute_cap: float | None = None  # task.compute_cap; None: no cap
    tokens: int | None = None  # this loop's training budget in tokens, once known
    tried: frozenset = frozenset()  # space.source_key of every script tried here or in the corpus
    last_crash: str = ""  # the tail of the last crash's traceback here
    seed_curve: tuple = ()  # ((tokens, loss), ...) of the seed, when known
    last_attempt: str = ""  # the note of this loop's last run
    last_curve: tuple = ()  # and its loss curve
    optimizer_best: str = ""  # the hybrid's optimizer's best constants (proposers/hybrid.py)

    def variable_text(self) -> str:
        """Leaderboard, negatives, what the last runs showed and memory, as plain text, for any
        proposer that reads prose."""
        parts = ["## Top verified entries (lower val_bpb is better)"]
        parts += [_entry_text(e) for e in self.top] or ["(none yet)"]
        if self.optimizer_best:
            parts.append("## The optimizer's best constants so far (it tunes the constants; you may change code)")
            parts.append(self.optimizer_best)
        parts.append("## Dead ends: negative results grouped by what they changed (do not repeat these)")
        parts.append(dead_ends(self.observations, self.baseline_source) if self.observations
                     else "\n".join(_entry_text(e, with_patch=False) for e in self.negatives) or "(none yet)")
        if self.seed_curve or self.last_curve:
            parts.append("## Loss curves (training loss in nats per byte at tokens seen)")
            if self.seed_curve:
                parts.append("seed: " + curve_text(self.seed_curve))
            if self.last_curve:
                parts.append(f"last attempt ({self.last_attempt.strip()[:200]}): " + curve_text(self.last_curve))
        if self.last_crash:
            parts.append("## Your last crash (tail of the traceback): fix the cause, do not repeat it")
            parts.append("```\n" + self.last_crash.strip() + "\n```")
        parts.append("## Your memory")
        parts.append(self.memory or "(empty: this is the first experiment)")
        return "\n\n".join(parts)


CURVE_POINTS = 10
CRASH_TAIL_CHARS = 1500
MAX_DEAD_END_GROUPS = 20


def curve_text(curve: tuple, points: int = CURVE_POINTS) -> str:
    """A loss curve thinned to about ``points`` points, first and last kept."""
    if not curve:
        return "(none)"
    n = len(curve)
    idx = sorted({round(i * (n - 1) / max(1, points - 1)) for i in range(min(points, n))})
    return ", ".join(f"{int(curve[i][0])}: {float(curve[i][1]):.3f}" for i in idx)


def crash_tail(reason: str, limit: int = CRASH_TAIL_CHARS) -> str:
    """The last ``limit`` characters of a crash reason (the traceback ends with the exception)."""
    text = reason.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _change_label(parent: str, source: str) -> str:
    """What a script changed against its parent: constants with their direction, or "code"."""
    from .hyperparams import diff_constants
    from .space import skeleton_key

    moves = []
    for name, old, new in diff_constants(parent, source):
        try:
            moves.append(f"{name} {'up' if float(new) > float(old) else 'down'}")
        except ValueError:
            moves.append(f"{name} changed")
    if skeleton_key(parent) != skeleton_key(source):
        moves.append("code")
    return ", ".join(moves) or "nothing"


def dead_ends(observations: tuple[Observation, ...], baseline_source: str, limit: int = MAX_DEAD_END_GROUPS) -> str:
    """Worse and crashed claims grouped by what they changed against their parent (constants and
    direction, or code), biggest groups first, each with its count and latest note."""
    sources = {o.claim_id: o.source for o in observations}
    groups: dict[str, list[Observation]] = {}
    for o in observations:
        if o.outcome not in ("worse", "crashed"):
            continue
        parent = sources.get(o.parent, baseline_source) if o.parent else baseline_source
        if not parent:
            continue
        groups.setdefault(_change_label(parent, o.source), []).append(o)
    if not groups:
        return "(none yet)"
    lines = []
    for label, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]:
        crashed = sum(o.outcome == "crashed" for o in items)
        worse = len(items) - crashed
        last = items[-1].note.strip().splitlines()[0][:160] if items[-1].note.strip() else ""
        lines.append(f"- {label}: {worse} worse, {crashed} crashed; latest: {last}")
    return "\n".join(lines)


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
                        memory_text: str, keep_threshold: float, n_negatives: int, **learned: Any) -> Context:
    """The context of one step; ``learned`` are the optional fields (observations, tried, the last
    crash, curves...) the loop gathered."""
    negatives = await corpus.recent_negatives(task.id, n_negatives)
    cap = task.body.get("compute_cap")
    return Context(task.id, task.name, task_text(task), seed, tuple(top), tuple(negatives),
                   memory_text, keep_threshold, baseline_source=task.body["source"],
                   compute_cap=float(cap) if cap is not None else None, **learned)
