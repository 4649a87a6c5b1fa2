"""Attacks on the sandbox, each run for real under every mode that works here.

    .venv/bin/python -m pytest tests/trainer/test_sandbox.py -q

"none" promises only the scrubbed environment, the rlimits, the uid drop and the timeout; network and
filesystem containment are asserted for bwrap and namespaces. In "none" the program must be reachable by
the dropped uid, so those runs use the system Python (the venv's interpreter lives under /root).
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.procs import processes
from tests.timing import PROCESS_SLACK_S
from trainer import sandbox
from trainer.bounded_output import BoundedBuffer
from trainer.policy import may_run
from trainer.sandbox import Limits, SandboxUnavailable, mode_works, run_sandboxed

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _mode_params():
    params = []
    for mode in sandbox.MODES:
        usable = mode_works(mode) and (mode != "none" or SYSTEM_PYTHON or os.geteuid() != 0)
        params.append(pytest.param(mode, marks=() if usable else pytest.mark.skip(f"{mode} unavailable here")))
    return params


MODES = _mode_params()
CONTAINING = [p for p in MODES if p.values[0] != "none"]


def python_for(mode: str) -> str:
    return SYSTEM_PYTHON if mode == "none" and os.geteuid() == 0 else sys.executable


@pytest.fixture
def scratch():
    # parents traversable by any uid: "none" mode has no mount namespace to bind scratch elsewhere
    base = Path(tempfile.mkdtemp(prefix="rs-sbx-"))
    base.chmod(0o755)
    yield base / "scratch"
    shutil.rmtree(base, ignore_errors=True)


def run(mode, code, scratch, *, timeout_s=20.0, limits=Limits(), env=None, marker=None):
    """Run a Python snippet; `marker` (a unique string in argv) lets the test find the run's processes."""
    argv = [python_for(mode), "-c", code]
    if marker:
        argv.append(marker)
    return run_sandboxed(argv, scratch=scratch, limits=limits, env=env, timeout_s=timeout_s, mode=mode)


def processes_with(marker: str) -> list[tuple[int, str]]:
    """(pid, state) of every process on the machine whose command line carries marker, zombies included."""
    return [(p.pid, p.state) for p in processes() if marker.encode() in p.cmdline]


def assert_nowhere(value: str, result, scratch: Path) -> None:
    assert value not in result.stdout and value not in result.stderr
    for path in scratch.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert value.encode() not in path.read_bytes(), path
        assert value not in path.name


# --- the environment -------------------------------------------------------------------------------

SNOOP_ENV = r"""
import os, glob
seen = dict(os.environ)
print(seen)
for f in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
    try:
        print(f, open(f, "rb").read())
    except OSError:
        pass
open("loot.txt", "w").write(repr(seen))
"""


@pytest.mark.parametrize("mode", MODES)
def test_environment_is_scrubbed(mode, scratch, canary):
    result = run(mode, SNOOP_ENV, scratch, env={"EXTRA": "given"})
    assert result.returncode == 0, result.stderr
    assert result.sandbox == mode
    assert "'EXTRA': 'given'" in result.stdout
    assert "ANTHROPIC_API_KEY" not in result.stdout.split("\n")[0]
    assert "'HOME'" not in result.stdout.split("\n")[0]
    assert (scratch / "loot.txt").exists()
    assert_nowhere(canary, result, scratch)


# --- the network -----------------------------------------------------------------------------------

CONNECT = r"""
import socket, sys
port = int(sys.argv[1])
for target in [("127.0.0.1", port), ("10.0.2.2", 53), ("1.1.1.1", 443)]:
    try:
        socket.create_connection(target, timeout=2).close()
        print("CONNECTED", target)
    except OSError as e:
        print("FAILED", target, e)
try:
    print("RESOLVED", socket.getaddrinfo("example.com", 443))
except OSError as e:
    print("no dns", e)
"""


@pytest.mark.parametrize("mode", CONTAINING)
def test_no_network(mode, scratch, canary):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = run(mode, CONNECT, scratch, marker=str(port))
        assert result.returncode == 0, result.stderr
        assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout
        assert result.stdout.count("FAILED") == 3
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever reached our listener
    assert_nowhere(canary, result, scratch)


# --- the filesystem --------------------------------------------------------------------------------

