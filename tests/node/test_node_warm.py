"""A node's sandboxed harness processes, warm ones included, end with the node: on SIGTERM (the warm
pool is closed at exit) and on SIGKILL (the sandbox dies with the thread that started it).

    .venv/bin/python -m pytest tests/node/test_node_warm.py -q
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.procs import processes_in
from tests.nodeproc import NodeProcess, wait_until
from tests.timing import PROCESS_SLACK_S
from trainer.warm import sweep_orphans

pytestmark = pytest.mark.slow


@pytest.fixture
def tmpdir_for_node():
    root = Path(tempfile.mkdtemp(prefix="rs-warm-"))
    root.chmod(0o755)  # the sandbox's unprivileged uid must reach its scratch below
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_no_harness_process_outlives_the_node(tmp_path, tmpdir_for_node, how):
    node = NodeProcess(tmp_path / "n", "--no-lan", "--budget-scale", "0.05", "--ralph-steps", "4",
                       "--no-reproduce", env={"TMPDIR": str(tmpdir_for_node)}).start()
    try:
        # The first experiment's training is under way once it starts the next run's warm process.
        wait_until(lambda: list(tmpdir_for_node.glob("ralphswarm-warm-*/config.json")), timeout=120,
                   what="a warm harness process")
        assert processes_in(tmpdir_for_node)
    finally:
        node.stop() if how == "stop" else node.kill()
    # Nothing in the code waits past here: the node has exited (stop() and kill() wait for its process)
    # and its sandboxes die with it (bwrap --die-with-parent, unshare --kill-child); what is left is the
    # kernel tearing them down.
    deadline = time.monotonic() + PROCESS_SLACK_S
    while processes_in(tmpdir_for_node) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in(tmpdir_for_node) == []
    # What a killed node leaves is its scratch directories, named after it: the next owner sweeps them.
    sweep_orphans(tmpdir_for_node)
    assert not list(tmpdir_for_node.glob("ralphswarm-*"))
