"""The ``tiny`` task's data: an order-2 Markov chain over bytes with an exactly computable entropy rate.

Every node must generate the same bytes, so the chain and the samples come from splitmix64, a
pure-Python PRNG whose output is fixed by its definition (Steele, Lea and Flood, 2014), not from
``random`` or torch. Each context (the previous two symbols) has a few likely successors plus a small
uniform floor; the floor makes the chain irreducible and aperiodic, so its stationary distribution is
unique and the entropy rate H = sum_c pi(c) H(P(.|c)) is the best ``val_bpb`` any model can reach.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

MASK64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A float in [0, 1) from the top 53 bits: exact, so identical on every platform."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def below(self, n: int) -> int:
        return self.next_u64() % n  # bias of n / 2^64 is irrelevant here and keeps it simple


@dataclass(frozen=True)
class MarkovSpec:
    seed: int = 20240601
    alphabet: bytes = b"abcdefghijklmno "  # 16 symbols: 256 two-symbol contexts
    successors: int = 4  # likely next symbols per context
    floor: float = 0.04  # probability mass spread uniformly over the whole alphabet


class MarkovChain:
    """Transition table P[c][s] for contexts c = a * A + b (a, b symbol indices)."""

    def __init__(self, spec: MarkovSpec = MarkovSpec()):
        self.spec = spec
        size = len(spec.alphabet)
        rng = SplitMix64(spec.seed)
        self.table: list[list[float]] = []
        for _ in range(size * size):
            row = [spec.floor / size] * size
            picks: list[int] = []
            while len(picks) < spec.successors:
                s = rng.below(size)
                if s not in picks:
                    picks.append(s)
            # Weights 1..successors-ish, skewed so the rows are not all equally hard.
            weights = [0.05 + rng.uniform() ** 2 for _ in picks]
            total = sum(weights)
            for s, w in zip(picks, weights):
                row[s] += (1.0 - spec.floor) * w / total
            self.table.append(row)
        self.cumulative = [_cumsum(row) for row in self.table]

    @property
    def size(self) -> int:
        return len(self.spec.alphabet)

    @cached_property
    def stationary(self) -> list[float]:
        """Stationary distribution over contexts, by power iteration to machine precision."""
        size = self.size
        pi = [1.0 / (size * size)] * (size * size)
        for _ in range(10_000):
            nxt = [0.0] * (size * size)
            for c, p in enumerate(pi):
                if p == 0.0:
                    continue
                b = c % size
                row = self.table[c]
                base = b * size
                for s in range(size):
                    nxt[base + s] += p * row[s]
            delta = max(abs(x - y) for x, y in zip(pi, nxt))
            pi = nxt
            if delta < 1e-17:
                break
        return pi

    @cached_property
    def entropy_bits(self) -> float:
        """Entropy rate in bits per byte: the floor under any model's val_bpb."""
        total = 0.0
        for p, row in zip(self.stationary, self.table):
            total -= p * sum(q * math.log2(q) for q in row if q > 0.0)
        return total

    def sample(self, n: int, *, stream_seed: int) -> bytes:
        """``n`` bytes of the chain, started from context (0, 0) after a burn-in."""
        rng = SplitMix64(self.spec.seed ^ stream_seed)
        size, alphabet, cumulative = self.size, self.spec.alphabet, self.cumulative
        a = b = 0
        out = bytearray()
        burn_in = 1000
        for i in range(n + burn_in):
            cum = cumulative[a * size + b]
            u = rng.uniform() * cum[-1]
            s = _search(cum, u)
            a, b = b, s
            if i >= burn_in:
                out.append(alphabet[s])
        return bytes(out)


def _cumsum(row: list[float]) -> list[float]:
    out, acc = [], 0.0
    for q in row:
        acc += q
        out.append(acc)
    return out


def _search(cum: list[float], u: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] > u:
            hi = mid
        else:
            lo = mid + 1
    return lo
