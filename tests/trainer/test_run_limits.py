"""Limits per run, not per process: the run's cgroup (memory, tasks, CPU accounting), the capped
scratch, and the CPU meter, each tried for real (real processes, real cgroups, real mounts).

    .venv/bin/python -m pytest tests/trainer/test_run_limits.py -q

Tests that need a writable cgroup (trainer/cgroups.py) or root (the scratch tmpfs) skip with the reason
where the machine offers neither.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.procs import processes_with
from trainer import cgroups, sandbox
from trainer.rlimits import GiB, MiB
from trainer.sandbox import Limits, RunMeter, cap_scratch, release_scratch, run_sandboxed, scratch_capped

pytestmark = pytest.mark.timeout(180)
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
FLAVOUR, PARENTS = cgroups.parents()
ROOT = os.geteuid() == 0

needs_cgroup = pytest.mark.skipif(FLAVOUR is None, reason="no writable cgroup (v2 delegated subtree or v1) here")
needs_memory_cgroup = pytest.mark.skipif(
    FLAVOUR is None or (FLAVOUR == "v1" and "memory" not in PARENTS),
    reason="no writable memory cgroup here")
needs_pids_cgroup = pytest.mark.skipif(
    FLAVOUR is None or (FLAVOUR == "v1" and "pids" not in PARENTS), reason="no writable pids cgroup here")
needs_root = pytest.mark.skipif(not ROOT, reason="the scratch tmpfs needs root")


def _modes():
    out = []
    for mode in sandbox.MODES:
        usable = sandbox.mode_works(mode) and (mode != "none" or SYSTEM_PYTHON or not ROOT)
        out.append(pytest.param(mode, marks=() if usable else pytest.mark.skip(f"{mode} unavailable here")))
    return out


MODES = _modes()


def python_for(mode: str) -> str:
    return SYSTEM_PYTHON if mode == "none" and ROOT else sys.executable


@pytest.fixture
def scratch():
    base = Path(tempfile.mkdtemp(prefix="rs-limits-"))
    base.chmod(0o755)
    yield base / "scratch"
    release_scratch(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def no_warm_processes():
    """Warm harness processes an earlier test module left waiting (trainer.warm.POOL) each hold a run
    cgroup of this process: end them first, so that what is left after a test here is its own."""
    from trainer.experiment import close_warm_pool

    close_warm_pool()


@pytest.fixture(autouse=True)
def no_cgroup_left(no_warm_processes):
    """Every test leaves no run cgroup of this process behind."""
    yield
    assert cgroups.leftovers() == []


def run(code: str, scratch: Path, *args: str, mode: str = "auto", **kw):
    argv = [python_for(mode), "-c", code, *args]
    kw.setdefault("timeout_s", 60)
    return run_sandboxed(argv, scratch=scratch, mode=mode, **kw)


# --- memory: the run as a whole --------------------------------------------------------------------

THREE_CHILDREN = r"""
import os, sys, time
size = int(sys.argv[1]) << 20
kids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        hold = b"\1" * size  # written, so every page is resident
        print("child", i, "holds", size >> 20, "MiB", flush=True)
        time.sleep(int(sys.argv[2]))
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
print("all done", flush=True)
"""


@pytest.mark.slow
@needs_memory_cgroup
def test_three_children_over_the_run_memory_limit_are_killed(scratch):
    # 3 x 1.5 GiB against 4 GiB: each process stays well under RLIMIT_AS (4 GiB), the run does not.
    marker = "memhog-" + secrets.token_hex(8)
    hold_s = 60  # how long each child holds its memory: a run not killed lasts that long at least
    start = time.monotonic()
    result = run_sandboxed([sys.executable, "-c", THREE_CHILDREN, "1536", str(hold_s), marker], scratch=scratch,
                           limits=Limits(memory_bytes=4 * GiB), timeout_s=90)
    assert time.monotonic() - start < hold_s  # killed while the children held their memory
    assert result.cgroup == FLAVOUR
    assert not result.timed_out
    assert result.killed_reason == "memory", (result.returncode, result.stderr[-2000:])
    assert "all done" not in result.stdout
    assert processes_with(marker) == []


@needs_memory_cgroup
def test_three_children_under_the_run_memory_limit_finish(scratch):
    # the control, small: 3 x 100 MiB under a 512 MiB run limit
    result = run_sandboxed([sys.executable, "-c", THREE_CHILDREN, "100", "0"], scratch=scratch,
                           limits=Limits(memory_bytes=512 * MiB), timeout_s=60)
    assert result.returncode == 0 and result.killed_reason is None, result.stderr[-2000:]
    assert result.stdout.count("holds 100 MiB") == 3 and "all done" in result.stdout


@needs_memory_cgroup
def test_small_run_limit_kills_children_that_together_exceed_it(scratch):
    # the same shape as the 4 GiB test at a tenth of the size: 3 x 200 MiB against 512 MiB
    marker = "memhog-" + secrets.token_hex(8)
    result = run_sandboxed([sys.executable, "-c", THREE_CHILDREN, "200", "60", marker], scratch=scratch,
                           limits=Limits(memory_bytes=512 * MiB), timeout_s=60)
    assert result.killed_reason == "memory" and not result.timed_out, result.stderr[-2000:]
    assert processes_with(marker) == []


def test_gpu_sized_memory_is_not_a_cgroup_cap():
    assert sandbox._memory_cap(Limits(memory_bytes=1 << 46)) is None
    assert sandbox._memory_cap(Limits(memory_bytes=4 * GiB)) in (4 * GiB, None)  # None only on a < 4 GiB machine


# --- tasks -----------------------------------------------------------------------------------------

FORK_PAST_SLEEP_S = 30  # each child sleeps this long: a run that waited for them would last as long
FORK_PAST = r"""
import os, sys, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(SLEEP_S)
            os._exit(0)
        n += 1
