"""Sandboxed harness processes, and the pool that starts them ahead of the run that needs them.

A harness process (trainer/harness/child.py) imports torch (seconds of CPU) before it is given its
job, so the runner keeps the next run's processes started ahead (the warm pool), and a loop of
experiments pays neither process start nor import on its critical path. Each process still serves
exactly one run, in a scratch directory of its own (docs/design.md, "The warm pool").
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from .cgroups import pid_alive
from .harness import channel
from .settings import RunSettings, device_kind
from .sandbox import (MODES, SandboxRun, SandboxUnavailable, cap_scratch, detect_sandbox, gpu_device_paths,
                      mode_works, release_scratch, run_sandboxed, RunMeter)



PACKAGE_DIR = Path(__file__).resolve().parent
START_IDLE_S = 60.0  # a process started for the run at hand: time allowed for its imports
BACKSTOP_S = 30.0  # the sandbox's own timeout lies this far past the deadline we enforce from go
CLAIM_MARGIN_S = 30.0  # a warm process this close to giving up (or to its backstop) is not claimed
CLOSE_WAIT_S = 5.0  # at exit, how long to wait for aborted warm processes before leaving them
POLL_S = 0.1  # the longest a receive blocks before the deadline is checked again
EXIT_GRACE_S = 10.0  # a process that sent its outcome must exit within this, or it is killed
MAX_MESSAGES = 10_000  # a run's harness sends ~70 (curve points, outcome); more is a flood
HARNESS_MODULES = ("__init__.py", "channel.py", "curve.py", "flops.py", "loader.py", "priority.py", "runtime.py",
                   "tensorfile.py", "child.py")


class Crash(Exception):
    """Internal: the run ended without a result; ``reason`` is the outcome's short text."""

    def __init__(self, reason: str, sandbox: str = "none"):
        super().__init__(reason)
        self.reason = reason
        self.sandbox = sandbox


