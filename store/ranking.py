"""Claim status, leaderboard and seed entries from this node's point of view (docs/design.md, "Ranking and trust").

Pure functions over envelopes, vote facts and a TrustView; the Replica only loads and calls.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from protocol import Envelope

from .stats import BASELINE, NOT_YET, SIGNIFICANT, Z_MISMATCH, Estimate, Significance, estimate, significance
from .trust import TrustView, VoteFact, latest_votes

# The seed noise of a sample's device class (result.device) for the claim's task: store/stats.py NoiseTable.
SigmaOf = Callable[[str | None], float]


@dataclass(frozen=True)
class RankingSettings:
    # Trusted weight (in own-vote equivalents, see store/trust.py) that verifies or disputes a
    # claim. 1.0: one vote of this node or of an operator-trusted key settles it; keys that earned
    # trust through evidence need several agreeing votes.
    quorum: float = 1.0


OVER_BUDGET = "over budget"  # a verdict (protocol/SPEC.md 5.4) and a claim status of the same name
NON_DETERMINISTIC = "non-deterministic"  # trusted runs of it disagree: charged to the claim, never ranked


@dataclass(frozen=True)
class ClaimStatus:
    status: str  # verified | disputed | pending | over budget | non-deterministic
    support: float  # trusted weight of reproduced votes (and of a pre-trusted author's own run)
    against: float  # trusted weight of mismatch votes
    own_vote: str | None  # this node's latest verdict on the claim
    reproduced_bpb: str | None  # own measurement first, else trust-weighted median of reproductions
    votes: int = 0  # distinct voters
    own_run: bool = False  # this node measured the claim itself (its own claim or reproduction)
    over: float = 0.0  # trusted weight of over budget votes (trained longer than the task's compute cap)
    # The claim's mean val_bpb from trusted fresh-seed reproductions (store/stats.py); None without any.
    estimate: Estimate | None = None


@dataclass(frozen=True)
class Entry:
    claim: Envelope
    status: str
    val_bpb: str | None  # reproduced value; the claimed value for pending/disputed
    claimed_bpb: str | None
    support: float
    votes: int
    against: float = 0.0
    improvement: float | None = None  # top_entries: reference bpb - val_bpb
    duplicate_of: str | None = None  # a later copy of an earlier claim's source
    over: float = 0.0  # trusted weight of over budget votes
    estimate: Estimate | None = None  # from fresh-seed reproductions: what the board ranks by
    significance: Significance | None = None  # against the parent, or the task's baseline claim

    @property
    def rank_value(self) -> float:
        """What the board sorts by: the estimated mean, else the reproduced (or claimed) value."""
        if self.estimate is not None:
            return self.estimate.mean
        return float(self.val_bpb) if self.val_bpb is not None else float("inf")

    @property
    def significant(self) -> bool:
        return self.significance is not None and self.significance.state == SIGNIFICANT


@dataclass(frozen=True)
class Leaderboard:
    verified: list[Entry]
    pending: list[Entry]
    disputed: list[Entry]
    duplicates: list[Entry] = field(default_factory=list)  # later claims of an already-claimed source
    over_budget: list[Entry] = field(default_factory=list)  # trained past the task's compute cap: never ranked
    non_deterministic: list[Entry] = field(default_factory=list)  # trusted runs disagree: never ranked

    def of_status(self, status: str) -> list[Entry]:
        """The list holding entries of a claim status (``over budget`` -> ``over_budget``)."""
        return getattr(self, status.replace(" ", "_").replace("-", "_"))


def _claimed(claim: Envelope) -> str | None:
    result = claim.body.get("result")
    return result.get("val_bpb") if isinstance(result, dict) else None


def weighted_median(values: Sequence[tuple[str, float]]) -> str | None:
    """Lower weighted median of decimal strings; unweighted when no value carries weight."""
    if not values:
        return None
    ordered = sorted(values, key=lambda vw: (float(vw[0]), vw[0]))
    total = sum(w for _, w in ordered)
    if total <= 0:
        return ordered[(len(ordered) - 1) // 2][0]
    acc = 0.0
    for value, weight in ordered:
        acc += weight
        if acc >= total / 2:
            return value
    return ordered[-1][0]  # pragma: no cover - float rounding guard


def fresh_samples(current: Iterable[VoteFact], trust: TrustView, sigma_of: SigmaOf) -> list[tuple[float, float]]:
    """(value, sigma) of the trusted full runs at fresh seeds among a claim's current votes: the
    ``reproduced`` and ``mismatch`` votes that carry a seed_proof and a value, from voters with voting
    power (pre-trusted, or agreement earned with a pre-trusted key: protocol/SPEC.md 5.9). Walk trust
    is not enough: keys that vouch for each other pass it around, power they cannot (store/trust.py).
    Unweighted: power decides who is heard, not how loud.

    Earned power can be had by guessing (``reproduced`` early on every claim is right more often
    than not), and a made-up value cannot be told from a run. So where pre-trusted keys ran the claim
    (``P``: their samples), the others are heard only as far as P can check them: at most |P| of
    them (the most powerful first, then by (created_at, id)), each within Z_MISMATCH of P's mean given
    both noises; what keys this node does not pre-trust say never outnumbers what its own runs say.
    Without P, every key with power is heard (the claim is verified only with trusted support)."""
    fresh = [v for v in current if v.fresh and v.val_bpb is not None and v.verdict in ("reproduced", "mismatch")]
    pre = [(float(v.val_bpb), sigma_of(v.device)) for v in fresh
           if v.voter in trust.pretrusted and v.voter not in trust.distrusted]
    others = sorted((v for v in fresh if v.voter not in trust.pretrusted and trust.power_of(v.voter) > 0),
                    key=lambda v: (-trust.power_of(v.voter), v.created_at, v.id))
    if not pre:
        return [(float(v.val_bpb), sigma_of(v.device)) for v in others]
    mean = math.fsum(x for x, _ in pre) / len(pre)
    noise = math.fsum(s * s for _, s in pre) / len(pre) / len(pre)  # the variance of P's mean
    heard: list[tuple[float, float]] = []
    for v in others:
        if len(heard) >= len(pre):
            break
        x, s = float(v.val_bpb), sigma_of(v.device)
        if abs(x - mean) <= Z_MISMATCH * math.sqrt(s * s + noise):
            heard.append((x, s))
    return pre + heard


def claim_status(
    claim: Envelope, votes: Iterable[VoteFact], trust: TrustView, self_key: str, settings: RankingSettings,
    sigma_of: SigmaOf | None = None,
) -> ClaimStatus:
    """``sigma_of``: the seed noise of a device class for the claim's task; None: no estimate."""
    current = [v for v in latest_votes(votes).values() if v.claim == claim.id and v.voter != claim.author]
    own = next((v for v in current if v.voter == self_key), None)
    own_verdict = own.verdict if own else None
    power = trust.power_of
    support = sum(power(v.voter) for v in current if v.verdict == "reproduced")
    against = sum(power(v.voter) for v in current if v.verdict == "mismatch")
    over = sum(power(v.voter) for v in current if v.verdict == OVER_BUDGET)
    measured = [(v.val_bpb, power(v.voter)) for v in current if v.verdict == "reproduced" and v.val_bpb]
    claimed = _claimed(claim)
    author_run = claim.author in trust.pretrusted and claim.body.get("outcome") != "crashed"
    if author_run:  # the node's own claim, or an operator-trusted key's: a run by a pre-trusted key
        support += power(claim.author)
        if claimed is not None:
            measured.append((claimed, power(claim.author)))
    own_ok = own_verdict == "reproduced" or claim.author == self_key and author_run
    if own_ok:
        status = "verified"  # where this node measured a claim itself, its own measurement decides
    elif own_verdict in ("mismatch", "failed"):
        status = "disputed"  # own evidence first: our own failed run takes it off the board too
    elif claim.id in trust.split:
        # operator-trusted evaluators measured it differently: charged to the claim, not to one of
        # them (store/trust.py)
        status = NON_DETERMINISTIC
    elif own_verdict == OVER_BUDGET:
        status = OVER_BUDGET
    elif over >= settings.quorum and over > support:
        # Over the compute cap whatever its val_bpb: checked before trusted mismatches, which only
        # question the value.
        status = OVER_BUDGET
    elif against >= settings.quorum and against > support:
        status = "disputed"
    elif support >= settings.quorum:
        status = "verified"
    else:
        status = "pending"
    if own_verdict == "reproduced" and own.val_bpb:
        reproduced = own.val_bpb
    elif claim.author == self_key and claimed is not None:
        reproduced = claimed
    else:
        reproduced = weighted_median(measured)
    own_run = own_verdict == "reproduced" or (claim.author == self_key and author_run)
    est = estimate(fresh_samples(current, trust, sigma_of)) if sigma_of is not None else None
    return ClaimStatus(status, support, against, own_verdict, reproduced, votes=len(current), own_run=own_run,
                       over=over, estimate=est)