except OSError as e:
    print("refused after", n, e.errno, flush=True)
    if sys.argv[1] == "raise":
        raise
""".replace("SLEEP_S", str(FORK_PAST_SLEEP_S))


@needs_pids_cgroup
@pytest.mark.parametrize("mode", MODES)
def test_forking_past_the_task_cap_fails_cleanly(mode, scratch):
    marker = "forks-" + secrets.token_hex(8)
    start = time.monotonic()
    result = run(FORK_PAST, scratch, "raise", marker, mode=mode, limits=Limits(processes=16))
    assert time.monotonic() - start < FORK_PAST_SLEEP_S  # the sleeping children were not waited for
    assert not result.timed_out
    assert result.returncode == 1 and "BlockingIOError" in result.stderr, result.stderr[-2000:]
    assert result.killed_reason == "processes"
    forks = int(result.stdout.split("refused after")[1].split()[0])
    assert 0 < forks < 16
    assert processes_with(marker) == []


def test_cgroup_task_cap_alone(tmp_path):
    """The cgroup refuses forks by itself (no RLIMIT_NPROC here), and remove() ends what is left."""
    cg = cgroups.RunCgroup.create(None, 6) if FLAVOUR is not None else None
    if cg is None or not cg.caps_pids():
        pytest.skip("no writable pids cgroup here")
    marker = "capped-" + secrets.token_hex(8)
    proc = subprocess.Popen(cg.join_prefix() + [sys.executable, "-c", FORK_PAST, "keep", marker],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert int(line.split("refused after")[1].split()[0]) == 5, line  # 6 tasks: it and 5 children
        assert cg.pids_refused() >= 1
        assert len(cg.pids()) >= 5  # the sleeping children, still in the cgroup
    finally:
        assert cg.remove()  # kills them all
        proc.wait(10)
        proc.stdout.close()
    assert processes_with(marker) == []
    assert not any(d.exists() for d in cg.dirs.values())


# --- the cgroup comes and goes with the run ----------------------------------------------------------

@needs_cgroup
@pytest.mark.parametrize("mode", MODES)
def test_cgroup_exists_during_the_run_and_is_gone_after(mode, scratch):
    seen = []
    timer = threading.Timer(0.8, lambda: seen.extend(cgroups.leftovers()))
    timer.start()
    result = run("import time; time.sleep(1.5)", scratch, mode=mode)
    timer.join()
    assert result.returncode == 0 and result.cgroup == FLAVOUR, result.stderr
    assert seen and all(p.name.startswith(cgroups.PREFIX) for p in seen)
    assert not any(p.exists() for p in seen)


DAEMON_LOOP = r"""
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(1); os.close(2)
        time.sleep(600)
    os._exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
