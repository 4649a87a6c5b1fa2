"""Run a stranger's program contained (DESIGN.md, "Running other people's code").

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
"""
from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


class SandboxUnavailable(RuntimeError):
    """The requested sandbox mode does not work on this machine."""


@dataclass(frozen=True)
class SandboxRun:
    returncode: int | None     # exit status, -N for death by signal N, None when we killed it on timeout
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None  # "timeout", "memory", "cpu", "file size", "signal N", "setup", or None
    sandbox: str               # "bwrap" | "namespaces" | "none"


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


def _bwrap_cmd(scratch: Path, keep: list[Path], as_root: bool, devices: Sequence[str] = ()) -> list[str]:
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
                  env: dict[str, str], uid: int | None, devices: Sequence[str] = ()) -> list[str]:
    keep = _outermost([*python_paths(), *(Path(p).resolve() for p in ro_paths)])
    cfg = {
        "scratch": str(scratch),
        "limits": limits.rlimits(),
        "env": env,
        "uid": uid,
        "gid": uid,
        "mounts": mode == "namespaces",
        "keep_paths": [str(p) for p in keep],
        "hide_dirs": sorted({*_HIDE_DIRS, os.path.expanduser("~")}),
        "pid1": mode != "none",
        # kill(-1) is "the rest of the run" only inside our own pid namespace or under the run's own uid
        "kill_all": mode != "none" or uid is not None,
    }
    as_root = os.geteuid() == 0
    if mode == "bwrap":
        prefix = _bwrap_cmd(scratch, keep, as_root, devices)
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


def _kill_run(proc: subprocess.Popen, uid: int | None) -> None:
    """SIGKILL the run's process group, then whatever of the run's uid escaped it."""
    _signal_group(proc, signal.SIGKILL)
    if uid is not None:
        sweep_uid(uid)


def _pump(proc: subprocess.Popen, timeout_s: float, uid: int | None,
          cancel: threading.Event | None = None) -> tuple[BoundedBuffer, BoundedBuffer, bool]:
    """Drain both pipes into bounded buffers, enforcing the wall-clock timeout; a set ``cancel`` ends
    the whole run at once (SIGKILL). Returns (out, err, timed_out)."""
    out, err = BoundedBuffer(OUTPUT_CAP), BoundedBuffer(OUTPUT_CAP)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    deadline = time.monotonic() + timeout_s
    term_at = exited_at = None
    timed_out = cancelled = False
    while sel.get_map():
        now = time.monotonic()
        if not cancelled and cancel is not None and cancel.is_set():
            cancelled = True
            _kill_run(proc, uid)
        if not timed_out and now >= deadline and proc.poll() is None:
            timed_out, term_at = True, now
            _signal_group(proc, signal.SIGTERM)
        if term_at is not None and now >= term_at + TERM_GRACE_S:
            _kill_run(proc, uid)
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now >= exited_at + PIPE_LINGER_S:
            # the program is gone but something of the run still holds a pipe: end it, stop reading
            _kill_run(proc, uid)
            break
        for key, _ in sel.select(timeout=0.1):
            chunk = os.read(key.fd, 1 << 16)
            if chunk:
                key.data.feed(chunk)
            else:
                sel.unregister(key.fileobj)
    sel.close()
    return out, err, timed_out


def _reason(returncode: int, timed_out: bool, stderr: str) -> str | None:
    if timed_out:
        return "timeout"
    if returncode == SETUP_FAILED and stderr.startswith("sandbox init:"):
        return "setup"
    sig = -returncode if returncode < 0 else None
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and "CPU time limit" in stderr):
        return "cpu"
    if sig == signal.SIGXFSZ or (returncode != 0 and "File too large" in stderr):
        return "file size"
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


def _run(mode: str, argv: Sequence[str], scratch: Path, ro_paths: Sequence[Path], limits: Limits,
         env: dict[str, str] | None, timeout_s: float, devices: Sequence[str] = (),
         cancel: threading.Event | None = None, pass_fds: Sequence[int] = ()) -> SandboxRun:
    scratch = Path(scratch).resolve()
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    full_env = {**base_env(scratch), **(env or {})}
    uid = (RUN_UID_BASE + secrets.randbelow(RUN_UID_SPAN)) if os.geteuid() == 0 else None
    if uid is not None:
        _chown_tree(scratch, uid, uid)
    cmd = build_command(mode, argv, scratch=scratch, ro_paths=ro_paths, limits=limits, env=full_env, uid=uid,
                        devices=devices)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=full_env, cwd=scratch, start_new_session=True, close_fds=True,
                                pass_fds=tuple(pass_fds))
        try:
            out, err, timed_out = _pump(proc, timeout_s, uid, cancel)
        finally:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.kill()
            rc = proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    finally:
        if uid is not None:
            sweep_uid(uid)
            _chown_tree(scratch, os.getuid(), os.getgid(), only_from=uid)
    stderr = err.text()
    returncode = None if timed_out else _normalize(rc)
    return SandboxRun(returncode=returncode, stdout=out.text(), stderr=stderr, timed_out=timed_out,
                      killed_reason=_reason(returncode if returncode is not None else 0, timed_out, stderr),
                      sandbox=mode)


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
                  pass_fds: Sequence[int] = ()) -> SandboxRun:
    """Run argv contained, with scratch (created if missing) as its only writable place and cwd.

    env is added to a minimal environment (see base_env); nothing of this process's environment leaks.
    mode "auto" picks detect_sandbox(); a named mode that does not work raises SandboxUnavailable.
    ``devices`` are device nodes to expose read-write (a GPU run's /dev/nvidia*: see gpu_device_paths).
    Setting ``cancel`` (from any thread) kills the whole run within about 0.1 s, as a timeout would.
    ``pass_fds`` stay open, at the same numbers, in the program (a channel to a trusted side: pipes,
    socketpairs, sealed memfds); every other descriptor of ours is closed.
    """
    if not argv:
        raise ValueError("argv is empty")
    if mode == "auto":
        mode = detect_sandbox()
    elif mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; expected auto, {', '.join(MODES)}")
    elif not mode_works(mode):
        raise SandboxUnavailable(f"sandbox mode {mode!r} does not work on this machine")
    return _run(mode, list(argv), Path(scratch), ro_paths, limits, env, timeout_s, devices, cancel, pass_fds)
