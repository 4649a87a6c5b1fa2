"""The read-only harness pieces and the trusted scorer, in process: loader, curve, scorer, FLOP
counting, devices.

Run: .venv/bin/python -m pytest tests/trainer/test_trainer_harness.py -q
"""
from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainer.harness.curve import MAX_POINTS, CurveRecorder, NanLoss
from trainer.harness.flops import measure_flops_per_token
from trainer.harness.loader import BudgetLoader
from trainer.harness.runtime import DeviceError, choose_device
from trainer.scorer import Batch, Scorer, ScoreError, bits_per_byte, cross_entropy_rows
from trainer.stream import draw_stream

CPU = torch.device("cpu")


def _data(n=5000):
    return torch.arange(n, dtype=torch.int64).remainder(251).to(torch.uint8)


def _stream(budget, seed=0):
    """The run's stream as the runner draws it (budget + 1 tokens) from a split of rule-following bytes."""
    split = _data(20_000).numpy().tobytes()
    raw = draw_stream(split, budget_tokens=budget, seed=seed, chunk=64)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def test_loader_stops_at_budget_and_never_overshoots():
    loader = BudgetLoader(_stream(1000), budget_tokens=1000, device=CPU)
    shapes = [x.shape for x, _ in loader.batches(4, 60)]
    assert len(shapes) == 4 and loader.tokens == 960 and loader.progress == pytest.approx(0.96)
    assert all(shape == (4, 60) for shape in shapes)
    assert list(loader.batches(4, 60)) == []  # the budget is spent for good
    exact = BudgetLoader(_stream(1000), budget_tokens=1000, device=CPU)
    assert len(list(exact.batches(2, 50))) == 10 and exact.tokens == 1000 and exact.progress == 1.0


def test_loader_never_reads_past_its_stream():
    # A stream shorter than the budget (not what the runner hands over) ends the batches, never wraps.
    loader = BudgetLoader(_data(501), budget_tokens=1000, device=CPU)
    assert len(list(loader.batches(1, 100))) == 5 and loader.tokens == 500
    short = BudgetLoader(_data(500), budget_tokens=1000, device=CPU)  # no target for the 500th token
    assert len(list(short.batches(1, 100))) == 4 and short.tokens == 400


def test_loader_targets_are_inputs_shifted_by_one():
    batches = list(BudgetLoader(_stream(400, seed=3), budget_tokens=400, device=CPU).batches(2, 50))
    assert batches
    for x, y in batches:
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
    # The first row lies inside the stream's first chunk of the split, where next byte = previous + 1.
    x, y = batches[0]
    assert ((y[0] - x[0]).remainder(251) == 1).all()


def test_loader_rows_continue_the_stream():
    stream = _stream(1000, seed=5)
    loader = BudgetLoader(stream, budget_tokens=1000, device=CPU)
    xs, ys = zip(*loader.batches(3, 40))
    inputs = torch.cat([x.reshape(-1) for x in xs])
    targets = torch.cat([y.reshape(-1) for y in ys])
    # Row after row, batch after batch: each budget token is trained on once, in the stream's order.
    assert torch.equal(inputs, stream[:loader.tokens].long())
    assert torch.equal(targets, stream[1:loader.tokens + 1].long())
    assert loader.tokens == 960


def test_loader_is_deterministic_per_seed():
    # The loader has no seed of its own: the runner's stream carries it (trainer/stream.py).
    def draw(seed):
        return [x for x, _ in BudgetLoader(_stream(640, seed), budget_tokens=640, device=CPU).batches(2, 32)]
    assert all(torch.equal(a, b) for a, b in zip(draw(1), draw(1)))
    assert not all(torch.equal(a, b) for a, b in zip(draw(1), draw(2)))


