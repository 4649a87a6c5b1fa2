"""Whole experiments: sandboxed training + two sandboxed model processes scored by the trusted scorer,
on the tiny task on CPU.

Run: .venv/bin/python -m pytest tests/trainer/test_trainer_experiment.py -q
Budgets are scaled down (a few seconds of training each); the one quality test uses half the budget.
"""
from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path

import pytest
import torch

from tests.procs import processes_with
from tests.timing import PROCESS_SLACK_S
from protocol.schemas import validate_result
from trainer import experiment as experiment_module
from trainer import sandbox
from trainer import warm as warm_pool
from trainer.experiment import RunSettings, close_warm_pool, run_experiment, spot_check
from trainer.harness import tensorfile
from trainer.patches import apply_patch, make_patch
from trainer.stream import draw_stream
from trainer.tasks import builtin_tasks, load_data, split_data
from trainer.warm import Workspace

pytestmark = pytest.mark.slow
TINY = builtin_tasks()["tiny"]
SCALE = 0.05  # 10k tokens
HANG_TIMEOUT_S = 8
# run_experiment's own bound on a run that hits its timeout: the deadline (from the job's hand-over), then
# the kill: the harness gets EXIT_GRACE_S at most to be gone, its pipes PIPE_LINGER_S
HANG_BOUND_S = HANG_TIMEOUT_S + warm_pool.EXIT_GRACE_S + sandbox.PIPE_LINGER_S + PROCESS_SLACK_S


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    load_data(TINY, path)
    return path


@pytest.fixture(scope="module")
def baseline(cache):
    return run_experiment(TINY, TINY.source, seed=1, budget_scale=SCALE, device="cpu", cache_dir=cache)


def _edit(source: str, old: str, new: str) -> str:
    assert old in source
    return apply_patch(source, make_patch(source, source.replace(old, new)))


def _script(source: str) -> dict:
    """The script's names, imported in this process (for the tests only: the runner never does)."""
    names: dict = {"__name__": "train"}
    exec(compile(source, "train.py", "exec"), names)
    return names


def _parameters(source: str) -> int:
    model = _script(source)["build_model"](256, TINY.harness.context)
    return sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())


def test_result_satisfies_the_protocol_schema(baseline):
    assert baseline.outcome_ok, baseline.reason
    validate_result(baseline.result)
    r = baseline.result
    assert r["seed"] == 1 and r["device"] == "cpu" and r["torch"] == torch.__version__
    assert 0 < r["tokens"] <= int(TINY.budget_tokens * SCALE)
    assert 1 <= len(r["curve"]) <= 64 and r["curve"][-1][0] <= r["tokens"]
    assert r["flops_per_token"] == 6 * _parameters(TINY.source)  # counted by the runner from the weights
    assert r["entropy_bpb"] == f"{TINY.entropy_bpb:.6f}"
    assert r["sandbox"] == baseline.sandbox
    # The process's peak memory (its resident set on a CPU): at least the imported torch, far under the cap
    assert type(r["peak_mem_mb"]) is int and 50 <= r["peak_mem_mb"] < 8192, r["peak_mem_mb"]