def _entry(claim: Envelope, st: ClaimStatus, duplicate_of: str | None = None,
           sig: Significance | None = None) -> Entry:
    claimed = _claimed(claim)
    value = st.reproduced_bpb if st.status == "verified" and st.reproduced_bpb else claimed
    return Entry(claim, st.status, value, claimed, st.support, st.votes, st.against, duplicate_of=duplicate_of,
                 over=st.over, estimate=st.estimate, significance=sig)


def _sort_key(entry: Entry) -> tuple:
    return (entry.rank_value, entry.claim.created_at, entry.claim.id)


def receipt_times(claims: Iterable[Envelope], own_receipts: Mapping[str, int | None],
                  votes: Iterable[VoteFact], trust: TrustView) -> dict[str, int]:
    """Each claim's earliest trusted receipt: this node's own (``own_receipts``) or the
    ``claim_received_at`` of the current vote of a pre-trusted key other than the claim's author
    (protocol/SPEC.md 5.10). Earned power is not enough: one right guess earns a key some, and its
    own receipt time is whatever it writes."""
    out: dict[str, int] = {}
    authors = {}
    for claim in claims:
        authors[claim.id] = claim.author
        mine = own_receipts.get(claim.id)
        if mine is not None:
            out[claim.id] = mine
    for vote in latest_votes(votes).values():
        if (vote.claim_received_at is not None and vote.voter in trust.pretrusted
                and vote.voter not in trust.distrusted and vote.voter != authors.get(vote.claim)):
            out[vote.claim] = min(out.get(vote.claim, vote.claim_received_at), vote.claim_received_at)
    return out