class Harness:
    """One sandboxed harness process (trainer/harness/child.py), run on a background thread.

    It starts, imports torch (niced when it starts ``beside`` a training run), and waits up to
    ``idle_s`` for its job, which ``go`` sends over the process's channel (a socketpair made here:
    the runner reads nothing the run writes into its scratch but the weights, opened safely).
    The run's wall-time limit counts from ``go``; a process from the warm pool started long before
    its job, so that deadline is enforced here, by the caller's thread, which no read can block; the
    sandbox's own timeout (from the process start: idle_s + serve_s + a margin) stays as a backstop.
    ``limit_s`` sizes the rlimits; ``serve_s`` (default limit_s) is the longest wall-time limit a job
    may bring. The job's wall and CPU time are measured here, from ``go`` to its last message.
    """

    def __init__(self, scratch: Path, *, kind: str, settings: RunSettings, device: str, limit_s: float,
                 idle_s: float, beside: bool, serve_s: float | None = None, cap: bool = True,
                 hidden: tuple[Path, ...] = ()):
        self.scratch, self.kind, self.limit_s = scratch, kind, serve_s or limit_s
        limits = settings.limits(device_kind(device), limit_s)
        if cap:
            # One total for everything of the run in its scratch (a tmpfs, where we may mount one):
            # before anything is written there, so nothing written is lost under the mount.
            cap_scratch(scratch, limits.scratch_bytes)
        # Opened before the run can touch its scratch: the runner's later reads and writes there go
        # through this descriptor, whatever the run renames or links in the meantime.
        self.scratch_fd: int | None = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._fd_lock = threading.Lock()
        self.started, self.idle_s = time.monotonic(), idle_s
        self._backstop_s = idle_s + self.limit_s + BACKSTOP_S
        self.deadline: float | None = None  # set by go()
        self.went: float | None = None
        self.wall_s: float | None = None  # from go to the end of the process (not to its word: a
        # process that reports "done" early and trains on until it is killed still pays for it)
        self.cpu_s: float | None = None  # CPU time of the whole run from go to its end, where measurable
        self._cpu_at_go: float | None = None
        self._killed = False
        self._messages = 0
        self._cancel = threading.Event()
        self.sock, child_end = channel.pair()
        self.sock.settimeout(POLL_S)
        self._meter = RunMeter()  # the whole run's CPU seconds, from any thread
        mode = _probe_sandbox(settings.sandbox_mode)
        start = {"kind": kind, "channel": child_end.fileno(), "idle_s": idle_s,
                 "nice": settings.warm_up_nice if beside else 0,
                 "pid_namespace": mode in ("bwrap", "namespaces")}  # see harness/priority.py
        (scratch / "config.json").write_text(json.dumps(start), encoding="utf-8")
        root = harness_root()
        argv = [sys.executable, "-P", "-m", "trainer.harness.child", "config.json"]
        env = {"PYTHONPATH": str(root)}
        self._holder: dict = {}

        def target() -> None:
            try:
                devices = gpu_device_paths() if device_kind(device) == "gpu" else ()
                self._holder["run"] = run_sandboxed(argv, scratch=scratch, ro_paths=[root], limits=limits,
                                                    env=env, timeout_s=self._backstop_s, mode=settings.sandbox_mode,
                                                    devices=devices, cancel=self._cancel,
                                                    pass_fds=[child_end.fileno()], hidden=hidden,
                                                    meter=self._meter)
            except (SandboxUnavailable, OSError, ValueError) as exc:
                self._holder["error"] = f"sandbox: {exc}"
            finally:
                child_end.close()

        self._thread = threading.Thread(target=target, name=f"sandboxed-{kind}", daemon=True)
        self._thread.start()

    def close_scratch(self) -> None:
        """Let go of the scratch descriptor (once the runner has read what it needs)."""
        with self._fd_lock:
            fd, self.scratch_fd = self.scratch_fd, None
            if fd is not None:
                os.close(fd)

    def can_take(self, limit_s: float) -> bool:
        """Alive, jobless, not about to give up waiting, and its backstop lies beyond this run's deadline."""
        age = time.monotonic() - self.started
        return (self.deadline is None and self._thread.is_alive() and age < self.idle_s - CLAIM_MARGIN_S
                and age + limit_s < self._backstop_s - CLAIM_MARGIN_S)

    def go(self, job: dict, limit_s: float | None = None, fds: tuple[int, ...] = ()) -> None:
        """Hand over the job (its files must already be in the scratch directory); the clock starts."""
        if limit_s is not None:
            self.limit_s = limit_s
        self.deadline = time.monotonic() + self.limit_s
        self._start_clock()
        try:
            channel.send(self.sock, {"job": job}, fds)
        except OSError:
            pass  # the process is gone: wait() says why

    def _start_clock(self) -> None:
        self.went = time.monotonic()
        self._cpu_at_go = self._meter.cpu_s()

    def send(self, message: dict) -> None:
        try:
            channel.send(self.sock, message)
        except OSError:
            pass  # the process is gone: the next receive says why

    def abort(self) -> None:
        """End the process now."""
        if self.deadline is None:
            self.deadline = time.monotonic()
        self._kill()

    def _kill(self) -> None:
        self._cancel.set()  # run_sandboxed kills the whole run (process group and the run's uid)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def receive(self, timeout: float = POLL_S) -> dict | None:
        """The next message, or None when none came within ``timeout``. Raises Crash when the
        process has ended (with its reason), ran past its deadline, or broke the channel's rules."""
        if self.expired() and not self._killed:
            self._killed = True
            self._kill()
            self._end()
            raise Crash(f"timeout after {self.limit_s:.0f} s", self.sandbox)
        self.sock.settimeout(timeout)
        try:
            message, fds = channel.recv(self.sock)
        except socket.timeout:
            if not self._thread.is_alive():
                raise self._exit_crash() from None
            return None
        except (channel.ChannelError, OSError) as exc:
            self._kill()
            self._end()
            raise Crash(f"harness channel: {exc}", self.sandbox) from None
        for fd in fds:  # a process has no descriptors to give the runner
            os.close(fd)
        if message is None:
            raise self._exit_crash()
        self._messages += 1
        if self._messages > MAX_MESSAGES:
            self._kill()
            self._end()
            raise Crash(f"harness channel: more than {MAX_MESSAGES} messages", self.sandbox)
        if "error" in message:
            self._end()
            raise Crash(str(message["error"])[:400], self.sandbox)
        return message

    def wait(self, on_point: Callable[[dict], None] | None = None) -> tuple[dict, str]:
        """(the job's ``done`` message, sandbox mode) once the process has ended, or raises Crash.
        ``on_point`` gets each progress point as it comes. The job's clock restarts at the process's
        first ``ready`` (sent by the harness before the script runs: its own imports are not the
        job's), and only if that comes before anything else."""
        ready = False
        while True:
            message = self.receive()
            if message is None:
                continue
            if "ready" in message:
                if not ready:  # the first one only: the harness sends it before the script runs
                    ready = True
                    self._start_clock()
                continue
            ready = True
            if "point" in message:
                if on_point is not None and isinstance(message["point"], dict):
                    on_point(message["point"])
                continue
            if "done" in message:
                run = self._end()  # the clock stops when the process has ended, not at its word
                done = message["done"]
                if run is not None and run.killed_reason:
                    raise Crash(_killed_text(run.killed_reason), run.sandbox)
                if not isinstance(done, dict):
                    raise Crash("harness channel: malformed outcome", self.sandbox)
                return done, self.sandbox
            self._kill()
            self._end()
            raise Crash(f"harness channel: unexpected message {next(iter(message))[:40]!r}", self.sandbox)

    def _finish_clock(self) -> None:
        if self.went is not None and self.wall_s is None:
            self.wall_s = time.monotonic() - self.went

    def _end(self) -> SandboxRun | None:
        """Let the process exit (it has sent its outcome) or end it; then settle the CPU figure."""
        if not self.join(EXIT_GRACE_S):
            self._kill()
            self.join()
        self._finish_clock()
        run = self._holder.get("run")
        if self._cpu_at_go is not None:
            total = self._meter.cpu_s()
            if total is not None:
                self.cpu_s = max(0.0, total - self._cpu_at_go)
        self.sock.close()
        return run

    @property
    def sandbox(self) -> str:
        run = self._holder.get("run")
        return run.sandbox if run is not None else "none"

    def _exit_crash(self) -> Crash:
        """Why a process ended without its outcome."""
        self.join()
        self.sock.close()
        if "error" in self._holder:
            return Crash(self._holder["error"])
        run: SandboxRun = self._holder["run"]
        if self._killed or run.timed_out:
            return Crash(f"timeout after {self.limit_s:.0f} s", run.sandbox)
        if run.killed_reason:
            return Crash(_killed_text(run.killed_reason), run.sandbox)
        tail = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
        return Crash(f"process ended without an outcome: {tail[:300]}", run.sandbox)


