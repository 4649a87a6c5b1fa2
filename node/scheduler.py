"""The reproduction queue and the verdicts (docs/design.md, "Reproduction and voting").

Pure logic over plain data, no I/O: ``node/reproduce.py`` loads the node's view of the corpus into
``Candidate`` rows, and this module decides which claims are worth this node's compute and in what
order, whether the node may spend compute on reproduction right now, which token budget a claim ran
with, and what a run's measurements mean as a verdict.

Which claims: pending claims that would enter their task's top-K if true, ordered by expected gain
times the author's trust; claims already verified by trusted reproductions are skipped, except
random audits after BOINC's adaptive replication (BOINC wiki, "AdaptiveReplication": a host with
CV consecutive valid results is trusted with probability 1 - 1/CV, i.e. re-checked with 1/CV).

Sequential testing (store/stats.py, protocol/SPEC.md 5.9): a verified claim whose test is still
inconclusive (``not significant yet``) and that could enter the top-K asks for another fresh-seed
reproduction, until it has MAX_SAMPLES; a clear win (``significant``) or a clear loss (``no gain``)
asks for none. The reference counts too: the parent (or the task's baseline claim) of an
inconclusive claim is queued when it has fewer samples than MIN_NO_GAIN or than its child, up to
MAX_SAMPLES, just ahead of its child. Each node gives a claim one sample (its fresh seed is fixed),
so the samples come from distinct nodes.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterable, Mapping

from protocol.schemas import VERDICTS  # one list: protocol/SPEC.md 5.4
from store.ranking import OVER_BUDGET  # the verdict, and the claim status of the same name
from store.stats import BASELINE, MAX_SAMPLES, MIN_NO_GAIN, NOT_YET


@dataclass(frozen=True)
class SchedulerSettings:
    verify_share: float = 0.3  # most of the node's compute spent on reproduction while its own loop has work
    top_k: int = 5  # a claim is worth reproducing when it would enter its task's top-K verified entries
    spot_fraction: float = 0.25  # share of the claim's budget re-run first, to compare loss curves
    audit: bool = True  # re-check verified claims at random, 1/n for an author with n verified in a row
    max_queue: int = 100  # queue entries kept (and shown on the dashboard)
    audit_weight: float = 0.5  # an audit ranks below a pending claim of the same expected gain
    untrusted_share: float = 0.25  # at most this share of the queue's places for authors without earned trust


@dataclass(frozen=True)
class Candidate:
    """One claim as the scheduler sees it: the envelope's fields plus this node's status of it."""

    claim: str
    task: str
    author: str
    created_at: int
    outcome: str  # improved | worse | crashed
    status: str  # verified | pending | disputed | over budget (store/ranking.py claim_status)
    value: float | None  # reproduced val_bpb when verified, else the claimed one
    tokens: int | None = None  # result.tokens; None when the claim carries no result
    has_curve: bool = True
    duplicate: bool = False  # a later copy of an already claimed source: copying earns nothing
    significance: str | None = None  # store/stats.py state: significant | not significant yet | no gain | baseline
    samples: int = 0  # trusted fresh-seed reproductions so far (the estimate's n)
    reference: str | None = None  # the claim its test compares with (parent, or the task's baseline claim)


@dataclass(frozen=True)
class QueueItem:
    claim: str
    task: str
    priority: float
    reason: str
    audit: bool = False

    def to_json(self) -> dict:
        return {"claim": self.claim, "task": self.task, "priority": round(self.priority, 6),
                "reason": self.reason, "audit": self.audit}


def author_runs(candidates: Iterable[Candidate]) -> dict[str, int]:
    """Per author, the run of verified claims since its latest disputed one (BOINC's CV(H))."""
    by_author: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        if c.status in ("verified", "disputed") and not c.duplicate:
            by_author[c.author].append(c)
    runs = {}
    for author, claims in by_author.items():
        claims.sort(key=lambda c: (c.created_at, c.claim))
        n = 0
        for c in claims:
            n = n + 1 if c.status == "verified" else 0
        runs[author] = n
    return runs


def expected_gain(value: float, others: list[float], top_k: int) -> tuple[bool, float, str]:
    """(enters the top-K, gain, why) for a claim of ``value`` against the task's other verified values.

    The gain is how far the claim is under the K-th verified entry, plus how far under the best when
    it would be a new record. With fewer than K verified entries every claim enters; its gain is
    measured against the worst of them (0 when there are none: then lower claimed values go first).
    """
    others = sorted(others)
    if len(others) >= top_k:
        kth = others[top_k - 1]
        if value >= kth:
            return False, 0.0, f"{value:.6f} would not beat the #{top_k} verified entry ({kth:.6f})"
        gain = kth - value
        why = f"{gain:.6f} under the #{top_k} verified entry"
    elif others:
        gain = max(0.0, others[-1] - value)
        why = f"top-{top_k} has room ({len(others)} verified)"
    else:
        return True, 0.0, "first claim to verify for its task"
    if value < others[0]:
        gain += others[0] - value
        why += f"; would be the best by {others[0] - value:.6f}"
    return True, gain, why


class Scheduler:
    """Builds the reproduction queue. Holds the audit draws, so each verified claim is drawn once
    (a fresh draw at every rebuild would audit every claim sooner or later)."""

    def __init__(self, own_key: str, settings: SchedulerSettings = SchedulerSettings(),
                 rng: random.Random | None = None):
        self.own_key = own_key
        self.settings = settings
        self.rng = rng or random.Random()
        self._audit_draws: dict[str, bool] = {}

    def draw_audit(self, claim: str, run: int) -> bool:
        if claim not in self._audit_draws:
            self._audit_draws[claim] = self.rng.random() < 1.0 / max(1, run)
        return self._audit_draws[claim]

    def build(self, candidates: Iterable[Candidate], trust: Mapping[str, float],
              voted: set[str] | frozenset[str] = frozenset(), task_budgets: Mapping[str, int] | None = None
              ) -> list[QueueItem]:
        """The queue, best first. ``voted``: claims this node already voted on (or gave up on);
        ``task_budgets``: the token budget of each task this node can run (others are skipped)."""
        s = self.settings
        candidates = [c for c in candidates if not c.duplicate]
        runs = author_runs(candidates)
        verified: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for c in candidates:
            if c.status == "verified" and c.value is not None:
                verified[c.task].append((c.claim, c.value))
        by_id = {c.claim: c for c in candidates}
        scored: list[tuple[float, float, int, str, QueueItem]] = []
        references: dict[str, tuple[float, str]] = {}  # reference claim -> (priority, why) from its children
        for c in candidates:
            if c.status in ("pending", "verified") and c.significance == NOT_YET and c.reference in by_id:
                ref = by_id[c.reference]
                if ref.samples < MAX_SAMPLES and (ref.samples < MIN_NO_GAIN or ref.samples < c.samples + 1):
                    # the child's own priority, computed below, is not known yet: its gain stands in
                    others = [v for cid, v in verified[c.task] if cid != c.claim]
                    enters, gain, _ = expected_gain(c.value, others, s.top_k) if c.value is not None else (False, 0, "")
                    if enters:
                        # just ahead of its child: without the reference's samples the child's test cannot move
                        prio = max(gain, 1e-9) * (1.0 + float(trust.get(c.author, 0.0))) * 1.01
                        if prio > references.get(ref.claim, (-1.0, ""))[0]:
                            references[ref.claim] = (prio, f"reference of inconclusive {c.claim[:12]} "
                                                           f"({ref.samples} samples vs its {c.samples})")
        for c in candidates:
            if not self._reproducible(c, voted, task_budgets):
                continue
            if c.claim in references:
                prio, why = references[c.claim]
                scored.append((-prio, c.value if c.value is not None else float("inf"), c.created_at, c.claim,
                               QueueItem(c.claim, c.task, prio, why)))
                continue
            if c.significance == BASELINE or c.outcome != "improved":
                continue  # a baseline claim is run when a child needs it (above), not for its own sake
            sampling = (c.status == "verified" and c.significance == NOT_YET and c.samples < MAX_SAMPLES)
            audit = c.status == "verified" and not sampling
            if audit and not (s.audit and self.draw_audit(c.claim, runs.get(c.author, 0))):
                continue
            if c.status not in ("pending", "verified"):
                continue  # disputed or over budget: trusted votes already keep it off the board
            others = [v for cid, v in verified[c.task] if cid != c.claim]
            enters, gain, why = expected_gain(c.value, others, s.top_k)
            if not enters:
                continue
            author_trust = float(trust.get(c.author, 0.0))
            # 1 + trust: an unknown author's claim still gets reproduced (that is how trust is earned),
            # a trusted author's claim of the same gain first.
            priority = gain * (1.0 + author_trust) * (s.audit_weight if audit else 1.0)
            if audit:
                n = runs.get(c.author, 0)
                why = f"audit: author has {n} verified in a row (p=1/{max(1, n)}); {why}"
            elif sampling:
                why = f"not significant yet with {c.samples} fresh-seed samples: {why}"
            else:
                why = f"pending, claims {c.value:.6f}: {why}; author trust {author_trust:.3f}"
            item = QueueItem(c.claim, c.task, priority, why, audit)
            scored.append((-priority, c.value, c.created_at, c.claim, item))
        scored.sort(key=lambda t: t[:4])
        return [t[4] for t in self._share(scored, by_id, trust)[:s.max_queue]]

    def _share(self, scored: list, by_id: Mapping[str, Candidate], trust: Mapping[str, float]) -> list:
        """Claims of authors without earned trust (issue 17) take at most ``untrusted_share`` of the
        queue's places, which they split in priority order: fresh keys cost nothing, so five junk
        claims promising a huge gain cannot all go ahead of an honest one. Alone, they fill it."""
        share = self.settings.untrusted_share
        known = [t for t in scored if float(trust.get(by_id[t[3]].author, 0.0)) > 0.0]
        strangers = [t for t in scored if float(trust.get(by_id[t[3]].author, 0.0)) <= 0.0]
        out, taken = [], 0
        while known or strangers:
            if strangers and (not known or taken + 1 <= share * (len(out) + 1)):
                out.append(strangers.pop(0))
                taken += 1
            else:
                out.append(known.pop(0))
        return out

    def _reproducible(self, c: Candidate, voted, task_budgets) -> bool:
        if c.author == self.own_key or c.claim in voted:
            return False
        if c.outcome not in ("improved", "worse") or c.value is None or not c.has_curve or not c.tokens or c.tokens <= 0:
            return False
        if task_budgets is not None:
            budget = task_budgets.get(c.task)
            if budget is None or c.tokens > budget:  # not a task we run, or not within its terms
                return False
        return True


# -- when and at which budget --------------------------------------------------------------------

def may_reproduce(share: float, verify_share: float, own_loop_busy: bool) -> bool:
    """Reproduction takes at most ``verify_share`` of the compute while the own loop has work
    (docs/design.md, "Reproduction and voting"); with the loop off or idle it may take all of it."""
    return not own_loop_busy or share < verify_share


# -- verdicts ------------------------------------------------------------------------------------

def _dec(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a decimal: {value!r}") from None


def verdict_from_spot(ok: bool, reason: str, curve: list, reference_curve: list) -> tuple[str | None, str]:
    """A spot check's meaning: (None, why) to go on to the full run, or a final (verdict, reason).

    A crash of the re-run is ``failed``; a curve that diverges from the claimed one is ``mismatch``;
    a claimed curve with no point inside the spot-checked part cannot be judged here.
    """
    if ok:
        return None, f"spot check passed: {reason}"
    if not curve:
        return "failed", f"spot check crashed: {reason}"
    checked = {int(t) for t, _ in curve}
    if not any(int(t) in checked for t, _ in reference_curve):
        return None, "spot check inconclusive: the claimed curve has no point in the checked part"
    return "mismatch", f"spot check: {reason}"


def verdict_from_full(claimed_bpb: object, measured_bpb: object, tolerance: object) -> tuple[str, str]:
    """``reproduced`` when |measured - claimed| <= tolerance (decimal arithmetic: the edge is exact)."""
    claimed, measured, tol = _dec(claimed_bpb), _dec(measured_bpb), _dec(tolerance)
    diff = abs(measured - claimed)
    if diff <= tol:
        return "reproduced", f"val_bpb {measured} vs claimed {claimed}: within tolerance {tol}"
    return "mismatch", f"val_bpb {measured} vs claimed {claimed}: off by {diff} > tolerance {tol}"


def verdict_from_fresh(claimed_bpb: object, measured_bpb: object, threshold: float) -> tuple[str, str]:
    """A full run at a fresh seed against the claimed value (store/stats.py mismatch_threshold):
    ``reproduced`` when |measured - claimed| <= threshold, which an honest claim passes 99 times in 100."""
    claimed, measured = _dec(claimed_bpb), _dec(measured_bpb)
    diff = abs(measured - claimed)
    shown = f"{threshold:.6f}"
    if diff <= Decimal(threshold):  # exact: the decimals against the binary64 threshold (SPEC.md 5.8)
        return "reproduced", f"val_bpb {measured} at a fresh seed vs claimed {claimed}: within {shown} (seed noise)"
    return "mismatch", f"val_bpb {measured} at a fresh seed vs claimed {claimed}: off by {diff} > {shown} (seed noise)"


def verdict_from_budget(wall_s: object, baseline_wall_s: object, compute_cap: object) -> tuple[str | None, str]:
    """``over budget`` when the run trained longer than ``compute_cap`` x the baseline's training time
    measured on this node's hardware at the same budget (decimal arithmetic: the edge is exact, and
    a run exactly at the cap is within it); else (None, why)."""
    wall, base, cap = _dec(wall_s), _dec(baseline_wall_s), _dec(compute_cap)
    limit = cap * base
    if wall > limit:
        return OVER_BUDGET, (f"training took {wall} s, over the compute cap: {cap} x the baseline's {base} s "
                             f"on this hardware = {limit} s")
    return None, f"training took {wall} s, within the compute cap ({cap} x the baseline's {base} s = {limit} s)"


__all__ = ["Candidate", "OVER_BUDGET", "QueueItem", "Scheduler", "SchedulerSettings", "VERDICTS", "author_runs",
           "expected_gain", "may_reproduce", "verdict_from_budget", "verdict_from_fresh", "verdict_from_full",
           "verdict_from_spot"]