def is_baseline_claim(claim: Envelope, baseline_sha: str | None) -> bool:
    """A run of the task's own source: a root claim (no parent) with an empty patch whose source hash
    is the task source's (``baseline_sha``; None: the task is unknown, so no claim is its baseline)."""
    body = claim.body
    return (baseline_sha is not None and body.get("parent") is None and not body.get("patch")
            and body.get("source_sha256") == baseline_sha and body.get("outcome") != "crashed")


def result_tokens(claim: Envelope) -> int | None:
    """The budget a claim ran at: its ``result.tokens`` (None without a result)."""
    result = claim.body.get("result")
    tokens = result.get("tokens") if isinstance(result, dict) else None
    return tokens if isinstance(tokens, int) else None


def baseline_claims(claims: Iterable[Envelope], baseline_sha: str | None) -> dict[int | None, Envelope]:
    """The task's baseline claim at each budget (``result.tokens``): the earliest (created_at, id)
    baseline run with those tokens. A val_bpb depends on the tokens trained on, so a claim is only
    ever tested against a run at its own budget (protocol/SPEC.md 5.9)."""
    out: dict[int | None, Envelope] = {}
    for c in claims:
        if is_baseline_claim(c, baseline_sha):
            tokens = result_tokens(c)
            if tokens not in out or (c.created_at, c.id) < (out[tokens].created_at, out[tokens].id):
                out[tokens] = c
    return out


def reference_of(claim: Envelope, by_id: Mapping[str, Envelope], bases: Mapping[int | None, Envelope]) -> str | None:
    """The id a claim is tested against: its parent, unless this node holds the parent and it ran at
    another budget; then (and for a root claim) the task's baseline claim at the claim's budget."""
    tokens = result_tokens(claim)
    parent = claim.body.get("parent")
    if parent is not None and (parent not in by_id or result_tokens(by_id[parent]) == tokens):
        return parent  # a parent this node does not hold: the reference it names, without an estimate
    base = bases.get(tokens)
    return base.id if base is not None else None


def significances(claims: Iterable[Envelope], statuses: Mapping[str, ClaimStatus],
                  baseline_sha: str | None = None) -> dict[str, Significance]:
    """Each claim's test against its reference (``reference_of``): its parent's estimate, or the
    task's baseline claim's at the claim's budget (store/stats.py). Baseline claims are the
    ``baseline``. ``baseline_sha``: SHA-256 of the task's source (protocol/SPEC.md 5.9)."""
    claims = list(claims)
    by_id = {c.id: c for c in claims}
    bases = baseline_claims(claims, baseline_sha)
    base_ids = {b.id for b in bases.values()}
    out: dict[str, Significance] = {}
    for claim in claims:
        if claim.id in base_ids:
            out[claim.id] = Significance(BASELINE, None)
            continue
        ref_id = reference_of(claim, by_id, bases)
        ref = statuses.get(ref_id) if ref_id is not None else None
        sig = significance(statuses[claim.id].estimate, ref.estimate if ref else None, ref_id)
        if sig.state == SIGNIFICANT and statuses[claim.id].status != "verified":
            # only a claim this node holds for honestly computed can be shown better: samples alone,
            # from keys that vouch for each other, do not make a pending claim significant
            sig = Significance(NOT_YET, sig.p, sig.z, ref_id)
        out[claim.id] = sig
    return out


