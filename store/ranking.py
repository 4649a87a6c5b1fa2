"""Claim status, leaderboard and seed entries from this node's point of view (docs/design.md, "Ranking and trust").

Pure functions over envelopes, vote facts and a TrustView; the Replica only loads and calls.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from protocol import Envelope

from .trust import TrustView, VoteFact, latest_votes


@dataclass(frozen=True)
class RankingSettings:
    # Trusted weight (in own-vote equivalents, see store/trust.py) that verifies or disputes a
    # claim. 1.0: one vote of this node or of an operator-trusted key settles it; keys that earned
    # trust through evidence need several agreeing votes.
    quorum: float = 1.0


OVER_BUDGET = "over budget"  # a verdict (protocol/SPEC.md 5.4) and a claim status of the same name


@dataclass(frozen=True)
class ClaimStatus:
    status: str  # verified | disputed | pending | over budget
    support: float  # trusted weight of reproduced votes (and of a pre-trusted author's own run)
    against: float  # trusted weight of mismatch votes
    own_vote: str | None  # this node's latest verdict on the claim
    reproduced_bpb: str | None  # own measurement first, else trust-weighted median of reproductions
    votes: int = 0  # distinct voters
    own_run: bool = False  # this node measured the claim itself (its own claim or reproduction)
    over: float = 0.0  # trusted weight of over budget votes (trained longer than the task's compute cap)


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


@dataclass(frozen=True)
class Leaderboard:
    verified: list[Entry]
    pending: list[Entry]
    disputed: list[Entry]
    duplicates: list[Entry] = field(default_factory=list)  # later claims of an already-claimed source
    over_budget: list[Entry] = field(default_factory=list)  # trained past the task's compute cap: never ranked

    def of_status(self, status: str) -> list[Entry]:
        """The list holding entries of a claim status (``over budget`` -> ``over_budget``)."""
        return getattr(self, status.replace(" ", "_"))


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


def claim_status(
    claim: Envelope, votes: Iterable[VoteFact], trust: TrustView, self_key: str, settings: RankingSettings
) -> ClaimStatus:
    current = [v for v in latest_votes(votes).values() if v.claim == claim.id and v.voter != claim.author]
    own = next((v for v in current if v.voter == self_key), None)
    own_verdict = own.verdict if own else None
    support = sum(trust.of(v.voter) for v in current if v.verdict == "reproduced")
    against = sum(trust.of(v.voter) for v in current if v.verdict == "mismatch")
    over = sum(trust.of(v.voter) for v in current if v.verdict == OVER_BUDGET)
    measured = [(v.val_bpb, trust.of(v.voter)) for v in current if v.verdict == "reproduced" and v.val_bpb]
    claimed = _claimed(claim)
    author_run = claim.author in trust.pretrusted and claim.body.get("outcome") != "crashed"
    if author_run:  # the node's own claim, or an operator-trusted key's: a run by a pre-trusted key
        support += trust.of(claim.author)
        if claimed is not None:
            measured.append((claimed, trust.of(claim.author)))
    if own_verdict == "reproduced" or claim.author == self_key and author_run:
        status = "verified"
    elif own_verdict == "mismatch":
        status = "disputed"
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
    return ClaimStatus(status, support, against, own_verdict, reproduced, votes=len(current), own_run=own_run,
                       over=over)


def _entry(claim: Envelope, st: ClaimStatus, duplicate_of: str | None = None) -> Entry:
    claimed = _claimed(claim)
    value = st.reproduced_bpb if st.status == "verified" and st.reproduced_bpb else claimed
    return Entry(claim, st.status, value, claimed, st.support, st.votes, st.against, duplicate_of=duplicate_of,
                 over=st.over)


def _sort_key(entry: Entry) -> tuple:
    value = float(entry.val_bpb) if entry.val_bpb is not None else float("inf")
    return (value, entry.claim.created_at, entry.claim.id)


def leaderboard(
    claims: Iterable[Envelope], statuses: Mapping[str, ClaimStatus]
) -> Leaderboard:
    """Verified claims ranked by reproduced val_bpb (lower is better); pending, disputed and over
    budget ones apart (an over budget claim trained longer than its task allows: never ranked).

    Only ``improved`` claims are contributions to rank: ``worse`` and ``crashed`` ones are negative
    results, shared so nobody runs them again, but a change that did not beat its own seed is not
    put forward as a recipe (and nobody reproduces it). Among claims with the same source_sha256
    only the earliest (created_at, id) counts, negative results included; later copies go to
    ``duplicates``, so copying a source earns nothing (docs/design.md, "Ranking and trust").
    """
    ranked = sorted((c for c in claims if c.body.get("outcome") != "crashed"), key=lambda c: (c.created_at, c.id))
    first_by_source: dict[str, str] = {}
    board = Leaderboard([], [], [], [], [])
    for claim in ranked:
        st = statuses[claim.id]
        first = first_by_source.setdefault(claim.body["source_sha256"], claim.id)
        if first != claim.id:
            board.duplicates.append(_entry(claim, st, duplicate_of=first))
            continue
        if claim.body.get("outcome") == "improved":
            board.of_status(st.status).append(_entry(claim, st))
    for entries in (board.verified, board.pending, board.disputed, board.over_budget):
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
    """Seeds for the loop: verified claims with the largest reproduced improvement, times confidence.

    Improvement is measured against the task baseline when the corpus holds a verified run of it
    (a root claim with an empty patch), else against the claim's parent, else against the worst
    verified value of the task. Claims that improve nothing are not seeds, nor are claims that are
    not verified (pending, disputed, over budget).
    """
    if k <= 0 or not board.verified:
        return []
    value_of = {e.claim.id: float(e.val_bpb) for e in board.verified + board.pending + board.disputed
                if e.val_bpb is not None}
    baselines = [float(e.val_bpb) for e in board.verified
                 if e.claim.body.get("parent") is None and not e.claim.body.get("patch") and e.val_bpb]
    baseline = min(baselines) if baselines else None
    worst = max(float(e.val_bpb) for e in board.verified if e.val_bpb is not None)
    scored: list[tuple[float, Entry]] = []
    for e in board.verified:
        parent = e.claim.body.get("parent")
        if baseline is not None:
            ref = baseline
        else:
            ref = value_of.get(parent, worst) if parent else worst
        improvement = ref - float(e.val_bpb)
        if improvement <= 0:
            continue
        score = improvement * confidence(statuses[e.claim.id], settings)
        scored.append((score, Entry(e.claim, e.status, e.val_bpb, e.claimed_bpb, e.support, e.votes,
                                    e.against, improvement)))
    scored.sort(key=lambda se: (-se[0], float(se[1].val_bpb), se[1].claim.created_at, se[1].claim.id))
    return [entry for _, entry in scored[:k]]


def group_votes(votes: Iterable[VoteFact]) -> dict[str, list[VoteFact]]:
    out: dict[str, list[VoteFact]] = defaultdict(list)
    for vote in votes:
        out[vote.claim].append(vote)
    return out
