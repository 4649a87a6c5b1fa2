"""The run's training tokens, drawn by the trusted side (docs/design.md, "The budget").

The training process never holds the training split: it gets this stream, ``budget + 1`` tokens in
the order it must train on them, made of random chunks of the split (chunk starts from the run's
seed, through numpy's PCG64, whose output its definition fixes on every platform). The same seed
gives the same stream, so a reproduction and a spot check train on the very same tokens.
"""
from __future__ import annotations

import numpy as np

CHUNK_MIN = 64


def draw_stream(train: bytes, *, budget_tokens: int, seed: int, chunk: int) -> bytes:
    """``budget_tokens + 1`` bytes: random ``chunk``-byte windows of ``train``, concatenated."""
    chunk = max(CHUNK_MIN, int(chunk))
    data = np.frombuffer(train, dtype=np.uint8)
    if data.size < chunk + 1:
        raise ValueError(f"the training split ({data.size} bytes) is shorter than one chunk ({chunk})")
    need = budget_tokens + 1
    count = -(-need // chunk)
    rng = np.random.Generator(np.random.PCG64(seed))
    starts = rng.integers(0, data.size - chunk, size=count, dtype=np.int64)
    out = np.empty(count * chunk, dtype=np.uint8)
    view = out.reshape(count, chunk)
    offsets = np.arange(chunk, dtype=np.int64)
    for i in range(0, count, 4096):  # bounded temporaries for large budgets
        view[i:i + 4096] = data[starts[i:i + 4096, None] + offsets]
    return out[:need].tobytes()
