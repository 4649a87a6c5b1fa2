"""Luck is not progress: a claim's estimate from fresh-seed reproductions, and the test that says
whether it beats its parent (protocol/SPEC.md 5.9; docs/design.md, "Luck is not progress").

Pure functions over plain numbers. The claimant's own value is never a sample: it is the run the
claimant chose to publish (perhaps the luckiest of many seeds). The samples are the values of
trusted full runs at seeds neither side could choose (protocol/seeds.py).

**Seed noise.** ``sigma`` is val_bpb's standard deviation over training seeds for a task on one
device class (``result.device``), measured by ``scripts/bench/noise`` and read from a noise table;
for a class the table lacks, ``max(tolerance / 3, SIGMA_FLOOR)``: a task's tolerance is set at 3 sigma
of its seed noise, rounded up (scripts/bench/noise prints both), so this is an upper estimate; the
floor keeps a tolerance of 0 from making every difference infinitely significant.

**Estimate.** n samples x_i with prior sigmas s_i: the mean; the standard deviation pooled from the
prior (``PRIOR_DF`` pseudo degrees of freedom at mean(s_i^2)) and the samples' own scatter,
``sigma^2 = (PRIOR_DF * mean(s_i^2) + sum (x_i - mean)^2) / (PRIOR_DF + n - 1)``; the standard
error ``sigma / sqrt(n)``. With few samples the prior dominates, with many the data do.

**Test.** One-sided z test that the claim's mean is below its reference's (its parent, or the
task's baseline claim): ``z = (mean_ref - mean) / sqrt(se_ref^2 + se^2)``, ``p = Phi(-z)``. The
test is looked at again after every new sample, at most ``MAX_SAMPLES`` per claim, so the p-value
reported and compared with ``ALPHA`` is Bonferroni-corrected for those looks:
``p = min(1, MAX_SAMPLES * Phi(-z))``. Over every look, a claim no better than its reference is
called significant with probability below ALPHA.

**States** (``significance``): ``significant`` when p < ALPHA; ``no gain`` when the claim has at
least ``MIN_NO_GAIN`` samples and its mean is no lower than its reference's, or when both have
``MAX_SAMPLES`` samples and it is still not significant (the swarm spent what it spends on one
claim); otherwise ``not significant yet`` (including when either side has no sample yet).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

ALPHA = 0.01  # modded-nanogpt's record rule: p < 0.01 that the new mean is better
MAX_SAMPLES = 5  # fresh-seed reproductions one claim gets at most; the Bonferroni factor of the test
MIN_NO_GAIN = 2  # samples before a mean no better than the reference's ends the claim as no gain
SIGMA_FLOOR = 1e-4  # bits per byte: the least sigma assumed for a class nobody measured
PRIOR_DF = 4.0  # weight of the measured sigma, in samples' worth of degrees of freedom
# Two-sided 1% normal quantile. A vote compares one fresh-seed value x_v with the claimed value x_c:
# for an honest claim both are draws of the same script's val_bpb, so x_v - x_c ~ N(0, s_c^2 + s_v^2)
# (s_c: sigma of the claim's device class, s_v: the voter's), and |x_v - x_c| > 2.576 sqrt(s_c^2 + s_v^2)
# happens to 1% of honest claims. Measured on tiny/cpu: scripts/bench/noise --seeds 8 gives
# sigma 0.003106, so the threshold is 2.576 * sqrt(2) * 0.003106 = 0.0113 bits per byte.
Z_MISMATCH = 2.5758293035489


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float
    n: int
    sigma: float  # pooled per-run standard deviation

    def to_json(self) -> dict:
        return {"mean": f"{self.mean:.6f}", "se": f"{self.se:.6f}", "n": self.n, "sigma": f"{self.sigma:.6f}"}


@dataclass(frozen=True)
class Significance:
    state: str  # significant | not significant yet | no gain | baseline
    p: float | None  # corrected one-sided p-value; None when a side has no sample
    z: float | None = None
    reference: str | None = None  # the claim compared against (parent, or the task's baseline claim)

    def to_json(self) -> dict:
        return {"state": self.state, "p": None if self.p is None else float(f"{self.p:.6g}"),
                "z": None if self.z is None else round(self.z, 4), "reference": self.reference}


SIGNIFICANT, NOT_YET, NO_GAIN, BASELINE = "significant", "not significant yet", "no gain", "baseline"
STATES = (SIGNIFICANT, NOT_YET, NO_GAIN, BASELINE)


@dataclass(frozen=True)
class NoiseTable:
    """sigma of val_bpb over seeds per (task id, device class, token budget or None); where it has
    none, ``max(tolerance / 3, SIGMA_FLOOR)``. Seed noise grows as the budget shrinks, so an entry
    measured at one budget (``tokens``) applies to results of that budget only; an entry without
    ``tokens`` to any budget the table has no entry for."""

    sigmas: Mapping[tuple, float] = field(default_factory=dict)

    def sigma(self, task: str, device: str | None, tolerance: float, tokens: int | None = None,
              budget: int | None = None) -> float:
        """The seed noise of ``task`` on ``device`` at ``tokens`` (the claim's result.tokens; ``budget``:
        the task's full budget). An entry measured at that budget is used as is; else the entry of the
        nearest larger budget (an entry without ``tokens``: the full budget), else ``tolerance / 3`` at
        the full budget, scaled by sqrt(its budget / tokens): seed noise grows about as 1/sqrt of the
        tokens trained on, and a fallback should rather overstate it (SPEC.md 5.8)."""
        device = device or ""
        tokens = budget if tokens is None else tokens
        if tokens is not None and (task, device, tokens) in self.sigmas:
            return max(self.sigmas[(task, device, tokens)], SIGMA_FLOOR)
        larger = sorted(t for (tk, dv, *rest), _ in self.sigmas.items()
                        for t in rest if tk == task and dv == device and t is not None
                        and tokens is not None and t > tokens)
        if larger:
            known, measured_at = self.sigmas[(task, device, larger[0])], larger[0]
        else:
            known = self.sigmas.get((task, device, None), self.sigmas.get((task, device)))
            measured_at = budget
            if known is None or known <= 0:
                known = tolerance / 3.0
        if tokens is not None and measured_at is not None and 0 < tokens < measured_at:
            known *= math.sqrt(measured_at / tokens)
        return max(known, SIGMA_FLOOR)

    @classmethod
    def load(cls, *paths: Path) -> "NoiseTable":
        """Merge noise files (later ones win). A file: {task id: {device class: entry or [entries]}},
        an entry {"sigma": "0.003106", "tokens": 300000 (optional), ...}. A missing file is empty; a
        malformed one raises ValueError naming it."""
        sigmas: dict[tuple, float] = {}
        for path in paths:
            try:
                data = json.loads(Path(path).read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path}: not a noise table: {exc}") from None
            try:
                for task, classes in data.items():
                    for device, entries in classes.items():
                        for entry in entries if isinstance(entries, list) else [entries]:
                            sigma, tokens = entry["sigma"], entry.get("tokens")
                            if not isinstance(sigma, str):
                                raise ValueError(f"sigma {sigma!r} is not a decimal string")
                            value = float(sigma)
                            if not math.isfinite(value) or value <= 0:
                                raise ValueError(f"sigma {sigma!r} is not positive")
                            if tokens is not None and (type(tokens) is not int or tokens <= 0):
                                raise ValueError(f"tokens {tokens!r} is not a positive integer")
                            sigmas[(str(task), str(device), tokens)] = value
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: not a noise table: {exc}") from None
        return cls(sigmas)

    def to_json(self) -> dict:
        """The file form of this table (NoiseTable.load reads it back)."""
        out: dict = {}
        for key, sigma in sorted(self.sigmas.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
            task, device, tokens = (*key, None)[:3]
            entry = {"sigma": f"{sigma:.6f}"} | ({"tokens": tokens} if tokens is not None else {})
            out.setdefault(task, {}).setdefault(device, []).append(entry)
        return out


def estimate(samples: Iterable[tuple[float, float]]) -> Estimate | None:
    """The estimate of a claim's mean from (value, prior sigma) samples; None without samples.
    Order-free: the samples are sorted first, so float sums do not depend on vote order."""
    samples = sorted(samples)
    n = len(samples)
    if n == 0:
        return None
    mean = math.fsum(x for x, _ in samples) / n
    prior_var = math.fsum(s * s for _, s in samples) / n
    scatter = math.fsum((x - mean) ** 2 for x, _ in samples)
    sigma = math.sqrt((PRIOR_DF * prior_var + scatter) / (PRIOR_DF + n - 1))
    return Estimate(mean, sigma / math.sqrt(n), n, sigma)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def significance(claim: Estimate | None, reference: Estimate | None, reference_id: str | None = None
                 ) -> Significance:
    if claim is None or reference is None:
        return Significance(NOT_YET, None, None, reference_id)
    spread = math.sqrt(reference.se ** 2 + claim.se ** 2)
    z = (reference.mean - claim.mean) / spread if spread > 0 else (math.inf if reference.mean > claim.mean else -math.inf)
    p = min(1.0, MAX_SAMPLES * normal_sf(z))
    if p < ALPHA:
        state = SIGNIFICANT
    elif claim.n >= MIN_NO_GAIN and claim.mean >= reference.mean:
        state = NO_GAIN
    elif claim.n >= MAX_SAMPLES and reference.n >= MAX_SAMPLES:
        state = NO_GAIN
    else:
        state = NOT_YET
    return Significance(state, p, z, reference_id)


def mismatch_threshold(sigma_claim: float, sigma_voter: float, tolerance: float) -> float:
    """Largest |fresh - claimed| still voted ``reproduced``: Z_MISMATCH standard deviations of the
    difference of two honest runs, and never below the task's tolerance (which also covers the
    numeric differences between hardware at one seed)."""
    return max(tolerance, Z_MISMATCH * math.sqrt(sigma_claim ** 2 + sigma_voter ** 2))


__all__ = ["ALPHA", "BASELINE", "Estimate", "MAX_SAMPLES", "MIN_NO_GAIN", "NOT_YET", "NO_GAIN", "NoiseTable",
           "PRIOR_DF", "SIGMA_FLOOR", "SIGNIFICANT", "STATES", "Significance", "Z_MISMATCH", "estimate", "mismatch_threshold",
           "normal_sf", "significance"]
