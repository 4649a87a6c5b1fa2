"""Offline mutation: perturb the script's hyperparameter constants, so the loop runs with no key.

One to three constants change per proposal. Floats take a multiplicative log-normal step of sigma
``boldness`` (learning rates live on a log scale); fractions in (0, 1) stay there; integers move by
one or two steps, powers of two by factors of two (batch sizes, widths). Known divisibility
constraints (width by head count, batch by sequence length) that held before still hold after: a
change that would break one is repaired by scaling the divisor it broke (halving the device batch
when the total batch halves), so a constraint does not make a direction unreachable. A proposal
whose estimated cost per token exceeds the task's compute cap (space.within_cap), or that was tried
already (the context's source keys), is drawn again rather than run. Deterministic given the RNG seed.
"""
from __future__ import annotations

import math
import random
import re
from typing import TYPE_CHECKING, Callable

from ..hyperparams import Constant, diff_constants, format_value, parse_constants, set_constants
from .base import Proposal, ProposalError, Usage

if TYPE_CHECKING:
    from ..context import Context

# (dividend, divisor) name patterns: if the baseline satisfies dividend % divisor == 0 it must stay so.
DIVISIBILITY = (
    (re.compile(r"(DIM|EMBD|WIDTH|HIDDEN)"), re.compile(r"HEAD")),
    (re.compile(r"(BATCH|TOKENS)"), re.compile(r"(SEQ|CONTEXT|BLOCK|LEN)")),
    (re.compile(r"TOTAL.*BATCH"), re.compile(r"(DEVICE|MICRO).*BATCH")),
)
TOTAL_BATCH = re.compile(r"TOTAL.*BATCH")
MICRO_BATCH = re.compile(r"(DEVICE|MICRO).*BATCH")
SEQ = re.compile(r"(SEQ_LEN|CONTEXT|BLOCK_SIZE)")
FROZEN = re.compile(r"SEED|VOCAB|EVAL|LOG|PRINT")  # not knobs: changing them breaks comparisons or does nothing
MAX_TRIES = 32
MAX_DRAWS = 16  # whole proposals drawn before giving up on one within the cap and not tried yet
REPAIR_FACTORS = (0.5, 0.25, 0.125, 2.0, 4.0, 8.0)  # a divisor's repair: shrink it first


def _is_pow2(v: int) -> bool:
    return v >= 2 and v & (v - 1) == 0


Check = Callable[[dict], bool]