def test_spot_check_loader_keeps_the_full_schedule():
    loader = BudgetLoader(_stream(1000), budget_tokens=1000, stop_tokens=500, device=CPU)
    seen = [loader.progress for _ in loader.batches(1, 100)]
    assert loader.tokens == 500 and seen[-1] == pytest.approx(0.5)  # progress against the full budget
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    full = BudgetLoader(_stream(1000), budget_tokens=1000, device=CPU)
    a = [x for x, _ in BudgetLoader(_stream(1000), budget_tokens=1000, stop_tokens=500, device=CPU).batches(1, 100)]
    b = [x for x, _ in full.batches(1, 100)]
    assert len(a) == 5 and len(b) == 10
    assert all(torch.equal(p, q) for p, q in zip(a, b[:5]))
    # A stop past the budget is the budget.
    over = BudgetLoader(_stream(1000), budget_tokens=1000, stop_tokens=5000, device=CPU)
    assert len(list(over.batches(1, 100))) == 10 and over.tokens == 1000


def test_loader_reports_each_batch():
    seen = []
    loader = BudgetLoader(_stream(300), budget_tokens=300, device=CPU, on_batch=seen.append)
    list(loader.batches(2, 50))
    assert seen == [100, 200, 300] and loader.batch_shape == (2, 50)


def test_loader_rejects_bad_shapes():
    loader = BudgetLoader(_stream(1000), budget_tokens=1000, device=CPU)
    with pytest.raises(ValueError, match="exceeds the budget"):
        next(loader.batches(1, 1001))
    with pytest.raises(ValueError, match="exceeds the budget"):
        next(loader.batches(11, 100))
    spot = BudgetLoader(_stream(1000), budget_tokens=1000, stop_tokens=100, device=CPU)
    with pytest.raises(ValueError, match="exceeds the budget"):
        next(spot.batches(2, 51))
    for b, t in ((0, 10), (10, 0), (-1, 10), (1, -5)):
        with pytest.raises(ValueError, match="positive"):
            next(loader.batches(b, t))
    assert loader.tokens == 0


def test_loader_takes_only_a_flat_byte_stream():
    with pytest.raises(ValueError, match="1-D uint8"):
        BudgetLoader(_data().long(), budget_tokens=100, device=CPU)
    with pytest.raises(ValueError, match="1-D uint8"):
        BudgetLoader(_data(1000).reshape(10, 100), budget_tokens=100, device=CPU)


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


# --- the trusted scorer (trainer/scorer.py), driven in process by fake model processes ---------------
#
# A "model" here answers a batch's inputs, (rows, context) uint8, with (rows, context, 256) float32
# logits, as a sandboxed model process does through its shared memory.

V = 256


def _rule_bytes(n: int) -> bytes:
    """Bytes that follow one rule: next byte = previous + 1 (mod 251)."""
    return bytes(i % 251 for i in range(n))


def _train_bytes(n: int = 20_000) -> bytes:
    return np.random.default_rng(123).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def _uniform(x: np.ndarray) -> np.ndarray:
    return np.zeros((*x.shape, V), dtype=np.float32)


def _bigram(x: np.ndarray) -> np.ndarray:
    """Knows the data's rule exactly; each position reads its own byte only."""
    logits = np.full((*x.shape, V), -1e4, dtype=np.float32)
    np.put_along_axis(logits, ((x.astype(np.int64) + 1) % 251)[..., None], 0.0, axis=-1)
    return logits


_TABLE = np.random.default_rng(7).standard_normal((V, V)).astype(np.float32)


def _causal(x: np.ndarray) -> np.ndarray:
    """An honest model that uses its whole past: each position's byte plus the running mean of the
    bytes up to it, computed row by row (so bit-identical whatever the batch holds)."""
    past = np.cumsum(_TABLE[x], axis=1) / np.arange(1, x.shape[1] + 1, dtype=np.float32)[:, None]
    return (_TABLE[x] + 0.5 * past).astype(np.float32)


def _lookahead(x: np.ndarray) -> np.ndarray:
    """Reads the byte it predicts: position t is given byte t + 1."""
    logits = _causal(x)
    logits[:, :-1] += 10.0 * _TABLE[x[:, 1:]]
    return logits


