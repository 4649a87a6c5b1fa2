"""Personalized trust: EigenTrust with the node's own key and operator-trusted keys as the
pre-trusted set (docs/design.md, "Ranking and trust"; Kamvar, Schlosser, Garcia-Molina, "The EigenTrust
Algorithm for Reputation Management in P2P Networks", WWW 2003, section 4.5 "pre-trusted peers").

Pure functions over plain data, no SQLite. The evidence graph:

* ``voter -> author`` when the voter voted ``reproduced`` on the author's claim (the voter vouches
  for the author's work);
* ``e -> voter`` for a pre-trusted evaluator ``e`` (this node, an operator-trusted key) when the
  voter's verdict on a claim agreed with ``e``'s own (``reproduced``/``mismatch``) **and the vote
  could not have been copied** (docs/design.md, "Trust that copying cannot earn"): it reached this
  node before ``e``'s own vote on the claim did (``seq``: this node's receipt order; this node's own
  votes are received when published), and, at a fresh seed, its value repeats neither the claimed
  value nor an earlier-received vote's. A claim written by ``e`` counts as ``e``'s own
  ``reproduced`` run of it, received with the claim; on it only a fresh-seed vote with a value of
  its own earns an edge (a same-seed value is the claimed one, bit for bit: anyone can copy it).
* **Own evidence first.** The author of a claim this node found ``mismatch`` or ``failed`` is
  distrusted, unless pre-trusted evaluators disagree on the claim (it is then non-deterministic,
  charged to the claim). A voter whose verdict contradicts a pre-trusted evaluator's run is
  charged one disagreement; it is distrusted after disagreements on claims of
  ``distrust_authors`` different authors within ``decay_s`` of the newest vote (one machine-
  dependent claim does not zero an honest peer; a supporter of several fakes is caught).
  Distrusted keys get trust 0 and lose every edge.

**Voting power** (what a vote weighs as support, store/ranking.py) is not the walk's trust: a key
this node does not pre-trust weighs ``(1 - restart) / |pre-trusted|`` times its share of the
pre-trusted evaluators' agreement edges, summed over evaluators, capped at 1. So all such keys
together weigh at most ``1 - restart`` (0.8) own votes, below the quorum of 1, however many of them
there are and however they vouch for each other: no set of keys this node does not pre-trust can
verify a claim by itself.

Trust is the stationary vector of a random walk that restarts (probability ``restart``) at the
pre-trusted set, i.e. personalized PageRank. A key that no pre-trusted key can reach through
evidence gets exactly 0, however many keys vouch for it: that is the Sybil resistance.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

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
    seq: int = 0  # this node's receipt order of the vote (0: unknown, never earlier than anything)
    claim_received_at: int | None = None  # body.claim_received_at: when the voter received the claim


@dataclass(frozen=True)
class TrustSettings:
    restart: float = 0.2  # EigenTrust's a / PageRank's teleport probability (docs/design.md, "Ranking and trust")
    max_iterations: int = 200
    tolerance: float = 1e-10  # L1 change between iterations at which the walk has converged
    distrust_authors: int = 2  # disagreements on claims of this many distinct authors distrust a voter
    decay_s: int = 30 * 86400  # disagreements older than this (before the newest vote) are forgiven


@dataclass(frozen=True)
class TrustView:
    """Trust relative to this node's own weight: self = 1.0, pre-trusted = 1.0, others in [0, 1]."""

    weights: Mapping[str, float]
    distrusted: frozenset[str] = field(default_factory=frozenset)
    pretrusted: frozenset[str] = field(default_factory=frozenset)
    power: Mapping[str, float] | None = None  # voting power of other keys; None: the weights (hand-built views)
    split: frozenset[str] = field(default_factory=frozenset)  # claims pre-trusted evaluators measured differently

    def of(self, key: str) -> float:
        return self.weights.get(key, 0.0)

    def power_of(self, key: str) -> float:
        """What a vote of ``key`` weighs as support or dispute, in own-vote equivalents."""
        if key in self.distrusted:
            return 0.0
        if key in self.pretrusted:
            return 1.0
        if self.power is None:
            return self.of(key)
        return self.power.get(key, 0.0)