def constraints(consts: dict[str, Constant]) -> list[Check]:
    """Predicates over {name: value} that the seed satisfies and a mutation must keep satisfying:
    the name-pattern divisibilities above (with an even quotient kept even: head_dim feeds rotary
    embeddings), and total batch divisible by device batch times sequence length."""
    ints = [c for c in consts.values() if c.is_int and c.value > 0]
    checks: list[Check] = []

    def divides(a: str, b: str, even: bool) -> Check:
        return lambda v: v[b] > 0 and v[a] % v[b] == 0 and (not even or (v[a] // v[b]) % 2 == 0)

    for dividend_re, divisor_re in DIVISIBILITY:
        for a in ints:
            for b in ints:
                if (a.name != b.name and dividend_re.search(a.name) and divisor_re.search(b.name)
                        and not divisor_re.search(a.name) and a.value % b.value == 0):
                    checks.append(divides(a.name, b.name, (a.value // b.value) % 2 == 0))
    names = {c.name for c in ints}
    total = next((n for n in names if TOTAL_BATCH.search(n)), None)
    micro = next((n for n in names if MICRO_BATCH.search(n)), None)
    seq = next((n for n in names if SEQ.search(n)), None)
    if total and micro and seq:
        v0 = {c.name: c.value for c in ints}
        if v0[total] % (v0[micro] * v0[seq]) == 0:
            checks.append(lambda v: v[total] % (v[micro] * v[seq]) == 0)
    return checks


def mutate_value(c: Constant, boldness: float, rng: random.Random) -> float | int:
    v = c.value
    if c.is_int:
        big_step = rng.random() < min(0.5, boldness)
        if _is_pow2(v):
            factor = 4 if big_step else 2
            return v * factor if rng.random() < 0.5 else max(1, v // factor)
        step = (2 if big_step else 1) * rng.choice((-1, 1))
        low = 1 if v >= 1 else 0
        return max(low, v + step)
    step = math.exp(rng.gauss(0.0, boldness))
    if 0.0 < v < 1.0:
        # Fractions (betas, dropout, warmup share) live in (0, 1): scale the distance to the nearer end.
        return 1.0 - (1.0 - v) * step if v > 0.5 else min(0.99, v * step)
    return v * step


class OfflineProposer:
    def __init__(self, boldness: float = 0.3, seed: int = 0, max_changes: int = 3) -> None:
        self.boldness = boldness
        self.rng = random.Random(seed)
        self.max_changes = max_changes
        self.description = "proposer: offline mutation"

    def propose(self, context: "Context") -> Proposal:
        from ..space import Space, source_key, within_cap

        source = context.seed.source
        consts = parse_constants(source)
        knobs = [c for c in consts.values() if not FROZEN.search(c.name) and c.value != 0]
        if not knobs:
            raise ProposalError("no hyperparameter constants (NAME = number) to mutate in the seed source")
        checks = constraints(consts)
        baseline = Space.of(context.baseline_source or source).centre
        refused = {"over the compute cap": 0, "tried": 0, "no change": 0}
        for _ in range(MAX_DRAWS):
            literals = self._draw(consts, knobs, checks)
            new = set_constants(source, literals) if literals else source
            changes = diff_constants(source, new)
            if not changes:
                refused["no change"] += 1
                continue
            ok, ratio = within_cap(Space.of(new).centre, baseline, context.compute_cap)
            if not ok:
                refused["over the compute cap"] += 1
                continue
            if context.tried and source_key(new) in context.tried:
                refused["tried"] += 1
                continue
            note = ", ".join(f"{name} {old} -> {new_}" for name, old, new_ in changes)
            cost = "" if ratio is None else f", est. cost {ratio:.2f}x baseline"
            return Proposal(new, f"{note} (offline mutation{cost})", Usage())
        detail = ", ".join(f"{n} {why}" for why, n in refused.items() if n)
        raise ProposalError(f"no usable mutation in {MAX_DRAWS} draws ({detail})")

    def _draw(self, consts: dict[str, Constant], knobs: list[Constant], checks: list[Check]) -> dict[str, str]:
        """One to three constants' new literals (plus any divisor repaired to keep the constraints)."""
        n = min(len(knobs), self.rng.choices((1, 2, 3), weights=(5, 3, 2))[0], self.max_changes)
        chosen = self.rng.sample(knobs, n)
        values = {c.name: c.value for c in consts.values()}
        literals: dict[str, str] = {}
        for c in chosen:
            for _ in range(MAX_TRIES):
                literal = format_value(mutate_value(c, self.boldness, self.rng), c.is_int)
                if literal == c.text:
                    continue
                trial = dict(values, **{c.name: float(literal) if not c.is_int else int(literal)})
                fixed = repair(trial, checks, consts, keep={c.name, *literals})
                if fixed is not None:
                    for name, v in fixed.items():
                        if v != values[name]:
                            literals[name] = literal if name == c.name else format_value(v, True)
                    values = fixed
                    break
        return literals


def repair(values: dict, checks: list[Check], consts: dict[str, Constant], keep: set[str]) -> dict | None:
    """``values`` if every check holds, else ``values`` with one divisor (a name the divisibility
    rules divide by: device batch first, then heads, sequence length) scaled by a power of two so
    that they all hold; None when no such single repair exists. Names in ``keep`` are not touched."""
    if all(check(values) for check in checks):
        return values
    divisors = [c.name for c in consts.values()
                if c.is_int and c.value > 0 and c.name not in keep and not FROZEN.search(c.name)
                and any(d.search(c.name) for _, d in DIVISIBILITY)]
    divisors.sort(key=lambda n: (not MICRO_BATCH.search(n), not re.search("HEAD", n), n))
    for name in divisors:
        for f in REPAIR_FACTORS:
            v = values[name] * f
            if v < 1 or v != int(v):
                continue
            trial = dict(values, **{name: int(v)})
            if all(check(trial) for check in checks):
                return trial
    return None
