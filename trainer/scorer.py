"""The trusted half of the evaluation: the validation split, the targets and the score live here,
in the runner, which never imports a train script (docs/design.md, "Evaluation").

The split is cut into non-overlapping windows of ``context + 1`` bytes: the model sees the first
``context`` bytes of a window and is scored on predicting bytes 1..context of it, each from the
bytes before it in its own window. No byte the model is asked to predict appears in any other
window, so the only validation bytes a model process ever holds are the inputs of windows it was
asked about, in batches, one at a time.

Two model processes (sandboxed, separate: they cannot talk to each other) answer the batches; each
real batch goes to one of them at random. The checks that the model reads no byte it predicts are
probe batches, interleaved at random among the real ones, that look like real ones: for windows
the *other* process answers, the bytes from a random cut on are replaced by bytes of the training
split (or kept whole), and other windows fill the batch. The logits before the cut must equal the
other process's logits for the real window. A model that looks ahead, mixes the windows of a batch,
keeps state between batches (test-time training on the validation inputs), is random in eval mode,
or behaves differently when probed, fails: the process that answers a window cannot know whether
the other one is asked a probe of it, and a probe's pair never meets in one process (a process that
saw both could replay its first answer). Every random choice here comes from the operating system,
not from the claim's seed.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

VOCAB = 256
KEEP_WHOLE = 0.1  # share of probe rows left whole (checks mixing and state; the rest check the future)


class ScoreError(Exception):
    """The model's answers cannot be scored (non-finite) or fail a probe; the text is the reason."""


@dataclass
class Batch:
    process: int
    inputs: np.ndarray  # (rows, context) uint8: what the model process is shown
    windows: list[int]  # real batch: window index per row, -1 for a filler row
    probes: list[tuple[int, int]] = field(default_factory=list)  # probe batch: (window, cut) per row, -1 filler

    @property
    def real(self) -> bool:
        return not self.probes


class Scorer:
    def __init__(self, val: bytes, train: bytes, *, context: int, rows: int, processes: int = 2,
                 probe_share: float = 0.5, tolerance: float = 1e-4, rng: random.Random | None = None):
        self.context, self.rows, self.processes, self.tolerance = context, rows, processes, tolerance
        self.rng = rng or random.SystemRandom()
        data = np.frombuffer(val, dtype=np.uint8)
        n = data.size // (context + 1)
        if n < 1:
            raise ScoreError(f"the validation split ({data.size} bytes) holds no window of {context + 1} bytes")
        self.windows = data[: n * (context + 1)].reshape(n, context + 1)
        self.train = np.frombuffer(train, dtype=np.uint8)
        if self.train.size < context + 1:
            raise ScoreError("the training split is shorter than one window")
        self.nats = np.full(n, np.nan)  # summed cross-entropy per window, filled as answers arrive
        # Probe rows per process: ``probe_share`` of the windows are probed in all (docs/design.md,
        # "Evaluation", for what a share buys against a script that looks ahead at a few positions).
        self.probe_batches = math.ceil(probe_share * n / processes / rows) if probe_share > 0 else 0
        self._real: dict[int, np.ndarray] = {}  # real logits of probed windows
        self._probed: list[tuple[int, int, np.ndarray]] = []  # (window, cut, probe logits)
        self._wanted: set[int] = set()

    @property
    def window_count(self) -> int:
        return self.windows.shape[0]

    def _filler(self, length: int) -> np.ndarray:
        start = self.rng.randrange(0, self.train.size - length)
        return self.train[start:start + length]

    def plan(self) -> list[list[Batch]]:
        """Each process's batches, in the order it is asked them."""
        order = list(range(self.window_count))
        self.rng.shuffle(order)
        groups = [order[i:i + self.rows] for i in range(0, len(order), self.rows)]
        self.rng.shuffle(groups)
        queues: list[list[Batch]] = [[] for _ in range(self.processes)]
        owner: dict[int, int] = {}
        for i, group in enumerate(groups):
            p = i % self.processes
            rows = [self.windows[w, :-1] for w in group]
            rows += [self._filler(self.context) for _ in range(self.rows - len(group))]
            queues[p].append(Batch(p, np.stack(rows), group + [-1] * (self.rows - len(group))))
            owner.update((w, p) for w in group)
        for p in range(self.processes):
            others = [w for w, q in owner.items() if q != p]
            self.rng.shuffle(others)
            for b in range(self.probe_batches):
                chosen = others[b * self.rows:(b + 1) * self.rows]
                probes, rows = [], []
                for w in chosen:
                    whole = self.rng.random() < KEEP_WHOLE
                    cut = self.context if whole else self.rng.randrange(1, self.context)
                    row = self.windows[w, :-1].copy()
                    row[cut:] = self._filler(self.context - cut)
                    probes.append((w, cut))
                    rows.append(row)
                    self._wanted.add(w)
                while len(rows) < self.rows:
                    probes.append((-1, 0))
                    rows.append(self._filler(self.context))
                queues[p].append(Batch(p, np.stack(rows), [], probes))
            self.rng.shuffle(queues[p])
        return queues

    def take(self, batch: Batch, logits: np.ndarray) -> None:
        """The answer to ``batch``: (rows, context, 256) float32 logits (a private copy)."""
        if not np.isfinite(logits).all():
            raise ScoreError("the model returned non-finite logits (nan or inf)")
        if batch.real:
            live = [i for i, w in enumerate(batch.windows) if w >= 0]
            idx = np.asarray([batch.windows[i] for i in live])
            self.nats[idx] = cross_entropy_rows(logits[live], self.windows[idx, 1:])
            for i in live:
                if batch.windows[i] in self._wanted:
                    self._real[batch.windows[i]] = logits[i]
        else:
            for i, (w, cut) in enumerate(batch.probes):
                if w >= 0:
                    self._probed.append((w, cut, logits[i, :cut].copy()))

    def result(self) -> tuple[float, int]:
        """(summed cross-entropy in nats, predicted bytes), once every batch is answered; raises
        ScoreError naming the rule a probe found broken."""
        if np.isnan(self.nats).any():
            raise ScoreError("not every validation window was answered")
        future = mixing = 0.0
        for w, cut, probe in self._probed:
            moved = float(np.abs(probe.astype(np.float64) - self._real[w][:cut]).max())
            if cut == self.context:
                mixing = max(mixing, moved)
            else:
                future = max(future, moved)
        if mixing > self.tolerance:
            raise ScoreError(f"the model's logits for a window change with what else it is asked (by {mixing:.3g}): "
                             "it mixes the windows of a batch, keeps state between batches, or is random in eval mode")
        if future > self.tolerance:
            raise ScoreError(f"the model sees the future: its logits before a byte change when the bytes from "
                             f"that byte on change (by {future:.3g})")
        return math.fsum(self.nats.tolist()), self.window_count * self.context


def cross_entropy_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row summed cross-entropy in nats (float64) of (rows, T, V) logits against (rows, T) bytes."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return (lse - picked).sum(axis=-1)


def bits_per_byte(nats: float, count: int) -> float:
    return nats / (math.log(2) * count)
