"""Ralph memory: full history vs strategy note, depth, persistence across restarts.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_memory.py"""
from __future__ import annotations

import json

import pytest

from ralph.memory import Memory, Record, summarize


def rec(step, changes, val, outcome, kept=False):
    note = ", ".join(f"{n} {a} -> {b}" for n, a, b in changes)
    return Record(step, "baseline", 2.0, note, [list(c) for c in changes], val, outcome, kept)


def test_full_memory_survives_restart_and_is_bounded_by_depth(tmp_path):
    path = tmp_path / "ralph" / "mem.json"
    m = Memory.load(path, "full", memory_depth=3)
    for i in range(5):
        m.add(rec(m.next_step, [("MATRIX_LR", "0.02", f"0.0{i + 3}")], 2.0 - i / 100, "improved", kept=True))
    m.remember_measurement("ab" * 32, 1.0, 1.98)
    again = Memory.load(path, "full", memory_depth=3)
    assert again.records == m.records and again.next_step == 6
    assert again.measurement("ab" * 32, 1.0) == 1.98 and again.measurement("ab" * 32, 0.5) is None
    lines = again.render().splitlines()
    assert len(lines) == 3 and lines[0].startswith("#3 [KEPT] MATRIX_LR 0.02 -> 0.05")
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]  # atomic write left no temp file


def test_skipped_steps_are_kept_but_not_shown(tmp_path):
    m = Memory.load(tmp_path / "m.json", "full", 10)
    m.add(rec(1, [("EMBED_LR", "0.1", "0.2")], None, "skipped"))
    m.add(rec(2, [("EMBED_LR", "0.1", "0.05")], 2.1, "worse"))
    assert m.render().count("\n") == 0 and "#2 [worse]" in m.render() and "val_bpb 2.100000" in m.render()
    assert m.since_rewrite == 1


def test_strategy_memory_rewrites_every_n_and_persists(tmp_path):
    path = tmp_path / "s.json"
    m = Memory.load(path, "strategy", memory_depth=10)
    m.add(rec(1, [("MATRIX_LR", "0.02", "0.03")], 1.9, "improved", kept=True))
    assert not m.due_for_rewrite(2) and "#1 [KEPT]" in m.render()
    m.add(rec(2, [("EMBED_LR", "0.1", "0.2")], None, "crashed"))
    assert m.due_for_rewrite(2)
    m.set_strategy(summarize(m.records, m.strategy, 10))
    assert m.since_rewrite == 0 and m.render().startswith("Strategy note:\n2 experiments, 1 kept, best val_bpb 1.900000")
    assert "#1" not in m.render()  # folded into the note
    restored = Memory.load(path, "strategy", memory_depth=10)
    assert restored.strategy == m.strategy and restored.since_rewrite == 0


def test_deterministic_summary_tallies_directions():
    records = [rec(1, [("MATRIX_LR", "0.02", "0.03")], 1.9, "improved", True),
               rec(2, [("MATRIX_LR", "0.03", "0.04")], 1.85, "improved", True),
               rec(3, [("EMBED_LR", "0.1", "0.05")], 2.1, "worse"),
               rec(4, [("EMBED_LR", "0.1", "0.06")], None, "crashed")]
    text = summarize(records)
    assert text == summarize(list(records))  # deterministic
    lines = text.splitlines()
    assert lines[0] == "4 experiments, 2 kept, best val_bpb 1.850000."
    assert lines[1] == "- MATRIX_LR up: kept 2, worse 0, crashed 0 (promising)"
    assert lines[2] == "- EMBED_LR down: kept 0, worse 1, crashed 1 (avoid)"
    assert len(summarize(records, depth=2).splitlines()) == 2


def test_corrupt_memory_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*move it aside"):
        Memory.load(path)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="unsupported memory file version"):
        Memory.load(path)
