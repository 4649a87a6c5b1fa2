"""A cgroup per sandboxed run: limits and CPU accounting for the run's whole process tree.

RLIMIT_AS bounds one process and RLIMIT_NPROC one uid, so a run of N processes may hold N times the
memory limit. A cgroup bounds the run as a whole: its memory (no swap), its task count, and it sums
the CPU time of every process the run ever had. Two flavours, the first that works here:

- "v2": a child of a cgroup in the unified hierarchy whose children get the memory and pids
  controllers (a delegated subtree: our own cgroup, or as root the hierarchy's root): memory.max,
  memory.swap.max = 0, memory.oom.group = 1 (an OOM kill ends the whole run), pids.max; CPU from
  cpu.stat; cgroup.kill ends it.
- "v1": a child of our own cgroup in each writable legacy hierarchy among memory, pids and cpuacct:
  memory.limit_in_bytes (and memory.memsw.limit_in_bytes where swap is accounted), pids.max; CPU
  from cpuacct.usage; ending it is SIGKILL to every pid listed, until none is.

Neither: `RunCgroup.create` returns None and the run has its per-process rlimits only.

The run enters its cgroup before anything of it runs: `join_prefix()` is a /bin/sh that writes its
own pid into each cgroup.procs and then execs the sandbox (bwrap, unshare or the sandbox init), so
the sandbox's helpers, the init and the program all start inside. Cgroups are named after the
process that owns them (and its pid namespace); the first one a process makes removes those a dead
owner left behind.
Stdlib only.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

PREFIX = "ralphswarm-run-"
# ralphswarm-run-<owner's pid namespace>-<owner pid>-<random>: a sweep judges only owners it can see
_NAME_RE = re.compile(re.escape(PREFIX) + r"([0-9]+)-([0-9]+)-[0-9a-z]+$")
V1_CONTROLLERS = ("memory", "pids", "cpuacct")
V2_CONTROLLERS = ("memory", "pids")
REMOVE_WAIT_S = 5.0  # how long remove() keeps killing and retrying before it leaves a cgroup behind

# `sh -c JOIN_SH sh PROCS... -- COMMAND...`: join every cgroup listed, then become COMMAND
JOIN_SH = ('for f; do shift; [ "$f" = -- ] && break; '
           '{ echo $$ > "$f"; } 2>/dev/null || '
           '{ echo "sandbox init: cannot join the run\'s cgroup ($f)" >&2; exit 125; }; done; exec "$@"')


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _mounts() -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """(cgroup2 mounts, legacy mounts by controller), each as (mount point, root within the hierarchy)."""
    v2: list[tuple[str, str]] = []
    v1: dict[str, list[tuple[str, str]]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3:
                continue
            root, point = _unescape(fields[3]), _unescape(fields[4])
            if rest[0] == "cgroup2":
                v2.append((point, root))
            elif rest[0] == "cgroup":
                for opt in rest[2].split(","):
                    if opt in V1_CONTROLLERS:
                        v1.setdefault(opt, []).append((point, root))
    return v2, v1


def _own_paths() -> tuple[str | None, dict[str, str]]:
    """Our cgroup in the unified hierarchy, and in each legacy one by controller (/proc/self/cgroup)."""
    v2, v1 = None, {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            hid, controllers, path = parts
            if hid == "0" and controllers == "":
                v2 = path
            for c in controllers.split(","):
                v1[c] = path
    return v2, v1


def _locate(mounts: list[tuple[str, str]], path: str) -> Path | None:
    """Where the cgroup ``path`` (as /proc/self/cgroup names it) lies under one of ``mounts``."""
    for point, root in mounts:
        if root == "/":
            return Path(point) / path.lstrip("/")
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return Path(point) / path[len(root):].lstrip("/")
    return None


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _keyed(path: Path, key: str) -> int:
    """The value of ``key`` in a flat-keyed file (memory.events, cpu.stat, pids.events, ...), else 0."""
    try:
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _owned_prefix(owner: int | None = None) -> str:
    return f"{PREFIX}{_pid_namespace()}-{os.getpid() if owner is None else owner}-"


def _probe(parent: Path) -> bool:
    """Can we make a child cgroup under ``parent`` and move a process of ours into it?"""
    child = parent / f"{_owned_prefix()}probe{secrets.token_hex(4)}"
    try:
        child.mkdir()
    except OSError:
        return False
    try:
        done = subprocess.run(["/bin/sh", "-c", JOIN_SH, "sh", str(child / "cgroup.procs"), "--", "true"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=10)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        _rmdir(child, REMOVE_WAIT_S)


def _v2_parent(mounts: list[tuple[str, str]], own: str) -> Path | None:
    """A unified-hierarchy cgroup whose children get memory and pids: ours, else (root) the root."""
    candidates = [_locate(mounts, own)]
    if os.geteuid() == 0:
        candidates += [Path(point) for point, root in mounts if root == "/"]
    for parent in candidates:
        if parent is None:
            continue
        try:
            enabled = set(_read(parent / "cgroup.subtree_control").split())
            if not set(V2_CONTROLLERS) <= enabled:
                if not set(V2_CONTROLLERS) <= set(_read(parent / "cgroup.controllers").split()):
                    continue
                # allowed only where the cgroup holds no process (or is the root): never true of
                # our own cgroup, which holds us; we move no process to make it so
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in V2_CONTROLLERS))
        except OSError:
            continue
        if _probe(parent):
            return parent
    return None


@functools.cache
def parents() -> tuple[str | None, dict[str, Path]]:
    """(flavour, where run cgroups go: {"unified": dir} for v2, {controller: dir} for v1), or
    (None, {}) where no writable cgroup is offered. Probed once per process."""
    try:
        v2_mounts, v1_mounts = _mounts()
        own_v2, own_v1 = _own_paths()
    except OSError:
        return None, {}
    if v2_mounts and own_v2 is not None:
        parent = _v2_parent(v2_mounts, own_v2)
        if parent is not None:
            return "v2", {"unified": parent}
    found = {}
    for controller in V1_CONTROLLERS:
        if controller in v1_mounts and controller in own_v1:
            parent = _locate(v1_mounts[controller], own_v1[controller])
            if parent is not None and _probe(parent):
                found[controller] = parent
    if "memory" in found or "pids" in found:
        return "v1", found
    return None, {}


def flavour() -> str | None:
    """"v2", "v1", or None where runs get no cgroup here."""
    return parents()[0]


def pid_alive(pid: int) -> bool:
    """Does process ``pid`` exist (ours or someone else's)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


_swept = threading.Lock()
_sweep_done = False


def sweep_orphans() -> list[Path]:
    """Kill and remove the run cgroups whose owning process no longer exists (a SIGKILLed node's)."""
    removed = []
    for parent in parents()[1].values():
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for path in entries:
            match = _NAME_RE.match(path.name)
            if match is None or int(match[1]) != _pid_namespace() or pid_alive(int(match[2])):
                continue
            _kill_listed([path])
            if _rmdir(path, REMOVE_WAIT_S):
                removed.append(path)
    return removed


def leftovers(owner: int | None = None) -> list[Path]:
    """The run cgroups of process ``owner`` (default: this one) that exist now."""
    prefix = _owned_prefix(owner)
    found = []
    for parent in parents()[1].values():
        try:
            found += [p for p in parent.iterdir() if p.name.startswith(prefix)]
        except OSError:
            pass
    return found


def _pids_in(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        try:
            pids.update(int(x) for x in _read(d / "cgroup.procs").split())
        except (OSError, ValueError):
            pass
    return pids


def _kill_listed(dirs: list[Path], rounds: int = 200) -> None:
    """SIGKILL every process listed in the cgroups until none is (a forking run refills the list)."""
    for _ in range(rounds):
        pids = _pids_in(dirs)
        if not pids:
            return
        for pid in pids:
            _kill_pid(pid, dirs)
        time.sleep(0.01)


def _kill_pid(pid: int, dirs: list[Path]) -> None:
    """SIGKILL ``pid`` unless, by the time we hold it, the number went to a process outside ``dirs``."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        return
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
        if any(f"/{d.name}" in text for d in dirs):  # run cgroup names are unique (owner pid, random)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rmdir(path: Path, wait_s: float) -> bool:
    """Remove a (run) cgroup directory, killing what is still in it; True when it is gone."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        kill_file = path / "cgroup.kill"
        try:
            _write(kill_file, "1")
        except OSError:
            _kill_listed([path], rounds=1)
        time.sleep(0.01)


class RunCgroup:
    """One run's cgroup (one directory per hierarchy in v1). Make it with `create`."""

    def __init__(self, flavour: str, dirs: dict[str, Path], memory_cap: int | None, pids_cap: int | None):
        self.flavour, self.dirs = flavour, dirs
        self.memory_cap, self.pids_cap = memory_cap, pids_cap

    @classmethod
    def create(cls, memory_bytes: int | None, pids: int | None) -> RunCgroup | None:
        """A fresh cgroup capping memory (None: no cap; its swap is 0 either way where swap is
        accounted) and tasks (None: no cap), or None where this machine offers no writable cgroup."""
        global _sweep_done
        kind, where = parents()
        if kind is None:
            return None
        with _swept:
            if not _sweep_done:
                _sweep_done = True
                sweep_orphans()
        name = f"{_owned_prefix()}{secrets.token_hex(6)}"
        dirs = {key: parent / name for key, parent in where.items()}
        made: list[Path] = []
        try:
            for d in dirs.values():
                d.mkdir()
                made.append(d)
            cg = cls(kind, dirs, memory_bytes, pids)
            cg._set_limits(memory_bytes, pids)
        except OSError:
            for d in made:
                _rmdir(d, REMOVE_WAIT_S)
            raise
        return cg

    def _set_limits(self, memory_bytes: int | None, pids: int | None) -> None:
        if self.flavour == "v2":
            d = self.dirs["unified"]
            if memory_bytes is not None:
                _write(d / "memory.max", str(memory_bytes))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            if (d / "memory.oom.group").exists():
                _write(d / "memory.oom.group", "1")
            if pids is not None:
                _write(d / "pids.max", str(pids))
            return
        mem = self.dirs.get("memory")
        if mem is not None and memory_bytes is not None:
            _write(mem / "memory.limit_in_bytes", str(memory_bytes))  # before memsw, which must be >= it
            if (mem / "memory.memsw.limit_in_bytes").exists():
                _write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes))
        if "pids" in self.dirs and pids is not None:
            _write(self.dirs["pids"] / "pids.max", str(pids))

    @property
    def name(self) -> str:
        return next(iter(self.dirs.values())).name

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def join_prefix(self) -> list[str]:
        """Put before a command: it joins this cgroup, then execs the command (same pid)."""
        return ["/bin/sh", "-c", JOIN_SH, "sh", *self.procs_files(), "--"]

    def pids(self) -> set[int]:
        return _pids_in(list(self.dirs.values()))

    def caps_pids(self) -> bool:
        return self.pids_cap is not None and ("unified" in self.dirs or "pids" in self.dirs)

    def has_cpu(self) -> bool:
        return self.flavour == "v2" or "cpuacct" in self.dirs

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) of every process the run has had, exited ones included."""
        try:
            if self.flavour == "v2":
                for line in _read(self.dirs["unified"] / "cpu.stat").splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            if "cpuacct" in self.dirs:
                return int(_read(self.dirs["cpuacct"] / "cpuacct.usage")) / 1e9
        except (OSError, ValueError):
            pass
        return None

    def oom_kills(self) -> int:
        """Processes the kernel killed for the run's memory cap (0 without a memory cgroup)."""
        if self.flavour == "v2":
            return _keyed(self.dirs["unified"] / "memory.events", "oom_kill")
        if "memory" in self.dirs:
            return _keyed(self.dirs["memory"] / "memory.oom_control", "oom_kill")
        return 0

    def pids_refused(self) -> int:
        """Forks (and thread creations) refused by the task cap."""
        d = self.dirs.get("unified") or self.dirs.get("pids")
        return _keyed(d / "pids.events", "max") if d is not None else 0

    def kill(self, wait: bool = True) -> None:
        """SIGKILL every process in the cgroup. With ``wait``, returns once none is left (or after
        ~2 s of trying); without, signals what is there now and returns at once."""
        if self.flavour == "v2":
            try:
                _write(self.dirs["unified"] / "cgroup.kill", "1")
            except OSError:
                _kill_listed(list(self.dirs.values()), rounds=1)
            deadline = time.monotonic() + 2.0
            while wait and self.pids() and time.monotonic() < deadline:
                time.sleep(0.005)
            if not wait or not self.pids():
                return
        _kill_listed(list(self.dirs.values()), rounds=200 if wait else 1)

    def remove(self) -> bool:
        """Kill what is left, then remove the directories; True when all are gone."""
        self.kill()
        return all([_rmdir(d, REMOVE_WAIT_S) for d in self.dirs.values()])
