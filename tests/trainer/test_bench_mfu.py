"""scripts/bench/mfu: the GPU throughput/MFU bench, run here on its CPU path at a small shape (CI has no GPU)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench" / "mfu"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)


def rows(stdout: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in stdout.splitlines() if ":" in line)}


@pytest.mark.slow  # trains 3 steps in a fresh process: 3 s
def test_cpu_path_reports_throughput_and_mfu_against_the_given_peak():
    run = bench("--device", "cpu", "--depth", "1", "--width", "32", "--heads", "2", "--seq-len", "32",
                "--batch", "4", "--steps", "3", "--peak-tflops", "0.01")
    assert run.returncode == 0, run.stderr
    out = rows(run.stdout)
    assert out["device"] == "cpu" and out["timed_steps"] == "3"
    tokens_per_s, flops = float(out["tokens_per_s"]), int(out["flops_per_token"])
    assert tokens_per_s > 0 and flops > 0
    mfu = float(out["mfu"].rstrip("%"))
    assert mfu == pytest.approx(100 * flops * tokens_per_s / 0.01e12, rel=0.01, abs=0.06)


@pytest.mark.slow  # two bench processes, one training step each: 5 s
def test_flops_grow_with_the_model():
    small = rows(bench("--device", "cpu", "--depth", "1", "--width", "32", "--heads", "2", "--seq-len", "32",
                       "--batch", "2", "--steps", "1", "--peak-tflops", "1").stdout)
    large = rows(bench("--device", "cpu", "--depth", "2", "--width", "64", "--heads", "2", "--seq-len", "32",
                       "--batch", "2", "--steps", "1", "--peak-tflops", "1").stdout)
    assert int(large["flops_per_token"]) > 2 * int(small["flops_per_token"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the bench runs for real")
def test_without_cuda_the_gpu_bench_says_so_in_one_line():
    run = bench()
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: device cuda requested")


def test_bad_shape_is_one_line():
    run = bench("--device", "cpu", "--width", "30", "--heads", "4")
    assert run.returncode == 2 and run.stderr.startswith("error: --width 30 is not a multiple")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bench_at_a_small_shape():
    run = bench("--depth", "2", "--width", "128", "--heads", "2", "--seq-len", "256", "--batch", "8", "--steps", "3")
    assert run.returncode == 0, run.stderr
    assert rows(run.stdout)["device"].startswith("cuda")
