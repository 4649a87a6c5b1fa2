"""Finding the processes a test started, to assert that none outlives its run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple


class Proc(NamedTuple):
    pid: int
    cmdline: bytes
    state: str  # from /proc/PID/stat: R, S, Z (zombie), ...
    cwd: str  # "" where unreadable


def processes() -> Iterator[Proc]:
    """Every process on the machine that is still there while it is read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        yield Proc(int(entry), cmdline, state, cwd)


def processes_with(marker: str) -> list[int]:
    """Pids of the processes whose command line carries ``marker``, zombies included."""
    return [p.pid for p in processes() if marker.encode() in p.cmdline]


def processes_in(root: Path) -> list[int]:
    """Processes whose working directory or command line lies under ``root`` (bwrap's names its binds)."""
    return [p.pid for p in processes() if str(root).encode() in p.cmdline or p.cwd.startswith(str(root))]