def latest_votes(votes: Iterable[VoteFact]) -> dict[tuple[str, str], VoteFact]:
    """A voter may vote again on a claim (a rerun); only its latest (created_at, id) vote counts."""
    out: dict[tuple[str, str], VoteFact] = {}
    for vote in votes:
        key = (vote.voter, vote.claim)
        old = out.get(key)
        if old is None or (vote.created_at, vote.id) > (old.created_at, old.id):
            out[key] = vote
    return out


MEASURED = ("reproduced", "mismatch", "failed")  # an evaluator's own verdicts that judge a claim


def evaluator_verdicts(pretrusted: frozenset[str], claim_authors: Mapping[str, str],
                       votes: Iterable[VoteFact]) -> dict[str, dict[str, VoteFact | None]]:
    """claim -> {pre-trusted evaluator -> its own vote (None: its own claim, a reproduced run of it)}."""
    out: dict[str, dict[str, VoteFact | None]] = defaultdict(dict)
    for vote in votes:
        if vote.voter in pretrusted and vote.verdict in MEASURED:
            out[vote.claim][vote.voter] = vote
    for claim, author in claim_authors.items():
        if author in pretrusted:
            out[claim].setdefault(author, None)
    return out


def _verdict(vote: VoteFact | None) -> str:
    return "reproduced" if vote is None else vote.verdict


def same_seed(vote: VoteFact | None) -> str:
    """What a vote says of a run at the claim's own seed: "ok" or "bad". That evidence is exact (the
    same source and seed give the same curve), so only it can say that machines disagree. A full run
    at a fresh seed (``fresh``) passed the spot check at the claim's seed first: its verdict is about
    seed noise, and an honest claim misses its threshold once in a hundred runs (store/stats.py
    mismatch_threshold), so two evaluators' fresh verdicts may differ on a deterministic claim.
    None: the evaluator's own claim, its own run."""
    if vote is None or vote.fresh or vote.verdict == "reproduced":
        return "ok"
    return "bad" if vote.verdict in ("mismatch", "failed") else "ok"


def split_claims(evaluations: Mapping[str, Mapping[str, VoteFact | None]]) -> set[str]:
    """Claims pre-trusted evaluators ran differently at the claim's own seed (``same_seed``):
    non-deterministic, charged to the claim."""
    return {claim for claim, by in evaluations.items() if len({same_seed(v) for v in by.values()}) > 1}


FRESH_DIFFER = 0.02  # chance that a fresh-seed verdict on an honest claim differs from another (each misses 1 in 100)
FRESH_DISTRUST_P = 1e-3  # fresh-seed disagreements distrust a key only when chance explains them this rarely


def chance_of_at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how often chance alone gives ``k`` misses in ``n`` runs."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    below = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
                         + (n - i) * log_q) for i in range(k))
    return max(0.0, 1.0 - below)


