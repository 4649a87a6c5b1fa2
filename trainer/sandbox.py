"""Run a stranger's program contained (docs/design.md, "Running other people's code").

Three modes, best first:
- "bwrap": bubblewrap builds a fresh root that shows only system directories, the Python installation
  and `ro_paths` (all read-only) plus the scratch directory; new pid, net, ipc and uts namespaces.
- "namespaces": `unshare` gives new pid, net, mount, ipc and uts namespaces; the sandbox init
  (trainer/sandbox_init.py) remounts the whole tree read-only except scratch and hides homes and
  temp dirs. Everything else on the machine stays readable, so prefer bwrap.
- "none": a plain child process. It still gets the rlimits, the uid drop, the scrubbed environment
  and the timeout, but no network or filesystem isolation: the result says so.

In every mode the program runs under trainer/sandbox_init.py, which applies the rlimits, drops to an
unprivileged uid (when we are root; root ignores RLIMIT_NPROC and file permissions) and reaps the
whole run. Each run gets its own uid from a high range, so RLIMIT_NPROC counts only that run and
"every process of that uid" is exactly the run: the final sweep kills them all, even ones that
escaped the process group. In "none" mode that uid must be able to reach the program and scratch
(the interpreter under /root, as with pyenv, is not: use a system Python there).

Limits per run, not per process: where the machine offers a writable cgroup (trainer/cgroups.py),
every run gets one of its own, joined before anything of the run starts and removed after it: memory
(Limits.memory_bytes, below the machine's RAM only: not a GPU run's huge value) and the task count
bound all the run's processes together, and an OOM kill there ends the whole run ("memory"). A
RunMeter reads the CPU time of the whole run while it runs. As root, ``scratch_cap`` mounts a tmpfs of
Limits.scratch_bytes over the scratch directory (cap_scratch; release_scratch before removing it).
Without a cgroup the rlimits are per process: N processes may hold N times memory_bytes.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from . import cgroups
from .bounded_output import BoundedBuffer
from .policy import may_run  # noqa: F401  (re-exported: the node asks both questions of this module)
from .rlimits import Limits

MODES = ("bwrap", "namespaces", "none")
OUTPUT_CAP = 1 << 20       # bytes kept per stream
TERM_GRACE_S = 1.0         # SIGTERM, then SIGKILL this much later
PIPE_LINGER_S = 2.0        # after the program ends, how long a leftover holder may keep its pipe open
RUN_UID_BASE = 0x5A000000  # per-run uids: far above distro uids and the usual /etc/subuid ranges
RUN_UID_SPAN = 1 << 24
SETUP_FAILED = 125         # sandbox_init's status when the sandbox could not be set up

_INIT_SOURCE = (Path(__file__).with_name("sandbox_init.py")).read_text()
# System paths a Python program needs; /etc only what libc and Python read at startup.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache", "/etc/ld.so.conf",
              "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
# Hidden under an empty tmpfs in namespaces mode: where credentials and sockets usually live.
_HIDE_DIRS = ("/root", "/home", "/tmp", "/var/tmp", "/run", "/dev/shm", "/mnt", "/media", "/srv")
_MEMORY_MARKERS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")
# Tasks of the sandbox's own helpers inside the run's cgroup (bwrap: its monitor and its pid 1;
# unshare: itself): the run's task cap is Limits.processes plus these.
_HELPER_TASKS = {"bwrap": 2, "namespaces": 1, "none": 0}
OOM_POLL_S = 0.1           # how often the pump looks for an OOM kill in the run's cgroup
SCRATCH_SOURCE = "ralphswarm-scratch"  # the source name of a capped scratch's tmpfs (mountinfo)
MS_NOSUID, MS_NODEV, MNT_DETACH = 0x2, 0x4, 0x2


class SandboxUnavailable(RuntimeError):
    """The requested sandbox mode does not work on this machine."""


@dataclass(frozen=True)
class SandboxRun:
    returncode: int | None     # exit status, -N for death by signal N, None when we killed it on timeout
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None  # "timeout", "memory", "cpu", "file size", "processes", "signal N", "setup", or None
    sandbox: str               # "bwrap" | "namespaces" | "none"
    cpu_s: float | None = None  # CPU seconds (user + system) of the whole run, all its processes
    cgroup: str | None = None  # "v2" | "v1": the run had a cgroup of its own (limits per run); None: per process


class RunMeter:
    """The CPU seconds (user + system) a run has used so far, all its processes together; pass one to
    run_sandboxed and call ``cpu_s()`` from any thread, during the run and after it (then: the final
    total). 0.0 before the run starts: it has used nothing yet. One meter per run.

    While the run lives the figure comes from the run's cgroup (cpu.stat / cpuacct.usage), else from
    /proc (utime+stime of the run's process tree, plus what its members reaped); once it ended, from
    the cgroup's last reading, else from the rusage wait4 returned. It never goes down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read = None
        self._last = 0.0
        self._final = 0.0
        self._ended = False

    def cpu_s(self) -> float:
        with self._lock:
            if self._ended:
                return self._final
            read = self._read
        value = None
        if read is not None:
            try:
                value = read()
            except (OSError, ValueError):
                value = None
        with self._lock:
            if self._ended:
                return self._final
            if value is not None:
                self._last = max(self._last, value)
            return self._last

    def _start(self, read) -> None:
        with self._lock:
            self._read, self._last, self._final, self._ended = read, 0.0, 0.0, False

    def _finish(self, total: float | None) -> float:
        with self._lock:
            self._final = self._last if total is None else max(total, self._last)
            self._ended, self._read = True, None
            return self._final


class _TreeCpu:
    """CPU seconds of a process and all its descendants from /proc: utime+stime of each, plus
    cutime+cstime (its reaped children's). Used where the run has no cgroup to account it."""

    def __init__(self, root: int):
        self.root = root
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.started = self._stat(root)[2]

    @staticmethod
    def _stat(pid: int) -> tuple[int, int, int]:
        """(ppid, cpu ticks of it and its reaped children, start time)."""
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), sum(int(x) for x in fields[11:15]), int(fields[19])

    def __call__(self) -> float | None:
        stats: dict[int, tuple[int, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid, ticks, started = self._stat(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
                if int(entry) == self.root and started != self.started:
                    return None  # the run's first process is gone and its number taken
                stats[int(entry)] = (ppid, ticks)
        if self.root not in stats:
            return None
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        total, todo = 0, [self.root]
        while todo:
            pid = todo.pop()
            total += stats[pid][1]
            todo += children.get(pid, [])
        return total / self.ticks


_libc = ctypes.CDLL(None, use_errno=True)


def _scratch_mounts(path: Path | None = None) -> list[str]:
    """Mount points of capped scratches (our tmpfs), at or under ``path`` when given."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            rest = right.split()
            if len(rest) >= 2 and rest[0] == "tmpfs" and rest[1] == SCRATCH_SOURCE:
                point = cgroups._unescape(left.split()[4])
                if path is None or point == str(path) or point.startswith(str(path).rstrip("/") + "/"):
                    points.append(point)
    return points


def scratch_capped(path: Path) -> bool:
    """Is a capped scratch tmpfs mounted at ``path``?"""
    path = Path(path).resolve()
    return str(path) in _scratch_mounts(path)


def cap_scratch(path: Path, size_bytes: int) -> bool:
    """Mount a tmpfs of ``size_bytes`` (mode 0700, nosuid, nodev) over the directory ``path``
    (created if missing) and move what is already there into it: every file of every run using it
    then counts against one total, and writing past it fails with ENOSPC. Root only: False
    elsewhere, True when ``path`` is capped (now or already). Call it before anyone else writes
    there (an entry written during the move may be lost), and ``release_scratch`` before removing
    the directory. Its pages count against the memory cgroup of the process that writes them.
    A root that may not mount (a container's, without CAP_SYS_ADMIN) gets False too.
    """
    if os.geteuid() != 0:
        return False
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    if scratch_capped(path):
        return True
    under = os.open(path, os.O_RDONLY | os.O_DIRECTORY)  # the directory beneath, still reachable
    try:
        inodes = max(4096, size_bytes // 16384)
        if _libc.mount(SCRATCH_SOURCE.encode(), str(path).encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV),
                       f"size={size_bytes},nr_inodes={inodes},mode=0700".encode()) != 0:
            return False  # root without the right to mount (a container's root, say): no cap here
        src = f"/proc/self/fd/{under}"
        try:
            names = os.listdir(src)
            for name in names:  # copy all, then delete: a failure leaves the directory as it was
                old = os.path.join(src, name)
                if os.path.isdir(old) and not os.path.islink(old):
                    shutil.copytree(old, path / name, symlinks=True)
                else:
                    shutil.copy2(old, path / name, follow_symlinks=False)
            shutil.copystat(src, path)
            os.chmod(path, 0o700)
        except BaseException:
            _umount(str(path))
            raise
        for name in names:
            old = os.path.join(src, name)
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.unlink(old)
                except OSError:
                    pass
    finally:
        os.close(under)
    return True


def _umount(point: str) -> None:
    if _libc.umount2(point.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {point}: {os.strerror(err)}")


def release_scratch(path: Path) -> int:
    """Unmount every capped scratch at or under ``path`` (what is in them goes with them), so that
    ``shutil.rmtree(path)`` can remove it; a no-op where none is mounted. Returns how many it unmounted."""
    try:
        path = Path(path).resolve()
        points = _scratch_mounts(path)
    except OSError:
        return 0
    done = 0
    while points:
        for point in sorted(points, key=len, reverse=True):
            try:
                _umount(point)
                done += 1
            except OSError:
                return done
        points = _scratch_mounts(path)
    return done


def python_paths() -> list[Path]:
    """The running interpreter's installation: base prefix, venv, and the real executable's prefix."""
    real_exe = Path(os.path.realpath(sys.executable))
    candidates = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix), real_exe.parent.parent}
    return _outermost(p.resolve() for p in candidates)


def _outermost(paths) -> list[Path]:
    """Drop paths that lie inside another one of the list (binding the parent covers them)."""
    ps = sorted(set(paths), key=lambda p: len(p.parts))
    out: list[Path] = []
    for p in ps:
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out


def base_env(scratch: Path) -> dict[str, str]:
    """The whole environment a run sees before the caller's additions: nothing from ours."""
    threads = str(max(1, min(8, len(os.sched_getaffinity(0)))))
    return {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TMPDIR": str(scratch / "tmp"),
        # getpass.getuser() (torch.compile's cache dir) fails for a uid without a passwd entry
        "USER": "sandbox",
        "LOGNAME": "sandbox",
    }


def gpu_device_paths() -> list[str]:
    """Device nodes a CUDA run needs inside bubblewrap (whose fresh /dev hides them)."""
    import glob

    return sorted(glob.glob("/dev/nvidia*") + glob.glob("/dev/dri/*"))


@functools.cache
def _our_packages() -> tuple[Path, ...]:
    """Where this project's packages live (an editable checkout, or site-packages): never shown to
    a run, which gets a copy of the harness modules it may use and nothing else of ours (task
    definitions, data generators, the scorer)."""
    import importlib.util

    found = []
    for name in ("protocol", "store", "trainer", "ralph", "node", "ralphswarm"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            path = Path(location).resolve()
            if path.is_dir():
                found.append(path)
    return tuple(found)


def _hidden_dirs(hidden: Sequence[Path]) -> list[Path]:
    """The directories to hide from a run: ours, and the caller's (a data cache, a node's home)."""
    out = []
    for p in [*_our_packages(), *(Path(h) for h in hidden)]:
        try:
            p = p.resolve()
        except OSError:
            continue
        if p.is_dir() and p not in out and p != Path("/"):
            out.append(p)
    return out


def _bwrap_cmd(scratch: Path, keep: list[Path], as_root: bool, devices: Sequence[str] = (),
               hidden: Sequence[Path] = ()) -> list[str]:
    # As root we skip the user namespace: sandbox_init drops to the run's uid instead, which (unlike a
    # uid mapped back to root) is subject to RLIMIT_NPROC and file permissions outside.
    cmd = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if not as_root:
        cmd += ["--unshare-user", "--disable-userns"] if _bwrap_has("--disable-userns") else ["--unshare-user"]
    cmd += ["--die-with-parent", "--new-session", "--clearenv"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for f in _ETC_FILES:
        cmd += ["--ro-bind-try", f, f]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for dev in devices:  # GPUs: the driver's device nodes, and /sys for the driver to find them
        cmd += ["--dev-bind-try", dev, dev]
    if devices:
        cmd += ["--ro-bind-try", "/sys", "/sys"]
    # bwrap (as root) creates missing parents 0700; the dropped uid must traverse them
    for d in _ancestors([*keep, scratch]):
        cmd += ["--perms", "0755", "--dir", str(d)]
    for p in keep:
        cmd += ["--ro-bind", str(p), str(p)]
    for d in hidden:  # only what a bind above would show (a non-editable install in site-packages)
        if any(d == p or p in d.parents for p in keep) and not any(d == p or d in p.parents for p in keep):
            cmd += ["--tmpfs", str(d)]
    cmd += ["--bind", str(scratch), str(scratch), "--chdir", str(scratch), "--"]
    return cmd


def _ancestors(paths: Sequence[Path]) -> list[Path]:
    """Parents of the bind targets that are not already provided by a system directory bind."""
    system = [Path(d) for d in _SYSTEM_DIRS]
    found = {a for p in paths for a in p.parents if a != Path("/")}
    found = {a for a in found if not any(a == d or d in a.parents for d in system)}
    return sorted(found, key=lambda a: len(a.parts))


@functools.cache
def _bwrap_has(option: str) -> bool:
    try:
        out = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in out.stdout


def _unshare_cmd(as_root: bool) -> list[str]:
    cmd = ["unshare", "--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child",
           "--propagation", "private"]
    if not as_root:
        cmd += ["--user", "--map-root-user"]
    return cmd + ["--"]


def _init_cmd(argv: Sequence[str], cfg: dict) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", _INIT_SOURCE, json.dumps(cfg), "--", *argv]


def build_command(mode: str, argv: Sequence[str], *, scratch: Path, ro_paths: Sequence[Path], limits: Limits,
                  env: dict[str, str], uid: int | None, devices: Sequence[str] = (),
                  hidden: Sequence[Path] = ()) -> list[str]:
    keep = _outermost([*python_paths(), *(Path(p).resolve() for p in ro_paths)])
    hide = _hidden_dirs(hidden)
    cfg = {
        "scratch": str(scratch),
        "limits": limits.rlimits(),
        "env": env,
        "uid": uid,
        "gid": uid,
        "mounts": mode == "namespaces",
        "keep_paths": [str(p) for p in keep],
        # outermost only: a directory under one already hidden is gone with it (and cannot be a mount point)
        "hide_dirs": sorted(str(d) for d in _outermost([Path(d) for d in (*_HIDE_DIRS, os.path.expanduser("~"))]
                                                       + hide)),
        "pid1": mode != "none",
        # kill(-1) is "the rest of the run" only inside our own pid namespace or under the run's own uid
        "kill_all": mode != "none" or uid is not None,
    }
    as_root = os.geteuid() == 0
    if mode == "bwrap":
        prefix = _bwrap_cmd(scratch, keep, as_root, devices, hide)
    elif mode == "namespaces":
        prefix = _unshare_cmd(as_root)
    else:
        prefix = []
    return prefix + _init_cmd(argv, cfg)


def _chown_tree(root: Path, uid: int, gid: int, only_from: int | None = None) -> None:
    """lchown every entry (never following a symlink the run may have planted); with only_from, only
    entries owned by that uid, so a hard link the run made to someone else's file is left alone."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            try:
                if only_from is None or os.lstat(p).st_uid == only_from:
                    os.lchown(p, uid, gid)
            except OSError:
                pass
    if only_from is None or root.lstat().st_uid == only_from:
        os.lchown(root, uid, gid)


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry))
                        break
        except OSError:
            continue
    return pids


def sweep_uid(uid: int, rounds: int = 50) -> None:
    """Kill every process of the run's uid: `kill -KILL -1` run as that uid reaches exactly those."""
    for _ in range(rounds):
        if not _pids_of_uid(uid):
            return
        subprocess.run(["kill", "-KILL", "--", "-1"], user=uid, group=uid, extra_groups=[],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
        time.sleep(0.02)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_run(proc: subprocess.Popen, uid: int | None, cg: cgroups.RunCgroup | None = None) -> None:
    """SIGKILL the run's process group, everything in its cgroup, then whatever of its uid escaped."""
    _signal_group(proc, signal.SIGKILL)
    if cg is not None:
        cg.kill(wait=False)
    if uid is not None:
        sweep_uid(uid)


def _exited(proc: subprocess.Popen) -> bool:
    """Has the direct child exited? Leaves it unreaped, so the final wait4 still gets its rusage."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _reap(proc: subprocess.Popen) -> tuple[int, float | None]:
    """Wait for the direct child: (its returncode as Popen gives it, CPU seconds of it and all it reaped)."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _pump(proc: subprocess.Popen, timeout_s: float, uid: int | None,
          cancel: threading.Event | None = None,
          cg: cgroups.RunCgroup | None = None) -> tuple[BoundedBuffer, BoundedBuffer, bool]:
    """Drain both pipes into bounded buffers, enforcing the wall-clock timeout; a set ``cancel`` ends
    the whole run at once (SIGKILL), and so does an OOM kill in the run's cgroup (one process of the
    run killed for the run's memory cap). Returns (out, err, timed_out)."""
    out, err = BoundedBuffer(OUTPUT_CAP), BoundedBuffer(OUTPUT_CAP)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    deadline = time.monotonic() + timeout_s
    term_at = exited_at = None
    timed_out = cancelled = oom = False
    oom_checked = time.monotonic()
    while sel.get_map():
        now = time.monotonic()
        if not cancelled and cancel is not None and cancel.is_set():
            cancelled = True
            _kill_run(proc, uid, cg)
        if not oom and cg is not None and now >= oom_checked + OOM_POLL_S:
            oom_checked = now
            if cg.oom_kills():
                oom = True
                _kill_run(proc, uid, cg)
        if not timed_out and now >= deadline and not _exited(proc):
            timed_out, term_at = True, now
            _signal_group(proc, signal.SIGTERM)
        if term_at is not None and now >= term_at + TERM_GRACE_S:
            _kill_run(proc, uid, cg)
        if exited_at is None and _exited(proc):
            exited_at = now
        if exited_at is not None and now >= exited_at + PIPE_LINGER_S:
            # the program is gone but something of the run still holds a pipe: end it, stop reading
            _kill_run(proc, uid, cg)
            break
        for key, _ in sel.select(timeout=0.1):
            chunk = os.read(key.fd, 1 << 16)
            if chunk:
                key.data.feed(chunk)
            else:
                sel.unregister(key.fileobj)
    sel.close()
    return out, err, timed_out


def _reason(returncode: int, timed_out: bool, stderr: str, oom_kills: int = 0, pids_refused: int = 0) -> str | None:
    if timed_out:
        return "timeout"
    if oom_kills:
        return "memory"  # the run's cgroup hit its memory cap: the kernel killed a process, we the rest
    if returncode == SETUP_FAILED and stderr.startswith("sandbox init:"):
        return "setup"
    sig = -returncode if returncode < 0 else None
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and "CPU time limit" in stderr):
        return "cpu"
    if sig == signal.SIGXFSZ or (returncode != 0 and "File too large" in stderr):
        return "file size"
    if returncode != 0 and pids_refused:
        return "processes"  # a fork or thread refused by the run's task cap, and the run failed
    if returncode != 0 and any(m in stderr[-8192:] for m in _MEMORY_MARKERS):
        return "memory"
    if sig is not None:
        return f"signal {sig}"
    return None


def _normalize(rc: int) -> int:
    """bwrap, unshare and sandbox_init report a death by signal N as exit status 128+N."""
    if 128 < rc < 128 + 65:
        return -(rc - 128)
    return rc


def _memory_cap(limits: Limits) -> int | None:
    """The run's memory cap: Limits.memory_bytes, unless it is no less than the machine's RAM (a GPU
    run's address-space figure: CUDA maps far more than it uses), where it caps nothing."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return limits.memory_bytes
    return limits.memory_bytes if limits.memory_bytes < ram else None


def _make_cgroup(mode: str, limits: Limits) -> cgroups.RunCgroup | None:
    try:
        return cgroups.RunCgroup.create(_memory_cap(limits), limits.processes + _HELPER_TASKS[mode])
    except OSError:
        return None  # could not make one now: the run keeps its per-process limits


def _run(mode: str, argv: Sequence[str], scratch: Path, ro_paths: Sequence[Path], limits: Limits,
         env: dict[str, str] | None, timeout_s: float, devices: Sequence[str] = (),
         cancel: threading.Event | None = None, pass_fds: Sequence[int] = (),
         meter: RunMeter | None = None, scratch_cap: bool = False, hidden: Sequence[Path] = ()) -> SandboxRun:
    scratch = Path(scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    if scratch_cap:
        cap_scratch(scratch, limits.scratch_bytes)
    (scratch / "tmp").mkdir(exist_ok=True)
    full_env = {**base_env(scratch), **(env or {})}
    uid = (RUN_UID_BASE + secrets.randbelow(RUN_UID_SPAN)) if os.geteuid() == 0 else None
    if uid is not None:
        _chown_tree(scratch, uid, uid)
    cg = _make_cgroup(mode, limits)
    # With the run's task cap in its cgroup, RLIMIT_NPROC (one more) stays as a backstop: the cgroup
    # refuses first, and says so (pids.events), which names the reason "processes".
    rlimited = replace(limits, processes=limits.processes + 1) if cg is not None and cg.caps_pids() else limits
    cmd = build_command(mode, argv, scratch=scratch, ro_paths=ro_paths, limits=rlimited, env=full_env, uid=uid,
                        devices=devices, hidden=hidden)
    if cg is not None:
        cmd = cg.join_prefix() + cmd  # a /bin/sh joins the cgroup, then execs the sandbox: all of it starts inside
    meter = meter if meter is not None else RunMeter()
    reaped_cpu = cg_cpu = None
    oom_kills = pids_refused = 0
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=full_env, cwd=scratch, start_new_session=True, close_fds=True,
                                pass_fds=tuple(pass_fds))
        try:
            if cg is not None and cg.has_cpu():
                meter._start(cg.cpu_s)
            else:
                try:
                    meter._start(_TreeCpu(proc.pid))
                except (OSError, ValueError, IndexError):
                    meter._start(None)
            out, err, timed_out = _pump(proc, timeout_s, uid, cancel, cg)
        finally:
            if not _exited(proc):
                _signal_group(proc, signal.SIGKILL)
                try:
                    os.kill(proc.pid, signal.SIGKILL)  # not proc.kill(): its poll() would reap, losing the rusage
                except ProcessLookupError:
                    pass
            rc, reaped_cpu = _reap(proc)
            proc.stdout.close()
            proc.stderr.close()
    finally:
        if cg is not None:
            cg.kill()
        if uid is not None:
            sweep_uid(uid)
        if cg is not None:
            oom_kills, pids_refused = cg.oom_kills(), cg.pids_refused()
            cg_cpu = cg.cpu_s() if cg.has_cpu() else None
            cg.remove()
        cpu_s = meter._finish(cg_cpu if cg_cpu is not None else reaped_cpu)
        if uid is not None:
            _chown_tree(scratch, os.getuid(), os.getgid(), only_from=uid)
    stderr = err.text()
    returncode = None if timed_out else _normalize(rc)
    reason = _reason(returncode if returncode is not None else 0, timed_out, stderr, oom_kills, pids_refused)
    return SandboxRun(returncode=returncode, stdout=out.text(), stderr=stderr, timed_out=timed_out,
                      killed_reason=reason, sandbox=mode, cpu_s=cpu_s, cgroup=cg.flavour if cg is not None else None)


@functools.cache
def mode_works(mode: str) -> bool:
    """Try the mode once for real: run `true` through the whole sandbox, uid drop and all."""
    if mode == "none":
        return True
    with tempfile.TemporaryDirectory(prefix="ralphswarm-probe-") as tmp:
        try:
            run = _run(mode, ["true"], Path(tmp), (), Limits(), None, timeout_s=30)
        except OSError:
            return False
    return run.returncode == 0


@functools.cache
def detect_sandbox() -> str:
    """The best mode that works here: "bwrap", else "namespaces", else "none". Cached per process."""
    for mode in ("bwrap", "namespaces"):
        if mode_works(mode):
            return mode
    return "none"


def run_sandboxed(argv: list[str], *, scratch: Path, ro_paths: Sequence[Path] = (), limits: Limits = Limits(),
                  env: dict[str, str] | None = None, timeout_s: float, mode: str = "auto",
                  devices: Sequence[str] = (), cancel: threading.Event | None = None,
                  pass_fds: Sequence[int] = (), meter: RunMeter | None = None,
                  scratch_cap: bool = False, hidden: Sequence[Path] = ()) -> SandboxRun:
    """Run argv contained, with scratch (created if missing) as its only writable place and cwd.

    env is added to a minimal environment (see base_env); nothing of this process's environment leaks.
    mode "auto" picks detect_sandbox(); a named mode that does not work raises SandboxUnavailable.
    ``devices`` are device nodes to expose read-write (a GPU run's /dev/nvidia*: see gpu_device_paths).
    Setting ``cancel`` (from any thread) kills the whole run within about 0.1 s, as a timeout would.
    ``pass_fds`` stay open, at the same numbers, in the program (a channel to a trusted side: pipes,
    socketpairs, sealed memfds); every other descriptor of ours is closed.
    ``meter`` (a RunMeter) gives the CPU seconds of the whole run, from any thread, while it runs and after.
    ``scratch_cap`` (root only) mounts a tmpfs of limits.scratch_bytes over scratch first (cap_scratch;
    a no-op where one is mounted already): all the run's files together are capped; it stays
    mounted after the run, holding the files, until release_scratch(scratch).
    ``hidden`` directories (and always this project's own packages) are not shown to the run: under
    an empty tmpfs in namespaces mode, not bound (or under a tmpfs, inside a bound path) under bwrap.
    """
    if not argv:
        raise ValueError("argv is empty")
    if mode == "auto":
        mode = detect_sandbox()
    elif mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; expected auto, {', '.join(MODES)}")
    elif not mode_works(mode):
        raise SandboxUnavailable(f"sandbox mode {mode!r} does not work on this machine")
    return _run(mode, list(argv), Path(scratch), ro_paths, limits, env, timeout_s, devices, cancel, pass_fds,
                meter, scratch_cap, hidden)
