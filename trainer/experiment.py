"""One experiment: train a script on a task inside the sandbox, evaluate it in another (DESIGN.md,
"The inner loop" and "Running other people's code").

The training process sees the script, the harness and the training split only; the evaluation
process, also sandboxed because it imports the script, gets the trained weights and the validation
split. Every failure (exception, NaN, timeout, out of memory, a killed process) becomes an outcome
``crashed`` with a short reason, never a hang or an exception for the caller.

Each process serves one run, but it need not start with it: a process imports torch before it is
given its job (seconds of CPU), so the runner keeps the next run's processes started ahead (the
warm pool), and a loop of experiments pays neither process start nor import on its critical path.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .datasets import DataError
from .harness.curve import MAX_POINTS
from .rlimits import GiB, Limits
from .tasks import Task, TaskError, load_data, split_data
from .warm import POOL, START_IDLE_S, Harness, Workspace
from .warm import Crash as _Crash
from .warm import device_kind as _device_kind

ENTROPY_MARGIN_BPB = 0.05  # ~9 standard errors (0.0058 bits) of the true model's score on the tiny split
ProgressFn = Callable[[int, int, "float | None"], None]  # (tokens, budget, loss or None)


@dataclass(frozen=True)
class RunSettings:
    cpu_threads: int = 1  # fixed, not the core count: the thread count decides the bits of every sum
    eval_batch_size: int = 64  # validation windows per forward pass
    eval_threads: int = 2  # CPU threads of the evaluation, which runs once training has left the cores free
    cpu_tokens_per_s_floor: float = 1000.0  # default timeout assumes at least this throughput on CPU
    gpu_timeout_s: float = 3600.0  # default timeout of a GPU training run
    eval_timeout_s: float = 600.0
    memory_bytes: int = 4 * GiB  # address-space cap on CPU; CUDA maps far more than it uses
    sandbox_mode: str = "auto"
    overlap_eval: bool = True  # start the evaluation process during training (hides its start-up)
    warm_up_nice: int = 19  # niceness of a process started beside training, until its job is urgent (priority.py)
    warm_pool: bool = True  # start the next run's processes ahead (trainer.warm.WarmPool); never with a work_dir
    warm_idle_s: float = 600.0  # a warm process nobody claims exits after this long

    def train_timeout(self, budget_tokens: int, device: str) -> float:
        if device == "cpu":
            return 60.0 + budget_tokens / self.cpu_tokens_per_s_floor
        return self.gpu_timeout_s

    def limits(self, device: str, timeout_s: float) -> Limits:
        gpu = device not in ("cpu",)
        return Limits(
            memory_bytes=(1 << 46) if gpu else self.memory_bytes,
            cpu_seconds=int(max(600, 2 * timeout_s * max(1, self.cpu_threads))),
        )


@dataclass(frozen=True)
class ExperimentResult:
    outcome_ok: bool
    result: dict | None  # the protocol `result` object; None when crashed
    reason: str  # short text when crashed, "" otherwise
    sandbox: str
    wall_s: float  # whole experiment, both processes

    @property
    def val_bpb(self) -> float | None:
        return float(self.result["val_bpb"]) if self.result else None


@dataclass(frozen=True)
class SpotCheck:
    ok: bool
    reason: str
    curve: list


def _decimal(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def _train_config(task: Task, *, seed: int, budget: int, device: str, settings: RunSettings,
                  stop_tokens: int | None, mode: str) -> dict:
    return {
        "mode": mode, "script": "train.py", "data": "train.bin", "weights": "weights.pt",
        "result": "result.json", "progress": "progress.json", "budget_tokens": budget,
        "stop_tokens": stop_tokens, "seed": seed, "device": device, "threads": settings.cpu_threads,
        "context": task.harness.context,
    }


def _progress_poller(path: Path, on_point: Callable[[dict], None]) -> Callable[[], None]:
    """Calls ``on_point`` with each new point the training process writes to progress.json."""
    last = {"tokens": -1}

    def poll() -> None:
        try:
            point = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        # Written by the training process: trusted no more than its script.
        if isinstance(point, dict) and isinstance(point.get("tokens"), int) and point["tokens"] != last["tokens"]:
            last["tokens"] = point["tokens"]
            on_point(point)

    return poll


def _default_cache() -> Path:
    return Path(os.environ.get("RALPHSWARM_HOME", Path.home() / ".ralphswarm")).expanduser() / "cache"


def _budget(task: Task, budget_scale: float, budget_tokens: int | None = None) -> int:
    """The run's token budget: ``budget_tokens`` when given (a reproduction uses the claim's), else
    the task's budget times ``budget_scale``."""
    if budget_tokens is not None:
        if not isinstance(budget_tokens, int) or budget_tokens < 1:
            raise _Crash(f"budget must be a positive number of tokens, got {budget_tokens!r}")
        return budget_tokens
    if not (budget_scale > 0 and math.isfinite(budget_scale)):
        raise _Crash(f"budget scale must be a positive number, got {budget_scale}")
    return max(1, int(task.budget_tokens * budget_scale))


