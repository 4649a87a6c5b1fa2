"""Personalized trust: EigenTrust with the node's own key and operator-trusted keys as the
pre-trusted set (docs/design.md, "Ranking and trust"; Kamvar, Schlosser, Garcia-Molina, "The EigenTrust
Algorithm for Reputation Management in P2P Networks", WWW 2003, section 4.5 "pre-trusted peers").

Pure functions over plain data, no SQLite. The evidence graph:

* ``voter -> author`` when the voter voted ``reproduced`` on the author's claim (the voter vouches
  for the author's work);
* ``e -> voter`` for a pre-trusted evaluator ``e`` (this node, an operator-trusted key) when the
  voter's verdict on a claim agreed with ``e``'s own (``reproduced``/``mismatch``). A claim written
  by ``e`` counts as ``e``'s own ``reproduced`` run of it.
* A key whose work or vote contradicts this node's own run is **distrusted**: the author of a
  claim this node found ``mismatch``, a voter who voted ``reproduced`` on it, and a voter who voted
  ``mismatch`` on a claim this node reproduced. Distrusted keys get trust 0 and lose every edge.

Trust is the stationary vector of a random walk that restarts (probability ``restart``) at the
pre-trusted set, i.e. personalized PageRank. A key that no pre-trusted key can reach through
evidence gets exactly 0, however many keys vouch for it: that is the Sybil resistance.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

AGREEING = ("reproduced", "mismatch")  # verdicts that carry a measurement to agree or disagree with


@dataclass(frozen=True)
class VoteFact:
    """The columns of one vote that ranking needs (store/extract.py puts them in the table)."""

    id: str
    voter: str
    claim: str
    verdict: str
    val_bpb: str | None
    created_at: int
    fresh: bool = False  # a full run at the voter's fresh seed (protocol/SPEC.md 5.4.1): a sample for the estimate
    device: str | None = None  # result.device: the hardware class the value was measured on


@dataclass(frozen=True)
class TrustSettings:
    restart: float = 0.2  # EigenTrust's a / PageRank's teleport probability (docs/design.md, "Ranking and trust")
    max_iterations: int = 200
    tolerance: float = 1e-10  # L1 change between iterations at which the walk has converged


@dataclass(frozen=True)
class TrustView:
    """Trust relative to this node's own weight: self = 1.0, pre-trusted = 1.0, others in [0, 1]."""

    weights: Mapping[str, float]
    distrusted: frozenset[str] = field(default_factory=frozenset)
    pretrusted: frozenset[str] = field(default_factory=frozenset)

    def of(self, key: str) -> float:
        return self.weights.get(key, 0.0)


def latest_votes(votes: Iterable[VoteFact]) -> dict[tuple[str, str], VoteFact]:
    """A voter may vote again on a claim (a rerun); only its latest (created_at, id) vote counts."""
    out: dict[tuple[str, str], VoteFact] = {}
    for vote in votes:
        key = (vote.voter, vote.claim)
        old = out.get(key)
        if old is None or (vote.created_at, vote.id) > (old.created_at, old.id):
            out[key] = vote
    return out


def distrusted_keys(self_key: str, claim_authors: Mapping[str, str], votes: Iterable[VoteFact]) -> set[str]:
    """Keys whose claims or votes contradict this node's own runs (never the node itself)."""
    votes = list(votes)
    own = {v.claim: v.verdict for v in votes if v.voter == self_key}
    bad: set[str] = set()
    for claim, verdict in own.items():
        if verdict == "mismatch" and claim in claim_authors:
            bad.add(claim_authors[claim])
    for claim, author in claim_authors.items():
        if author == self_key:
            own.setdefault(claim, "reproduced")  # our own claim is our own run of it
    for vote in votes:
        mine = own.get(vote.claim)
        if vote.voter == self_key or mine not in AGREEING or vote.verdict not in AGREEING:
            continue
        if vote.verdict != mine:
            bad.add(vote.voter)
    bad.discard(self_key)
    return bad


