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
        rank: int = 0,
        world: int = 1,
    ):
        # Bytes: a 1-D uint8 stream, cut into consecutive rows. Tokens: a 2-D int32 tensor of packed
        # rows of context + 1 ids, each BOS first (trainer/tokens.py); a row serves context // T
        # sequences of T (all of it at T = context, so each sequence starts at a document's start).
        if not ((stream.dtype == torch.uint8 and stream.dim() == 1) or (stream.dtype == torch.int32 and stream.dim() == 2)):
            raise ValueError("the token stream must be a 1-D uint8 tensor or a 2-D int32 one of rows")
        self.rows = stream.dim() == 2
        # Data-parallel ranks (a task's gpus > 1): each batch the script asks for is one rank's share
        # of a global batch of world x batch_size sequences; the budget counts global tokens.
        self.rank, self.world = rank, world
        if world > 1 and not self.rows:
            raise ValueError("several ranks need a stream of packed rows (a tokenized task)")
        if self.rows and device.type == "cuda":
            stream = stream.to(device)  # the whole run's ids on the device once: no copy per batch, no sync
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
        per_batch = batch_size * seq_len * self.world
        if per_batch > self.stop_tokens:
            raise ValueError(f"a batch of {batch_size} x {seq_len} tokens exceeds the budget of {self.stop_tokens}")
        if self.rows:
            yield from self._row_batches(batch_size, seq_len)
            return
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

    def _row_batches(self, batch_size: int, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count, row_len = self.stream.shape
        pieces = (row_len - 1) // seq_len
        if pieces < 1:
            raise ValueError(f"sequences of {seq_len} tokens are longer than the task's context of {row_len - 1}")
        per_batch = batch_size * seq_len * self.world
        # Sequence s is piece s % pieces of row s // pieces: (row, offset) for each row of a batch.
        seq = self.rank * batch_size + torch.arange(batch_size, device=self.stream.device)
        span = torch.arange(seq_len + 1, device=self.stream.device)
        done = 0
        while self.tokens + per_batch <= self.stop_tokens and (done + batch_size * self.world) <= count * pieces:
            s = done + seq
            chunk = self.stream[(s // pieces)[:, None], (s % pieces)[:, None] * seq_len + span].long()
            done += batch_size * self.world
            self.tokens += per_batch
            if self.batch_shape is None:
                self.batch_shape = (batch_size, seq_len)
            if self._on_batch is not None:
                self._on_batch(self.tokens)
            x, y = chunk[:, :-1], chunk[:, 1:]
            if self.device.type != self.stream.device.type:
                x, y = x.to(self.device), y.to(self.device)
            yield x, y

    def average_gradients(self, model: torch.nn.Module) -> None:
        """Average the gradients of ``model`` over the ranks (one all-reduce of them all); a no-op for
        one rank. A script calls it before each optimizer step: every rank then takes the same step."""
        if self.world == 1:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world
        for grad, value in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(value)
