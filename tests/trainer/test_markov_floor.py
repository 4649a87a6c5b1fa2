"""The tiny task's crash floor: the best val_bpb under the evaluation's window structure.

Run: .venv/bin/python -m pytest tests/trainer/test_markov_floor.py -q
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from trainer import tasks
from trainer.markov import MarkovChain, MarkovSpec

# A hand-made 2-symbol order-2 chain: row c = a * 2 + b is P(. | a, b). Rational, so its stationary
# distribution can be solved exactly here, independently of the chain's power iteration.
TABLE = [[Fraction(9, 10), Fraction(1, 10)], [Fraction(3, 10), Fraction(7, 10)],
         [Fraction(1, 2), Fraction(1, 2)], [Fraction(1, 5), Fraction(4, 5)]]
SMALL = MarkovChain(MarkovSpec(alphabet=b"xy"), table=[[float(q) for q in row] for row in TABLE])


def _exact_stationary() -> list[Fraction]:
    """Solve pi = pi T, sum pi = 1 over the 4 contexts by Gaussian elimination in fractions."""
    n = 4
    # Transition between contexts: (a, b) -> (b, s) with probability TABLE[a*2+b][s].
    rows = [[Fraction(0)] * n + [Fraction(0)] for _ in range(n)]
    for c in range(n):  # equation for pi(c'): sum_c pi(c) T(c, c') - pi(c') = 0
        for src in range(n):
            b = src % 2
            for s in range(2):
                if b * 2 + s == c:
                    rows[c][src] += TABLE[src][s]
        rows[c][c] -= 1
    rows[-1] = [Fraction(1)] * n + [Fraction(1)]  # replace one redundant equation by the normalisation
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [x / rows[col][col] for x in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                rows[r] = [x - rows[r][col] * y for x, y in zip(rows[r], rows[col])]
    return [rows[c][n] for c in range(n)]


def _brute_window_floor(window: int) -> float:
    """Enumerate every window of window + 1 symbols with its exact probability; the best expected loss
    on bytes 1..window given the window's earlier bytes is H(X1..Xw | X0) = H(X0..Xw) - H(X0)."""
    pi = _exact_stationary()
    joint: dict[tuple[int, ...], Fraction] = {}
    for seq in itertools.product(range(2), repeat=window + 1):
        p = pi[seq[0] * 2 + seq[1]]
        for t in range(2, window + 1):
            p *= TABLE[seq[t - 2] * 2 + seq[t - 1]][seq[t]]
        joint[seq] = p
    first: dict[int, Fraction] = {}
    for seq, p in joint.items():
        first[seq[0]] = first.get(seq[0], Fraction(0)) + p
    assert sum(joint.values()) == 1

    def h(dist):
        return -sum(float(p) * math.log2(float(p)) for p in dist.values() if p > 0)

    return (h(joint) - h(first)) / window


@pytest.mark.parametrize("window", [1, 2, 3, 5, 8])
def test_window_floor_matches_brute_force_enumeration(window):
    assert SMALL.window_floor_bits(window) == pytest.approx(_brute_window_floor(window), abs=1e-12)


def test_small_chain_stationary_matches_exact_solution():
    assert SMALL.stationary == pytest.approx([float(p) for p in _exact_stationary()], abs=1e-14)


@pytest.mark.parametrize("chain", [SMALL, tasks.tiny_chain()], ids=["small", "tiny"])
def test_window_floor_lies_between_entropy_rate_and_order0_entropy(chain):
    floors = [chain.window_floor_bits(w) for w in (1, 2, 4, 16, 64, 1024)]
    assert chain.entropy_bits < floors[-1] and floors[0] < chain.symbol_entropy_bits
    assert floors == sorted(floors, reverse=True)  # more full-context bytes per window: lower floor
    assert floors[0] == pytest.approx(chain.first_step_entropy_bits)
    with pytest.raises(ValueError):
        chain.window_floor_bits(0)


def test_tiny_window_floor():
    chain = tasks.tiny_chain()
    assert chain.window_floor_bits(tasks.TINY_CONTEXT) == pytest.approx(1.937, abs=0.01)
    assert chain.window_floor_bits(64) == pytest.approx(1.932839, abs=1e-6)
    assert chain.entropy_bits == pytest.approx(1.904541, abs=1e-6)


def test_oracle_window_losses_by_hand():
    # window 2: windows of 3 bytes at stride 3; the tail "xy" is incomplete and not scored.
    losses = SMALL.oracle_window_losses(b"xyyyxx" + b"xy", 2)
    cond = SMALL.pair_conditional
    first = -math.log2(cond[0][1]) - math.log2(TABLE[0 * 2 + 1][1])  # x y | y
    second = -math.log2(cond[1][0]) - math.log2(TABLE[1 * 2 + 0][0])  # y x | x
    assert losses == pytest.approx([first, second], abs=1e-12)
    pi = SMALL.stationary
    assert cond[0][1] == pytest.approx(pi[1] / (pi[0] + pi[1]))
    assert SMALL.oracle_window_losses(b"xy", 2) == []
    with pytest.raises(ValueError, match="not in the chain's alphabet"):
        SMALL.oracle_window_losses(b"xyz", 2)
    with pytest.raises(ValueError, match="at least 2"):
        SMALL.oracle_score(b"xyy", 2)


def test_oracle_on_tiny_validation_split_sits_on_the_window_floor():
    chain = tasks.tiny_chain()
    task = tasks.builtin_tasks()["tiny"]
    _train, val = tasks.split_data(task, tasks.tiny_data())
    losses = chain.oracle_window_losses(val, tasks.TINY_CONTEXT)
    assert len(losses) == tasks.TINY_VAL_BYTES // (tasks.TINY_CONTEXT + 1) == 1008
    mean, se = chain.oracle_score(val, tasks.TINY_CONTEXT)
    assert mean == pytest.approx(sum(losses) / (len(losses) * tasks.TINY_CONTEXT))
    assert 0.001 < se < 0.02
    floor = chain.window_floor_bits(tasks.TINY_CONTEXT)
    assert abs(mean - floor) < 3 * se
    # The check value: the window floor less 3 se; the true model itself passes it.
    assert task.floor_bpb == pytest.approx(floor - 3 * se)
    assert mean > task.floor_bpb
    assert task.floor_bpb == pytest.approx(1.915464, abs=1e-6)


def test_tiny_floor_is_stable_and_cached():
    first = tasks.builtin_tasks()["tiny"].floor_bpb
    assert tasks.builtin_tasks()["tiny"].floor_bpb == first == tasks.tiny_floor_bpb()
    assert tasks.tiny_floor_bpb.__wrapped__() == first  # recomputed from scratch: deterministic
    assert tasks.builtin_tasks()["tiny"].entropy_bpb == tasks.tiny_chain().entropy_bits  # still shown
