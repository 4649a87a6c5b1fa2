"""Canonical JSON and hashes, byte-for-byte the output of ``protocol.canon`` (protocol/SPEC.md section 2).

trainer imports nothing of ours, so it carries this two-line copy; tests/trainer/test_trainer_tasks.py checks
that both agree, so a task id computed here is the id every node computes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def canon(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