WRITE_OUT = r"""
import os, sys
for target in sys.argv[1:]:
    try:
        with open(target, "w") as f:
            f.write(os.environ.get("ANTHROPIC_API_KEY", "x"))
        print("WROTE", target)
    except OSError as e:
        print("blocked", target, e.strerror)
open("inside.txt", "w").write("ok")
"""


@pytest.mark.parametrize("mode", MODES)
def test_writes_outside_scratch_fail(mode, scratch, canary):
    token = secrets.token_hex(6)
    blocked = [REPO / f"escape-{token}", Path("/root") / f"escape-{token}", scratch.parent / f"escape-{token}",
               Path("/etc") / f"escape-{token}"]
    tmp_target = Path("/tmp") / f"escape-{token}"  # world-writable: only a real sandbox keeps it out
    try:
        result = run_sandboxed([python_for(mode), "-c", WRITE_OUT, *map(str, blocked), str(tmp_target)],
                               scratch=scratch, timeout_s=20, mode=mode)
        assert result.returncode == 0, result.stderr
        for target in blocked:
            assert f"WROTE {target}" not in result.stdout
            assert not target.exists()
        if mode != "none":
            assert not tmp_target.exists()
        assert (scratch / "inside.txt").read_text() == "ok"
        assert (scratch / "inside.txt").stat().st_uid == os.getuid()  # handed back to us afterwards
        assert_nowhere(canary, result, scratch)
    finally:
        for target in [*blocked, tmp_target]:
            target.unlink(missing_ok=True)