def _probe_sandbox(mode: str) -> str:
    """The mode a run will get (probed once per process, cached): the process is told whether it has
    a pid namespace of its own (harness/priority.py)."""
    if mode == "auto":
        return detect_sandbox()
    if mode in MODES:
        mode_works(mode)
    return mode


_root_lock = threading.Lock()
_root: list[Path] = []


def harness_root() -> Path:
    """A directory holding the harness modules a run may use, and nothing else of ours: the task
    definitions and data generators (trainer/tasks.py, markov.py), the scorer and the runner stay
    out of the sandbox. Made once per process (a copy, readable by the run's uid), removed at exit."""
    with _root_lock:
        if _root and _root[0].is_dir():
            return _root[0]
        root = scratch_dir("harness")
        package = root / "trainer"
        (package / "harness").mkdir(parents=True)
        (package / "__init__.py").write_text('"""The harness modules a sandboxed run may import."""\n', encoding="utf-8")
        for name in HARNESS_MODULES:
            shutil.copyfile(PACKAGE_DIR / "harness" / name, package / "harness" / name)
        for path in (root, package, package / "harness"):
            os.chmod(path, 0o755)
        for path in [package / "__init__.py", *(package / "harness").iterdir()]:
            os.chmod(path, 0o644)
        _root[:] = [root]
        atexit.register(shutil.rmtree, root, True)
        return root


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
            harness.close_scratch()
            release_scratch(harness.scratch)
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

