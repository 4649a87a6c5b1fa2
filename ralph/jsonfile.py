"""Small JSON state files in the node home, written atomically so a crash never leaves half a file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocol.fileio import write_atomic


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (protocol/fileio.py)."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


def read_json(path: Path, default: Any) -> Any:
    """The file's JSON, or ``default`` when it does not exist yet. A corrupt file is an error, not
    silently replaced: it holds the user's history (or spend)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); move it aside to start fresh") from None
