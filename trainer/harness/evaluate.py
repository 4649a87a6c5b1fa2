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


class LeakError(ValueError):
    """The model's prediction for a byte depends on bytes it must not see (later ones, or other windows)."""


# Positions where the input is changed from on; the logits before each must not move.
_CUTS = (0.25, 0.5, 0.75, 1.0)


@torch.inference_mode()
def check_no_leak(model, val: torch.Tensor, *, context: int, device: torch.device, autocast=nullcontext,
                  windows: int = 4) -> None:
    """Raise LeakError unless the logits at each position depend only on that position's own window
    up to it. A model that attends to later bytes (a lost causal mask) or across the batch reads the
    bytes it is asked to predict, and its val_bpb means nothing.

    Checks the trained model on consecutive windows of the validation split: the bytes from a cut on
    are changed (each plus one, mod 256) and the logits before the cut must stay put; the later half
    of the windows is changed and the earlier half's logits must stay put."""
    length = min(context, (val.numel() - 1) // windows)
    if length < 2:
        return
    starts = torch.arange(windows) * length
    x = val[starts[:, None] + torch.arange(length)].long().to(device)

    def logits(inp: torch.Tensor) -> torch.Tensor:
        with autocast():
            return model(inp).float()

    base = logits(x)
    if not torch.isfinite(base).all():
        return  # the evaluation reports it ("nan loss")
    tol = 1e-2 if device.type != "cpu" else 1e-4  # bf16 kernels may tile differently; a leak moves logits by O(1)

    def moved(rows: slice, cols: slice) -> float:
        """How far the logits in [rows, cols] move when every byte outside them is changed."""
        changed = x.clone()
        if rows.stop is not None:
            changed[rows.stop:] = (changed[rows.stop:] + 1) % 256
        if cols.stop is not None:
            changed[:, cols.stop:] = (changed[:, cols.stop:] + 1) % 256
        return float((logits(changed)[rows, cols] - base[rows, cols]).abs().amax())

    if not (logits(x) - base).abs().amax() <= tol:
        raise LeakError("the model's logits change from one call to the next on the same input "
                        "(randomness left on in eval mode?)")
    for frac in _CUTS:
        cut = max(1, int(length * frac)) if frac < 1.0 else length - 1
        if not (by := moved(slice(None), slice(None, cut))) <= tol:
            raise LeakError(f"the model sees the future: its logits before byte {cut} of a window change "
                            f"when the bytes from {cut} on change (by {by:.3g})")
    if not (by := moved(slice(None, windows // 2), slice(None))) <= tol:
        raise LeakError(f"the model mixes the windows of a batch: one window's logits change when "
                        f"another window changes (by {by:.3g})")

def bits_per_byte(nats: float, count: int) -> float:
    return nats / (math.log(2) * count)
