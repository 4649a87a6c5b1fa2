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
SUMMARY_COLUMNS = 16  # logits per position a large-vocabulary probe keeps besides the target's and the lse
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
    """``val``: the validation split as bytes (cut here into windows of ``context + 1``), or the
    windows themselves, an (n, context + 1) integer array of token ids (a tokenized task). ``train``:
    bytes, or a 1-D array of token ids, the fillers of probe rows. ``token_bytes`` (tokenized tasks):
    each id's length in bytes, 0 for special tokens, whose positions are masked out of the nats."""

    def __init__(self, val, train, *, context: int, rows: int, processes: int = 2,
                 probe_share: float = 0.5, tolerance: float = 1e-4, rng: random.Random | None = None,
                 vocab: int = VOCAB, token_bytes: np.ndarray | None = None):
        self.context, self.rows, self.processes, self.tolerance = context, rows, processes, tolerance
        self.vocab = vocab
        self.rng = rng or random.SystemRandom()
        if isinstance(val, (bytes, bytearray, memoryview)):
            data = np.frombuffer(val, dtype=np.uint8)
            n = data.size // (context + 1)
            if n < 1:
                raise ScoreError(f"the validation split ({data.size} bytes) holds no window of {context + 1} bytes")
            self.windows = data[: n * (context + 1)].reshape(n, context + 1)
        else:
            self.windows = np.asarray(val)
            if self.windows.ndim != 2 or self.windows.shape[1] != context + 1 or self.windows.shape[0] < 1:
                raise ScoreError(f"the validation windows are not rows of {context + 1} tokens")
            n = self.windows.shape[0]
        self.train = np.frombuffer(train, dtype=np.uint8) if isinstance(train, (bytes, bytearray, memoryview)) \
            else np.asarray(train).reshape(-1)
        if self.train.size < context + 1:
            raise ScoreError("the training split is shorter than one window")
        self.token_bytes = None if token_bytes is None else np.asarray(token_bytes, dtype=np.int64)
        if self.token_bytes is not None and self.token_bytes.shape != (vocab,):
            raise ScoreError(f"token byte lengths for {self.token_bytes.shape} ids, the vocabulary has {vocab}")
        if int(self.windows.max()) >= vocab:
            raise ScoreError(f"a validation token id is outside the vocabulary of {vocab}")
        # A large vocabulary's logits are too big to keep per probed window (64 MiB at 2,048 x 8,192):
        # probes compare what the score is made of instead (see _summary).
        self.summarize = vocab > VOCAB
        self._columns = np.asarray(sorted(self.rng.sample(range(vocab), SUMMARY_COLUMNS)) if self.summarize else [])
        self.nats = np.full(n, np.nan)  # summed cross-entropy per window, filled as answers arrive
        # Probe rows per process: ``probe_share`` of the windows are probed in all (docs/design.md,
        # "Evaluation", for what a share buys against a script that looks ahead at a few positions).
        self.probe_batches = math.ceil(probe_share * n / processes / rows) if probe_share > 0 else 0
        self._real: dict[int, np.ndarray] = {}  # real logits (or their summary) of probed windows
        self._probed: list[tuple[int, int, np.ndarray]] = []  # (window, cut, probe logits or summary)
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

    def _summary(self, lse: np.ndarray, picked: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(positions, 2 + k) float64 for a large vocabulary: per position, the log-sum-exp, the
        logit of the window's real target, and k logits at columns chosen here at random (from the
        operating system, unknown to the model). The score is made of the first two, so a model that
        changes its score with what it should not see changes them; the columns catch the rest."""
        return np.concatenate([lse[:, None], picked[:, None], logits[:, self._columns].astype(np.float64)], axis=1)

    def _take_large(self, batch: Batch, logits: np.ndarray) -> None:
        """A large vocabulary's answer: one float32 log-sum-exp over every position of the batch
        (torch, every core) serves the score and the probes; losses and sums are float64."""
        lse = _lse_float32(logits)
        if batch.real:
            for i, w in enumerate(batch.windows):
                if w < 0:
                    continue
                targets = self.windows[w, 1:].astype(np.int64)
                picked = logits[i, np.arange(self.context), targets].astype(np.float64)
                loss = lse[i] - picked
                if self.token_bytes is not None:
                    loss = np.where(self.token_bytes[targets] > 0, loss, 0.0)
                self.nats[w] = loss.sum()
                if w in self._wanted:
                    self._real[w] = self._summary(lse[i], picked, logits[i])
        else:
            for i, (w, cut) in enumerate(batch.probes):
                if w >= 0:
                    targets = self.windows[w, 1:cut + 1].astype(np.int64)
                    picked = logits[i, np.arange(cut), targets].astype(np.float64)
                    self._probed.append((w, cut, self._summary(lse[i, :cut], picked, logits[i, :cut])))

    def take(self, batch: Batch, logits: np.ndarray) -> None:
        """The answer to ``batch``: (rows, context, vocab) float32 logits (a private copy)."""
        if self.summarize:
            return self._take_large(batch, logits)
        if not np.isfinite(logits).all():
            raise ScoreError("the model returned non-finite logits (nan or inf)")
        if batch.real:
            live = [i for i, w in enumerate(batch.windows) if w >= 0]
            idx = np.asarray([batch.windows[i] for i in live])
            targets = self.windows[idx, 1:]
            mask = None if self.token_bytes is None else self.token_bytes[targets] > 0
            self.nats[idx] = cross_entropy_rows(logits[live], targets, mask)
            for i in live:
                if batch.windows[i] in self._wanted:
                    self._real[batch.windows[i]] = logits[i]
        else:
            for i, (w, cut) in enumerate(batch.probes):
                if w >= 0:
                    self._probed.append((w, cut, logits[i, :cut].copy()))

    def result(self) -> tuple[float, int]:
        """(summed cross-entropy in nats, predicted bytes), once every batch is answered; raises
        ScoreError naming the rule a probe found broken. For a tokenized task the bytes are the sum of
        the target tokens' byte lengths (special tokens count none, and their nats are masked)."""
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
        if self.token_bytes is None:
            count = self.window_count * self.context
        else:
            count = int(self.token_bytes[self.windows[:, 1:].astype(np.int64)].sum())
            if count < 1:
                raise ScoreError("the validation windows predict no byte (only special tokens)")
        return math.fsum(self.nats.tolist()), count


