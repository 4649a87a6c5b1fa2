"""trainer.warm's scratch directories: named after their owner, swept once the owner is gone."""
from __future__ import annotations

import os
import subprocess
import sys

from trainer.warm import scratch_dir, sweep_orphans


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_only_directories_whose_owner_is_gone(tmp_path):
    gone = dead_pid()
    orphan = tmp_path / f"ralphswarm-warm-{gone}-abc"
    (orphan / "tmp").mkdir(parents=True)
    (orphan / "config.json").write_text("{}")
    mine = tmp_path / f"ralphswarm-eval-{os.getpid()}-xyz"
    mine.mkdir()
    init_owned = tmp_path / "ralphswarm-train-1-q"  # pid 1 exists
    init_owned.mkdir()
    unrelated = [tmp_path / "ralphswarm-warm-notapid", tmp_path / f"other-warm-{gone}-x"]
    for path in unrelated:
        path.mkdir()
    a_file = tmp_path / f"ralphswarm-warm-{gone}-file"
    a_file.write_text("not a directory")
    link = tmp_path / f"ralphswarm-warm-{gone}-link"
    link.symlink_to(mine)

    assert sweep_orphans(tmp_path) == [orphan]
    assert not orphan.exists()
    assert mine.exists() and init_owned.exists() and a_file.exists() and link.is_symlink()
    assert all(path.exists() for path in unrelated)


def test_scratch_dirs_carry_their_owner_pid():
    path = scratch_dir("warm")
    try:
        assert path.name.startswith(f"ralphswarm-warm-{os.getpid()}-") and path.is_dir()
        assert path not in sweep_orphans(path.parent)
    finally:
        path.rmdir()


def test_a_kind_with_a_dash_is_swept_too(tmp_path):
    # The model processes' kinds are "model-a" and "model-b": their directories carry the owner too.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = proc.pid
    gone = tmp_path / f"ralphswarm-model-a-{dead}-x1"
    gone.mkdir()
    assert sweep_orphans(tmp_path) == [gone]
