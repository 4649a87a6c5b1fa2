"""One experiment: train a script on a task inside the sandbox, evaluate it in another (DESIGN.md,
"The inner loop" and "Running other people's code").

The training process sees the script, the harness and the training split only; the evaluation
process, also sandboxed because it imports the script, gets the trained weights and the validation
split. Every failure (exception, NaN, timeout, out of memory, a killed process) becomes an outcome
``crashed`` with a short reason, never a hang or an exception for the caller.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .datasets import DataError
from .harness.curve import MAX_POINTS
from .rlimits import GiB, Limits
from .sandbox import SandboxRun, SandboxUnavailable, gpu_device_paths, run_sandboxed
from .tasks import Task, TaskError, load_data, split_data

PACKAGE_DIR = Path(__file__).resolve().parent
ProgressFn = Callable[[int, int, "float | None"], None]  # (tokens, budget, loss or None)


@dataclass(frozen=True)
class RunSettings:
    cpu_threads: int = 1  # fixed, not the core count: the thread count decides the bits of every sum
    eval_batch_size: int = 64  # validation windows per forward pass
    cpu_tokens_per_s_floor: float = 1000.0  # default timeout assumes at least this throughput on CPU
    gpu_timeout_s: float = 3600.0  # default timeout of a GPU training run
    eval_timeout_s: float = 600.0
    memory_bytes: int = 4 * GiB  # address-space cap on CPU; CUDA maps far more than it uses
    sandbox_mode: str = "auto"
    overlap_eval: bool = True  # start the evaluation process during training (hides its start-up)
    eval_nice: int = 10  # the evaluation process starts during training; it must not slow training down

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


class _Crash(Exception):
    """Internal: the run ended without a result; ``reason`` is the outcome's short text."""

    def __init__(self, reason: str, sandbox: str = "none"):
        super().__init__(reason)
        self.reason = reason
        self.sandbox = sandbox


