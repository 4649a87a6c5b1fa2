"""Sandboxed harness processes, and the pool that starts them ahead of the run that needs them.

A harness process (trainer/harness/child.py) imports torch (seconds of CPU) before it is given its
job, so the runner keeps the next run's processes started ahead (the warm pool), and a loop of
experiments pays neither process start nor import on its critical path. Each process still serves
exactly one run, in a scratch directory of its own (DESIGN.md, "Running other people's code").
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .sandbox import MODES, SandboxRun, SandboxUnavailable, detect_sandbox, gpu_device_paths, mode_works, run_sandboxed

if TYPE_CHECKING:
    from .experiment import RunSettings

PACKAGE_DIR = Path(__file__).resolve().parent
START_IDLE_S = 60.0  # a process started for the run at hand: time allowed for its imports
BACKSTOP_S = 30.0  # the sandbox's own timeout lies this far past the deadline we enforce from go
CLAIM_MARGIN_S = 30.0  # a warm process this close to giving up (or to its backstop) is not claimed
CLOSE_WAIT_S = 5.0  # at exit, how long to wait for aborted warm processes before leaving them


class Crash(Exception):
    """Internal: the run ended without a result; ``reason`` is the outcome's short text."""

    def __init__(self, reason: str, sandbox: str = "none"):
        super().__init__(reason)
        self.reason = reason
        self.sandbox = sandbox


def device_kind(device: str) -> str:
    """"cpu" or "gpu", deciding limits and timeouts. Decided without importing torch here (seconds
    per CLI call): "auto" counts as a GPU where an NVIDIA device node exists or on macOS (MPS)."""
    if device == "auto":
        return "gpu" if Path("/dev/nvidiactl").exists() or sys.platform == "darwin" else "cpu"
    return "cpu" if device == "cpu" else "gpu"