def distrusted_keys(self_key: str, claim_authors: Mapping[str, str], votes: Iterable[VoteFact],
                    pretrusted: Iterable[str] = (), settings: "TrustSettings | None" = None) -> set[str]:
    """Keys whose claims or votes contradict the pre-trusted evaluators' own runs (never this node).

    At the claim's own seed the evidence is exact (``same_seed``): the author of a claim an evaluator
    found ``mismatch`` or ``failed`` there (unless the claim is split), and a voter whose verdict there
    contradicts theirs on claims of ``distrust_authors`` distinct authors. At a fresh seed it is
    statistical: an honest claim misses an evaluator's threshold once in a hundred runs, so one miss
    charges nobody; a key is distrusted when its fresh-seed disagreements (its claims' values against
    the evaluators' runs, its votes' verdicts against theirs) are at least two and more than chance
    explains (``FRESH_DISTRUST_P``). That is how a claimed value no run reaches (a fabricated val_bpb
    beside a genuine curve) shows. Only votes within ``decay_s`` of the newest vote count.
    """
    settings = settings or TrustSettings()
    votes = list(votes)
    pre = frozenset({self_key, *pretrusted})
    evaluations = evaluator_verdicts(pre, claim_authors, votes)
    split = split_claims(evaluations)
    newest = max((v.created_at for v in votes), default=0)
    recent = newest - settings.decay_s
    bad: set[str] = set()
    fresh_runs: dict[str, int] = defaultdict(int)  # key -> fresh-seed comparisons
    fresh_misses: dict[str, int] = defaultdict(int)  # key -> those that disagreed

    def fresh(key: str, differ: bool) -> None:
        fresh_runs[key] += 1
        fresh_misses[key] += differ

    for claim, by in evaluations.items():
        if claim in split or claim not in claim_authors:
            continue
        for own in by.values():
            if own is None:
                continue
            if same_seed(own) == "bad":
                bad.add(claim_authors[claim])
            elif own.fresh and own.verdict in AGREEING and own.created_at >= recent:
                fresh(claim_authors[claim], own.verdict != "reproduced")
    charged: dict[str, set[str]] = defaultdict(set)  # voter -> authors of claims it contradicted
    for vote in votes:
        by = evaluations.get(vote.claim)
        if not by or vote.voter in pre or vote.claim in split or vote.verdict not in AGREEING:
            continue
        if vote.created_at < recent:
            continue
        ours = next(iter(by.values()))
        if same_seed(vote) != same_seed(ours):
            charged[vote.voter].add(claim_authors.get(vote.claim, vote.claim))
        elif vote.fresh:  # both passed the claim's seed: the verdicts at fresh seeds are about noise
            fresh(vote.voter, vote.verdict != _verdict(ours))
    bad.update(voter for voter, authors in charged.items() if len(authors) >= settings.distrust_authors)
    bad.update(key for key, misses in fresh_misses.items()
               if misses >= 2 and chance_of_at_least(misses, fresh_runs[key], FRESH_DIFFER) < FRESH_DISTRUST_P)
    bad.discard(self_key)
    return bad


def _copied(vote: VoteFact, earlier_values: set[str]) -> bool:
    """A fresh-seed value another message already carried: a copy, not a run of its own."""
    return vote.fresh and vote.val_bpb is not None and vote.val_bpb in earlier_values