def _splits(task: Task, cache_dir: Path | None) -> tuple[bytes, bytes]:
    try:
        return split_data(task, load_data(task, cache_dir or _default_cache()))
    except (DataError, TaskError) as exc:
        raise _Crash(f"data: {exc}") from None


def _train(task: Task, source: str, ws: Workspace, train_bytes: bytes, *, seed: int, budget: int, device: str,
           limit: float, settings: RunSettings, on_progress: ProgressFn | None, stop_tokens: int | None,
           mode: str, on_point: Callable[[dict], None] | None = None) -> tuple[dict, str, Path]:
    # Where no warm process waits, this one's start-up is the run's critical path: not niced.
    harness = ws.harness("train", settings=settings, device=device, limit_s=limit, idle_s=START_IDLE_S,
                         beside=False)
    scratch = harness.scratch
    try:
        (scratch / "train.py").write_text(source, encoding="utf-8")
        (scratch / "train.bin").write_bytes(train_bytes)  # the validation split never enters this scratch
    except BaseException:
        ws.release(harness)
        raise
    ws.go(harness, _train_config(task, seed=seed, budget=budget, device=device, settings=settings,
                                 stop_tokens=stop_tokens, mode=mode), limit)

    refilled = False

    def point(p: dict) -> None:
        nonlocal refilled
        if not refilled:
            # Training is under way (past its own start-up): start the next run's process beside it.
            refilled = True
            ws.refill("train", settings=settings, device=device, limit_s=limit)
        if on_point is not None:
            on_point(p)
        if on_progress is not None:
            on_progress(p["tokens"], budget, p.get("loss"))

    poll = _progress_poller(scratch / "progress.json", point)
    try:
        out, sandbox = harness.wait(poll)
    finally:
        ws.refill("train", settings=settings, device=device, limit_s=limit)  # also after a crash
    poll()
    return out, sandbox, scratch


class _Evaluation:
    """The evaluation process: a warm one from the pool, else one started now. It gets its job (the
    script and the validation split) at training's first curve point, which names the batch shape,
    so that imports, the model and the FLOP count overlap training; the weights follow when training
    ends. With ``overlap_eval`` off, all of it starts after training."""

    def __init__(self, task: Task, source: str, ws: Workspace, val_bytes: bytes, *, seed: int, device: str,
                 settings: RunSettings, train_limit: float):
        self.task, self.source, self.ws, self.val_bytes = task, source, ws, val_bytes
        self.seed, self.device, self.settings = seed, device, settings
        self.harness: Harness | None = None
        self.refilled = False
        # Its clock covers the wait for training, as the limit of training does.
        self.serve_s = train_limit + settings.eval_timeout_s

    def start(self, batch_shape: list, *, beside: bool = True) -> None:
        if self.harness is not None:
            return
        settings = self.settings
        self.harness = self.ws.harness("eval", settings=settings, device=self.device,
                                       limit_s=settings.eval_timeout_s, idle_s=START_IDLE_S,
                                       beside=beside, serve_s=self.serve_s)
        scratch = self.harness.scratch
        (scratch / "train.py").write_text(self.source, encoding="utf-8")
        (scratch / "val.bin").write_bytes(self.val_bytes)
        job = {"mode": "eval", "script": "train.py", "data": "val.bin", "weights": "weights.pt", "seed": self.seed,
               "device": self.device, "threads": settings.cpu_threads, "eval_threads": settings.eval_threads,
               "context": self.task.harness.context, "eval_batch_size": settings.eval_batch_size,
               "batch_shape": batch_shape}
        self.ws.go(self.harness, job, self.serve_s)
        if beside:
            # Training is under way: the next run's evaluation process imports beside it, not
            # beside this evaluation, which wants every core.
            self._refill()

    def _refill(self) -> None:
        if not self.refilled:
            self.refilled = True
            self.ws.refill("eval", settings=self.settings, device=self.device, limit_s=self.settings.eval_timeout_s,
                           serve_s=self.serve_s)

    def abort(self) -> None:
        if self.harness is not None:
            self.ws.release(self.harness)

    def finish(self, weights: Path, batch_shape: list) -> dict:
        self.start(batch_shape, beside=False)
        try:
            os.replace(weights, self.harness.scratch / "weights.pt")  # atomic: the process waits for it
        except OSError as exc:  # e.g. the script, imported there already, put a directory in the way
            self.abort()
            raise _Crash(f"evaluation: cannot hand over the weights: {exc.strerror}") from None
        try:
            out, _ = self.harness.wait()
        finally:
            self._refill()  # where it did not start beside training
        return out


