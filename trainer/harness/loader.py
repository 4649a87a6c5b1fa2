"""The token-budget loader: the train script's only source of training batches.

The trusted runner draws this run's token stream from the training split (trainer/stream.py: budget
tokens plus one, in order, fixed by the seed) and hands the training process that stream alone, never
the split. The loader cuts it into batches of the shape the script asks for, in order, until the
budget is spent: a script that wants more data can only see the same tokens again, which costs it
training time (a claim over the task's compute cap is ``over budget``).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch


class BudgetLoader:
    """Consecutive windows of the run's token stream, until the token budget is spent.

    ``progress`` is measured against the full ``budget_tokens`` even when ``stop_tokens`` ends the
    run early, so a spot check follows the full run's LR schedule and stops part-way (docs/design.md,
    "Spot check first"). A batch that would overshoot the stop is not handed out: no run trains on
    more tokens than its budget.
    """

    def __init__(
        self,
        stream: torch.Tensor,
        *,
        budget_tokens: int,
        device: torch.device,
        stop_tokens: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ):
        if stream.dtype != torch.uint8 or stream.dim() != 1:
            raise ValueError("the token stream must be a 1-D uint8 tensor")
        self.stream = stream
        self.budget_tokens = budget_tokens
        self.stop_tokens = budget_tokens if stop_tokens is None else min(stop_tokens, budget_tokens)
        self.device = device
        self.tokens = 0
        self.batch_shape: tuple[int, int] | None = None  # first batch's (B, T)
        self._on_batch = on_batch

    @property
    def progress(self) -> float:
        return min(1.0, self.tokens / self.budget_tokens)

    def batches(self, batch_size: int, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) int64 (B, T) pairs, y = x shifted by one token; each row continues where the
        previous one ended, so the budget's tokens are each trained on once."""
        batch_size, seq_len = int(batch_size), int(seq_len)
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch size and sequence length must be positive, got {batch_size}, {seq_len}")
        per_batch = batch_size * seq_len
        if per_batch > self.stop_tokens:
            raise ValueError(f"a batch of {batch_size} x {seq_len} tokens exceeds the budget of {self.stop_tokens}")
        index = torch.arange(batch_size)[:, None] * seq_len + torch.arange(seq_len + 1)
        while self.tokens + per_batch <= self.stop_tokens and self.tokens + per_batch < self.stream.numel():
            chunk = self.stream[self.tokens + index].long()
            self.tokens += per_batch
            if self.batch_shape is None:
                self.batch_shape = (batch_size, seq_len)
            if self._on_batch is not None:
                self._on_batch(self.tokens)
            pin = self.device.type == "cuda"
            x, y = chunk[:, :-1], chunk[:, 1:]
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)
