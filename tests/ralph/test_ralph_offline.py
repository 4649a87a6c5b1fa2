"""Offline mutation proposer and the hyperparameter block parser.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_offline.py"""
from __future__ import annotations

import math
import re
import statistics

import pytest

from ralph.hyperparams import diff_constants, parse_constants, set_constants
from ralph.proposers import OfflineProposer, ProposalError
from ralph.proposers.offline import constraints, repair
from tests.ralph.test_ralph_support import SCRIPT, make_context


def proposals(seed: int, n: int, boldness: float = 0.3, source: str = SCRIPT):
    p = OfflineProposer(boldness=boldness, seed=seed)
    return [p.propose(make_context(source)) for _ in range(n)]


def test_parse_and_rewrite_keep_comments_byte_for_byte():
    consts = parse_constants(SCRIPT)
    assert consts["MATRIX_LR"].value == 0.02 and not consts["MATRIX_LR"].is_int
    assert consts["N_HEADS"].is_int and consts["N_HEADS"].comment.startswith("attention heads")
    new = set_constants(SCRIPT, {"MATRIX_LR": "0.028", "N_HEADS": "8"})
    assert "MATRIX_LR = 0.028  # Muon learning rate\n" in new
    assert diff_constants(SCRIPT, new) == [("N_HEADS", "4", "8"), ("MATRIX_LR", "0.02", "0.028")]
    assert len(new.splitlines()) == len(SCRIPT.splitlines())


def test_deterministic_given_seed_and_different_across_seeds():
    a = [p.source for p in proposals(7, 10)]
    assert a == [p.source for p in proposals(7, 10)]
    assert a != [p.source for p in proposals(8, 10)]


def test_note_says_exactly_what_changed():
    for p in proposals(3, 30):
        changes = diff_constants(SCRIPT, p.source)
        assert 1 <= len(changes) <= 6  # one to three chosen, each with at most one divisor repaired
        expected = ", ".join(f"{n} {o} -> {v}" for n, o, v in changes)
        assert p.note == expected + " (offline mutation)"
        assert re.match(r"^[A-Z_0-9]+ [-0-9.e+]+ -> [-0-9.e+]+", p.note)
        assert p.usage.cost_usd == 0 and p.usage.input_tokens == 0