def _decimal(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def _device_kind(device: str) -> str:
    """"cpu" or "gpu", deciding limits and timeouts. Decided without importing torch here (seconds
    per CLI call): "auto" counts as a GPU where an NVIDIA device node exists or on macOS (MPS)."""
    if device == "auto":
        return "gpu" if Path("/dev/nvidiactl").exists() or sys.platform == "darwin" else "cpu"
    return "cpu" if device == "cpu" else "gpu"


class _Child:
    """One harness process running in the sandbox on a background thread."""

    def __init__(self, scratch: Path, cfg: dict, *, settings: RunSettings, device: str, timeout_s: float):
        (scratch / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        self.scratch, self.timeout_s = scratch, timeout_s
        argv = [sys.executable, "-P", "-m", "trainer.harness.child", "config.json"]
        env = {"PYTHONPATH": str(PACKAGE_DIR.parent)}
        limits = settings.limits(_device_kind(device), timeout_s)
        self._holder: dict = {}

        def target() -> None:
            try:
                devices = gpu_device_paths() if _device_kind(device) == "gpu" else ()
                self._holder["run"] = run_sandboxed(argv, scratch=scratch, ro_paths=[PACKAGE_DIR], limits=limits,
                                                    env=env, timeout_s=timeout_s, mode=settings.sandbox_mode,
                                                    devices=devices)
            except (SandboxUnavailable, OSError, ValueError) as exc:
                self._holder["error"] = f"sandbox: {exc}"

        self._thread = threading.Thread(target=target, name="sandboxed-run", daemon=True)
        self._thread.start()

    def wait(self, on_poll: Callable[[], None] | None = None) -> tuple[dict, str]:
        """(the child's JSON result, sandbox mode), or raises _Crash with the outcome's reason."""
        while self._thread.is_alive():
            self._thread.join(0.2)
            if on_poll is not None:
                on_poll()
        if "error" in self._holder:
            raise _Crash(self._holder["error"])
        run: SandboxRun = self._holder["run"]
        try:
            out = json.loads((self.scratch / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out = None
        if run.timed_out:
            raise _Crash(f"timeout after {self.timeout_s:.0f} s", run.sandbox)
        if isinstance(out, dict) and "error" in out:
            raise _Crash(str(out["error"])[:400], run.sandbox)
        if run.killed_reason:
            raise _Crash(_killed_text(run.killed_reason), run.sandbox)
        if run.returncode != 0 or not isinstance(out, dict):
            tail = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
            raise _Crash(f"process failed: {tail[:300]}", run.sandbox)
        return out, run.sandbox


def _killed_text(reason: str) -> str:
    return {"memory": "out of memory", "cpu": "cpu time limit", "file size": "file size limit"}.get(
        reason, f"killed ({reason})")


def _train_config(task: Task, *, seed: int, budget: int, device: str, settings: RunSettings,
                  stop_tokens: int | None, mode: str) -> dict:
    return {
        "mode": mode, "script": "train.py", "data": "train.bin", "weights": "weights.pt",
        "result": "result.json", "progress": "progress.json", "budget_tokens": budget,
        "stop_tokens": stop_tokens, "seed": seed, "device": device, "threads": settings.cpu_threads,
        "context": task.harness.context,
    }


def _progress_poller(path: Path, budget: int, on_progress: ProgressFn | None) -> Callable[[], None]:
    last = {"tokens": -1}

    def poll() -> None:
        if on_progress is None:
            return
        try:
            point = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if point.get("tokens", -1) != last["tokens"]:
            last["tokens"] = point["tokens"]
            on_progress(int(point["tokens"]), budget, point.get("loss"))

    return poll


class _Workspace:
    """A scratch root: the caller's work_dir (kept, for inspection) or a temporary one (removed)."""

    def __init__(self, work_dir: Path | None):
        self.keep = work_dir is not None
        self.root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ralphswarm-exp-"))

    def fresh(self, name: str) -> Path:
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


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


def _train(task: Task, source: str, ws: _Workspace, train_bytes: bytes, *, seed: int, budget: int, device: str,
           limit: float, settings: RunSettings, on_progress: ProgressFn | None, stop_tokens: int | None,
           mode: str) -> tuple[dict, str, Path]:
    scratch = ws.fresh("train")
    (scratch / "train.py").write_text(source, encoding="utf-8")
    (scratch / "train.bin").write_bytes(train_bytes)  # the validation split never enters this scratch
    cfg = _train_config(task, seed=seed, budget=budget, device=device, settings=settings,
                        stop_tokens=stop_tokens, mode=mode)
    poll = _progress_poller(scratch / "progress.json", budget, on_progress)
    out, sandbox = _Child(scratch, cfg, settings=settings, device=device, timeout_s=limit).wait(poll)
    poll()
    return out, sandbox, scratch


class _Evaluation:
    """The evaluation process. It starts while training runs (on its first curve point), imports torch
    there, and waits for ``go.json``: the weights are in place, or abort. This hides one process
    start-up per experiment; it starts after training when ``overlap_eval`` is off."""

    def __init__(self, task: Task, source: str, ws: _Workspace, val_bytes: bytes, *, seed: int, device: str,
                 timeout_s: float, settings: RunSettings):
        self._args = (task, source, ws, val_bytes, seed, device, timeout_s, settings)
        self.child: _Child | None = None
        self.scratch: Path | None = None

    def start(self) -> None:
        if self.child is not None:
            return
        task, source, ws, val_bytes, seed, device, timeout_s, settings = self._args
        self.scratch = ws.fresh("eval")
        (self.scratch / "train.py").write_text(source, encoding="utf-8")
        (self.scratch / "val.bin").write_bytes(val_bytes)
        cfg = {"mode": "eval", "script": "train.py", "data": "val.bin", "weights": "weights.pt", "go": "go.json",
               "result": "result.json", "seed": seed, "device": device, "threads": settings.cpu_threads,
               "context": task.harness.context, "eval_batch_size": settings.eval_batch_size,
               "nice": settings.eval_nice}
        self.child = _Child(self.scratch, cfg, settings=settings, device=device, timeout_s=timeout_s)

    def _release(self, go: dict) -> None:
        tmp = self.scratch / "go.json.tmp"
        tmp.write_text(json.dumps(go), encoding="utf-8")
        os.replace(tmp, self.scratch / "go.json")

    def abort(self) -> None:
        if self.child is None:
            return
        self._release({"abort": True})
        try:
            self.child.wait()  # let it exit before its scratch is removed
        except _Crash:
            pass

    def finish(self, weights: Path, batch_shape: list) -> dict:
        self.start()
        os.replace(weights, self.scratch / "weights.pt")
        self._release({"batch_shape": batch_shape})
        out, _ = self.child.wait()
        return out


def _result(task: Task, trained: dict, evaluation: dict, *, seed: int, budget: int, sandbox: str) -> dict:
    """The protocol ``result`` object: measurements as decimal strings.

    ``tokens`` is the run's token budget (the denominator of every schedule), not the tokens the
    loader happened to deliver (whole batches, up to one batch fewer; the curve shows those): a
    reproduction must run the very same budget to repeat the run (protocol/SPEC.md, result)."""
    bpb = evaluation["nats"] / (math.log(2) * evaluation["bytes"])
    if not math.isfinite(bpb):
        raise _Crash("nan loss", sandbox)
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
    ws = _Workspace(work_dir)
    sandbox = "none"
    try:
        budget = _budget(task, budget_scale, budget_tokens)
        train_bytes, val_bytes = _splits(task, cache_dir)
        limit = timeout_s or settings.train_timeout(budget, _device_kind(device))
        evaluation = _Evaluation(task, source, ws, val_bytes, seed=seed, device=device,
                                 timeout_s=limit + settings.eval_timeout_s, settings=settings)

        def progress(tokens: int, budget_: int, loss) -> None:
            if settings.overlap_eval:
                evaluation.start()
            if on_progress is not None:
                on_progress(tokens, budget_, loss)

        try:
            trained, sandbox, scratch = _train(task, source, ws, train_bytes, seed=seed, budget=budget,
                                               device=device, limit=limit, settings=settings,
                                               on_progress=progress, stop_tokens=None, mode="train")
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
    ws = _Workspace(work_dir)
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