def _result(task: Task, trained: dict, evaluation: dict, *, seed: int, budget: int, sandbox: str) -> dict:
    """The protocol ``result`` object: measurements as decimal strings.

    ``tokens`` is the run's token budget (the denominator of every schedule), not the tokens the
    loader happened to deliver (whole batches, up to one batch fewer; the curve shows those): a
    reproduction must run the very same budget to repeat the run (protocol/SPEC.md, result)."""
    bpb = evaluation["nats"] / (math.log(2) * evaluation["bytes"])
    if not math.isfinite(bpb):
        raise _Crash("nan loss", sandbox)
    if task.entropy_bpb is not None and bpb < task.entropy_bpb - ENTROPY_MARGIN_BPB:
        # No model beats the source's entropy rate by more than the finite split's wobble.
        raise _Crash(f"val_bpb {bpb:.4f} is below the entropy floor {task.entropy_bpb:.4f}: the script "
                     "reads what it predicts", sandbox)
    result = {
        "val_bpb": _decimal(bpb, 6),
        "curve": trained["curve"][:MAX_POINTS],
        "tokens": int(budget),
        "seed": seed,
        "wall_s": _decimal(trained["wall_s"], 3),
        "device": str(trained["device"])[:200],
        "torch": str(trained["torch"])[:200],
        "flops_per_token": int(evaluation["flops_per_token"]),
        "sandbox": sandbox,
    }
    if task.entropy_bpb is not None:
        result["entropy_bpb"] = _decimal(task.entropy_bpb, 6)
    return result


def run_experiment(task: Task, source: str, *, seed: int = 0, budget_scale: float = 1.0, budget_tokens: int | None = None,
                   device: str = "auto",
                   timeout_s: float | None = None, on_progress: ProgressFn | None = None,
                   work_dir: Path | None = None, cache_dir: Path | None = None,
                   settings: RunSettings = RunSettings()) -> ExperimentResult:
    """Train ``source`` on ``task`` for budget x budget_scale tokens and measure val_bpb."""
    start = time.perf_counter()
    ws = Workspace(work_dir, settings)
    sandbox = "none"
    try:
        budget = _budget(task, budget_scale, budget_tokens)
        train_bytes, val_bytes = _splits(task, cache_dir)
        limit = timeout_s or settings.train_timeout(budget, _device_kind(device))
        evaluation = _Evaluation(task, source, ws, val_bytes, seed=seed, device=device, settings=settings,
                                 train_limit=limit)

        def point(p: dict) -> None:
            if settings.overlap_eval and isinstance(p.get("batch_shape"), list):
                evaluation.start(p["batch_shape"])

        try:
            trained, sandbox, scratch = _train(task, source, ws, train_bytes, seed=seed, budget=budget,
                                               device=device, limit=limit, settings=settings,
                                               on_progress=on_progress, stop_tokens=None, mode="train",
                                               on_point=point)
        except BaseException:
            evaluation.abort()
            raise
        measured = evaluation.finish(scratch / "weights.pt", trained["batch_shape"])
        result = _result(task, trained, measured, seed=seed, budget=budget, sandbox=sandbox)
        return ExperimentResult(True, result, "", sandbox, time.perf_counter() - start)
    except _Crash as crash:
        return ExperimentResult(False, None, crash.reason, crash.sandbox if crash.sandbox != "none" else sandbox,
                                time.perf_counter() - start)
    finally:
        ws.close()


def compare_curves(curve: list, reference: list, tolerance: float) -> tuple[bool, str]:
    """Point by point at the token positions both curves hold; the first divergence is the reason."""
    ref = {int(t): float(loss) for t, loss in reference}
    shared = [(int(t), float(loss)) for t, loss in curve if int(t) in ref]
    if not shared:
        return False, "no curve points in common with the reference"
    for tokens, loss in shared:
        if abs(loss - ref[tokens]) > tolerance:
            return False, f"curve diverges at {tokens} tokens: {loss:.6f} vs {ref[tokens]:.6f} (tolerance {tolerance:g})"
    return True, f"{len(shared)} curve points within {tolerance:g}"


def spot_check(task: Task, source: str, *, seed: int, fraction: float, reference_curve: list,
               device: str = "auto", tolerance: float | None = None, budget_scale: float = 1.0,
               budget_tokens: int | None = None,
               timeout_s: float | None = None, on_progress: ProgressFn | None = None,
               work_dir: Path | None = None, cache_dir: Path | None = None,
               settings: RunSettings = RunSettings()) -> SpotCheck:
    """Train the first ``fraction`` of the budget under the full budget's schedule and compare curves.

    ``tolerance`` (nats) defaults to the task's tolerance: a single batch's loss is noisier than
    val_bpb, but a faithful re-run with the same seed draws the very same batches.
    """
    ws = Workspace(work_dir, settings)
    try:
        if not 0 < fraction <= 1:
            raise _Crash(f"spot check fraction must be in (0, 1], got {fraction}")
        budget = _budget(task, budget_scale, budget_tokens)
        train_bytes, _ = _splits(task, cache_dir)
        limit = timeout_s or settings.train_timeout(budget, _device_kind(device))
        out, _, _ = _train(task, source, ws, train_bytes, seed=seed, budget=budget, device=device, limit=limit,
                           settings=settings, on_progress=on_progress,
                           stop_tokens=max(1, int(budget * fraction)), mode="spot")
        ok, reason = compare_curves(out["curve"], reference_curve, task.tolerance if tolerance is None else tolerance)
        return SpotCheck(ok, reason, out["curve"])
    except _Crash as crash:
        return SpotCheck(False, crash.reason, [])
    finally:
        ws.close()


def close_warm_pool() -> None:
    """End the warm processes waiting for a next run (a later run starts the pool anew)."""
    POOL.close()
