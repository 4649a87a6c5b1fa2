"""Seeding from an archive of islands (ralph/islands.py): lineages by root claim, each island's best
trusted entry, quality and novelty (a UCB bonus for little-tried islands), stagnant islands retired
and brought back by a new best, exploration uniform over live islands, and a stranger's unverified
number never a seed.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_islands.py"""
from __future__ import annotations

import random

from ralph.corpus import CorpusEntry, InMemoryCorpus, Observation
from ralph.islands import STAGNANT_AFTER, archive, choose, root_of
from ralph.memory import Record
from tests.ralph.test_ralph_loop import ListProposer, lr, make_loop
from tests.ralph.test_ralph_support import SCRIPT, ToyTask, toy_result
from trainer.patches import make_patch, source_sha256


def entry(cid: str, bpb: float, parent: str | None = None) -> CorpusEntry:
    return CorpusEntry(cid, "0" * 64, bpb, f"note {cid}", "", "improved", parent)


def obs(cid: str, parent: str | None) -> Observation:
    return Observation(cid, SCRIPT, 2.0, 1000, "improved", "", parent)


def record(step: int, seed: str, kept: bool = False, outcome: str = "worse") -> Record:
    return Record(step, seed, 2.0, "n", [], 1.9, "improved" if kept else outcome, kept)


# A: root a1, child a2 (better); B: root b1; C: root c1, worst.
LINEAGE = [obs("a1", None), obs("a2", "a1"), obs("b1", None), obs("c1", None)]
ENTRIES = [entry("a1", 1.90, None), entry("a2", 1.80, "a1"), entry("b1", 1.85, None), entry("c1", 1.95, None)]


def test_islands_are_lineages_with_their_best():
    assert root_of("a2", {o.claim_id: o.parent for o in LINEAGE}) == "a1"
    assert root_of("zz", {}) == "zz" and root_of(None, {}) == "baseline"
    islands = archive(ENTRIES, 2.0, LINEAGE, [], size=4)
    assert [(i.root, i.best.claim_id if i.best else None) for i in islands] == [
        ("baseline", None), ("a1", "a2"), ("b1", "b1"), ("c1", "c1")]
    assert [i.root for i in archive(ENTRIES, 2.0, LINEAGE, [], size=1)] == ["baseline", "a1"]  # the archive's size
    # a lineage cycle in hostile parent links ends, it does not hang
    assert root_of("x", {"x": "y", "y": "x"}) in ("x", "y")


def test_quality_first_then_novelty():
    islands = archive(ENTRIES, 2.0, LINEAGE, [], size=4)
    assert choose(islands, random.Random(0), 0.0, tolerance=0.01).root == "a1"  # clearly best
    # a1 tried 10 times, b1 never: b1's bonus (tolerance x sqrt(ln 11)) outweighs a 0.05 gap at tolerance 0.05
    tried = [record(n, "a2", kept=(n % 3 == 0)) for n in range(10)]
    islands = archive(ENTRIES, 2.0, LINEAGE, tried, size=4)
    assert [i.tries for i in islands] == [0, 10, 0, 0]
    assert choose(islands, random.Random(0), 0.0, tolerance=0.05).root == "b1"
    assert choose(islands, random.Random(0), 0.0, tolerance=0.001).root == "a1"


def test_stagnant_island_retired_until_a_new_best():
    stuck = [record(n, "a2") for n in range(STAGNANT_AFTER)]
    islands = archive(ENTRIES, 2.0, LINEAGE, stuck, size=4)
    a = next(i for i in islands if i.root == "a1")
    assert a.stagnant and a.since_keep == STAGNANT_AFTER
    assert choose(islands, random.Random(0), 0.0, tolerance=0.001).root == "b1"
    # one short of the bound: still live
    assert not archive(ENTRIES, 2.0, LINEAGE, stuck[1:], size=4)[1].stagnant
    # someone else's new best in the island brings it back
    revived = archive(ENTRIES + [entry("a3", 1.70, "a2")], 2.0, LINEAGE + [obs("a3", "a2")], stuck, size=4)
    assert choose(revived, random.Random(0), 0.0, tolerance=0.001).best.claim_id == "a3"
    # every island stagnant, the baseline's too: all candidates again, the best wins
    everything = [record(n, s) for s in ("a2", "b1", "c1", "baseline") for n in range(STAGNANT_AFTER)]
    assert choose(archive(ENTRIES, 2.0, LINEAGE, everything, size=4), random.Random(0), 0.0, 0.001).root == "a1"


def test_exploration_is_uniform_over_live_islands():
    stuck = [record(n, "c1") for n in range(STAGNANT_AFTER)]
    islands = archive(ENTRIES, 2.0, LINEAGE, stuck, size=4)
    rng = random.Random(1)
    picks = [choose(islands, rng, 1.0, tolerance=0.001).root for _ in range(400)]
    assert set(picks) == {"baseline", "a1", "b1"}  # c1 is retired
    assert all(100 <= picks.count(r) <= 170 for r in ("baseline", "a1", "b1"))


async def test_an_unverified_strangers_number_is_never_a_seed(tmp_path):
    corpus = InMemoryCorpus()
    task = ToyTask()
    fake = lr("0.021")
    corpus.add({"task": task.id, "parent": None, "patch": make_patch(SCRIPT, fake), "source_sha256": source_sha256(fake),
                "note": "trust me", "outcome": "improved", "result": toy_result(0.01)}, fake, own=False, verified=False)
    loop, corpus, runner = make_loop(tmp_path, ListProposer(lr("0.03"), lr("0.035", lr("0.03"))),
                                     corpus=corpus, task=task)
    first = await loop.step()
    assert first.seed.claim_id is None  # the baseline, not the stranger's unverified 0.01
    assert first.outcome == "improved"
    second = await loop.step()
    assert second.seed.claim_id == first.claim_id  # its own measured claim (verified here: the test corpus)
