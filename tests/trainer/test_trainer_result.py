"""The pure parts of an experiment's outcome: the protocol result built from the trained weights and
the score (experiment._result: the floor, NaN, FLOPs from the weights), and curve comparison. No
process runs here, so unlike tests/trainer/test_trainer_experiment.py nothing is marked slow.

    .venv/bin/python -m pytest tests/trainer/test_trainer_result.py -q
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from protocol.schemas import validate_result
from trainer import experiment as experiment_module
from trainer.experiment import compare_curves
from trainer.harness import tensorfile
from trainer.tasks import builtin_tasks

TINY = builtin_tasks()["tiny"]


def _trained(tmp_path, state: dict) -> "experiment_module._Trained":
    tensorfile.save(state, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    params = tensorfile.parameter_count(tensorfile.check(data, max_bytes=len(data)))  # as _read_weights counts
    return experiment_module._Trained(curve=[[1024, "5.000000"]], wall_s=1.0, cpu_s=None, device="cpu",
                                      torch="x", sandbox="bwrap", weights=data, params=params)


def test_a_val_bpb_below_the_floor_is_refused(tmp_path):
    trained = _trained(tmp_path, {"w": torch.zeros(10, 3), "step": torch.zeros(5, dtype=torch.int64)})
    floor = TINY.floor_bpb
    assert TINY.entropy_bpb - 0.05 < floor < TINY.entropy_bpb + 0.05
    nats = 0.5 * math.log(2) * 1000  # 0.5 bits per byte
    with pytest.raises(experiment_module._Crash, match="below the floor"):
        experiment_module._result(TINY, trained, nats, 1000, seed=0, budget=1024)
    with pytest.raises(experiment_module._Crash, match="nan loss"):
        experiment_module._result(TINY, trained, float("nan"), 1000, seed=0, budget=1024)
    # Just above the floor is a result; its FLOPs come from the weights' floating elements.
    ok = experiment_module._result(TINY, trained, (floor + 0.001) * math.log(2) * 1000, 1000, seed=3, budget=1024)
    validate_result(ok)
    assert float(ok["val_bpb"]) == pytest.approx(floor + 0.001, abs=1e-6)
    assert ok["flops_per_token"] == 6 * 30 and ok["seed"] == 3 and ok["tokens"] == 1024
    assert ok["sandbox"] == "bwrap" and "cpu_s" not in ok
    assert "peak_mem_mb" not in ok  # no report from the process: no figure
    reported = experiment_module._result(TINY, dataclasses.replace(trained, peak_mem_mb=612), (floor + 0.001) * math.log(2) * 1000,
                                         1000, seed=3, budget=1024)
    assert validate_result(reported)["peak_mem_mb"] == 612


def test_a_peak_memory_report_is_kept_only_when_plausible():
    assert experiment_module._peak_mem(612) == 612 and experiment_module._peak_mem(0) == 0
    for junk in (-1, 1 << 24, 1.5, "612", True, None, [612]):
        assert experiment_module._peak_mem(junk) is None


def test_compare_curves():
    ref = [[10, "2.000000"], [20, "1.500000"]]
    assert compare_curves([[10, "2.005000"]], ref, 0.01)[0]
    ok, reason = compare_curves([[10, "2.000000"], [20, "1.600000"]], ref, 0.01)
    assert not ok and "at 20 tokens" in reason
    assert not compare_curves([[15, "2.0"]], ref, 0.01)[0]
