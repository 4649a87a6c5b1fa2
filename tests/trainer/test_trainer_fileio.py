"""trainer's atomic write (trainer/fileio.py), the copy of protocol.fileio that trainer carries.
Run: .venv/bin/python -m pytest tests/trainer/test_trainer_fileio.py"""
from __future__ import annotations

import ast
import os
import stat
import sys
from pathlib import Path

import pytest

from protocol import fileio as pfileio
from trainer import fileio as tfileio


@pytest.mark.parametrize("write", [pfileio.write_atomic, tfileio.write_atomic], ids=["protocol", "trainer"])
@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_both_copies_write_the_bytes_with_the_mode_and_leave_no_temp(tmp_path, write, mode):
    old = os.umask(0o077)  # the mode is set explicitly, whatever the umask
    try:
        path = write(tmp_path / "sub" / "f.bin", b"one", mode=mode)
        write(path, b"two", mode=mode)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


@pytest.mark.parametrize("write", [pfileio.write_atomic, tfileio.write_atomic], ids=["protocol", "trainer"])
def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, write):
    path = write(tmp_path / "f.bin", b"old")
    with pytest.raises(TypeError):
        write(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_trainer_copy_without_fsync_writes_the_same(tmp_path):
    path = tfileio.write_atomic(tmp_path / "f.bin", b"data", fsync=False)
    assert path.read_bytes() == b"data" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_trainer_copy_imports_only_the_standard_library():  # trainer imports nothing of ours
    tree = ast.parse(Path(tfileio.__file__).read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= set(sys.stdlib_module_names)