def leaderboard(
    claims: Iterable[Envelope], statuses: Mapping[str, ClaimStatus], baseline_sha: str | None = None,
    received: Mapping[str, int] | None = None,
) -> Leaderboard:
    """Verified claims ranked by their estimated mean val_bpb from fresh-seed reproductions (lower is
    better; the reproduced value while there is no estimate); pending, disputed and over budget ones
    apart (an over budget claim trained longer than its task allows: never ranked). Each entry carries
    its significance against its parent or the task's baseline claim, which is listed with the
    improvements (it is the reference they are tested against).

    Only ``improved`` claims are contributions to rank: ``worse`` and ``crashed`` ones are negative
    results, shared so nobody runs them again, but a change that did not beat its own seed is not
    put forward as a recipe (and nobody reproduces it). Among claims with the same source_sha256
    only the earliest received (``received``: the earliest trusted receipt time of each claim; then
    (created_at, id)) counts, negative results included; later copies go to ``duplicates``, so
    copying a source earns nothing, and backdating a copy does not make it earlier
    (docs/design.md, "Ranking and trust").
    """
    claims = list(claims)
    tests = significances(claims, statuses, baseline_sha)
    received = received or {}
    # Credit by receipt (protocol/SPEC.md 5.10): the earliest trusted receipt of a claim, never the
    # author's created_at alone, which a copy can backdate; created_at and id only break ties.
    ranked = sorted((c for c in claims if c.body.get("outcome") != "crashed"),
                    key=lambda c: (received.get(c.id, math.inf), c.created_at, c.id))
    first_by_source: dict[object, str] = {}
    board = Leaderboard([], [], [], [], [], [])
    for claim in ranked:
        st = statuses[claim.id]
        # A baseline run at another budget is another measurement of the task's own source, not a copy.
        key = (claim.body["source_sha256"], result_tokens(claim)) if is_baseline_claim(claim, baseline_sha) \
            else claim.body["source_sha256"]
        first = first_by_source.setdefault(key, claim.id)
        if first != claim.id:
            board.duplicates.append(_entry(claim, st, duplicate_of=first, sig=tests.get(claim.id)))
            continue
        if claim.body.get("outcome") == "improved" or is_baseline_claim(claim, baseline_sha):
            board.of_status(st.status).append(_entry(claim, st, sig=tests.get(claim.id)))
    for entries in (board.verified, board.pending, board.disputed, board.over_budget, board.non_deterministic):
        entries.sort(key=_sort_key)
    return board


def confidence(st: ClaimStatus, settings: RankingSettings) -> float:
    """How sure this node is of a verified claim's value, in [0, 1].

    Its own reproduction (or own claim) is sure; otherwise confidence grows with trusted support
    up to two quorums and shrinks with the share of trusted mismatches.
    """
    if st.own_run:
        return 1.0
    if st.support <= 0:
        return 0.0
    saturation = min(1.0, st.support / (2 * settings.quorum)) if settings.quorum > 0 else 1.0
    return saturation * st.support / (st.support + st.against)


def top_entries(board: Leaderboard, statuses: Mapping[str, ClaimStatus], k: int,
                settings: RankingSettings) -> list[Entry]:
    """Seeds for the loop: verified claims that are significantly better than their reference
    (store/stats.py), by estimated improvement times confidence. A claim that is merely verified
    (honestly computed) but not yet shown better than its parent is not a seed: that may be luck.
    """
    if k <= 0:
        return []
    means = {e.claim.id: e.estimate.mean for e in board.verified + board.pending + board.disputed
             if e.estimate is not None}
    scored: list[tuple[float, Entry]] = []
    for e in board.verified:
        if not e.significant or e.estimate is None:
            continue
        ref = means.get(e.significance.reference)
        if ref is None:
            continue
        improvement = ref - e.estimate.mean
        if improvement <= 0:
            continue
        score = improvement * confidence(statuses[e.claim.id], settings)
        scored.append((score, Entry(e.claim, e.status, e.val_bpb, e.claimed_bpb, e.support, e.votes,
                                    e.against, improvement, estimate=e.estimate, significance=e.significance)))
    scored.sort(key=lambda se: (-se[0], se[1].rank_value, se[1].claim.created_at, se[1].claim.id))
    return [entry for _, entry in scored[:k]]


def group_votes(votes: Iterable[VoteFact]) -> dict[str, list[VoteFact]]:
    out: dict[str, list[VoteFact]] = defaultdict(list)
    for vote in votes:
        out[vote.claim].append(vote)
    return out