def cross_entropy_rows(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-row summed cross-entropy in nats (float64) of (rows, T, V) logits against (rows, T)
    targets; positions where ``mask`` is False count nothing."""
    return _cross_entropy(logits, targets, mask)


def _lse_float32(logits: np.ndarray) -> np.ndarray:
    """(rows, T) float64 of the float32 log-sum-exp over the last axis of (rows, T, V) float32 logits,
    through torch (every core: at 2,048 x 8,192 numpy's float64 takes ~0.3 s a row on one core);
    raises ScoreError for a non-finite logit."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        if not np.isfinite(logits).all():
            raise ScoreError("the model returned non-finite logits (nan or inf)") from None
        return _logsumexp(logits.astype(np.float64))
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    if not bool(torch.isfinite(z).all()):
        raise ScoreError("the model returned non-finite logits (nan or inf)")
    return torch.logsumexp(z, dim=-1).double().numpy()


def _cross_entropy(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)  # the arithmetic of ralphswarm-bytes-v2, kept bit for bit
    lse = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    loss = lse - picked
    if mask is not None:
        loss = np.where(mask, loss, 0.0)
    return loss.sum(axis=-1)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """log(sum(exp(z))) over the last axis, float64; ``z`` (float64) is left as it was."""
    top = z.max(axis=-1, keepdims=True)
    return np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]


def bits_per_byte(nats: float, count: int) -> float:
    return nats / (math.log(2) * count)
