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

import atexit
import json
import math
import os
import shutil
import signal
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
from .sandbox import MODES, SandboxRun, SandboxUnavailable, detect_sandbox, gpu_device_paths, mode_works, run_sandboxed
from .tasks import Task, TaskError, load_data, split_data

PACKAGE_DIR = Path(__file__).resolve().parent
START_IDLE_S = 60.0  # a process started for the run at hand: time allowed for its imports
BACKSTOP_S = 30.0  # the sandbox's own timeout lies this far past the deadline we enforce from go
CLAIM_MARGIN_S = 30.0  # a warm process this close to giving up (or to its backstop) is not claimed
CLOSE_WAIT_S = 5.0  # at exit, how long to wait for aborted warm processes before leaving them
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
    warm_up_nice: int = 19  # niceness of a process started beside training, until its job is urgent (priority.py)
    warm_pool: bool = True  # start the next run's processes ahead (see _WarmPool); never with a work_dir
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


class _Harness:
    """One sandboxed harness process (trainer/harness/child.py), run on a background thread.

    It starts, imports torch (niced when it starts ``beside`` a training run), and waits up to
    ``idle_s`` for its job; ``go`` hands it the job and the run's wall-time limit, which counts from
    then. A process from the warm pool started long before its job, so that deadline is enforced
    here; the sandbox's own timeout (from the process start: idle_s + serve_s + a margin) stays as a
    backstop. ``limit_s`` sizes the rlimits; ``serve_s`` (default limit_s) is the longest wall-time
    limit a job may bring.
    """

    def __init__(self, scratch: Path, *, kind: str, settings: RunSettings, device: str, limit_s: float,
                 idle_s: float, beside: bool, serve_s: float | None = None):
        self.scratch, self.kind, self.limit_s = scratch, kind, serve_s or limit_s
        self.started, self.idle_s = time.monotonic(), idle_s
        self._backstop_s = idle_s + self.limit_s + BACKSTOP_S
        self.deadline: float | None = None  # set by go()
        self._killed = False
        mode = _probe_sandbox(settings.sandbox_mode)
        start = {"kind": kind, "go": "go.json", "result": "result.json", "idle_s": idle_s,
                 "nice": settings.warm_up_nice if beside else 0,
                 "pid_namespace": mode in ("bwrap", "namespaces")}  # see harness/priority.py
        (scratch / "config.json").write_text(json.dumps(start), encoding="utf-8")
        argv = [sys.executable, "-P", "-m", "trainer.harness.child", "config.json"]
        env = {"PYTHONPATH": str(PACKAGE_DIR.parent)}
        limits = settings.limits(_device_kind(device), limit_s)
        self._holder: dict = {}

        def target() -> None:
            try:
                devices = gpu_device_paths() if _device_kind(device) == "gpu" else ()
                self._holder["run"] = run_sandboxed(argv, scratch=scratch, ro_paths=[PACKAGE_DIR], limits=limits,
                                                    env=env, timeout_s=self._backstop_s, mode=settings.sandbox_mode,
                                                    devices=devices)
            except (SandboxUnavailable, OSError, ValueError) as exc:
                self._holder["error"] = f"sandbox: {exc}"

        self._thread = threading.Thread(target=target, name=f"sandboxed-{kind}", daemon=True)
        self._thread.start()

    def can_take(self, limit_s: float) -> bool:
        """Alive, jobless, not about to give up waiting, and its backstop lies beyond this run's deadline."""
        age = time.monotonic() - self.started
        return (self.deadline is None and self._thread.is_alive() and age < self.idle_s - CLAIM_MARGIN_S
                and age + limit_s < self._backstop_s - CLAIM_MARGIN_S)

    def go(self, job: dict, limit_s: float | None = None) -> None:
        """Hand over the job (its files must already be in the scratch directory); the clock starts."""
        if limit_s is not None:
            self.limit_s = limit_s
        _write_json_atomic(self.scratch / "go.json", job)
        self.deadline = time.monotonic() + self.limit_s

    def abort(self) -> None:
        """End the process now (one that got no job is also told to exit, should it not be up yet)."""
        if self.deadline is None:
            _write_json_atomic(self.scratch / "go.json", {"mode": "abort"})  # if it has not started yet
            self.deadline = time.monotonic()
        self._kill()

    def _kill(self) -> None:
        if self._thread.is_alive():  # a finished thread's id may name another thread by now
            _kill_sandbox(self._thread.native_id, self.scratch)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait(self, on_poll: Callable[[], None] | None = None) -> tuple[dict, str]:
        """(the child's JSON result, sandbox mode), or raises _Crash with the outcome's reason."""
        while self._thread.is_alive():
            self._thread.join(0.1)
            if on_poll is not None:
                on_poll()
            if self.deadline is not None and time.monotonic() > self.deadline and not self._killed:
                self._killed = True
                self._kill()
        if "error" in self._holder:
            raise _Crash(self._holder["error"])
        run: SandboxRun = self._holder["run"]
        try:
            out = json.loads((self.scratch / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out = None
        if self._killed or run.timed_out:
            raise _Crash(f"timeout after {self.limit_s:.0f} s", run.sandbox)
        if isinstance(out, dict) and "error" in out:
            raise _Crash(str(out["error"])[:400], run.sandbox)
        if run.killed_reason:
            raise _Crash(_killed_text(run.killed_reason), run.sandbox)
        if run.returncode != 0 or not isinstance(out, dict):
            tail = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
            raise _Crash(f"process failed: {tail[:300]}", run.sandbox)
        return out, run.sandbox


def _probe_sandbox(mode: str) -> str:
    """The mode a run will get. Probed (once per process, cached) on the caller's thread, not the
    harness thread: that thread's children may be killed (_kill_sandbox), and a probe killed
    half-way would be cached as "this mode does not work"."""
    if mode == "auto":
        return detect_sandbox()
    if mode in MODES:
        mode_works(mode)
    return mode


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


def _kill_sandbox(thread_id: int, scratch: Path) -> None:
    """SIGKILL the sandbox a harness thread started, as trainer.sandbox does on its own timeout.

    run_sandboxed starts the sandbox (bwrap, unshare or the sandbox init) in its own session from
    the calling thread: its process group is the whole run outside the sandbox's namespaces, and the
    sandbox ends everything inside when it dies. The thread's children name it exactly; kernels
    without /proc/.../children fall back to our children whose command line names the scratch."""
    try:
        pids = [int(p) for p in Path(f"/proc/self/task/{thread_id}/children").read_text().split()]
    except OSError:
        pids = [pid for pid in _our_children() if str(scratch).encode() in _cmdline(pid)]
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _our_children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class _WarmPool:
    """Harness processes started before the run that claims them, so that a loop of experiments pays
    no process start and no torch import (seconds each) on its critical path.

    One waiting process per key (kind, device, limits): the next train process is started once this
    run's training is under way, the next evaluation process when this evaluation begins, so their
    imports use the core the single-threaded run leaves free. Each process runs one job, in a scratch
    directory of its own; one nobody claims is aborted when replaced, at interpreter exit, or gives
    up by itself after ``idle_s``.
    """

    MAX_WAITING = 4  # distinct keys kept; more is a caller alternating settings

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[tuple, _Harness] = {}
        self._retired: list[_Harness] = []  # aborted, their scratch removed once they have exited
        self.claims = 0
        atexit.register(self.close)
        if hasattr(os, "register_at_fork"):  # a forked child owns none of our processes: it must not end them
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._waiting, self._retired = {}, []

    def claim(self, key: tuple, limit_s: float) -> _Harness | None:
        with self._lock:
            harness = self._waiting.pop(key, None)
            if harness is not None and not harness.can_take(limit_s):
                self._retire(harness)
                harness = None
            self.claims += harness is not None
            self._reap()
        return harness

    def start(self, key: tuple, make: Callable[[Path], _Harness]) -> None:
        """Start a process for ``key`` unless one is already waiting."""
        with self._lock:
            current = self._waiting.get(key)
            if current is not None and current.can_take(0):
                return
            if current is not None:
                self._retire(self._waiting.pop(key))
            while len(self._waiting) >= self.MAX_WAITING:
                self._retire(self._waiting.pop(next(iter(self._waiting))))
            self._waiting[key] = make(Path(tempfile.mkdtemp(prefix="ralphswarm-warm-")))

    def retire(self, harness: _Harness) -> None:
        """Take back a process its run no longer needs: end it, remove its scratch once it has exited."""
        with self._lock:
            self._retire(harness)

    def _retire(self, harness: _Harness) -> None:
        harness.abort()
        self._retired.append(harness)

    def _reap(self) -> None:
        for harness in [h for h in self._retired if h.join(0)]:
            self._retired.remove(harness)
            shutil.rmtree(harness.scratch, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for harness in self._waiting.values():
                self._retire(harness)
            self._waiting.clear()
            for harness in self._retired:
                harness.join(CLOSE_WAIT_S)
            self._reap()


_POOL = _WarmPool()


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


class _Workspace:
    """Where a run's scratch directories live: the caller's work_dir (kept, for inspection: no warm
    processes, whose directories live elsewhere), else each process's own temporary directory,
    adopted when the process gets its job and removed with the workspace."""

    def __init__(self, work_dir: Path | None, settings: RunSettings):
        self.keep = work_dir is not None
        self.pooled = settings.warm_pool and not self.keep
        self.root = Path(work_dir) if work_dir else None
        if self.root is None and not self.pooled:
            self.root = Path(tempfile.mkdtemp(prefix="ralphswarm-exp-"))
        self._adopted: list[Path] = []

    def harness(self, kind: str, *, settings: RunSettings, device: str, limit_s: float, idle_s: float,
                beside: bool, serve_s: float | None = None) -> _Harness:
        """A process for this run: a warm one from the pool where one waits, else one started now.
        ``limit_s`` sizes its rlimits; ``serve_s`` (default limit_s) is the wall time its job gets."""
        if self.pooled:
            harness = _POOL.claim(_pool_key(kind, settings, device, limit_s), serve_s or limit_s)
            if harness is not None:
                return harness
            scratch = Path(tempfile.mkdtemp(prefix=f"ralphswarm-{kind}-"))
        else:
            scratch = self.root / kind
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
        return _Harness(scratch, kind=kind, settings=settings, device=device, limit_s=limit_s, idle_s=idle_s,
                        beside=beside, serve_s=serve_s)

    def go(self, harness: _Harness, job: dict, limit_s: float) -> None:
        if self.pooled:
            self._adopted.append(harness.scratch)
        harness.go(job, limit_s)

    def refill(self, kind: str, *, settings: RunSettings, device: str, limit_s: float,
               serve_s: float | None = None) -> None:
        """Have a warm process of this kind wait for the next run (a no-op when one already does)."""
        if self.pooled:
            _POOL.start(_pool_key(kind, settings, device, limit_s),
                        lambda scratch: _Harness(scratch, kind=kind, settings=settings, device=device,
                                                 limit_s=limit_s, idle_s=settings.warm_idle_s, beside=True,
                                                 serve_s=serve_s))

    def release(self, harness: _Harness) -> None:
        """End a process before its run is over: one never used, or an evaluation whose training failed."""
        if self.pooled:
            _POOL.retire(harness)  # its directory goes once it has exited; nothing here waits for that
        else:
            harness.abort()
            harness.join()  # let it exit before its scratch (in the work dir) is reused

    def close(self) -> None:
        for path in self._adopted:
            shutil.rmtree(path, ignore_errors=True)
        if self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _pool_key(kind: str, settings: RunSettings, device: str, limit_s: float) -> tuple:
    """What a process must have been started with to serve a run: its kind, device, and rlimits."""
    return kind, device, settings, settings.limits(_device_kind(device), limit_s)


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

    def point(p: dict) -> None:
        # Training is under way (past its own start-up): start the next run's process beside it.
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

    def __init__(self, task: Task, source: str, ws: _Workspace, val_bytes: bytes, *, seed: int, device: str,
                 settings: RunSettings, train_limit: float):
        self.task, self.source, self.ws, self.val_bytes = task, source, ws, val_bytes
        self.seed, self.device, self.settings, self.train_limit = seed, device, settings, train_limit
        self.harness: _Harness | None = None

    def start(self, batch_shape: list, *, beside: bool = True) -> None:
        if self.harness is not None:
            return
        settings = self.settings
        # Its clock covers the wait for training, as the limit of training does.
        serve_s = self.train_limit + settings.eval_timeout_s
        self.harness = self.ws.harness("eval", settings=settings, device=self.device,
                                       limit_s=settings.eval_timeout_s, idle_s=START_IDLE_S,
                                       beside=beside, serve_s=serve_s)
        scratch = self.harness.scratch
        (scratch / "train.py").write_text(self.source, encoding="utf-8")
        (scratch / "val.bin").write_bytes(self.val_bytes)
        job = {"mode": "eval", "script": "train.py", "data": "val.bin", "weights": "weights.pt", "seed": self.seed,
               "device": self.device, "threads": settings.cpu_threads, "context": self.task.harness.context,
               "eval_batch_size": settings.eval_batch_size, "batch_shape": batch_shape}
        self.ws.go(self.harness, job, serve_s)

    def abort(self) -> None:
        if self.harness is not None:
            self.ws.release(self.harness)

    def finish(self, weights: Path, batch_shape: list) -> dict:
        self.start(batch_shape, beside=False)
        os.replace(weights, self.harness.scratch / "weights.pt")  # atomic: the process waits for it
        # This evaluation is under way: the next one's process imports beside it.
        self.ws.refill("eval", settings=self.settings, device=self.device, limit_s=self.settings.eval_timeout_s,
                       serve_s=self.train_limit + self.settings.eval_timeout_s)
        out, _ = self.harness.wait()
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
    ws = _Workspace(work_dir, settings)
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
    ws = _Workspace(work_dir, settings)
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
    _POOL.close()