def _mixing(x: np.ndarray) -> np.ndarray:
    """Mixes the windows of a batch (rolls over the batch dimension)."""
    return (_causal(x) + 0.5 * np.roll(_causal(x), 1, axis=0)).astype(np.float32)


_NOISE = np.random.default_rng()


def _noisy(x: np.ndarray) -> np.ndarray:
    """Random in eval mode."""
    return (_causal(x) + 0.01 * _NOISE.standard_normal((*x.shape, V))).astype(np.float32)


class _Stateful:
    """Keeps state between batches: adds the mean of every input it was shown before (test-time
    training on the validation inputs, in its simplest form)."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        shift = np.mean([row.mean() for row in self.seen]) / 255 if self.seen else 0.0
        self.seen.extend(x.astype(np.float64))
        return (_causal(x) + np.float32(shift)).astype(np.float32)


def _scorer(val: bytes, *, context: int = 32, rows: int = 8, seed: int | None = 0, **kw) -> Scorer:
    rng = random.Random(seed) if seed is not None else None
    return Scorer(val, _train_bytes(), context=context, rows=rows, rng=rng, **kw)


def _answer_all(scorer: Scorer, models) -> list[list[Batch]]:
    """Every batch of every process's queue, in the order the runner asks them (each process pops
    from its queue's end, the two interleaved), answered by that process's model."""
    queues = scorer.plan()
    if callable(models):
        models = [models] * len(queues)
    pending = [list(q) for q in queues]
    while any(pending):
        for p, queue in enumerate(pending):
            if queue:
                batch = queue.pop()
                logits = models[p](batch.inputs.copy())
                assert logits.shape == (scorer.rows, scorer.context, V)
                scorer.take(batch, np.array(logits, dtype=np.float32))
    return queues


def _score(val: bytes, models, **kw) -> tuple[float, int, Scorer]:
    scorer = _scorer(val, **kw)
    _answer_all(scorer, models)
    nats, count = scorer.result()
    return nats, count, scorer


def test_uniform_model_scores_exactly_eight_bits_per_byte():
    nats, count, scorer = _score(_rule_bytes(5000), _uniform, context=64, rows=4)
    assert scorer.window_count == 5000 // 65
    assert count == scorer.window_count * 64  # each window's bytes 1..context are predicted once
    assert bits_per_byte(nats, count) == pytest.approx(8.0, abs=1e-9)


def test_perfect_model_scores_zero():
    # Every predicted byte has its predecessor in its own window: a model that knows the rule from
    # one byte of context scores 0, the first byte of each window included.
    nats, count, _ = _score(_rule_bytes(5000), _bigram, context=100, rows=3)
    assert count == (5000 // 101) * 100
    assert bits_per_byte(nats, count) == pytest.approx(0.0, abs=1e-9)


def test_the_score_is_the_cross_entropy_of_each_window():
    val = _rule_bytes(3000)
    nats, count, scorer = _score(val, _causal, context=32, rows=8)
    windows = np.frombuffer(val, dtype=np.uint8)[: scorer.window_count * 33].reshape(-1, 33)
    logits = _causal(windows[:, :-1]).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    expected = -np.take_along_axis(logp, windows[:, 1:, None].astype(np.int64), -1).sum()
    assert nats == pytest.approx(expected, rel=1e-9)
    assert count == windows.shape[0] * 32


def test_cross_entropy_rows():
    logits = np.zeros((2, 3, V), dtype=np.float32)
    logits[1, :, 7] = 1000.0  # certain of byte 7
    targets = np.array([[0, 1, 2], [7, 7, 7]], dtype=np.uint8)
    out = cross_entropy_rows(logits, targets)
    assert out.dtype == np.float64 and out.shape == (2,)
    assert out[0] == pytest.approx(3 * math.log(256), rel=1e-12) and out[1] == pytest.approx(0.0, abs=1e-12)


def test_scores_are_bit_identical_whatever_the_plan():
    val = _rule_bytes(4000)
    a = _scorer(val, seed=1)
    b = _scorer(val, seed=2)
    c = _scorer(val, seed=None)  # the operating system's randomness, as in a real run
    plans = [_answer_all(scorer, _causal) for scorer in (a, b, c)]
    assert [[b.windows for b in q] for q in plans[0]] != [[b.windows for b in q] for q in plans[1]]
    assert a.nats.tobytes() == b.nats.tobytes() == c.nats.tobytes()
    assert a.result() == b.result() == c.result()


def test_an_honest_model_passes_the_probes():
    for seed in range(3):
        _score(_rule_bytes(6000), _causal, seed=seed, probe_share=1.0)
        _score(_rule_bytes(6000), _bigram, seed=seed, probe_share=1.0)


def test_a_model_that_looks_ahead_sees_the_future():
    with pytest.raises(ScoreError, match="sees the future"):
        _score(_rule_bytes(6000), _lookahead, probe_share=1.0)


def test_a_model_that_looks_ahead_at_the_last_byte_only_sees_the_future():
    def last(x):
        logits = _causal(x)
        logits[:, -2] += _TABLE[x[:, -1]]
        return logits
    with pytest.raises(ScoreError, match="sees the future"):
        _score(_rule_bytes(20_000), last, probe_share=1.0)


def test_differences_within_the_tolerance_pass():
    def jitter(x):
        return (_causal(x) + 1e-6 * _NOISE.standard_normal((*x.shape, V))).astype(np.float32)
    _score(_rule_bytes(6000), jitter, probe_share=1.0, tolerance=1e-4)
    with pytest.raises(ScoreError, match="change with what else it is asked"):
        _score(_rule_bytes(6000), jitter, probe_share=1.0, tolerance=1e-8)


@pytest.mark.parametrize("model", [_mixing, _noisy], ids=["mixes rows", "random"])
def test_a_model_whose_answer_depends_on_the_rest_of_the_batch_is_named(model):
    with pytest.raises(ScoreError, match="change with what else it is asked"):
        _score(_rule_bytes(6000), model, probe_share=1.0)


def test_a_model_that_keeps_state_between_batches_is_named():
    # One model per process: the two processes are separate, each with its own history.
    with pytest.raises(ScoreError, match="change with what else it is asked"):
        _score(_rule_bytes(6000), [_Stateful(), _Stateful()], probe_share=1.0)


def test_no_process_is_shown_a_window_twice():
    # A process that saw both halves of a probe's pair could replay its first answer; one that
    # answers a second look differently would be caught for it. Neither ever gets a second look.
    class Remembers:
        def __init__(self):
            self.seen: set[bytes] = set()
            self.repeats = 0

        def __call__(self, x):
            out = _causal(x)
            for i, row in enumerate(x):
                if row[:16].tobytes() in self.seen:
                    self.repeats += 1
                    out[i] += 1.0  # a second look at a window: answer differently
                self.seen.add(row[:16].tobytes())
            return out
    models = [Remembers(), Remembers()]
    val = np.random.default_rng(1).integers(0, 256, 8000, dtype=np.uint8).tobytes()
    scorer = _scorer(val, probe_share=1.0)
    queues = _answer_all(scorer, models)
    scorer.result()
    real = [{w for b in q for w in b.windows if w >= 0} for q in queues]
    probed = [{w for b in q for w, _ in b.probes if w >= 0} for q in queues]
    assert probed[0] and probed[1]
    assert not real[0] & probed[0] and not real[1] & probed[1]
    assert models[0].repeats == models[1].repeats == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_cannot_be_scored(bad):
    scorer = _scorer(_rule_bytes(3000))
    batch = scorer.plan()[0][0]
    logits = _uniform(batch.inputs)
    logits[0, 3, 5] = bad
    with pytest.raises(ScoreError, match="non-finite"):
        scorer.take(batch, logits)


def test_a_result_needs_every_window_answered():
    scorer = _scorer(_rule_bytes(3000))
    queues = scorer.plan()
    for batch in queues[0]:
        scorer.take(batch, _uniform(batch.inputs))
    with pytest.raises(ScoreError, match="not every validation window"):
        scorer.result()


def test_a_split_too_short_for_one_window_is_refused():
    with pytest.raises(ScoreError, match="no window"):
        Scorer(b"x" * 32, _train_bytes(), context=32, rows=4)
    with pytest.raises(ScoreError, match="training split"):
        Scorer(b"x" * 33, b"y" * 32, context=32, rows=4)
    assert Scorer(b"x" * 33, b"y" * 33, context=32, rows=4).window_count == 1


@pytest.mark.parametrize("n, rows, share", [(5000, 8, 0.5), (5000, 8, 1.0), (3000, 7, 0.25), (330, 4, 0.5),
                                            (33 * 3, 8, 1.0), (33, 4, 0.5), (5000, 8, 0.0)])
def test_the_plan_never_shows_a_process_what_it_predicts(n, rows, share):
    val = _rule_bytes(n)
    scorer = _scorer(val, context=32, rows=rows, probe_share=share)
    windows = scorer.windows
    queues = scorer.plan()
    owner: dict[int, int] = {}
    asked: dict[int, int] = {}
    for p, queue in enumerate(queues):
        for batch in queue:
            assert batch.process == p
            assert batch.inputs.shape == (rows, 32) and batch.inputs.dtype == np.uint8  # all batches alike
            if batch.real:
                assert len(batch.windows) == rows
                for row, w in zip(batch.inputs, batch.windows):
                    if w < 0:
                        continue  # a filler row, from the training split
                    assert w not in owner  # each window is asked once, of one process
                    owner[w] = p
                    # The window's inputs, never its last byte (which no other window holds either:
                    # windows do not overlap).
                    assert np.array_equal(row, windows[w, :-1])
            else:
                assert len(batch.probes) == rows and batch.windows == []
                for row, (w, cut) in zip(batch.inputs, batch.probes):
                    if w < 0:
                        continue
                    assert 1 <= cut <= 32
                    assert np.array_equal(row[:cut], windows[w, :cut])
                    asked.setdefault(w, -1)
                    asked[w] = p
    assert sorted(owner) == list(range(scorer.window_count))
    for p, queue in enumerate(queues):
        for batch in queue:
            for w, _cut in batch.probes:
                if w >= 0:
                    assert owner[w] != p  # a probe of w goes only to the process that does not answer w
    probed = [w for q in queues for b in q for w, _ in b.probes if w >= 0]
    assert len(probed) == len(set(probed))  # a window is probed at most once
    if share > 0 and len(set(owner.values())) == 2:
        assert probed


def test_probes_look_like_real_batches():
    scorer = _scorer(_rule_bytes(20_000), rows=8, probe_share=1.0)
    queues = scorer.plan()
    for queue in queues:
        assert any(b.real for b in queue) and any(not b.real for b in queue)
        # Interleaved at random: the probes are not all at one end of the queue.
        kinds = [b.real for b in queue]
        assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)
    cuts = [cut for q in queues for b in q for w, cut in b.probes if w >= 0]
    assert 32 in cuts and any(c < 32 for c in cuts)  # whole windows and cut ones
    # A cut probe's tail comes from the training split.
    train = _train_bytes()
    for q in queues:
        for b in q:
            for row, (w, cut) in zip(b.inputs, b.probes):
                if w >= 0 and cut < 32:
                    assert row[cut:].tobytes() in train


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


_FAULTS_SCRIPT = r'''
import resource, sys
import numpy as np
from trainer.harness.child import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
def step():  # a training step's pattern: blocks of a few MiB allocated, written, freed together
    blocks = [np.ones(1 << 20, dtype=np.float32) for _ in range(10)]
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    step()
print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def test_harness_processes_keep_freed_memory_for_the_next_step():
    # Without it, glibc returns the freed blocks to the kernel (unmapped, or trimmed off the heap) and
    # the next step faults every page in again: ~40,000 faults for the 8 steps below.
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, "tuned"], capture_output=True, text=True,
                         cwd=root, check=True).stdout.split()
    if out[0] != "1":
        pytest.skip("not glibc: the allocator is left as it is")
    assert int(out[1]) < 1000
