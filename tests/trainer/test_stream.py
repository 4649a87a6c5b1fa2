"""The run's training token stream, drawn by the trusted side (trainer/stream.py).

Run: .venv/bin/python -m pytest tests/trainer/test_stream.py -q
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from trainer.stream import CHUNK_MIN, draw_stream

ALPHABET = b"abcdefghijklmnop"  # the split's bytes; nothing else may appear in the stream


def _split(n: int = 50_000, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.choice(ALPHABET) for _ in range(n))


TRAIN = _split()


def test_the_stream_holds_budget_plus_one_bytes():
    for budget in (1, 63, 64, 65, 1000, 4096, 12_345):
        assert len(draw_stream(TRAIN, budget_tokens=budget, seed=0, chunk=64)) == budget + 1


def test_the_same_seed_draws_the_same_stream():
    a = draw_stream(TRAIN, budget_tokens=10_000, seed=7, chunk=128)
    b = draw_stream(TRAIN, budget_tokens=10_000, seed=7, chunk=128)
    assert a == b


def test_other_seeds_draw_other_streams():
    streams = {draw_stream(TRAIN, budget_tokens=10_000, seed=s, chunk=128) for s in range(5)}
    assert len(streams) == 5


def test_a_shorter_budget_is_a_prefix_of_a_longer_one():
    # The chunk starts come from the seed alone: a spot check's stream is the full run's.
    short = draw_stream(TRAIN, budget_tokens=1000, seed=3, chunk=64)
    long = draw_stream(TRAIN, budget_tokens=5000, seed=3, chunk=64)
    assert long.startswith(short)


@pytest.mark.parametrize("chunk", [64, 100, 256])
def test_every_chunk_is_a_piece_of_the_split(chunk):
    stream = draw_stream(TRAIN, budget_tokens=20_000, seed=1, chunk=chunk)
    pieces = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
    assert len(pieces) == -(-len(stream) // chunk)
    assert all(piece in TRAIN for piece in pieces)
    assert all(len(piece) == chunk for piece in pieces[:-1])


def test_chunks_come_from_all_over_the_split():
    chunk = 64
    stream = draw_stream(TRAIN, budget_tokens=64 * 500, seed=2, chunk=chunk)
    starts = {TRAIN.find(stream[i:i + chunk]) for i in range(0, len(stream) - chunk, chunk)}
    assert min(starts) < len(TRAIN) // 10 and max(starts) > len(TRAIN) * 9 // 10


def test_a_small_chunk_is_raised_to_the_minimum():
    assert draw_stream(TRAIN, budget_tokens=3000, seed=4, chunk=1) == draw_stream(
        TRAIN, budget_tokens=3000, seed=4, chunk=CHUNK_MIN)


def test_the_stream_holds_no_byte_the_split_lacks():
    stream = draw_stream(TRAIN, budget_tokens=50_000, seed=5, chunk=64)
    assert set(stream) <= set(ALPHABET)
    assert set(stream) == set(ALPHABET)  # and a long stream holds all of them


def test_a_split_shorter_than_one_chunk_is_refused():
    with pytest.raises(ValueError, match="shorter than one chunk"):
        draw_stream(b"a" * 64, budget_tokens=10, seed=0, chunk=64)
    assert len(draw_stream(b"ab" * 40, budget_tokens=10, seed=0, chunk=64)) == 11


def test_a_large_budget_is_drawn():
    data = np.random.default_rng(0).integers(0, 16, size=1 << 20, dtype=np.uint8).tobytes()
    budget = 20_000_000
    stream = draw_stream(data, budget_tokens=budget, seed=9, chunk=256)
    assert len(stream) == budget + 1
    tail = stream[-257:]
    assert max(tail) < 16