def evidence_edges(
    pretrusted: frozenset[str],
    claim_authors: Mapping[str, str],
    votes: Iterable[VoteFact],
    distrusted: set[str],
) -> dict[str, dict[str, float]]:
    """Weighted edges src -> dst (EigenTrust's local trust values s_ij, before normalization)."""
    votes = list(votes)
    edges: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_claim: dict[str, list[VoteFact]] = defaultdict(list)
    for vote in votes:
        by_claim[vote.claim].append(vote)
        author = claim_authors.get(vote.claim)
        if vote.verdict == "reproduced" and author is not None and author != vote.voter:
            edges[vote.voter][author] += 1.0
    for claim, claim_votes in by_claim.items():
        verdicts = {v.voter: v.verdict for v in claim_votes}
        author = claim_authors.get(claim)
        if author in pretrusted:
            verdicts.setdefault(author, "reproduced")
        for evaluator in pretrusted:
            mine = verdicts.get(evaluator)
            if mine not in AGREEING:
                continue
            for vote in claim_votes:
                if vote.voter != evaluator and vote.verdict == mine:
                    edges[evaluator][vote.voter] += 1.0
    return {
        src: {dst: w for dst, w in dsts.items() if dst not in distrusted and dst != src}
        for src, dsts in edges.items()
        if src not in distrusted
    }


def personalized_pagerank(
    edges: Mapping[str, Mapping[str, float]], restart_set: Iterable[str], settings: TrustSettings
) -> dict[str, float]:
    """t = a*p + (1-a) * C^T t with C row-normalized; dangling mass returns to p (EigenTrust alg. 3).

    Only keys reachable from the restart set can hold mass, so the walk runs on that subgraph.
    """
    seeds = sorted(set(restart_set))
    if not seeds:
        return {}
    reach, frontier = set(seeds), list(seeds)
    while frontier:
        node = frontier.pop()
        for dst in edges.get(node, ()):
            if dst not in reach:
                reach.add(dst)
                frontier.append(dst)
    out_rows = {}
    for src in reach:
        row = edges.get(src) or {}
        total = sum(row.values())
        if total > 0:
            out_rows[src] = [(dst, w / total) for dst, w in row.items()]
    p = {s: 1.0 / len(seeds) for s in seeds}
    t = dict.fromkeys(reach, 0.0)
    t.update(p)
    a = settings.restart
    for _ in range(settings.max_iterations):
        nxt = dict.fromkeys(reach, 0.0)
        dangling = 0.0
        for src, mass in t.items():
            if not mass:
                continue
            row = out_rows.get(src)
            if row is None:
                dangling += mass
                continue
            for dst, share in row:
                nxt[dst] += (1 - a) * mass * share
        back = a + (1 - a) * dangling
        for s, ps in p.items():
            nxt[s] += back * ps
        delta = sum(abs(nxt[k] - t[k]) for k in reach)
        t = nxt
        if delta < settings.tolerance:
            break
    return t


def compute_trust(
    self_key: str,
    trusted: Iterable[str],
    claim_authors: Mapping[str, str],
    votes: Iterable[VoteFact],
    settings: TrustSettings = TrustSettings(),
) -> TrustView:
    """This node's trust in every key it has evidence about.

    Normalized by the node's own stationary weight so that a weight means "worth this many of
    my own votes": the quorum of docs/design.md, "Ranking and trust" is then a number of own-vote equivalents.
    Weights are capped at 1 (no key outweighs the node itself) and pre-trusted keys sit at 1.
    A distrusted operator-trusted key drops to 0: the node's own run outweighs configuration.
    """
    current = list(latest_votes(votes).values())
    bad = distrusted_keys(self_key, claim_authors, current)
    pre = frozenset({self_key, *trusted} - bad)
    edges = evidence_edges(pre, claim_authors, current, bad)
    raw = personalized_pagerank(edges, pre, settings)
    own = raw.get(self_key) or 1.0
    weights = {key: min(1.0, value / own) for key, value in raw.items() if value > 0}
    for key in pre:
        weights[key] = 1.0
    for key in bad:
        weights[key] = 0.0
    return TrustView(weights=weights, distrusted=frozenset(bad), pretrusted=pre)