class Harness:
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
        self._cancel = threading.Event()
        mode = _probe_sandbox(settings.sandbox_mode)
        start = {"kind": kind, "go": "go.json", "result": "result.json", "idle_s": idle_s,
                 "nice": settings.warm_up_nice if beside else 0,
                 "pid_namespace": mode in ("bwrap", "namespaces")}  # see harness/priority.py
        (scratch / "config.json").write_text(json.dumps(start), encoding="utf-8")
        argv = [sys.executable, "-P", "-m", "trainer.harness.child", "config.json"]
        env = {"PYTHONPATH": str(PACKAGE_DIR.parent)}
        limits = settings.limits(device_kind(device), limit_s)
        self._holder: dict = {}

        def target() -> None:
            try:
                devices = gpu_device_paths() if device_kind(device) == "gpu" else ()
                self._holder["run"] = run_sandboxed(argv, scratch=scratch, ro_paths=[PACKAGE_DIR], limits=limits,
                                                    env=env, timeout_s=self._backstop_s, mode=settings.sandbox_mode,
                                                    devices=devices, cancel=self._cancel)
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
        self._cancel.set()  # run_sandboxed kills the whole run (process group and the run's uid)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait(self, on_poll: Callable[[], None] | None = None) -> tuple[dict, str]:
        """(the child's JSON result, sandbox mode), or raises Crash with the outcome's reason."""
        while self._thread.is_alive():
            self._thread.join(0.1)
            if on_poll is not None:
                on_poll()
            if self.deadline is not None and time.monotonic() > self.deadline and not self._killed:
                self._killed = True
                self._kill()
        if "error" in self._holder:
            raise Crash(self._holder["error"])
        run: SandboxRun = self._holder["run"]
        try:
            out = json.loads((self.scratch / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out = None
        if self._killed or run.timed_out:
            raise Crash(f"timeout after {self.limit_s:.0f} s", run.sandbox)
        if isinstance(out, dict) and "error" in out:
            raise Crash(str(out["error"])[:400], run.sandbox)
        if run.killed_reason:
            raise Crash(_killed_text(run.killed_reason), run.sandbox)
        if run.returncode != 0 or not isinstance(out, dict):
            tail = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
            raise Crash(f"process failed: {tail[:300]}", run.sandbox)
        return out, run.sandbox


def _probe_sandbox(mode: str) -> str:
    """The mode a run will get (probed once per process, cached): the process is told whether it has
    a pid namespace of its own (harness/priority.py)."""
    if mode == "auto":
        return detect_sandbox()
    if mode in MODES:
        mode_works(mode)
    return mode


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


class WarmPool:
    """Harness processes started before the run that claims them, so that a loop of experiments pays
    no process start and no torch import (seconds each) on its critical path.

    One waiting process per key (kind, device, settings, limits). The next run's train and evaluation
    processes are started once this run's training is under way (its first curve point), so their
    imports use the core the single-threaded training leaves free and are done before this run's
    evaluation wants every core. Each process runs one job, in a scratch directory of its own; one
    nobody claims is aborted when replaced, at interpreter exit, or gives up by itself after ``idle_s``.
    """

    MAX_WAITING = 4  # distinct keys kept; more is a caller alternating settings

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[tuple, Harness] = {}
        self._retired: list[Harness] = []  # aborted, their scratch removed once they have exited
        self.claims = 0
        atexit.register(self.close)
        if hasattr(os, "register_at_fork"):  # a forked child owns none of our processes: it must not end them
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._waiting, self._retired = {}, []

    def claim(self, key: tuple, limit_s: float) -> Harness | None:
        with self._lock:
            harness = self._waiting.pop(key, None)
            if harness is not None and not harness.can_take(limit_s):
                self._retire(harness)
                harness = None
            self.claims += harness is not None
            self._reap()
        return harness

    def start(self, key: tuple, make: Callable[[Path], Harness]) -> None:
        """Start a process for ``key`` unless one is already waiting."""
        with self._lock:
            current = self._waiting.get(key)
            if current is not None and current.can_take(0):
                return
            if current is not None:
                self._retire(self._waiting.pop(key))
            while len(self._waiting) >= self.MAX_WAITING:
                self._retire(self._waiting.pop(next(iter(self._waiting))))
            self._waiting[key] = make(scratch_dir("warm"))

    def retire(self, harness: Harness) -> None:
        """Take back a process its run no longer needs: end it, remove its scratch once it has exited."""
        with self._lock:
            self._retire(harness)

    def _retire(self, harness: Harness) -> None:
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


POOL = WarmPool()

_SCRATCH_RE = re.compile(r"ralphswarm-[a-z]+-([0-9]+)-")
_swept = threading.Lock()
_sweep_done = False


def scratch_dir(kind: str) -> Path:
    """A fresh temporary directory for one harness process, named after the process that owns it,
    so that the directories a killed owner left behind can be told apart and removed (the first
    call of each process sweeps them; the processes that used them died with their owner)."""
    global _sweep_done
    with _swept:
        if not _sweep_done:
            _sweep_done = True
            sweep_orphans(Path(tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix=f"ralphswarm-{kind}-{os.getpid()}-"))


def sweep_orphans(root: Path) -> list[Path]:
    """Remove the scratch directories under ``root`` whose owning process no longer exists."""
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _SCRATCH_RE.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink() or _alive(int(match[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _killed_text(reason: str) -> str:
    return {"memory": "out of memory", "cpu": "cpu time limit", "file size": "file size limit"}.get(
        reason, f"killed ({reason})")


class Workspace:
    """Where a run's scratch directories live: the caller's work_dir (kept, for inspection: no warm
    processes, whose directories live elsewhere), else each process's own temporary directory,
    adopted when the process gets its job and removed with the workspace."""

    def __init__(self, work_dir: Path | None, settings: RunSettings):
        self.keep = work_dir is not None
        self.pooled = settings.warm_pool and not self.keep
        self.root = Path(work_dir) if work_dir else None
        if self.root is None and not self.pooled:
            self.root = scratch_dir("exp")
        self._adopted: list[Path] = []

    def harness(self, kind: str, *, settings: RunSettings, device: str, limit_s: float, idle_s: float,
                beside: bool, serve_s: float | None = None) -> Harness:
        """A process for this run: a warm one from the pool where one waits, else one started now.
        ``limit_s`` sizes its rlimits; ``serve_s`` (default limit_s) is the wall time its job gets."""
        if self.pooled:
            harness = POOL.claim(_pool_key(kind, settings, device, limit_s), serve_s or limit_s)
            if harness is not None:
                return harness
            scratch = scratch_dir(kind)
        else:
            scratch = self.root / kind
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
        return Harness(scratch, kind=kind, settings=settings, device=device, limit_s=limit_s, idle_s=idle_s,
                       beside=beside, serve_s=serve_s)

    def go(self, harness: Harness, job: dict, limit_s: float) -> None:
        if self.pooled:
            self._adopted.append(harness.scratch)
        harness.go(job, limit_s)

    def refill(self, kind: str, *, settings: RunSettings, device: str, limit_s: float,
               serve_s: float | None = None) -> None:
        """Have a warm process of this kind wait for the next run (a no-op when one already does)."""
        if self.pooled:
            POOL.start(_pool_key(kind, settings, device, limit_s),
                       lambda scratch: Harness(scratch, kind=kind, settings=settings, device=device,
                                               limit_s=limit_s, idle_s=settings.warm_idle_s, beside=True,
                                               serve_s=serve_s))

    def release(self, harness: Harness) -> None:
        """End a process before its run is over: one never used, or an evaluation whose training failed."""
        if self.pooled:
            POOL.retire(harness)  # its directory goes once it has exited; nothing here waits for that
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
    return kind, device, settings, settings.limits(device_kind(device), limit_s)


