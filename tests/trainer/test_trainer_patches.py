"""Unified-diff patches: make_patch/apply_patch round trips and strict refusal.

Run: .venv/bin/python -m pytest tests/trainer/test_trainer_patches.py -q
"""
from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.patches import PatchError, apply_patch, make_patch, source_sha256
from trainer.tasks import builtin_tasks

BASE = builtin_tasks()["tiny"].source


def test_lr_patch_round_trip():
    new = BASE.replace("MATRIX_LR = 0.03", "MATRIX_LR = 0.05")
    patch = make_patch(BASE, new)
    assert patch.startswith("--- a/train.py\n+++ b/train.py\n@@ ")
    assert "-MATRIX_LR = 0.03" in patch and "+MATRIX_LR = 0.05" in patch
    assert apply_patch(BASE, patch) == new
    assert source_sha256(new) != source_sha256(BASE)
    assert apply_patch(BASE, "") == BASE and make_patch(BASE, BASE) == ""


def test_patch_with_bad_context_is_refused():
    patch = make_patch(BASE, BASE.replace("DEPTH = 2", "DEPTH = 3"))
    drifted = BASE.replace("MODEL_DIM = 64", "MODEL_DIM = 96")  # a context line changed
    with pytest.raises(PatchError, match=r"does not apply at line \d+: expected 'MODEL_DIM = 64"):
        apply_patch(drifted, patch)


def test_patch_at_wrong_position_is_not_fuzzed():
    patch = make_patch(BASE, BASE.replace("DEPTH = 2", "DEPTH = 3"))
    shifted = "# one more line on top\n" + BASE
    with pytest.raises(PatchError, match="does not apply"):
        apply_patch(shifted, patch)


@pytest.mark.parametrize("garbage, message", [
    ("hello world\n", "expected a diff header or hunk"),
    ("--- a/x\n+++ b/x\n", "no hunks"),
    ("@@ -1,2 +1,2 @@\n-a\n", "truncated"),
    ("@@ nonsense @@\n", "hunk header"),
    ("@@ -1 +1 @@\n*a\n", "must start with"),
    ("@@ -900,1 +900,1 @@\n-x\n+y\n", "beyond the end"),
])
def test_garbage_patches_raise_patch_error(garbage, message):
    with pytest.raises(PatchError, match=message):
        apply_patch(BASE, garbage)


def test_overlapping_hunks_are_refused():
    one = "@@ -2,1 +2,1 @@\n-b\n+B\n"
    two = "@@ -1,1 +1,1 @@\n-a\n+A\n"
    assert apply_patch("a\nb\n", two + one) == "A\nB\n"
    with pytest.raises(PatchError, match="overlap"):
        apply_patch("a\nb\n", one + two)


def test_missing_final_newline_both_ways():
    for old, new in [("a\nb", "a\nc"), ("a\nb\n", "a\nb"), ("a\nb", "a\nb\n"), ("", "x"), ("x", "")]:
        assert apply_patch(old, make_patch(old, new)) == new


@pytest.mark.skipif(shutil.which("diff") is None, reason="GNU diff not installed")
def test_applies_gnu_diff_output(tmp_path):
    new = BASE.replace("SOFTCAP = 15.0", "SOFTCAP = 30.0").replace("def rms_norm(x):", "def rms_norm(x):\n    # note")
    (tmp_path / "a.py").write_text(BASE)
    (tmp_path / "b.py").write_text(new)
    diff = subprocess.run(["diff", "-u", "a.py", "b.py"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert apply_patch(BASE, diff) == new


lines = st.lists(st.sampled_from(["a", "b", "c", "", "x = 1", "  y"]), max_size=30)


@settings(max_examples=200, deadline=None)
@given(lines, lines, st.booleans(), st.booleans())
def test_round_trip_property(old_lines, new_lines, old_nl, new_nl):
    old = "\n".join(old_lines) + ("\n" if old_nl and old_lines else "")
    new = "\n".join(new_lines) + ("\n" if new_nl and new_lines else "")
    assert apply_patch(old, make_patch(old, new)) == new
