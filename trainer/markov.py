"""The ``tiny`` task's data: an order-2 Markov chain over bytes with an exactly computable entropy rate.

Every node must generate the same bytes, so the chain and the samples come from splitmix64, a
pure-Python PRNG whose output is fixed by its definition (Steele, Lea and Flood, 2014), not from
``random`` or torch. Each context (the previous two symbols) has a few likely successors plus a small
uniform floor; the floor makes the chain irreducible and aperiodic, so its stationary distribution is
unique and the entropy rate H = sum_c pi(c) H(P(.|c)) is the asymptotic floor under ``val_bpb``.

Scored in windows (predict bytes 1..w of a window of w + 1 bytes from that window's earlier bytes only),
the first prediction of each window sees one symbol of context, so the best a model can reach is the
window floor (H(X1|X0) + (w - 1) H) / w, a little above H (``MarkovChain.window_floor_bits``).
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

    def __init__(self, spec: MarkovSpec = MarkovSpec(), *, table: list[list[float]] | None = None):
        """The chain drawn from ``spec``; or, given ``table`` (rows indexed by context a * A + b, each
        a distribution over the A symbols of ``spec.alphabet``), that chain as is (tests, hand-made
        chains)."""
        self.spec = spec
        size = len(spec.alphabet)
        if table is not None:
            if len(table) != size * size or any(len(row) != size for row in table):
                raise ValueError(f"table must be {size * size} rows of {size} probabilities")
            if any(q < 0.0 for row in table for q in row) or any(abs(sum(row) - 1.0) > 1e-12 for row in table):
                raise ValueError("each table row must be a probability distribution")
            self.table = [[float(q) for q in row] for row in table]
            self.cumulative = [_cumsum(row) for row in self.table]
            return
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

    @cached_property
    def first_symbol(self) -> list[float]:
        """Stationary marginal of one symbol: P(X0 = a) = sum_b pi(a, b)."""
        size, pi = self.size, self.stationary
        return [sum(pi[a * size:(a + 1) * size]) for a in range(size)]

    @cached_property
    def pair_conditional(self) -> list[list[float]]:
        """P(X1 = b | X0 = a) under the stationary chain: pi(a, b) / P(X0 = a) (uniform where P(a) = 0)."""
        size, pi = self.size, self.stationary
        out = []
        for a, pa in enumerate(self.first_symbol):
            row = pi[a * size:(a + 1) * size]
            out.append([p / pa for p in row] if pa > 0.0 else [1.0 / size] * size)
        return out

    @cached_property
    def symbol_entropy_bits(self) -> float:
        """Order-0 entropy H(X0) of the stationary single-symbol marginal."""
        return -sum(p * math.log2(p) for p in self.first_symbol if p > 0.0)

    @cached_property
    def first_step_entropy_bits(self) -> float:
        """H(X1 | X0) = H(X0, X1) - H(X0): the best loss on a byte that sees one symbol of context."""
        joint = -sum(p * math.log2(p) for p in self.stationary if p > 0.0)
        return joint - self.symbol_entropy_bits

    def window_floor_bits(self, window: int) -> float:
        """Best expected bits per predicted byte when scoring non-overlapping windows of window + 1
        stationary bytes, predicting bytes 1..window of each from the window's earlier bytes only.

        Byte 1 sees one symbol of context (H(X1|X0)); bytes 2..window see the full order-2 context
        (the entropy rate). Exact, from the stationary distribution: no sampling."""
        if window < 1:
            raise ValueError("window must be at least 1")
        return (self.first_step_entropy_bits + (window - 1) * self.entropy_bits) / window

    def symbols(self, data: bytes) -> list[int]:
        """``data`` as symbol indices; a byte outside the alphabet is a ValueError."""
        index = {byte: i for i, byte in enumerate(self.spec.alphabet)}
        try:
            return [index[byte] for byte in data]
        except KeyError as e:
            raise ValueError(f"byte {e.args[0]!r} is not in the chain's alphabet") from None

    def oracle_window_losses(self, data: bytes, window: int) -> list[float]:
        """The true model's loss in bits, summed per window, for each full window of window + 1 bytes
        at stride window + 1 in ``data`` (an incomplete tail is not scored): P(x1 | x0) for the first
        predicted byte, the transition table for the rest."""
        if window < 1:
            raise ValueError("window must be at least 1")
        size, table, first = self.size, self.table, self.pair_conditional
        syms = self.symbols(data)
        span = window + 1
        log2 = math.log2
        losses = []
        for start in range(0, len(syms) - span + 1, span):
            w = syms[start:start + span]
            bits = -log2(first[w[0]][w[1]])
            for t in range(2, span):
                bits -= log2(table[w[t - 2] * size + w[t - 1]][w[t]])
            losses.append(bits)
        return losses

    def oracle_score(self, data: bytes, window: int) -> tuple[float, float]:
        """(mean bits per predicted byte of the true model on ``data``'s windows, standard error of
        that mean over windows): the sample standard deviation of the per-window bits per byte over
        sqrt(number of windows)."""
        losses = self.oracle_window_losses(data, window)
        n = len(losses)
        if n < 2:
            raise ValueError(f"{len(data)} bytes hold {n} window(s) of {window + 1}: need at least 2")
        per_byte = [x / window for x in losses]
        mean = math.fsum(per_byte) / n
        var = math.fsum((x - mean) ** 2 for x in per_byte) / (n - 1)
        return mean, math.sqrt(var / n)

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
