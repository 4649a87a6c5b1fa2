"""val_bpb: summed cross-entropy in nats / (ln 2 x summed target bytes) on the validation split.

Byte-level tokens (vocab 256) make bits per byte exact (DESIGN.md, "The inner loop"). The split is
cut into consecutive windows of ``context`` bytes; every byte after the first is predicted exactly
once, from the bytes before it in its window.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

VOCAB = 256


@torch.inference_mode()
def evaluate_nats(model, val: torch.Tensor, *, context: int, batch_size: int, device: torch.device,
                  autocast=nullcontext) -> tuple[float, int]:
    """(summed CE nats, number of predicted bytes)."""
    n = val.numel()
    if n < 2:
        raise ValueError("validation split needs at least two bytes")
    starts = list(range(0, n - 1, context))
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    # Full windows in batches, then the one shorter tail window on its own.
    full = [s for s in starts if s + context + 1 <= n]
    tail = [s for s in starts if s + context + 1 > n]
    groups = [full[i:i + batch_size] for i in range(0, len(full), batch_size)]
    groups += [[s] for s in tail]
    for group in groups:
        length = min(context, n - 1 - group[0])
        idx = torch.tensor(group)[:, None] + torch.arange(length + 1)
        chunk = val[idx].long().to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        with autocast():
            logits = model(x)
        if tuple(logits.shape) != (x.size(0), x.size(1), VOCAB):
            raise ValueError(f"model returned logits of shape {tuple(logits.shape)}, "
                             f"expected {(x.size(0), x.size(1), VOCAB)}")
        total += F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1), reduction="sum").double()
        count += y.numel()
    return float(total), count


def bits_per_byte(nats: float, count: int) -> float:
    return nats / (math.log(2) * count)
