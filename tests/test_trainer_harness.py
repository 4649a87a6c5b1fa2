"""The read-only harness pieces, in process: loader, curve, evaluation, FLOP counting, devices.

Run: .venv/bin/python -m pytest tests/test_trainer_harness.py -q
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from trainer.harness.curve import MAX_POINTS, CurveRecorder, NanLoss
from trainer.harness.evaluate import bits_per_byte, evaluate_nats
from trainer.harness.flops import measure_flops_per_token
from trainer.harness.loader import BudgetLoader
from trainer.harness.runtime import DeviceError, choose_device

CPU = torch.device("cpu")


def _data(n=5000):
    return torch.arange(n, dtype=torch.int64).remainder(251).to(torch.uint8)


def test_loader_stops_at_budget_and_never_overshoots():
    loader = BudgetLoader(_data(), budget_tokens=1000, seed=0, device=CPU)
    shapes = [x.shape for x, _ in loader.batches(4, 60)]
    assert len(shapes) == 4 and loader.tokens == 960 and loader.progress == pytest.approx(0.96)
    assert list(loader.batches(4, 60)) == []  # the budget is spent for good


def test_loader_targets_are_inputs_shifted_by_one():
    data = _data()
    for x, y in BudgetLoader(data, budget_tokens=400, seed=3, device=CPU).batches(2, 50):
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert ((y.remainder(251) - x.remainder(251)).remainder(251) == 1).all()


def test_loader_is_deterministic_per_seed():
    def draw(seed):
        return [x for x, _ in BudgetLoader(_data(), budget_tokens=640, seed=seed, device=CPU).batches(2, 32)]
    assert all(torch.equal(a, b) for a, b in zip(draw(1), draw(1)))
    assert not all(torch.equal(a, b) for a, b in zip(draw(1), draw(2)))


def test_spot_check_loader_keeps_the_full_schedule():
    loader = BudgetLoader(_data(), budget_tokens=1000, stop_tokens=500, seed=0, device=CPU)
    seen = [loader.progress for _ in loader.batches(1, 100)]
    assert loader.tokens == 500 and seen[-1] == pytest.approx(0.5)  # progress against the full budget
    full = BudgetLoader(_data(), budget_tokens=1000, seed=0, device=CPU)
    a = [x for x, _ in BudgetLoader(_data(), budget_tokens=1000, stop_tokens=500, seed=0, device=CPU).batches(1, 100)]
    b = [x for x, _ in full.batches(1, 100)][:5]
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_loader_rejects_bad_shapes():
    loader = BudgetLoader(_data(100), budget_tokens=1000, seed=0, device=CPU)
    with pytest.raises(ValueError, match="exceeds the training split"):
        next(loader.batches(1, 200))
    with pytest.raises(ValueError, match="positive"):
        next(loader.batches(0, 10))


def test_curve_has_at_most_64_points_at_budget_marks():
    rec = CurveRecorder(10_000)
    for tokens in range(7, 10_010, 7):  # the last log passes the final mark
        rec.log(torch.tensor(2.0), tokens)
    assert len(rec.curve) == MAX_POINTS
    assert rec.curve[0] == [161, "2.000000"]  # first log at or past 10000 // 64 = 156
    assert all(isinstance(t, int) and isinstance(v, str) for t, v in rec.curve)


def test_curve_coarse_logging_still_bounded():
    rec = CurveRecorder(100)
    for tokens in (50, 100):
        rec.log(1.5, tokens)
    assert rec.curve == [[50, "1.500000"], [100, "1.500000"]]


def test_nan_loss_fails_fast():
    rec = CurveRecorder(10_000)
    rec.log(1.0, 10)
    with pytest.raises(NanLoss):
        rec.log(torch.tensor(float("nan")), 20)  # not at a mark: checked anyway on CPU
    with pytest.raises(NanLoss):
        CurveRecorder(10).log(float("inf"), 10)


class Uniform(nn.Module):
    def forward(self, idx):
        return torch.zeros(*idx.shape, 256)


class Bigram(nn.Module):
    """Knows the data's rule exactly: next byte = previous + 1 (mod 251)."""

    def forward(self, idx):
        logits = torch.full((*idx.shape, 256), -1e4)
        logits.scatter_(-1, ((idx + 1) % 251).unsqueeze(-1), 0.0)
        return logits


def test_uniform_model_scores_exactly_eight_bits_per_byte():
    val = _data(1000)
    nats, count = evaluate_nats(Uniform(), val, context=64, batch_size=4, device=CPU)
    assert count == 999  # every byte but the first is predicted once, the tail window included
    assert bits_per_byte(nats, count) == pytest.approx(8.0, abs=1e-5)  # float32 log-softmax


def test_perfect_model_scores_zero_except_window_starts():
    nats, count = evaluate_nats(Bigram(), _data(1000), context=100, batch_size=3, device=CPU)
    assert bits_per_byte(nats, count) == pytest.approx(0.0, abs=1e-6)


def test_evaluation_rejects_wrong_logit_shapes():
    class Wrong(nn.Module):
        def forward(self, idx):
            return torch.zeros(idx.size(0), 256)
    with pytest.raises(ValueError, match="logits of shape"):
        evaluate_nats(Wrong(), _data(100), context=16, batch_size=2, device=CPU)


def test_flops_are_counted_and_scale_with_width():
    def mlp(width):
        return nn.Sequential(nn.Embedding(256, width), nn.Linear(width, 256, bias=False))
    small = measure_flops_per_token(mlp(16), batch_size=2, seq_len=8, device=CPU)
    big = measure_flops_per_token(mlp(32), batch_size=2, seq_len=8, device=CPU)
    # One (tokens x w) @ (w x 256) matmul: 2*w*256 per token forward; backward computes the weight
    # grad and the input grad (the embedding output needs one), each as large again.
    assert small == 3 * 2 * 16 * 256
    assert big == 2 * small


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError, match="unknown device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            choose_device("cuda")
