"""The init process of a sandbox: the last trusted code before a stranger's program runs.

`trainer.sandbox` runs this file's source with `python -I -S -c SOURCE CONFIG_JSON -- ARGV...`, already
inside the sandbox's namespaces (bwrap or `unshare`), or directly in "none" mode. Stdlib only, imports
nothing of ours: it must work inside a sandbox that shows only the Python installation.

In order it
1. (namespaces mode, as root of the new mount namespace) hides home and temp directories (/tmp too:
   TMPDIR points into scratch) under empty tmpfs, puts back the paths the run needs, binds the scratch
   directory writable, and remounts every other mount read-only, then mounts the new pid namespace's /proc;
2. sets the resource limits (RLIMIT_AS/CPU/FSIZE/NPROC, no core files) and PR_SET_NO_NEW_PRIVS, so no
   setuid binary can regain privileges;
3. drops to the run's unprivileged uid/gid (root ignores RLIMIT_NPROC and file permissions);
4. forks the program and stays as its reaper (pid 1 of the pid namespace, or a child subreaper in
   "none" mode): when the program exits it kills everything left of the run and reaps it, so neither
   a detached daemon nor a zombie outlives the run. Exit status: the program's, or 128+signal.
Errors before the program starts exit with status 125 and one line on stderr.
"""
import ctypes
import json
import os
import resource
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG = 38, 36, 1
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


def _fail(msg: str) -> None:
    sys.stderr.write(f"sandbox init: {msg}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def _mount(src, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()
    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {target}: {os.strerror(err)}")


def _mountpoints() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) from mountinfo; octal escapes (\\040 for space) decoded."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            points.append((point, set(fields[5].split(","))))
    return points


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def setup_mounts(cfg: dict) -> None:
    """Namespaces mode: make `/` read-only except scratch, hide homes and temp dirs (see module doc)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do may propagate back to the host
    scratch = cfg["scratch"]
    keep = [p for p in cfg["keep_paths"] if os.path.exists(p)]
    # fds opened before hiding: the bind sources stay reachable through /proc/self/fd afterwards
    fds = {p: os.open(p, os.O_PATH) for p in keep + [scratch]}
    hidden = [d for d in cfg["hide_dirs"] if os.path.isdir(d) and not os.path.islink(d)]
    for d in hidden:
        _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for p in keep + [scratch]:
        if any(_under(p, d) for d in hidden):
            if os.path.isdir(f"/proc/self/fd/{fds[p]}"):
                os.makedirs(p, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "a").close()
            if p != scratch:
                _mount(f"/proc/self/fd/{fds[p]}", p, None, MS_BIND | MS_REC)
    _mount(f"/proc/self/fd/{fds[scratch]}", scratch, None, MS_BIND)
    writable = {scratch}
    for point, opts in _mountpoints():
        if point in writable or not point.startswith("/"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        flags |= MS_NODEV if "nodev" in opts else 0
        flags |= MS_NOEXEC if "noexec" in opts else 0
        try:
            _mount(None, point, None, flags)
        except OSError:
            if point == "/":
                raise
            # a mount we cannot remount (e.g. under an overmounted dir) is no longer reachable
    _mount(None, scratch, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for fd in fds.values():
        os.close(fd)


def set_limits(limits: dict) -> None:
    for name, (soft, hard) in limits.items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        _fail("uid drop did not take")


def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def reap(child: int, kill_all: bool) -> int:
    """Wait for the program; then end the rest of the run and reap it all. Returns our exit status."""
    status = None
    while status is None:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = _status(st)
    if kill_all:
        # we hold the run's own uid (or are pid 1 of its namespace): -1 reaches exactly the rest of the run
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    return 1 if status is None else status


def find_program(name: str, path: str) -> str:
    """PATH lookup done here, as the run's uid, with no lazy stdlib imports after the uid drop."""
    if "/" in name:
        return name
    for d in path.split(":"):
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return name


def main() -> None:
    cfg = json.loads(sys.argv[1])
    argv = sys.argv[3:]  # sys.argv[2] is the "--" separator
    try:
        if cfg.get("mounts"):
            setup_mounts(cfg)
        os.chdir(cfg["scratch"])
        set_limits(cfg["limits"])
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            _fail("PR_SET_NO_NEW_PRIVS failed")
        if cfg["pid1"] is False:
            _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if cfg.get("uid") is not None:
            drop_privileges(cfg["uid"], cfg["gid"])
    except OSError as e:
        _fail(str(e))
    program = find_program(argv[0], cfg["env"].get("PATH", ""))
    child = os.fork()
    if child == 0:
        try:
            # our interpreter ignores these; an exec'd program must start with the defaults
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(program, argv, cfg["env"])
        except OSError as e:
            sys.stderr.write(f"sandbox init: cannot run {argv[0]}: {e.strerror}\n")
            os._exit(127)
    # pid 1 ignores signals it has no handler for: forward a polite SIGTERM to the program
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
    os._exit(reap(child, kill_all=cfg["kill_all"]))


if __name__ == "__main__":
    main()