@pytest.mark.parametrize("mode", MODES)
def test_planted_symlink_is_not_followed_when_handing_scratch_back(mode, scratch, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    code = f"import os; os.symlink({str(victim)!r}, 'link'); os.mkdir('d'); open('d/f', 'w').write('x')"
    result = run(mode, code, scratch)
    assert result.returncode == 0, result.stderr
    assert victim.stat().st_uid == os.getuid()
    assert (scratch / "link").is_symlink()
    assert (scratch / "d" / "f").stat().st_uid == os.getuid()


# --- processes, time, memory, output ---------------------------------------------------------------

FORK_BOMB = r"""
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


@pytest.mark.slow  # its 3 s timeout, then the kill: 3-5 s
@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_ends_and_leaves_nothing(mode, scratch, canary):
    marker = "forkbomb-" + secrets.token_hex(8)
    timeout_s = 3.0
    start = time.monotonic()
    result = run(mode, FORK_BOMB, scratch, timeout_s=timeout_s, limits=Limits(processes=32), marker=marker)
    # run_sandboxed's own bound: the timeout, SIGTERM's grace before SIGKILL, the pipes' linger
    assert time.monotonic() - start < timeout_s + sandbox.TERM_GRACE_S + sandbox.PIPE_LINGER_S + PROCESS_SLACK_S
    assert result.timed_out and result.killed_reason == "timeout" and result.returncode is None
    assert processes_with(marker) == []
    assert_nowhere(canary, result, scratch)


DAEMON = r"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(1); os.close(2)
        time.sleep(600)
    os._exit(0)
print("parent done")
"""


@pytest.mark.parametrize("mode", MODES)
def test_detached_daemon_does_not_outlive_the_run(mode, scratch):
    marker = "daemon-" + secrets.token_hex(8)
    result = run(mode, DAEMON, scratch, timeout_s=20, marker=marker)
    assert result.returncode == 0 and "parent done" in result.stdout, result.stderr
    assert not result.timed_out
    assert processes_with(marker) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ignore_term", [False, pytest.param(True, marks=pytest.mark.slow)])  # + TERM_GRACE_S: 4-5 s
def test_infinite_loop_is_killed_at_timeout(mode, scratch, ignore_term):
    marker = "loop-" + secrets.token_hex(8)
    code = "import signal\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "") + \
        "print('spinning', flush=True)\nwhile True: pass\n"
    timeout_s = 1.5
    start = time.monotonic()
    result = run(mode, code, scratch, timeout_s=timeout_s, marker=marker)
    elapsed = time.monotonic() - start
    assert result.timed_out and result.returncode is None and result.killed_reason == "timeout"
    assert "spinning" in result.stdout
    assert timeout_s <= elapsed < timeout_s + sandbox.TERM_GRACE_S + sandbox.PIPE_LINGER_S + PROCESS_SLACK_S
    assert processes_with(marker) == []  # neither running nor a zombie


@pytest.mark.slow  # 3-4.5 s where the escaped daemon holds the pipes (PIPE_LINGER_S)
@pytest.mark.parametrize("mode", MODES)
def test_cancel_ends_the_whole_run_at_once(mode, scratch):
    # A detached daemon plus a main process that ignores SIGTERM: cancel kills both, long before the timeout.
    import threading

    marker = "cancel-" + secrets.token_hex(8)
    code = DAEMON.replace('print("parent done")', 'print("parent done", flush=True)\n'
                          "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass")
    cancel_at_s, timeout_s = 1.0, 60.0
    event = threading.Event()
    threading.Timer(cancel_at_s, event.set).start()
    start = time.monotonic()
    result = run_sandboxed([python_for(mode), "-c", code, marker], scratch=scratch, timeout_s=timeout_s, mode=mode,
                           cancel=event)
    elapsed = time.monotonic() - start
    # cancel kills at once (no SIGTERM grace); then the pipes' linger at most
    assert cancel_at_s <= elapsed < cancel_at_s + sandbox.PIPE_LINGER_S + PROCESS_SLACK_S < timeout_s, elapsed
    assert not result.timed_out and result.killed_reason == "signal 9"
    assert "parent done" in result.stdout
    assert processes_with(marker) == []


@pytest.mark.parametrize("mode", MODES)
def test_unbounded_allocation_is_stopped_by_the_memory_limit(mode, scratch):
    code = "x = []\nwhile True: x.append(bytearray(16 << 20))\n"
    start = time.monotonic()
    result = run(mode, code, scratch, timeout_s=30, limits=Limits(memory_bytes=512 << 20))
    # the limit is met within a second's allocation; then an OOM poll and the pipes' linger at most
    assert time.monotonic() - start < sandbox.OOM_POLL_S + sandbox.PIPE_LINGER_S + PROCESS_SLACK_S
    assert not result.timed_out
    assert result.killed_reason == "memory", result.stderr
    assert "MemoryError" in result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_cpu_limit(mode, scratch):
    result = run(mode, "while True: pass", scratch, timeout_s=30, limits=Limits(cpu_seconds=1))
    assert not result.timed_out
    assert result.killed_reason == "cpu" and result.returncode is not None and result.returncode < 0


@pytest.mark.parametrize("mode", MODES)
def test_file_size_limit(mode, scratch):
    code = "f = open('big', 'wb')\nfor _ in range(4): f.write(b'x' * (1 << 20)); f.flush()\n"
    result = run(mode, code, scratch, timeout_s=20, limits=Limits(file_bytes=1 << 20))
    assert result.killed_reason == "file size", result.stderr
    assert (scratch / "big").stat().st_size <= 1 << 20


@pytest.mark.parametrize("mode", MODES)
def test_endless_output_is_capped(mode, scratch):
    code = "import sys\nprint('FIRST')\nwhile True: sys.stdout.write('y' * 65536)\n"
    result = run(mode, code, scratch, timeout_s=2)
    assert result.timed_out
    assert result.stdout.startswith("FIRST")
    assert "bytes of output dropped" in result.stdout
    assert len(result.stdout) <= sandbox.OUTPUT_CAP + 100


@pytest.mark.slow  # trains: 4.5 s
def test_torch_trains_under_the_default_limits(scratch):
    code = ("import torch\nm = torch.nn.Linear(64, 64)\nopt = torch.optim.SGD(m.parameters(), 0.1)\n"
            "for _ in range(5):\n    loss = m(torch.randn(32, 64)).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()\n"
            "print('loss:', float(loss))\n")
    result = run_sandboxed([sys.executable, "-c", code], scratch=scratch, timeout_s=90)
    assert result.returncode == 0, result.stderr
    assert "loss:" in result.stdout and result.sandbox == sandbox.detect_sandbox()


def test_ro_paths_are_readable_not_writable(scratch, tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="rs-ro-"))
    try:
        shared.chmod(0o755)
        (shared / "data.txt").write_text("data")
        (shared / "data.txt").chmod(0o666)  # even a world-writable file stays read-only inside
        code = ("import sys\nprint(open(sys.argv[1] + '/data.txt').read())\n"
                "try:\n    open(sys.argv[1] + '/data.txt', 'w').write('no')\nexcept OSError as e:\n    print('blocked')\n")
        result = run_sandboxed([sys.executable, "-c", code, str(shared)], scratch=scratch, ro_paths=[shared],
                               timeout_s=20)
        assert result.stdout.split() == ["data", "blocked"], result.stderr
        assert (shared / "data.txt").read_text() == "data"
    finally:
        shutil.rmtree(shared)


