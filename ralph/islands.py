"""Seeding from an archive of islands (docs/design.md, "The loop"), not only from the top-K.

An island is a lineage: every claim descending from one root claim (a claim whose parent is the task
baseline), and the baseline itself, the island every new lineage starts from. The archive holds each
island's best entry among those this node may trust as a seed: the verified top entries and its own
measured claims (a stranger's unverified number never decides where the loop goes). GEAR, FunSearch
and OpenEvolve keep populations or islands because greedy hill-climbing on one lineage stalls.

- Quality and novelty: the seed is the island whose best val_bpb, less a bonus for being little
  tried here, is lowest (an upper confidence bound: bonus = tolerance x NOVELTY x sqrt(ln(1 + N) /
  (1 + n)), n the own experiments seeded from the island, N all of them); the archive keeps the best
  ``islands`` of them.
- Stagnation: an island whose best entry this loop seeded STAGNANT_AFTER experiments from since the
  last keep is retired; a new best in it (from anyone) brings it back. The baseline island stays
  live until it stagnates too, so a retired lineage is replaced by a new one started from the baseline
  (the reset); when every island is retired, all are candidates again.
- ``exploration`` keeps its meaning: with that probability the seed is any live island's best,
  uniformly.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterable

from .corpus import CorpusEntry, Observation

STAGNANT_AFTER = 8
NOVELTY = 1.0
MAX_DEPTH = 4096  # parent links followed to find a root


@dataclass(frozen=True)
class Island:
    root: str  # the root claim's id, or "baseline"
    best: CorpusEntry | None  # None: the baseline
    val_bpb: float | None
    tries: int = 0  # own experiments seeded from this island
    since_keep: int = 0  # own experiments from it since its last keep (or since its best appeared)

    @property
    def stagnant(self) -> bool:
        return self.since_keep >= STAGNANT_AFTER


def root_of(claim_id: str | None, parents: dict[str, str | None]) -> str:
    """The root claim of a lineage ("baseline" for the baseline); a lineage whose ancestors are not
    known here ends at the oldest known one."""
    if claim_id is None or claim_id == "baseline":
        return "baseline"
    node = claim_id
    for _ in range(MAX_DEPTH):
        parent = parents.get(node)
        if parent is None:
            return node
        node = parent
    return node


def archive(candidates: Iterable[CorpusEntry], baseline_bpb: float | None, observations: Iterable[Observation],
            records: Iterable[Any], size: int) -> list[Island]:
    """The islands: each lineage's best trusted entry, with this loop's tries and stagnation; the
    baseline island always, then the best ``size`` others."""
    parents = {o.claim_id: o.parent for o in observations}
    for e in candidates:
        parents.setdefault(e.claim_id, e.parent)
    best: dict[str, CorpusEntry] = {}
    for e in candidates:
        if e.val_bpb is None:
            continue
        root = root_of(e.claim_id, parents)
        if root not in best or e.val_bpb < best[root].val_bpb:
            best[root] = e
    tries: dict[str, int] = {}
    for r in records:
        if getattr(r, "outcome", "") != "skipped":
            root = root_of(r.seed, parents)
            tries[root] = tries.get(root, 0) + 1

    def since_keep(seed_id: str) -> int:
        """Own experiments seeded from the island's current best since the last that was kept: a new
        best (own or anyone's) starts the count over."""
        count = 0
        for r in records:
            if getattr(r, "outcome", "") != "skipped" and r.seed == seed_id:
                count = 0 if r.kept else count + 1
        return count

    islands = [Island(root, e, e.val_bpb, tries.get(root, 0), since_keep(e.claim_id)) for root, e in best.items()]
    islands.sort(key=lambda i: (i.val_bpb, i.root))
    base = Island("baseline", None, baseline_bpb, tries.get("baseline", 0), since_keep("baseline"))
    return [base] + islands[: max(0, size)]


def choose(islands: list[Island], rng: random.Random, exploration: float, tolerance: float) -> Island:
    """The island to seed from: see the module's docstring."""
    known = [i for i in islands if i.val_bpb is not None or i.root == "baseline"]
    live = [i for i in known if not i.stagnant]
    if not live:  # every island stagnant, the baseline's too: all are candidates again
        live = known
    if rng.random() < exploration:
        return rng.choice(live)
    total = sum(i.tries for i in live)

    def score(i: Island) -> float:
        if i.val_bpb is None:
            return float("inf")
        bonus = tolerance * NOVELTY * math.sqrt(math.log(1 + total) / (1 + i.tries))
        return i.val_bpb - bonus

    return min(live, key=lambda i: (score(i), i.root))