while True:
    pass
"""


@needs_cgroup
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_cgroup_is_gone_after_a_timeout_and_a_cancel(how, scratch):
    marker = "ended-" + secrets.token_hex(8)
    cancel = threading.Event()
    if how == "cancel":
        threading.Timer(1.0, cancel.set).start()
    result = run(DAEMON_LOOP, scratch, marker, timeout_s=1.0 if how == "timeout" else 60, cancel=cancel)
    assert "up" in result.stdout
    assert result.killed_reason == ("timeout" if how == "timeout" else "signal 9")
    assert processes_with(marker) == []
    assert cgroups.leftovers() == []


def test_orphaned_run_cgroups_are_swept():
    if FLAVOUR is None:
        pytest.skip("no writable cgroup here")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer exists
    made = [parent / f"{cgroups._owned_prefix(dead.pid)}{secrets.token_hex(6)}" for parent in PARENTS.values()]
    # an owner in another pid namespace is not judged by pids we see: left alone
    foreign = [parent / f"{cgroups.PREFIX}1-{dead.pid}-{secrets.token_hex(6)}" for parent in PARENTS.values()]
    try:
        for d in made + foreign:
            d.mkdir()
        assert set(made) <= set(cgroups.sweep_orphans())
        assert not any(d.exists() for d in made)
        assert all(d.exists() for d in foreign)
    finally:
        for d in made + foreign:
            if d.exists():
                d.rmdir()


def test_v2_kill_and_accounting_where_a_cgroup2_is_writable():
    """The v2 code paths (join, cpu.stat, cgroup.kill, remove) on any writable cgroup2 mount, even one
    without the memory and pids controllers (as on a v1 machine's empty unified mount)."""
    v2_mounts, _ = cgroups._mounts()
    own, _ = cgroups._own_paths()
    parent = cgroups._locate(v2_mounts, own) if v2_mounts and own is not None else None
    if parent is None:
        pytest.skip("no cgroup2 mount here")
    d = parent / f"{cgroups._owned_prefix()}{secrets.token_hex(6)}"
    try:
        d.mkdir()
    except OSError as exc:
        pytest.skip(f"cgroup2 not writable here: {exc}")
    if not (d / "cgroup.kill").exists():
        d.rmdir()
        pytest.skip("cgroup2 without cgroup.kill (kernel < 5.14) here")
    cg = cgroups.RunCgroup("v2", {"unified": d}, None, None)
    proc = subprocess.Popen(cg.join_prefix() + [sys.executable, "-c",
                            "import time, os\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
                            "print('burnt', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "burnt"
        assert cg.pids() == {proc.pid}
        assert cg.cpu_s() >= 0.3
        cg.kill()
        assert proc.wait(10) == -9
    finally:
        proc.kill()
        proc.wait()
        assert cg.remove()


# --- scratch: one total for the run --------------------------------------------------------------------

FILL = r"""
import os
written = 0
try:
    for i in range(64):
        with open(f"part{i}", "wb") as f:
            for _ in range(3):
                f.write(b"x" * (1 << 20))
                f.flush()
                written += 1 << 20
except OSError as e:
    print("stopped at", written, e.strerror, flush=True)
    raise
"""


@needs_root
def test_scratch_total_is_capped_and_scratch_stays_removable(scratch):
    scratch.mkdir(parents=True)
    (scratch / "given.txt").write_text("from the caller")  # there before the run: moved into the cap
    limits = Limits(scratch_bytes=16 * MiB, file_bytes=4 * MiB)  # 3 MiB files: each under the per-file limit
    result = run(FILL, scratch, limits=limits, scratch_cap=True)
    assert result.returncode == 1 and "No space left on device" in result.stderr, result.stderr[-2000:]
    stopped = int(result.stdout.split("stopped at")[1].split()[0])
    assert 8 * MiB <= stopped <= 16 * MiB
    assert scratch_capped(scratch)
    # the caller still sees everything: its own file and the run's, handed back to it
    assert (scratch / "given.txt").read_text() == "from the caller"
    parts = sorted(scratch.glob("part*"))
    assert parts and all(p.stat().st_uid == os.getuid() for p in parts)
    assert sum(p.stat().st_size for p in parts) <= 16 * MiB
    assert release_scratch(scratch) == 1
    assert not scratch_capped(scratch)
    shutil.rmtree(scratch)
    assert not scratch.exists()


@needs_root
def test_capped_scratch_is_shared_with_the_caller_during_the_run(scratch):
    """As a warm process's scratch is used: capped first, the caller writes into it while the run
    waits, and reads what the run wrote after it ended."""
    assert cap_scratch(scratch, 8 * MiB)
    assert cap_scratch(scratch, 8 * MiB)  # already capped: a no-op
    assert oct(scratch.stat().st_mode & 0o777) == oct(0o700)
    code = ("import os, time\nwhile not os.path.exists('go'): time.sleep(0.02)\n"
            "open('out', 'w').write(open('go').read() + ' seen')\n")
    threading.Timer(0.5, lambda: (scratch / "go").write_text("job")).start()
    result = run(code, scratch, scratch_cap=True, limits=Limits(scratch_bytes=8 * MiB))
    assert result.returncode == 0, result.stderr
    assert (scratch / "out").read_text() == "job seen"
    assert release_scratch(scratch.parent) == 1  # a parent directory: every cap beneath it
    assert release_scratch(scratch) == 0
    assert not (scratch / "out").exists()  # the files went with the tmpfs


def test_release_scratch_where_none_is_mounted(tmp_path):
    (tmp_path / "f").write_text("x")
    assert release_scratch(tmp_path) == 0
    assert (tmp_path / "f").read_text() == "x"
    if not ROOT:
        assert cap_scratch(tmp_path, MiB) is False


# --- the CPU meter -------------------------------------------------------------------------------------

BURN_IN_CHILD = r"""
import os, time
pid = os.fork()
if pid == 0:
    t = time.process_time()
    while time.process_time() - t < 1.0:
        pass
    os._exit(0)
os.waitpid(pid, 0)
print("burnt", flush=True)
time.sleep(1.5)
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", ["cgroup", "proc"])
def test_meter_reports_the_cpu_of_a_child_process(source, scratch, monkeypatch):
    if source == "cgroup" and not (FLAVOUR == "v2" or "cpuacct" in PARENTS):
        pytest.skip("no cgroup CPU accounting here")
    if source == "proc":
        monkeypatch.setattr(sandbox, "_make_cgroup", lambda mode, limits: None)
    meter = RunMeter()
    assert meter.cpu_s() == 0.0
    readings: list[tuple[float, str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            readings.append((meter.cpu_s(), "running"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run(BURN_IN_CHILD, scratch, meter=meter)
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0 and "burnt" in result.stdout, result.stderr
    assert result.cgroup == (FLAVOUR if source == "cgroup" else None)
    values = [v for v, _ in readings]
    assert values == sorted(values), "the meter went down"
    # while the parent sleeps after the child burnt its second, the meter already shows it
    assert max(values) >= 1.0
    final = meter.cpu_s()
    assert final == result.cpu_s
    # one second burnt, plus two interpreters' start-up and the sandbox's own: well under three
    assert 1.0 <= final < 3.0, final
    assert max(values) <= final


# --- what must keep working ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_passed_descriptors_still_reach_the_program(mode, scratch):
    """pass_fds reach the program, and nothing of ours besides (the cgroup is joined by path)."""
    r, w = os.pipe()
    try:
        code = (f"import os\nos.write({w}, b'through')\n"
                "print(' '.join(sorted(os.listdir('/proc/self/fd'), key=int)))")
        result = run(code, scratch, mode=mode, pass_fds=[w])
        assert result.returncode == 0, result.stderr
        assert os.read(r, 100) == b"through"
        fds = {int(x) for x in result.stdout.split()}
        assert {0, 1, 2, w} <= fds and len(fds - {0, 1, 2, w}) <= 1  # the one listing /proc/self/fd
    finally:
        os.close(r)
        os.close(w)