# --- modes and policy ------------------------------------------------------------------------------

def test_detect_prefers_a_containing_mode():
    mode = sandbox.detect_sandbox()
    assert mode in sandbox.MODES
    if mode_works("bwrap"):
        assert mode == "bwrap"
    elif mode_works("namespaces"):
        assert mode == "namespaces"


def test_forced_mode_that_does_not_work_raises(scratch, monkeypatch, tmp_path):
    real_env = sandbox.base_env
    # a PATH where neither bwrap nor unshare can be found, as on a machine without them
    monkeypatch.setattr(sandbox, "base_env", lambda s: {**real_env(s), "PATH": str(tmp_path)})
    sandbox.mode_works.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable):
            run_sandboxed(["true"], scratch=scratch, timeout_s=5, mode="bwrap")
        with pytest.raises(ValueError):
            run_sandboxed(["true"], scratch=scratch, timeout_s=5, mode="docker")
    finally:
        sandbox.mode_works.cache_clear()


def test_missing_program_is_reported(scratch):
    result = run_sandboxed(["no-such-program-here"], scratch=scratch, timeout_s=10)
    assert result.returncode == 127 and "cannot run" in result.stderr


def test_limits_validate():
    with pytest.raises(ValueError):
        Limits(memory_bytes=0)
    assert Limits().rlimits()["RLIMIT_CORE"] == (0, 0)


@pytest.mark.parametrize("policy,trusted,sandbox_mode,allowed", [
    ("sandbox", False, "bwrap", True), ("sandbox", False, "namespaces", True), ("sandbox", False, "none", False),
    ("sandbox", True, "none", True), ("trusted", False, "none", True), ("trusted", True, "bwrap", True),
    ("never", False, "bwrap", False), ("never", True, "none", True),
])
def test_policy(policy, trusted, sandbox_mode, allowed):
    ok, reason = may_run(trusted, policy, sandbox_mode)
    assert ok is allowed and reason
    if not ok:
        assert reason.startswith("refused")


def test_policy_rejects_unknown():
    with pytest.raises(ValueError):
        may_run(False, "yolo", "bwrap")


def test_bounded_buffer_keeps_head_and_tail():
    buf = BoundedBuffer(100)
    buf.feed(b"H" * 30)
    for _ in range(1000):
        buf.feed(b"m" * 7)
    buf.feed(b"T" * 50)
    text = buf.text()
    assert text.startswith("H" * 30 + "m" * 20) and text.endswith("T" * 50)
    assert "bytes of output dropped" in text
    small = BoundedBuffer(100)
    small.feed(b"short")
    assert small.text() == "short"


SEE = """
import os, sys
for path in sys.argv[1:]:
    try:
        print(path, sorted(os.listdir(path)))
    except OSError as exc:
        print(path, "unreadable", type(exc).__name__)
"""


@pytest.mark.parametrize("mode", CONTAINING)
def test_the_projects_packages_and_hidden_dirs_are_not_shown(mode, scratch, tmp_path):
    # A run gets a copy of the harness modules it may use: the project's own packages (task
    # definitions, data generators, the scorer) and the caller's hidden dirs (a data cache) are empty
    # or absent inside, whatever the mode shows of the rest of the machine.
    secret = Path(tempfile.mkdtemp(prefix=".rs-hidden-", dir=REPO))  # not under a dir hidden anyway (/tmp, homes)
    try:
        (secret / "val.bin").write_bytes(b"validation bytes")
        secret.chmod(0o755)
        (secret / "val.bin").chmod(0o644)
        argv = [python_for(mode), "-c", SEE, str(REPO / "trainer"), str(REPO / "node"), str(secret)]
        result = run_sandboxed(argv, scratch=scratch, timeout_s=30, mode=mode, hidden=[secret])
        assert result.returncode == 0, result.stderr
        for line in result.stdout.splitlines():
            assert "tasks.py" not in line and "markov.py" not in line and "val.bin" not in line, line
        assert result.stdout.count("\n") == 3
    finally:
        shutil.rmtree(secret, ignore_errors=True)
