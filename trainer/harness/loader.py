"""The token-budget loader: the train script's only source of training batches."""
from __future__ import annotations

from typing import Callable, Iterator

import torch


class BudgetLoader:
    """Random windows of the training split, until the token budget is spent.

    ``progress`` is measured against the full ``budget_tokens`` even when ``stop_tokens`` ends the
    run early, so a spot check follows the full run's LR schedule and stops part-way (DESIGN.md,
    "Spot check first"). A batch that would overshoot the stop is not handed out: no run trains on
    more tokens than its budget.
    """

    def __init__(
        self,
        data: torch.Tensor,
        *,
        budget_tokens: int,
        seed: int,
        device: torch.device,
        stop_tokens: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ):
        if data.dtype != torch.uint8 or data.dim() != 1:
            raise ValueError("training data must be a 1-D uint8 tensor")
        self.data = data
        self.budget_tokens = budget_tokens
        self.stop_tokens = budget_tokens if stop_tokens is None else min(stop_tokens, budget_tokens)
        self.device = device
        self.tokens = 0
        self.batch_shape: tuple[int, int] | None = None  # first batch's (B, T), for FLOP counting
        self._generator = torch.Generator().manual_seed(seed)
        self._on_batch = on_batch

    @property
    def progress(self) -> float:
        return min(1.0, self.tokens / self.budget_tokens)

    def batches(self, batch_size: int, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batch_size, seq_len = int(batch_size), int(seq_len)
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch size and sequence length must be positive, got {batch_size}, {seq_len}")
        if seq_len + 1 > self.data.numel():
            raise ValueError(f"sequence length {seq_len} exceeds the training split ({self.data.numel()} bytes)")
        offsets = torch.arange(seq_len + 1)
        per_batch = batch_size * seq_len
        while self.tokens + per_batch <= self.stop_tokens:
            starts = torch.randint(0, self.data.numel() - seq_len, (batch_size,), generator=self._generator)
            chunk = self.data[starts[:, None] + offsets].long()
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
