"""Offline mutation proposer and the hyperparameter block parser.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_offline.py"""
from __future__ import annotations

import math
import re
import statistics

import pytest

from ralph.hyperparams import diff_constants, parse_constants, set_constants
from ralph.proposers import OfflineProposer, ProposalError
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
        assert 1 <= len(changes) <= 3
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
