"""Atomic file writes: a crash leaves the old file or the new one, never half of either.

trainer imports nothing of ours, so it carries this copy of ``protocol.fileio.write_atomic`` (the
same behaviour, plus ``fsync=False`` for files a reader re-checks anyway); every trainer writer
uses it. tests/trainer/test_trainer_fileio.py checks that both agree.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes, *, mode: int = 0o600, fsync: bool = True) -> Path:
    """Write ``data`` to a fresh temporary file beside ``path`` (created exclusively, never a planted
    link), fsync it unless told not to, give it ``mode``, and rename it over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
