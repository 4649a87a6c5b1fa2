"""scripts/bench/noise --write HOME: the measured sigma lands in HOME/noise.json, where the node
reads it (node/settings.py load_noise, store/stats.py NoiseTable), and a second measurement at
another budget keeps the first.

    .venv/bin/python -m pytest tests/node/test_noise_bench.py -q
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.stats import NoiseTable
from trainer.tasks import resolve_task

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NOISE = ROOT / "scripts" / "bench" / "noise"


def measure(home: Path, cache: Path, scale: str) -> str:
    out = subprocess.run([sys.executable, str(NOISE), "--seeds", "2", "--budget-scale", scale, "--device", "cpu",
                          "--cache-dir", str(cache), "--write", str(home)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_write_merges_the_sigma_into_the_homes_noise_table(tmp_path):
    tiny = resolve_task("tiny")
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    other = {"f" * 64: {"cuda:H100": {"sigma": "0.001000", "note": "kept as written"}}}
    (home / "noise.json").write_text(json.dumps(other))

    first = measure(home, cache, "0.02")
    tokens_a = int(tiny.budget_tokens * 0.02)
    assert f"at {tokens_a} tokens" in first
    data = json.loads((home / "noise.json").read_text())
    entry = data[tiny.id]["cpu"]
    assert entry["tokens"] == tokens_a and entry["seeds"] == 2 and entry["torch"]
    assert float(entry["mean"]) > 0 and "--budget-scale 0.02" in entry["command"]
    assert data["f" * 64] == other["f" * 64]  # another task's entry, its extra fields too
    table = NoiseTable.load(home / "noise.json")
    sigma_a = float(entry["sigma"])
    assert sigma_a > 0
    assert table.sigma(tiny.id, "cpu", float(tiny.body["tolerance"]), tokens_a) == sigma_a
    assert table.sigma("f" * 64, "cuda:H100", 0.0) == 0.001

    measure(home, cache, "0.01")  # a second budget: its own entry, the first one kept
    tokens_b = int(tiny.budget_tokens * 0.01)
    table = NoiseTable.load(home / "noise.json")
    entries = json.loads((home / "noise.json").read_text())[tiny.id]["cpu"]
    assert sorted(e["tokens"] for e in entries) == [tokens_b, tokens_a]
    assert table.sigma(tiny.id, "cpu", float(tiny.body["tolerance"]), tokens_a) == sigma_a
    assert table.sigma(tiny.id, "cpu", float(tiny.body["tolerance"]), tokens_b) > 0
    assert table.sigma("f" * 64, "cuda:H100", 0.0) == 0.001


def test_merge_replaces_the_entry_of_the_same_budget_only():
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("bench_noise", str(NOISE))
    spec = importlib.util.spec_from_loader("bench_noise", loader)
    bench = importlib.util.module_from_spec(spec)
    loader.exec_module(bench)
    table = {"t": {"cpu": [{"sigma": "0.1", "tokens": 10}, {"sigma": "0.2"}]}}
    merged = bench.merge_entry(table, "t", "cpu", {"sigma": "0.3", "tokens": 10})
    assert merged["t"]["cpu"] == [{"sigma": "0.2"}, {"sigma": "0.3", "tokens": 10}]
    assert table["t"]["cpu"][0]["sigma"] == "0.1"  # the input is not changed
    merged = bench.merge_entry({}, "t", "cpu", {"sigma": "0.3", "tokens": 10})
    assert merged == {"t": {"cpu": {"sigma": "0.3", "tokens": 10}}}
