"""Atomic file writes: a crash leaves the old file or the new one, never half of either.

The one helper for protocol (key files) and every package above it (store, ralph, node); ``trainer``
stands alone and keeps its own copy (``trainer/fileio.py``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes, *, mode: int = 0o600) -> Path:
    """Write ``data`` to a fresh temporary file beside ``path`` (created exclusively, never a planted
    link), fsync it, give it ``mode``, and rename it over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
