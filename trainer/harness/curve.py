"""The loss curve, recorded by the harness from the losses the train script logs.

Points sit at the first logged loss past each of ``points`` evenly spaced token marks of the full
budget, so a spot check of the same claim (same seed, same schedule, stopped early) produces the
same token positions as the full run and the two curves can be compared point by point.
"""
from __future__ import annotations

import math

MAX_POINTS = 64  # protocol limit on result.curve


class NanLoss(Exception):
    """The training loss became NaN or infinite: the run is over (autoresearch: fail fast)."""


def format_loss(value: float) -> str:
    return f"{value:.6f}"


class CurveRecorder:
    def __init__(self, budget_tokens: int, *, points: int = MAX_POINTS, check_every: int = 1):
        self.budget_tokens = budget_tokens
        self.points = min(points, MAX_POINTS)
        self.check_every = max(1, check_every)  # on a GPU every check is a device sync
        self.curve: list[list] = []
        self.calls = 0
        self.last_loss: float | None = None
        self._next_mark = 1

    def _mark_tokens(self, k: int) -> int:
        return max(1, (k * self.budget_tokens) // self.points)

    def log(self, loss, tokens: int) -> bool:
        """Record ``loss`` seen after ``tokens``; returns True when it became a curve point."""
        self.calls += 1
        at_mark = self._next_mark <= self.points and tokens >= self._mark_tokens(self._next_mark)
        if not at_mark and self.calls % self.check_every:
            return False
        value = float(loss)
        if not math.isfinite(value):
            raise NanLoss("nan loss")
        if value < 0:
            raise ValueError(f"training loss {value} is negative: log() takes cross-entropy in nats")
        self.last_loss = value
        if not at_mark:
            return False
        self.curve.append([int(tokens), format_loss(value)])
        while self._next_mark <= self.points and tokens >= self._mark_tokens(self._next_mark):
            self._next_mark += 1
        return True