def test_same_seed_gives_identical_result(cache, baseline):
    again = run_experiment(TINY, TINY.source, seed=1, budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert again.result["val_bpb"] == baseline.result["val_bpb"]
    assert again.result["curve"] == baseline.result["curve"]


def test_learning_rate_patch_changes_the_result(cache, baseline):
    source = _edit(TINY.source, "MATRIX_LR = 0.03", "MATRIX_LR = 0.06")
    run = run_experiment(TINY, source, seed=1, budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert run.outcome_ok, run.reason
    assert run.result["val_bpb"] != baseline.result["val_bpb"]
    assert run.result["curve"][0] == baseline.result["curve"][0]  # same init, same first batch
    assert run.result["curve"] != baseline.result["curve"]


def _unigram_bpb(train: bytes, val: bytes) -> float:
    counts = [1] * 256  # add-one smoothing, as a fitted unigram model would
    for b in train:
        counts[b] += 1
    total = sum(counts)
    return -sum(math.log2(counts[b] / total) for b in val) / len(val)


def test_trained_model_beats_unigram_and_stays_above_the_floor(cache):
    run = run_experiment(TINY, TINY.source, seed=0, budget_scale=0.5, device="cpu", cache_dir=cache)
    assert run.outcome_ok, run.reason
    train, val = split_data(TINY, load_data(TINY, cache))
    unigram = _unigram_bpb(train, val[1:])
    bpb = run.val_bpb
    assert bpb < unigram - 1.0, (bpb, unigram)
    # The entropy rate is a true floor; the finite validation split wobbles around it by ~0.01.
    assert bpb > TINY.entropy_bpb - 0.02


@pytest.mark.parametrize("old, new, says", [
    ("is_causal=True", "is_causal=False", "sees the future"),
    ("        x = x0 = rms_norm(self.embed(idx))", "        x = x0 = rms_norm(self.embed(idx))\n"
     "        x = x + 0.5 * x.roll(1, dims=0)", "change with what else it is asked"),
    # Random in eval mode (dropout forced on): the same window gets other logits in another batch.
    ("        logits = self.head(rms_norm(x)).float()\n",
     "        logits = F.dropout(self.head(rms_norm(x)).float(), p=0.1, training=True)\n",
     "change with what else it is asked"),
], ids=["looks ahead", "mixes the batch", "random in eval"])
def test_a_model_that_reads_its_targets_is_a_crash_not_a_record(cache, old, new, says):
    run = run_experiment(TINY, _edit(TINY.source, old, new), seed=0, budget_scale=SCALE, device="cpu",
                         cache_dir=cache)
    assert not run.outcome_ok and run.result is None
    assert says in run.reason, run.reason


def test_nan_loss_crashes_fast(cache):
    source = _edit(TINY.source, "        log(loss.detach())", "        log(loss.detach() * float('nan'))")
    run = run_experiment(TINY, source, seed=0, budget_scale=1.0, device="cpu", cache_dir=cache)
    assert not run.outcome_ok and run.result is None
    assert run.reason == "nan loss"
    # On a CPU every logged loss is checked: the run ends at its first step, within a harness's
    # start-up allowance, far below the full budget's timeout (RunSettings.train_timeout)
    assert run.wall_s < warm_pool.START_IDLE_S + warm_pool.EXIT_GRACE_S + PROCESS_SLACK_S


def test_exception_in_script_names_the_line(cache):
    source = _edit(TINY.source, "    optimizers = make_optimizers(model)", "    optimizers = make_optimizers(model) + 1")
    run = run_experiment(TINY, source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert not run.outcome_ok
    assert run.reason.startswith("TypeError:") and "train.py line" in run.reason


def test_training_never_sees_the_validation_split(cache, tmp_path):
    # The script reports what its working directory holds through the crash reason.
    source = _edit(TINY.source, "    optimizers = make_optimizers(model)",
                   "    import os\n    raise RuntimeError(' '.join(sorted(os.listdir('.'))))")
    run = run_experiment(TINY, source, seed=4, budget_scale=SCALE, device="cpu", cache_dir=cache,
                         work_dir=tmp_path / "work")
    assert "tokens.bin" in run.reason and "train.py" in run.reason
    assert "val" not in run.reason and "train.bin" not in run.reason  # neither split: only the drawn stream
    # What training got (kept in the work dir): the run's stream, budget + 1 tokens of the training
    # split, and no piece of the validation split.
    train, val = split_data(TINY, load_data(TINY, cache))
    budget = int(TINY.budget_tokens * SCALE)
    tokens = (tmp_path / "work" / "train" / "tokens.bin").read_bytes()
    assert len(tokens) == budget + 1
    assert tokens == draw_stream(train, budget_tokens=budget, seed=4, chunk=TINY.harness.context)
    context = TINY.harness.context
    assert all(tokens[i:i + context] in train for i in range(0, len(tokens) - context, context))
    assert not any(val[i:i + 32] in tokens for i in range(0, len(val) - 32, 32))


def _processes_under(path: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(path)):
                pids.append(int(entry))
    return pids


def test_hanging_script_times_out_and_leaves_nothing_behind(cache, tmp_path):
    source = _edit(TINY.source, "    optimizers = make_optimizers(model)",
                   "    import subprocess, sys\n    subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
                   "    while True:\n        pass")
    run = run_experiment(TINY, source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache,
                         timeout_s=HANG_TIMEOUT_S, work_dir=tmp_path / "work")
    assert not run.outcome_ok and run.reason == f"timeout after {HANG_TIMEOUT_S} s"
    assert run.wall_s < HANG_BOUND_S
    assert _processes_under(tmp_path) == []


def test_a_loop_of_experiments_runs_on_warm_processes_with_the_same_bits(cache, baseline):
    run_experiment(TINY, TINY.source, seed=1, budget_scale=SCALE, device="cpu", cache_dir=cache)  # leaves two waiting
    claims = warm_pool.POOL.claims
    warm = run_experiment(TINY, TINY.source, seed=1, budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert warm_pool.POOL.claims == claims + 3  # its train process and both model processes were warm
    cold = run_experiment(TINY, TINY.source, seed=1, budget_scale=SCALE, device="cpu", cache_dir=cache,
                          settings=RunSettings(warm_pool=False))
    for run in (warm, cold):
        assert run.result["val_bpb"] == baseline.result["val_bpb"]
        assert run.result["curve"] == baseline.result["curve"]


def test_a_warm_process_times_out_counting_from_its_job(cache):
    run_experiment(TINY, TINY.source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache)  # leaves one waiting
    time.sleep(3)  # the waiting process's age must not count against the next run's limit
    marker = f"hang-{secrets.token_hex(6)}"
    source = _edit(TINY.source, "    optimizers = make_optimizers(model)",
                   "    import subprocess, sys\n"
                   f"    subprocess.Popen([sys.executable, '-c', 'while True: pass', '{marker}'])\n"
                   "    while True:\n        pass")
    claims = warm_pool.POOL.claims
    run = run_experiment(TINY, source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache,
                         timeout_s=HANG_TIMEOUT_S)
    assert warm_pool.POOL.claims == claims + 1
    assert not run.outcome_ok and run.reason == f"timeout after {HANG_TIMEOUT_S} s"
    assert HANG_TIMEOUT_S <= run.wall_s < HANG_BOUND_S
    assert processes_with(marker) == []


def test_waiting_processes_end_when_the_pool_closes(cache):
    run_experiment(TINY, TINY.source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache)
    waiting = [h.scratch for h in warm_pool.POOL._waiting.values()]
    assert waiting
    close_warm_pool()
    assert not any(path.exists() for path in waiting)
    assert not [pid for path in waiting for pid in _processes_under(path)]


def test_out_of_memory_is_a_crash(cache):
    source = _edit(TINY.source, "    optimizers = make_optimizers(model)",
                   "    hog = torch.empty(1 << 40, dtype=torch.uint8)")
    run = run_experiment(TINY, source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert not run.outcome_ok and "memory" in run.reason


def test_spot_check_passes_for_the_same_code_and_catches_other_code(cache, baseline):
    # The spot check runs the first half of the baseline's budget under the same schedule.
    check = spot_check(TINY, TINY.source, seed=1, fraction=0.5, reference_curve=baseline.result["curve"],
                       budget_scale=SCALE, device="cpu", cache_dir=cache, tolerance=0.0)
    assert check.ok, check.reason
    half = int(TINY.budget_tokens * SCALE) // 2
    assert check.curve == [p for p in baseline.result["curve"] if p[0] <= half]
    other = _edit(TINY.source, "EMBED_LR = 0.1", "EMBED_LR = 0.5")
    check = spot_check(TINY, other, seed=1, fraction=0.5, reference_curve=baseline.result["curve"],
                       budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert not check.ok and check.reason.startswith("curve diverges at")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run(cache):
    run = run_experiment(TINY, TINY.source, seed=0, budget_scale=SCALE, device="cuda", cache_dir=cache)
    assert run.outcome_ok, run.reason
    assert run.result["device"].startswith("cuda:")
    validate_result(run.result)


def _model_process(tmp_path, source: str, settings: RunSettings):
    ws = Workspace(tmp_path / "work", settings)
    model = experiment_module._ModelProcess("model-a", TINY, source, ws, seed=0, device="cpu", settings=settings,
                                            serve_s=120, beside=False)
    built = _script(source)["build_model"](256, TINY.harness.context)
    tensorfile.save(built.state_dict(), tmp_path / "w.safetensors")
    model.load((tmp_path / "w.safetensors").read_bytes())
    while (message := model.harness.receive(timeout=1.0)) is None:
        pass
    assert message == {"loaded": {}}
    return ws, model, built.eval()


def _inputs(rows: int) -> "torch.Tensor":
    return torch.randint(0, 256, (rows, TINY.harness.context), generator=torch.Generator().manual_seed(0),
                         dtype=torch.uint8)


def test_a_model_process_answers_through_shared_memory(tmp_path):
    settings = RunSettings(warm_pool=False, eval_batch_size=4)
    ws, model, built = _model_process(tmp_path, TINY.source, settings)
    try:
        x = _inputs(4)
        model.ask(x.numpy())
        while (message := model.harness.receive(timeout=1.0)) is None:
            pass
        assert message == {"logits": [4, TINY.harness.context]}
        with torch.inference_mode():
            expected = built(x.long()).float().numpy()
        assert model.answer() == pytest.approx(expected, abs=1e-4)
        model.harness.send({"end": {}})
        done, _ = model.harness.wait()
        assert done == {}
    finally:
        ws.release(model.harness)
        model.close()
        ws.close()


def test_a_model_process_rejects_wrong_logit_shapes(tmp_path):
    # The scorer reads a buffer of fixed shape; the model process checks the script's answer first.
    source = _edit(TINY.source, "        return SOFTCAP * torch.tanh(logits / SOFTCAP)\n",
                   "        return (SOFTCAP * torch.tanh(logits / SOFTCAP))[:, -1]\n")
    settings = RunSettings(warm_pool=False, eval_batch_size=4)
    ws, model, _ = _model_process(tmp_path, source, settings)
    try:
        model.ask(_inputs(4).numpy())
        with pytest.raises(experiment_module._Crash, match=r"logits of shape \(4, 256\), expected \(4, 64, 256\)"):
            while model.harness.receive(timeout=1.0) is None:
                pass
    finally:
        ws.release(model.harness)
        model.close()
        ws.close()


def test_a_script_that_blocks_the_weights_hand_over_is_a_crash(cache, monkeypatch):
    # Imported by a model process while training runs, the script puts a directory where the
    # trained weights are to go.
    source = _edit(TINY.source, "def build_model(vocab_size, context):\n",
                   "def build_model(vocab_size, context):\n"
                   "    import os\n"
                   "    if not os.path.exists('tokens.bin'):  # a model process's scratch, not training's\n"
                   "        os.makedirs('weights.safetensors/x', exist_ok=True)\n")
    # The model processes start beside training at low priority: on a busy machine they may not have
    # built the model when training ends. The hand-over waits here until the script has been first.
    load = experiment_module._ModelProcess.load
    blocked = []

    def load_once_blocked(self, weights: bytes) -> None:
        deadline = time.monotonic() + 120
        while not os.path.lexists(self.harness.scratch / "weights.safetensors") and time.monotonic() < deadline:
            time.sleep(0.05)
        blocked.append(os.path.isdir(self.harness.scratch / "weights.safetensors"))
        load(self, weights)

    monkeypatch.setattr(experiment_module._ModelProcess, "load", load_once_blocked)
    run = run_experiment(TINY, source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache)
    assert blocked and blocked[0]
    assert not run.outcome_ok and run.result is None
    assert run.reason.startswith("evaluation: cannot hand over the weights"), run.reason