def agreement_edges(
    pretrusted: frozenset[str],
    claim_authors: Mapping[str, str],
    votes: Iterable[VoteFact],
    claim_values: Mapping[str, str | None] | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluator -> voter edges for votes that agreed with the evaluator's own verdict and could not
    have been copied (module docstring): received before the evaluator's vote, a value of its own."""
    claim_values = claim_values or {}
    by_claim: dict[str, list[VoteFact]] = defaultdict(list)
    for vote in votes:
        by_claim[vote.claim].append(vote)
    edges: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    evaluations = evaluator_verdicts(pretrusted, claim_authors, votes)
    for claim, by in evaluations.items():
        claim_votes = sorted(by_claim.get(claim, ()), key=lambda v: (v.seq, v.id))
        for evaluator, own in by.items():
            mine = _verdict(own)
            if mine not in AGREEING:
                continue
            seen = {claim_values[claim]} if claim_values.get(claim) else set()
            for vote in claim_votes:
                later = own is not None and not (0 < vote.seq < own.seq)
                if vote.voter == evaluator:
                    continue
                if own is None and not vote.fresh:
                    pass  # on the evaluator's own claim a same-seed value is the claimed one: copyable
                elif not later and vote.verdict == mine and not _copied(vote, seen):
                    edges[evaluator][vote.voter] += 1.0
                if vote.val_bpb is not None:
                    seen.add(vote.val_bpb)
    return edges


def evidence_edges(
    pretrusted: frozenset[str],
    claim_authors: Mapping[str, str],
    votes: Iterable[VoteFact],
    distrusted: set[str],
    claim_values: Mapping[str, str | None] | None = None,
) -> dict[str, dict[str, float]]:
    """Weighted edges src -> dst (EigenTrust's local trust values s_ij, before normalization)."""
    votes = list(votes)
    edges = agreement_edges(pretrusted, claim_authors, votes, claim_values)
    for vote in votes:
        author = claim_authors.get(vote.claim)
        if vote.verdict == "reproduced" and author is not None and author != vote.voter:
            edges[vote.voter][author] += 1.0
    return {
        src: {dst: w for dst, w in dsts.items() if dst not in distrusted and dst != src}
        for src, dsts in edges.items()
        if src not in distrusted
    }


def voting_power(pretrusted: frozenset[str], agreement: Mapping[str, Mapping[str, float]],
                 distrusted: set[str], restart: float) -> dict[str, float]:
    """(1 - restart) / |pre-trusted| x each evaluator's share of its agreement edges, summed, capped at 1:
    all keys outside the pre-trusted set together weigh at most 1 - restart (module docstring)."""
    power: dict[str, float] = defaultdict(float)
    if not pretrusted:
        return {}
    for evaluator in pretrusted:
        row = {dst: w for dst, w in (agreement.get(evaluator) or {}).items()
               if dst not in distrusted and dst not in pretrusted}
        total = sum(row.values())
        for dst, w in row.items():
            power[dst] += (1.0 - restart) / len(pretrusted) * w / total
    return {key: min(1.0, value) for key, value in power.items()}


def personalized_pagerank(
    edges: Mapping[str, Mapping[str, float]], restart_set: Iterable[str], settings: TrustSettings,
    start: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """t = a*p + (1-a) * C^T t with C row-normalized; dangling mass returns to p (EigenTrust alg. 3).

    Only keys reachable from the restart set can hold mass, so the walk runs on that subgraph.
    ``start``: a previous vector to begin from (warm start; its mass on keys no longer reachable is
    dropped and the rest renormalised). The walk is a contraction by ``1 - a`` in L1, so from any
    start it stops within ``4 * tolerance`` (L1, for a = 0.2) of the one fixed point: two starts give
    vectors within ``2 * (1 - a) / a * tolerance`` of each other.
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
    keys = list(reach)
    index = {key: i for i, key in enumerate(keys)}
    src_idx: list[int] = []
    dst_idx: list[int] = []
    shares: list[float] = []
    has_out = np.zeros(len(keys), dtype=bool)
    for src in keys:
        row = edges.get(src) or {}
        total = sum(row.values())
        if total > 0:
            i = index[src]
            has_out[i] = True
            for dst, w in row.items():
                src_idx.append(i)
                dst_idx.append(index[dst])
                shares.append(w / total)
    src_a, dst_a, share_a = np.array(src_idx, dtype=np.int64), np.array(dst_idx, dtype=np.int64), np.array(shares)
    dangling_mask = ~has_out
    p = np.zeros(len(keys))
    for seed in seeds:
        p[index[seed]] = 1.0 / len(seeds)
    warm = sum(start.get(k, 0.0) for k in keys) if start else 0.0
    t = np.array([start.get(k, 0.0) / warm for k in keys]) if warm > 0 else p.copy()
    a = settings.restart
    for _ in range(settings.max_iterations):  # one sparse product per step (numpy: the walk was most of the cost)
        nxt = (1 - a) * np.bincount(dst_a, weights=t[src_a] * share_a, minlength=len(keys))
        nxt += (a + (1 - a) * float(t[dangling_mask].sum())) * p
        delta = float(np.abs(nxt - t).sum())
        t = nxt
        if delta < settings.tolerance:
            break
    return dict(zip(keys, t.tolist()))


def compute_trust(
    self_key: str,
    trusted: Iterable[str],
    claim_authors: Mapping[str, str],
    votes: Iterable[VoteFact],
    settings: TrustSettings = TrustSettings(),
    claim_values: Mapping[str, str | None] | None = None,
) -> TrustView:
    """This node's trust in every key it has evidence about.

    Normalized by the node's own stationary weight so that a weight means "worth this many of
    my own votes": the quorum of docs/design.md, "Ranking and trust" is then a number of own-vote equivalents.
    Weights are capped at 1 (no key outweighs the node itself) and pre-trusted keys sit at 1.
    A distrusted operator-trusted key drops to 0: the node's own run outweighs configuration.
    """
    current = list(latest_votes(votes).values())
    trusted = set(trusted)
    bad = distrusted_keys(self_key, claim_authors, current, trusted, settings)
    pre = frozenset({self_key, *trusted} - bad)
    edges = evidence_edges(pre, claim_authors, current, bad, claim_values)
    power = voting_power(pre, agreement_edges(pre, claim_authors, current, claim_values), bad, settings.restart)
    split = frozenset(split_claims(evaluator_verdicts(pre, claim_authors, current)))
    raw = personalized_pagerank(edges, pre, settings)
    own = raw.get(self_key) or 1.0
    weights = {key: min(1.0, value / own) for key, value in raw.items() if value > 0}
    for key in pre:
        weights[key] = 1.0
    for key in bad:
        weights[key] = 0.0
    return TrustView(weights=weights, distrusted=frozenset(bad), pretrusted=pre, power=power, split=split)


@dataclass
class _ClaimParts:
    """What one claim contributes to trust, from its author, its value and its voters' latest votes
    (``TrustState``). ``e_*`` are computed with the evaluators before distrust (``distrusted_keys``),
    ``p_*`` with the pre-trusted set after it (``evidence_edges``, ``voting_power``, ``split_claims``)."""

    e_split: bool = False
    author_bad: str | None = None  # the author, when an evaluator's same-seed run found the claim bad
    fresh_author: list[tuple[int, bool]] = field(default_factory=list)  # (created_at, differ) of the author
    charges: list[tuple[str, str, int]] = field(default_factory=list)  # (voter, the author or claim, created_at)
    fresh_voter: list[tuple[str, int, bool]] = field(default_factory=list)  # (voter, created_at, differ)
    p_split: bool = False
    agree: list[tuple[str, str]] = field(default_factory=list)  # evaluator -> voter agreement edges
    vouch: list[tuple[str, str]] = field(default_factory=list)  # voter -> author ("reproduced")


def _add_edges(agg: dict[str, dict[str, float]], pairs: list[tuple[str, str]], sign: float) -> None:
    for src, dst in pairs:
        row = agg.setdefault(src, {})
        w = row.get(dst, 0.0) + sign
        if w:
            row[dst] = w
        else:  # counts of whole votes: exact in floats, so a pair that went is absent, as in a full pass
            del row[dst]
            if not row:
                del agg[src]


class TrustState:
    """``compute_trust`` kept up to date as messages arrive, instead of recomputed from every vote.

    ``add`` takes the claims and votes received since the last call, in receipt order (the order a
    full computation would read them in); ``view`` returns what ``compute_trust`` returns for all of
    them so far. Per claim it caches what the claim contributes (its voters' latest votes, evaluator
    verdicts, agreement and vouching edges, the charges and fresh-seed comparisons behind distrust;
    ``_ClaimParts``) and recomputes that only for claims a new message touched (a vote on it, the
    claim itself). Across claims it keeps the edge counts (updated by difference) and re-aggregates
    only what the moving ``decay_s`` window decides (charges and fresh-seed comparisons, one pass
    over those lists, not over all votes). When distrust changes the pre-trusted set, every claim's
    pre-trusted part is recomputed. The walk starts from the previous vector.

    Exact against ``compute_trust`` for ``distrusted``, ``pretrusted`` and ``split``; ``weights`` and
    ``power`` agree within the walk's tolerance (``personalized_pagerank``: warm and cold starts stop
    at different points within ``tolerance`` of the fixed point) and float summation order
    (tests/store/test_store_trust_incremental.py checks both on random and adversarial sequences).
    ``remove`` forgets messages (a replica's deletions) the same way: the claims they name are
    recomputed, a voter's earlier vote counts again, the newest vote (the window's end) is found again.
    """

    def __init__(self, self_key: str, trusted: Iterable[str] = (), settings: TrustSettings = TrustSettings()):
        self.self_key = self_key
        self.trusted = frozenset(trusted)
        self.settings = settings
        self.evaluators = frozenset({self_key, *self.trusted})
        self._authors: dict[str, str] = {}
        self._values: dict[str, str | None] = {}
        self._latest: dict[str, dict[str, VoteFact]] = {}  # claim -> voter -> latest vote
        self._all: dict[str, dict[str, list[tuple[int, VoteFact]]]] = {}  # claim -> voter -> (arrival, vote)s
        self._vote_at: dict[str, tuple[str, str]] = {}  # vote id -> (claim, voter)
        self._times: dict[int, int] = {}  # created_at -> votes held with it (the newest, after a removal)
        self._arrivals = 0
        self._parts: dict[str, _ClaimParts] = {}
        self._judged: set[str] = set()  # claims with distrust parts (an evaluator's verdict on them)
        self._bad_authors: dict[str, int] = {}  # author -> claims of theirs found bad at the claim's seed
        self._agree: dict[str, dict[str, float]] = {}
        self._vouch: dict[str, dict[str, float]] = {}
        self._p_split: set[str] = set()
        self._pre: frozenset[str] | None = None  # the pre-trusted set the p_ parts were computed with
        self._newest = 0
        self._touched: set[str] = set()
        self._raw: dict[str, float] | None = None  # the walk's last vector (warm start)
        self._view: TrustView | None = None

    def matches(self, self_key: str, trusted: Iterable[str], settings: TrustSettings) -> bool:
        return self_key == self.self_key and frozenset(trusted) == self.trusted and settings == self.settings

    @property
    def claims(self) -> int:
        return len(self._authors)

    @property
    def votes(self) -> int:
        return len(self._vote_at)

    def add(self, claims: Iterable[tuple[str, str, str | None]] = (), votes: Iterable[VoteFact] = ()) -> None:
        """Claims as (id, author, claimed value) and votes, in receipt order (a vote id held already
        is ignored)."""
        for cid, author, value in claims:
            if self._authors.get(cid) != author or self._values.get(cid) != value:
                self._authors[cid], self._values[cid] = author, value
                self._touched.add(cid)
        for vote in votes:
            if vote.id in self._vote_at:
                continue
            self._arrivals += 1
            self._vote_at[vote.id] = (vote.claim, vote.voter)
            self._all.setdefault(vote.claim, {}).setdefault(vote.voter, []).append((self._arrivals, vote))
            self._times[vote.created_at] = self._times.get(vote.created_at, 0) + 1
            by = self._latest.setdefault(vote.claim, {})
            old = by.get(vote.voter)
            if old is None or (vote.created_at, vote.id) > (old.created_at, old.id):
                by[vote.voter] = vote
                self._touched.add(vote.claim)
            self._newest = max(self._newest, vote.created_at)
        if self._touched:
            self._view = None

    def remove(self, ids: Iterable[str]) -> None:
        """Forget these messages (claims or votes; ids not held are ignored), as if never received:
        a voter's earlier vote on the claim counts again, the claim's author is unknown again."""
        for mid in ids:
            if mid in self._authors:
                del self._authors[mid], self._values[mid]
                self._touched.add(mid)
            at = self._vote_at.pop(mid, None)
            if at is None:
                continue
            claim, voter = at
            held = self._all[claim][voter]
            gone = next(v for _, v in held if v.id == mid)
            held[:] = [(n, v) for n, v in held if v.id != mid]
            if held:
                self._latest[claim][voter] = max((v for _, v in held), key=lambda v: (v.created_at, v.id))
            else:
                del self._all[claim][voter], self._latest[claim][voter]
                if not self._all[claim]:
                    del self._all[claim], self._latest[claim]
            self._times[gone.created_at] -= 1
            if not self._times[gone.created_at]:
                del self._times[gone.created_at]
                if gone.created_at == self._newest:
                    self._newest = max(self._times, default=0)
            self._touched.add(claim)
        if self._touched:
            self._view = None

    # -- per claim ------------------------------------------------------------------------------
    def _evaluations(self, claim: str, pre: frozenset[str]) -> dict[str, VoteFact | None]:
        """Evaluator -> its latest measured vote, in the order of each evaluator's first vote held on
        the claim (a full pass's order: ``distrusted_keys`` compares with the first)."""
        latest, held = self._latest.get(claim, {}), self._all.get(claim, {})
        ordered = sorted((held[voter][0][0], voter) for voter in pre if voter in latest)
        by: dict[str, VoteFact | None] = {}
        for _, voter in ordered:
            if latest[voter].verdict in MEASURED:
                by[voter] = latest[voter]
        author = self._authors.get(claim)
        if author is not None and author in pre:
            by.setdefault(author, None)
        return by

    def _e_parts(self, claim: str, parts: _ClaimParts) -> None:
        """The distrust side (``distrusted_keys``), with the evaluators before distrust."""
        pre = self.evaluators
        by = self._evaluations(claim, pre)
        parts.e_split = len({same_seed(v) for v in by.values()}) > 1
        parts.author_bad, parts.fresh_author, parts.charges, parts.fresh_voter = None, [], [], []
        if not by or parts.e_split:
            return
        author = self._authors.get(claim)
        if author is not None:
            for own in by.values():
                if own is None:
                    continue
                if same_seed(own) == "bad":
                    parts.author_bad = author
                elif own.fresh and own.verdict in AGREEING:
                    parts.fresh_author.append((own.created_at, own.verdict != "reproduced"))
        ours = next(iter(by.values()))
        for vote in self._latest.get(claim, {}).values():
            if vote.voter in pre or vote.verdict not in AGREEING:
                continue
            if same_seed(vote) != same_seed(ours):
                parts.charges.append((vote.voter, author if author is not None else claim, vote.created_at))
            elif vote.fresh:
                parts.fresh_voter.append((vote.voter, vote.created_at, vote.verdict != _verdict(ours)))

    def _p_parts(self, claim: str, parts: _ClaimParts, pre: frozenset[str]) -> None:
        """The walk's side (``agreement_edges``, ``split_claims``), with the pre-trusted set."""
        by = self._evaluations(claim, pre)
        parts.p_split = len({same_seed(v) for v in by.values()}) > 1
        parts.agree = []
        if not by:
            return
        value = self._values.get(claim)
        claim_votes = sorted(self._latest.get(claim, {}).values(), key=lambda v: (v.seq, v.id))
        for evaluator, own in by.items():
            mine = _verdict(own)
            if mine not in AGREEING:
                continue
            seen = {value} if value else set()
            for vote in claim_votes:
                later = own is not None and not (0 < vote.seq < own.seq)
                if vote.voter == evaluator:
                    continue
                if own is None and not vote.fresh:
                    pass
                elif not later and vote.verdict == mine and not _copied(vote, seen):
                    parts.agree.append((evaluator, vote.voter))
                if vote.val_bpb is not None:
                    seen.add(vote.val_bpb)

    def _set_p(self, claim: str, parts: _ClaimParts, pre: frozenset[str]) -> None:
        _add_edges(self._agree, parts.agree, -1.0)
        self._p_parts(claim, parts, pre)
        _add_edges(self._agree, parts.agree, 1.0)
        if parts.p_split:
            self._p_split.add(claim)
        else:
            self._p_split.discard(claim)

    # -- the view -------------------------------------------------------------------------------
    def _distrusted(self) -> set[str]:
        settings = self.settings
        recent = self._newest - settings.decay_s
        bad = {a for a, n in self._bad_authors.items() if n > 0}
        runs: dict[str, int] = defaultdict(int)
        misses: dict[str, int] = defaultdict(int)
        charged: dict[str, set[str]] = defaultdict(set)
        for claim in self._judged:
            parts = self._parts[claim]
            author = self._authors.get(claim)
            for created_at, differ in parts.fresh_author:
                if created_at >= recent:
                    runs[author] += 1
                    misses[author] += differ
            for voter, target, created_at in parts.charges:
                if created_at >= recent:
                    charged[voter].add(target)
            for voter, created_at, differ in parts.fresh_voter:
                if created_at >= recent:
                    runs[voter] += 1
                    misses[voter] += differ
        bad.update(voter for voter, targets in charged.items() if len(targets) >= settings.distrust_authors)
        bad.update(key for key, n in misses.items()
                   if n >= 2 and chance_of_at_least(n, runs[key], FRESH_DIFFER) < FRESH_DISTRUST_P)
        bad.discard(self.self_key)
        return bad

    def view(self) -> TrustView:
        if self._view is not None:
            return self._view
        touched, self._touched = self._touched, set()
        for claim in touched:
            parts = self._parts.get(claim)
            if parts is None:
                parts = self._parts[claim] = _ClaimParts()
            if parts.author_bad is not None:
                self._bad_authors[parts.author_bad] -= 1
            _add_edges(self._vouch, parts.vouch, -1.0)
            self._e_parts(claim, parts)
            if parts.author_bad is not None:
                self._bad_authors[parts.author_bad] = self._bad_authors.get(parts.author_bad, 0) + 1
            if parts.author_bad is not None or parts.fresh_author or parts.charges or parts.fresh_voter:
                self._judged.add(claim)
            else:
                self._judged.discard(claim)
            author = self._authors.get(claim)
            parts.vouch = [(v.voter, author) for v in self._latest.get(claim, {}).values()
                           if v.verdict == "reproduced" and author is not None and author != v.voter]
            _add_edges(self._vouch, parts.vouch, 1.0)
        bad = self._distrusted()
        pre = frozenset(self.evaluators - bad)
        if pre != self._pre:  # distrust moved the pre-trusted set: every claim's walk side anew
            self._agree, self._p_split = {}, set()
            for claim, parts in self._parts.items():
                parts.agree = []
                self._set_p(claim, parts, pre)
            self._pre = pre
        else:
            for claim in touched:
                self._set_p(claim, self._parts[claim], pre)
        edges: dict[str, dict[str, float]] = {}
        for agg in (self._agree, self._vouch):
            for src, row in agg.items():
                if src in bad:
                    continue
                out = edges.setdefault(src, {})
                for dst, w in row.items():
                    if dst not in bad and dst != src:
                        out[dst] = out.get(dst, 0.0) + w
        power = voting_power(pre, self._agree, bad, self.settings.restart)
        raw = personalized_pagerank(edges, pre, self.settings, start=self._raw)
        self._raw = raw
        own = raw.get(self.self_key) or 1.0
        weights = {key: min(1.0, value / own) for key, value in raw.items() if value > 0}
        for key in pre:
            weights[key] = 1.0
        for key in bad:
            weights[key] = 0.0
        self._view = TrustView(weights=weights, distrusted=frozenset(bad), pretrusted=pre, power=power,
                               split=frozenset(self._p_split))
        return self._view