def test_constraints_kept_over_many_proposals():
    for p in proposals(11, 400, boldness=1.0):
        c = {k: v.value for k, v in parse_constants(p.source).items()}
        compile(p.source, "train.py", "exec")
        assert c["MODEL_DIM"] % c["N_HEADS"] == 0 and (c["MODEL_DIM"] // c["N_HEADS"]) % 2 == 0
        for name in ("MODEL_DIM", "N_HEADS", "DEVICE_BATCH_SIZE", "SEQ_LEN", "TOTAL_BATCH_SIZE", "DEPTH"):
            assert c[name] >= 1 and c[name] & (c[name] - 1) == 0, (name, c[name])  # powers of two stay so
        assert c["TOTAL_BATCH_SIZE"] % (c["DEVICE_BATCH_SIZE"] * c["SEQ_LEN"]) == 0
        assert 0 < c["ADAM_BETA2"] < 1 and 0 < c["WARMDOWN_FRAC"] < 1
        assert c["SEED"] == 1337 and c["MATRIX_LR"] > 0


def test_boldness_scales_the_step():
    def spread(boldness: float) -> float:
        steps = []
        for p in proposals(5, 300, boldness=boldness):
            for name, old, new in diff_constants(SCRIPT, p.source):
                if name in ("MATRIX_LR", "EMBED_LR"):
                    steps.append(abs(math.log(float(new) / float(old))))
        return statistics.median(steps)
    small, large = spread(0.05), spread(0.8)
    assert small < 0.1 < large and large > 5 * small


def test_no_constants_is_a_clear_proposal_error():
    with pytest.raises(ProposalError, match="no hyperparameter constants"):
        OfflineProposer(seed=0).propose(make_context("def train():\n    pass\n"))


def test_works_on_the_real_baseline_script():
    from pathlib import Path
    baseline = Path(__file__).resolve().parents[2] / "trainer" / "baseline" / "train.py"
    if not baseline.exists():
        pytest.skip("trainer/baseline/train.py not present")
    source = baseline.read_text()
    for p in proposals(2, 50, source=source):
        c = {k: v.value for k, v in parse_constants(p.source).items()}
        assert c["MODEL_DIM"] % c["N_HEADS"] == 0
        compile(p.source, "train.py", "exec")
        assert diff_constants(source, p.source)


def test_a_smaller_total_batch_is_reachable_by_repairing_the_device_batch():
    """TOTAL_BATCH_SIZE 2048 -> 1024 breaks TOTAL % (DEVICE_BATCH_SIZE x SEQ_LEN) with the device
    batch at 32 x 64: the device batch is halved with it, so the mutator does not only ever grow the
    total batch (at a small budget, more optimizer steps is what helps most)."""
    totals = []
    for p in proposals(4, 400):
        c = {k: v.value for k, v in parse_constants(p.source).items()}
        assert c["TOTAL_BATCH_SIZE"] % (c["DEVICE_BATCH_SIZE"] * c["SEQ_LEN"]) == 0
        changed = {n for n, _, _ in diff_constants(SCRIPT, p.source)}
        if c["TOTAL_BATCH_SIZE"] < 2048 and c["SEQ_LEN"] == 64:
            assert "DEVICE_BATCH_SIZE" in changed and c["DEVICE_BATCH_SIZE"] < 32
        totals.append(c["TOTAL_BATCH_SIZE"])
    assert min(totals) < 2048 and max(totals) > 2048
    smaller = sum(t < 2048 for t in totals)
    larger = sum(t > 2048 for t in totals)
    assert smaller > larger / 3  # both directions are drawn (before the repair: never smaller)


def test_repair_touches_one_divisor_and_gives_up_when_none_helps():
    consts = parse_constants(SCRIPT)
    checks = constraints(consts)
    values = {c.name: c.value for c in consts.values()}
    fixed = repair(dict(values, TOTAL_BATCH_SIZE=512), checks, consts, keep={"TOTAL_BATCH_SIZE"})
    assert fixed == dict(values, TOTAL_BATCH_SIZE=512, DEVICE_BATCH_SIZE=8)
    assert repair(values, checks, consts, keep=set()) == values
    # a total batch of 96 cannot be a multiple of a power-of-two device batch x SEQ_LEN 64 by one repair
    assert repair(dict(values, TOTAL_BATCH_SIZE=96), checks, consts, keep={"TOTAL_BATCH_SIZE"}) is None


def test_over_the_compute_cap_and_tried_scripts_are_drawn_again_not_run():
    """With a cap, no proposal's estimated cost exceeds it (DEPTH and MODEL_DIM moves are drawn, some
    over it, none returned); a script the context lists as tried is never proposed again."""
    import dataclasses

    from ralph.space import Space, source_key, within_cap
    base = Space.of(SCRIPT).centre
    p = OfflineProposer(boldness=1.0, seed=9)
    ctx = dataclasses.replace(make_context(), baseline_source=SCRIPT, compute_cap=1.2)
    tried: set[str] = set()
    grew = 0
    for _ in range(150):
        try:
            prop = p.propose(dataclasses.replace(ctx, tried=frozenset(tried)))
        except ProposalError as e:
            assert "no usable mutation" in str(e)
            continue
        ok, ratio = within_cap(Space.of(prop.source).centre, base, 1.2)
        assert ok and f"est. cost {ratio:.2f}x baseline" in prop.note
        key = source_key(prop.source)
        assert key not in tried
        tried.add(key)
        c = {k: v.value for k, v in parse_constants(prop.source).items()}
        grew += c["DEPTH"] > 2 or c["MODEL_DIM"] > 64
    assert len(tried) > 100
    # the cap binds: uncapped, about a third of these draws grow the model past it
    free = OfflineProposer(boldness=1.0, seed=9)
    over = sum(not within_cap(Space.of(free.propose(make_context()).source).centre, base, 1.2)[0] for _ in range(150))
    assert over > 10 and grew < over
