"""scripts/gpu-check (the one command that checks the GPU path) and the climbmix row of scripts/bench/mfu,
on a machine without CUDA: the check says so in one line and exits 2; the bench's climbmix path runs on
the CPU at a small shape."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: scripts/gpu-check runs for real")
def test_gpu_check_without_cuda_is_one_line_and_exit_2():
    run = subprocess.run([str(ROOT / "scripts" / "gpu-check")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: no CUDA GPU here")


@pytest.mark.slow  # trains 2 steps of the climbmix baseline in a fresh process
def test_mfu_bench_runs_the_climbmix_baseline():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "mfu"), "--device", "cpu", "--script",
                          "climbmix", "--depth", "2", "--width", "64", "--heads", "2", "--seq-len", "64",
                          "--batch", "2", "--steps", "2", "--vocab", "512", "--peak-tflops", "0.01"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in run.stdout.splitlines())}
    assert rows["script"] == "climbmix (vocab 512)" and float(rows["tokens_per_s"]) > 0
    # FLOPs per token include the head over the vocabulary: 6 x 64 x 512 for the head alone.
    assert int(rows["flops_per_token"]) > 6 * 64 * 512


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mfu_bench_climbmix_on_the_gpu():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "mfu"), "--script", "climbmix",
                          "--depth", "2", "--width", "256", "--heads", "2", "--seq-len", "512", "--batch", "8",
                          "--steps", "3"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "cuda" in run.stdout


def test_climbmix_pin_offline_is_one_line_and_writes_nothing(tmp_path):
    """scripts/climbmix-pin reads the hub; with the hub offline (no request leaves the machine) it says
    so in one line and leaves the cache as it was."""
    import os

    cache = tmp_path / "cache"
    run = subprocess.run([str(ROOT / "scripts" / "climbmix-pin"), "--cache", str(cache)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: could not read karpathy/climbmix-400b-shuffle")
    assert not cache.exists()
