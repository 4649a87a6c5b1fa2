"""The search space over a train script's UPPER_CASE constants, its cost, and what counts as "tried".

The optimizer proposers (proposers/optimizer.py) search the seed script's hyperparameter block
(hyperparams.py). Each knob gets a coordinate the samplers move in:

- learning rates and other positive floats: log scale, a factor 10 either way;
- fractions of the budget (``*_FRAC``): linear in [0, 0.9];
- decay factors close to 1 (betas, momentum): ``1 - v`` on a log scale, so 0.95 and 0.99 are as far
  apart as 0.9 and 0.95;
- powers of two (widths, batch sizes, heads): the exponent, two steps either way;
- other integers, and depth: linear from half to twice the value;
- zero-valued floats named like a decay (weight decay): linear in [0, 0.3].

Constants the mutator leaves alone (SEED, VOCAB, EVAL, LOG, PRINT) are left alone here too, and the
divisibility constraints the mutator knows (proposers/offline.py ``constraints``) hold for every point.

``cost_per_token`` estimates a script's training FLOPs per token from its architecture constants
(matmuls 6 x params, causal attention, the Muon step amortized over the tokens of an optimizer
step), so a proposal whose cost exceeds the task's ``compute_cap`` times the baseline's is refused
before it runs instead of timing out.

``source_key`` is what the loop compares to reject a proposal that was tried before: the script's
tokens without comments, blank lines or spacing, numbers by value (``0.030`` is ``0.03``).
"""
from __future__ import annotations

import hashlib
import io
import math
import re
import tokenize
from dataclasses import dataclass
from typing import Iterable

from .hyperparams import Constant, format_value, parse_constants
from .proposers.offline import FROZEN, constraints

FRACTION = re.compile(r"_FRAC(TION)?$")
DECAY_LIKE = re.compile(r"(BETA|MOMENTUM|EMA|DECAY_RATE)")
ZERO_DECAY = re.compile(r"DECAY")
LOG_SPAN = 10.0  # rates move at most this factor from the space's centre
POW2_STEPS = 2


@dataclass(frozen=True)
class Knob:
    """One constant's coordinate: ``kind`` says how ``low..high`` maps to the constant's value."""

    name: str
    kind: str  # log | linear | one_minus_log | pow2 | int
    low: float
    high: float
    is_int: bool

    def to_value(self, u: float) -> float | int:
        u = min(max(u, self.low), self.high)
        if self.kind == "pow2":
            return 2 ** int(round(u))
        if self.kind == "int":
            return int(round(u))
        if self.kind == "one_minus_log":
            return 1.0 - u
        return u

    def to_coordinate(self, value: float) -> float:
        """The coordinate of a value, clipped into the knob's range (observations may lie outside)."""
        if self.kind == "pow2":
            u = math.log2(value) if value > 0 else self.low
        elif self.kind == "one_minus_log":
            u = 1.0 - value if value < 1.0 else self.low
        elif self.kind == "log":
            u = value if value > 0 else self.low
        else:
            u = value
        u = min(max(u, self.low), self.high)
        return float(round(u)) if self.kind in ("pow2", "int") else u

    def literal(self, u: float) -> str:
        return format_value(self.to_value(u), self.is_int)


