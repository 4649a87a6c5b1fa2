"""FLOPs per token, counted (not estimated) with torch's FlopCounterMode on one fwd+bwd step."""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def measure_flops_per_token(model, *, batch_size: int, seq_len: int, device: torch.device,
                            autocast=nullcontext) -> int:
    """Counts one training step's matmul/attention FLOPs on a batch of the script's own shape.

    Runs in the evaluation process, so it cannot perturb training. The counted ops' FLOPs follow from
    their shapes, not the weights: on a CPU it runs on the fresh model while training is under way.
    """
    x = torch.zeros((batch_size, seq_len), dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x.reshape(-1))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops() // (batch_size * seq_len))

