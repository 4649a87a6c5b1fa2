"""Canonical JSON (DESIGN.md, "The wire"): one byte string per value.

Object keys sorted (by code point), separators ``,`` and ``:``, UTF-8 not ASCII-escaped,
no floats, no NaN, integers within +-2^53, duplicate keys rejected on parse.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import ProtocolError
from .limits import MAX_SAFE_INT


def _check(value: Any, path: str = "$") -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise ProtocolError(f"invalid: integer out of range at {path}")
        return
    if isinstance(value, float):
        raise ProtocolError(f"invalid: float at {path} (measurements travel as decimal strings)")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError(f"invalid: non-string key at {path}")
            _check(item, f"{path}.{key}")
        return
    raise ProtocolError(f"invalid: unsupported type {type(value).__name__} at {path}")


def canon(value: Any) -> bytes:
    """Canonical encoding of ``value``; raises ProtocolError for anything protocol v1 forbids."""
    _check(value)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # pragma: no cover - _check catches these first
        raise ProtocolError(f"invalid: not canonical ({exc})") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("invalid: lone surrogate in string") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError(f"invalid: duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"invalid: {name} is not JSON")


def _reject_float(text: str) -> Any:
    raise ProtocolError("invalid: float (measurements travel as decimal strings)")


def parse(data: bytes | str) -> Any:
    """Parse JSON strictly: duplicate keys, floats, NaN/Infinity and bad UTF-8 are errors."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("invalid: not UTF-8") from None
    try:
        value = json.loads(
            data,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_reject_float,
        )
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"invalid: not JSON ({str(exc).splitlines()[0][:80]})") from None
    _check(value)
    return value