_SCRATCH_RE = re.compile(r"ralphswarm-[a-z]+(?:-[a-z]+)*-([0-9]+)-")  # kinds may hold a dash (model-a)
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
        if match is None or not path.is_dir() or path.is_symlink() or pid_alive(int(match[1])):
            continue
        release_scratch(path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed




def _killed_text(reason: str) -> str:
    return {"memory": "out of memory", "cpu": "cpu time limit", "file size": "file size limit",
            "processes": "process limit"}.get(
        reason, f"killed ({reason})")


class Workspace:
    """Where a run's scratch directories live: the caller's work_dir (kept, for inspection: no warm
    processes, whose directories live elsewhere), else each process's own temporary directory,
    adopted when the process gets its job and removed with the workspace."""

    def __init__(self, work_dir: Path | None, settings: RunSettings, hidden: tuple[Path, ...] = ()):
        self.hidden = tuple(hidden)  # directories its processes must not see (the data cache, the node's home)
        self.keep = work_dir is not None
        self.pooled = settings.warm_pool and not self.keep
        self.root = Path(work_dir) if work_dir else None
        if self.root is None and not self.pooled:
            self.root = scratch_dir("exp")
        self._adopted: list[Path] = []
        self._handed: list[Harness] = []

    def harness(self, kind: str, *, settings: RunSettings, device: str, limit_s: float, idle_s: float,
                beside: bool, serve_s: float | None = None) -> Harness:
        """A process for this run: a warm one from the pool where one waits, else one started now.
        ``limit_s`` sizes its rlimits; ``serve_s`` (default limit_s) is the wall time its job gets."""
        if self.pooled:
            harness = POOL.claim(_pool_key(kind, settings, device, limit_s, self.hidden), serve_s or limit_s)
            if harness is not None:
                self._handed.append(harness)
                return harness
            scratch = scratch_dir(kind)
        else:
            scratch = self.root / kind
            release_scratch(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
        # A kept work_dir (for inspection) is not capped: its files must outlive the run's mount.
        harness = Harness(scratch, kind=kind, settings=settings, device=device, limit_s=limit_s, idle_s=idle_s,
                          beside=beside, serve_s=serve_s, cap=not self.keep, hidden=self.hidden)
        self._handed.append(harness)
        return harness

    def go(self, harness: Harness, job: dict, limit_s: float, fds: tuple[int, ...] = ()) -> None:
        if self.pooled:
            self._adopted.append(harness.scratch)
        harness.go(job, limit_s, fds)

    def refill(self, kind: str, *, settings: RunSettings, device: str, limit_s: float,
               serve_s: float | None = None) -> None:
        """Have a warm process of this kind wait for the next run (a no-op when one already does)."""
        if self.pooled:
            POOL.start(_pool_key(kind, settings, device, limit_s, self.hidden),
                       lambda scratch: Harness(scratch, kind=kind, settings=settings, device=device,
                                               limit_s=limit_s, idle_s=settings.warm_idle_s, beside=True,
                                               serve_s=serve_s, hidden=self.hidden))

    def release(self, harness: Harness) -> None:
        """End a process before its run is over: one never used, or an evaluation whose training failed."""
        if self.pooled:
            POOL.retire(harness)  # its directory goes once it has exited; nothing here waits for that
        else:
            harness.abort()
            harness.join()  # let it exit before its scratch (in the work dir) is reused

    def close(self) -> None:
        for harness in self._handed:
            harness.close_scratch()
        for path in self._adopted:
            release_scratch(path)
            shutil.rmtree(path, ignore_errors=True)
        if self.root is not None and not self.keep:
            release_scratch(self.root)
            shutil.rmtree(self.root, ignore_errors=True)


def _pool_key(kind: str, settings: RunSettings, device: str, limit_s: float, hidden: tuple = ()) -> tuple:
    """What a process must have been started with to serve a run: its kind, device, rlimits, and
    what it does not see."""
    return kind, device, settings, settings.limits(device_kind(device), limit_s), hidden


