"""The loop's memory across steps and restarts (docs/design.md, "Memory": memory_type, memory_depth).

``full`` shows the proposer the last ``memory_depth`` experiments (what changed, val_bpb, kept?).
``strategy`` shows a compressed strategy note instead, rewritten every ``coordinator_frequency``
experiments (by the proposer when it can summarize, i.e. Anthropic; else by ``summarize``, a
deterministic tally of which constant moves helped), plus the experiments since the last rewrite.
Also caches this node's own measurements of seeds (baseline, screening scale), so a restart does
not re-measure. Persisted as one JSON file per task in the node home.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .jsonfile import read_json, write_json_atomic

MAX_RECORDS = 1000  # the file's own bound; what reaches the context is bounded by memory_depth
VERSION = 1


@dataclass(frozen=True)
class Record:
    step: int
    seed: str  # seed claim id, or "baseline"
    seed_bpb: float | None
    note: str
    changes: list[list[str]]  # [[NAME, old literal, new literal], ...]: hyperparameter moves
    val_bpb: float | None  # None when crashed or skipped
    outcome: str  # improved | worse | crashed | skipped
    kept: bool
    claim_id: str | None = None
    cost_usd: float = 0.0
    key: str = ""  # space.source_key of the proposed script: what is never proposed twice

    def line(self) -> str:
        bpb = "crashed" if self.outcome == "crashed" else ("-" if self.val_bpb is None else f"{self.val_bpb:.6f}")
        seed_bpb = "?" if self.seed_bpb is None else f"{self.seed_bpb:.6f}"
        verdict = "KEPT" if self.kept else self.outcome
        return f"#{self.step} [{verdict}] {self.note.strip()[:300]} -> val_bpb {bpb} (seed {seed_bpb})"


@dataclass
class Memory:
    path: Path
    memory_type: str = "full"
    memory_depth: int = 20
    records: list[Record] = field(default_factory=list)
    strategy: str = ""
    since_rewrite: int = 0  # experiments recorded since the strategy note was last rewritten
    measurements: dict[str, float] = field(default_factory=dict)  # "sha@scale" -> val_bpb, own runs
    # What the last run taught (context.py shows it to an LLM): its note and loss curve, the tail
    # of the last crash's traceback, and this loop's training budget in tokens.
    last: dict = field(default_factory=dict)  # {"note": str, "curve": [[tokens, loss], ...], "crash": str}
    tokens: int | None = None

    @classmethod
    def load(cls, path: Path, memory_type: str = "full", memory_depth: int = 20) -> "Memory":
        data = read_json(Path(path), {})
        if data and data.get("version") != VERSION:
            raise ValueError(f"{path}: unsupported memory file version {data.get('version')!r}")
        return cls(
            Path(path), memory_type, memory_depth,
            [Record(**r) for r in data.get("records", [])],
            data.get("strategy", ""), int(data.get("since_rewrite", 0)),
            {k: float(v) for k, v in data.get("measurements", {}).items()},
            data.get("last", {}) if isinstance(data.get("last"), dict) else {},
            data.get("tokens") if isinstance(data.get("tokens"), int) else None,
        )

    def save(self) -> None:
        write_json_atomic(self.path, {
            "version": VERSION,
            "records": [asdict(r) for r in self.records[-MAX_RECORDS:]],
            "strategy": self.strategy,
            "since_rewrite": self.since_rewrite,
            "measurements": self.measurements,
            "last": self.last,
            "tokens": self.tokens,
        })

    @property
    def next_step(self) -> int:
        return self.records[-1].step + 1 if self.records else 1

    def add(self, record: Record) -> None:
        self.records.append(record)
        if record.outcome != "skipped":
            self.since_rewrite += 1
        self.save()

    def measurement(self, sha: str, scale: float) -> float | None:
        return self.measurements.get(f"{sha}@{scale:g}")

    def remember_measurement(self, sha: str, scale: float, val_bpb: float) -> None:
        self.measurements[f"{sha}@{scale:g}"] = val_bpb
        self.save()

    def remember_run(self, note: str, result: dict | None, crash: str = "") -> None:
        """The last run's note and loss curve; a crash's traceback tail stays until the next crash."""
        curve = []
        for point in (result or {}).get("curve") or []:
            try:
                curve.append([int(point[0]), float(point[1])])
            except (TypeError, ValueError, IndexError):
                break
        self.last = {"note": note, "curve": curve, "crash": crash or self.last.get("crash", "")}
        self.save()

    def tried_keys(self) -> set[str]:
        return {r.key for r in self.records if r.key}

    def due_for_rewrite(self, frequency: int) -> bool:
        return self.memory_type == "strategy" and self.since_rewrite >= frequency

    def recent(self) -> list[Record]:
        """Experiments since the last strategy rewrite (all of them for ``full``), bounded by depth."""
        ran = [r for r in self.records if r.outcome != "skipped"]
        if self.memory_type == "strategy":
            ran = ran[len(ran) - self.since_rewrite:] if self.since_rewrite else []
        return ran[-self.memory_depth:]

    def set_strategy(self, note: str) -> None:
        lines = [ln for ln in note.strip().splitlines() if ln.strip()]
        self.strategy = "\n".join(lines[: self.memory_depth])
        self.since_rewrite = 0
        self.save()

    def render(self) -> str:
        """The memory text that goes into the context."""
        recent = "\n".join(r.line() for r in self.recent())
        if self.memory_type == "full":
            return recent
        parts = []
        if self.strategy:
            parts.append("Strategy note:\n" + self.strategy)
        if recent:
            parts.append("Experiments since the note was written:\n" + recent)
        return "\n\n".join(parts)


def summarize(records: list[Record], previous: str = "", depth: int = 20) -> str:
    """Deterministic strategy note: per constant and direction, how often the move was kept.

    Used when the proposer cannot write prose (offline); folds the previous note's tallies in by
    re-deriving them from the records the memory still holds."""
    ran = [r for r in records if r.outcome != "skipped"]
    if not ran:
        return previous
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # kept, worse, crashed
    for r in ran:
        for name, old, new in r.changes:
            try:
                direction = "up" if float(new) > float(old) else "down"
            except ValueError:
                direction = "changed"
            slot = 0 if r.kept else (2 if r.outcome == "crashed" else 1)
            tally[(name, direction)][slot] += 1
    measured = [r.val_bpb for r in ran if r.val_bpb is not None]
    kept = sum(r.kept for r in ran)
    lines = [f"{len(ran)} experiments, {kept} kept"
             + (f", best val_bpb {min(measured):.6f}" if measured else "") + "."]
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1][0], kv[1][1] + kv[1][2], kv[0]))
    for (name, direction), (k, w, c) in ranked:
        verdict = "promising" if k > w + c else ("avoid" if k == 0 and w + c >= 2 else "mixed")
        lines.append(f"- {name} {direction}: kept {k}, worse {w}, crashed {c} ({verdict})")
    return "\n".join(lines[:depth])