def knob_for(c: Constant) -> Knob | None:
    """The coordinate of one constant, or None when it is not a knob."""
    if FROZEN.search(c.name):
        return None
    v = c.value
    if c.is_int:
        if v <= 0:
            return None
        if v >= 2 and v & (v - 1) == 0 and not _DEPTH.search(c.name):  # depth moves one layer at a time
            e = int(math.log2(v))
            return Knob(c.name, "pow2", max(0, e - POW2_STEPS), e + POW2_STEPS, True)
        return Knob(c.name, "int", max(1, v // 2), max(2, v * 2), True)
    if FRACTION.search(c.name) and 0.0 <= v < 1.0:
        return Knob(c.name, "linear", 0.0, 0.9, False)
    if 0.5 <= v < 1.0 and DECAY_LIKE.search(c.name):
        gap = 1.0 - v
        return Knob(c.name, "one_minus_log", gap / LOG_SPAN, min(0.5, gap * LOG_SPAN), False)
    if v == 0.0 and ZERO_DECAY.search(c.name):
        return Knob(c.name, "linear", 0.0, 0.3, False)
    if v > 0.0:
        return Knob(c.name, "log", v / LOG_SPAN, v * LOG_SPAN, False)
    return None


@dataclass(frozen=True)
class Space:
    """The knobs of a script and the constraints its points must keep."""

    knobs: tuple[Knob, ...]
    centre: dict  # name -> value of the script the space was built from (every constant, knob or not)

    @classmethod
    def of(cls, source: str) -> "Space":
        consts = parse_constants(source)
        knobs = tuple(k for k in (knob_for(c) for c in consts.values()) if k is not None)
        return cls(knobs, {c.name: c.value for c in consts.values()})

    def feasible(self, values: dict) -> bool:
        """Every divisibility constraint of the centre script holds for ``values`` (all constants)."""
        consts = {name: _const(name, v) for name, v in self.centre.items()}
        return all(check(values) for check in constraints(consts))

    def values(self, coords: dict) -> dict:
        """All constants' values for a point (knobs from ``coords``, others as in the centre); a
        value's literal is what lands in the script, so the value is re-read from it."""
        out = dict(self.centre)
        for k in self.knobs:
            if k.name in coords:
                lit = k.literal(coords[k.name])
                out[k.name] = int(lit) if k.is_int else float(lit)
        return out

    def literals(self, coords: dict) -> dict[str, str]:
        return {k.name: k.literal(coords[k.name]) for k in self.knobs if k.name in coords}

    def coordinates(self, source: str) -> dict | None:
        """The point of a script of this space (None when a knob is missing from it)."""
        consts = parse_constants(source)
        if any(k.name not in consts for k in self.knobs):
            return None
        return {k.name: k.to_coordinate(consts[k.name].value) for k in self.knobs}


def _const(name: str, value: float | int) -> Constant:
    is_int = isinstance(value, int)
    return Constant(name, 0, str(value), value, is_int, "")


# -- cost ------------------------------------------------------------------------------------------

_DEPTH = re.compile(r"^(DEPTH|N_LAYERS?|NUM_LAYERS|LAYERS)$")
_DIM = re.compile(r"^(MODEL_DIM|N_EMBD|D_MODEL|EMBED_DIM|WIDTH|HIDDEN_DIM)$")
_MLP = re.compile(r"^(MLP_RATIO|MLP_MULT|FFN_MULT|FFN_RATIO)$")
_SEQ = re.compile(r"^(SEQ_LEN|BLOCK_SIZE|CONTEXT_LEN|SEQUENCE_LENGTH)$")
_TOTAL = re.compile(r"TOTAL.*BATCH")
_MICRO = re.compile(r"(DEVICE|MICRO).*BATCH")
VOCAB = 256  # bytes: every built-in task's harness
NEWTON_SCHULZ_STEPS = 5


def _pick(values: dict, pattern: re.Pattern) -> float | None:
    for name, v in values.items():
        if pattern.search(name):
            return float(v)
    return None


def cost_per_token(values: dict) -> float | None:
    """Estimated training FLOPs per token of a script with these constants, or None when its
    architecture constants (depth, width) cannot be found by name.

    Per token: 6 x the matmul parameters (blocks: qkv, out, MLP in and out; the output head), causal
    attention 6 x depth x seq_len x width, and one Muon step per optimizer step (five Newton-Schulz
    iterations on every block matrix) divided by the tokens of that step."""
    depth, dim = _pick(values, _DEPTH), _pick(values, _DIM)
    if depth is None or dim is None or depth <= 0 or dim <= 0:
        return None
    ratio = _pick(values, _MLP)
    ratio = 4.0 if ratio is None else ratio
    seq = _pick(values, _SEQ)
    seq = 256.0 if seq is None else seq
    hidden = ratio * dim
    matrices = [(3 * dim, dim), (dim, dim), (hidden, dim), (dim, hidden)]
    params = depth * sum(m * n for m, n in matrices) + VOCAB * dim
    attention = 6.0 * depth * seq * dim
    total = _pick(values, _TOTAL)
    micro = _pick(values, _MICRO)
    step_tokens = max(total or 0.0, (micro or 1.0) * seq, 1.0)
    muon = 0.0
    for m, n in matrices:
        k, big = min(m, n), max(m, n)
        muon += NEWTON_SCHULZ_STEPS * (4.0 * k * k * big + 2.0 * k ** 3)
    muon *= depth
    return 6.0 * params + attention + muon / step_tokens


def within_cap(values: dict, baseline: dict, cap: float | None) -> tuple[bool, float | None]:
    """(whether the estimated cost stays within ``cap`` x the baseline's, the ratio); no cap or no
    estimate: allowed, ratio None."""
    if cap is None:
        return True, None
    mine, base = cost_per_token(values), cost_per_token(baseline)
    if mine is None or base is None:
        return True, None
    ratio = mine / base
    return ratio <= cap, ratio


# -- what counts as tried --------------------------------------------------------------------------

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def _number(text: str) -> str:
    t = text.replace("_", "").lower()
    try:
        if t.endswith("j"):
            return repr(complex(t))
        if t.startswith(("0x", "0o", "0b")) or not any(c in t for c in ".e"):
            return repr(int(t, 0) if t.startswith(("0x", "0o", "0b")) else int(t))
        return repr(float(t))
    except ValueError:
        return text


def normalized_tokens(source: str) -> Iterable[str]:
    """The script's tokens without comments, blank lines and spacing; numbers by value. A script
    that does not tokenize falls back to its lines, stripped."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIP:
                continue
            if tok.type == tokenize.NUMBER:
                yield _number(tok.string)
            elif tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                yield {tokenize.NEWLINE: ";", tokenize.INDENT: "{", tokenize.DEDENT: "}"}[tok.type]
            else:
                yield tok.string
    except (tokenize.TokenError, IndentationError, SyntaxError):
        for line in source.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                yield line


def source_key(source: str) -> str:
    """Equal for two scripts that differ only in comments, blank lines, spacing or how a number is
    written: a proposal with the key of a tried script is a duplicate."""
    return hashlib.sha256("\x00".join(normalized_tokens(source)).encode("utf-8")).hexdigest()


def skeleton_key(source: str) -> str:
    """Equal for two scripts that differ only in their constants' values (and comments, spacing):
    the code an optimizer study is about."""
    consts = parse_constants(source)
    lines = source.splitlines()
    for c in consts.values():
        lines[c.line] = f"{c.name} = _"
    return source_key("\n".join(lines) + "\n")
