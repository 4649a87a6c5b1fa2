"""Canonical JSON (SPEC.md section 2): exactly one byte string per value.

Object keys sorted by code point, separators ``,`` and ``:``, UTF-8 (not ASCII-escaped), the
escaping of ``json.dumps(ensure_ascii=False)``, no floats, no NaN, integers within +-2^53,
duplicate keys rejected on parse.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .errors import ProtocolError
from .limits import MAX_SAFE_INT

# Longest decimal text of an in-range integer: "-9007199254740992" (17 characters).
_MAX_INT_CHARS = len(str(-MAX_SAFE_INT))
# A \uD800-\uDFFF escape is the only way a lone surrogate gets into a parsed string
# (the UTF-8 decoder already refuses encoded surrogates).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def _check(value: Any, path: str = "$") -> None:
    """Refuse anything canonical JSON cannot carry (SPEC.md 2.1)."""
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


def _make_c_encoder() -> Any:
    """The C encoder behind _ENCODER, made once (JSONEncoder.encode builds it on every call),
    or None where this Python lacks it or builds it differently: then _ENCODER does the work."""
    try:
        make = json.encoder.c_make_encoder
        encode = make(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, False)
        sample = {"b": [1, "\u00e9\n\"", None, True], "a": {"y": -2, "x": ""}}
        return encode if "".join(encode(sample, 0)) == _ENCODER.encode(sample) else None
    except (AttributeError, TypeError, ValueError):
        return None


_C_ENCODE = _make_c_encoder()


def encode_checked(value: Any) -> bytes:
    """Canonical bytes of a value already known to hold only JSON types (e.g. from ``parse``).

    Skips the type walk of ``canon``; still refuses lone surrogates, which UTF-8 cannot carry.
    """
    try:
        if _C_ENCODE is not None and type(value) is dict:
            return "".join(_C_ENCODE(value, 0)).encode("utf-8")
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("invalid: lone surrogate in string") from None


def canon(value: Any) -> bytes:
    """Canonical encoding of ``value``; raises ProtocolError for anything protocol v1 forbids."""
    try:
        _check(value)
        return encode_checked(value)
    except RecursionError:
        raise ProtocolError("invalid: nested too deeply") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ProtocolError(f"invalid: duplicate key {key!r}")
            seen.add(key)
    return out


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"invalid: {name} is not JSON")


def _reject_float(text: str) -> Any:
    raise ProtocolError("invalid: float (measurements travel as decimal strings)")


def _parse_int(text: str) -> int:
    # Bound the length first: int() of a huge digit string is slow (and refused past 4300 digits).
    if len(text) <= _MAX_INT_CHARS:
        value = int(text)
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return value
    raise ProtocolError("invalid: integer out of range")


def _reject_surrogates(value: Any) -> None:
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, list):
        for item in value:
            _reject_surrogates(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _reject_surrogates(item)


# An integer beyond +-2^53 has at least 16 digits, and a JSON number starts at the document's
# start or after ``[``, ``,``, ``:``, ``-`` or whitespace. Mapping digits to ``0`` and those
# characters to ``,`` finds every such run with one C-speed search (a run inside a string, e.g. a
# note, is a harmless false alarm); text without one skips the per-integer range check, which
# costs a Python call for each integer of a message.
_NUMBER_MARKS = bytes.maketrans(b"0123456789[,:- \t\n\r", b"0000000000,,,,,,,,")
_LONG_INTEGER_MARK = b",0000000000000000"
_HOOKS = dict(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_float=_reject_float)
_DECODER = json.JSONDecoder(parse_int=_parse_int, **_HOOKS)
_SHORT_INTS_DECODER = json.JSONDecoder(**_HOOKS)


def parse(data: bytes | str) -> Any:
    """Parse JSON strictly: duplicate keys, floats, NaN/Infinity, integers beyond +-2^53,
    lone surrogates and bad UTF-8 are errors. Whitespace is allowed here; ``decode`` demands
    the canonical bytes."""
    decoder = _DECODER
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if _LONG_INTEGER_MARK not in b"," + data.translate(_NUMBER_MARKS):
            decoder = _SHORT_INTS_DECODER
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("invalid: not UTF-8") from None
    try:
        if data.startswith("\ufeff"):  # as json.loads does
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
        value = decoder.decode(data)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"invalid: not JSON ({str(exc).splitlines()[0][:80]})") from None
    if "\\u" in data and _SURROGATE_ESCAPE.search(data):
        try:
            _reject_surrogates(value)
        except UnicodeEncodeError:
            raise ProtocolError("invalid: lone surrogate in string") from None
        except RecursionError:  # pragma: no cover - json.loads refuses such depth first
            raise ProtocolError("invalid: nested too deeply") from None
    return value


# ---------------------------------------------------------------------------------------------
# Accelerator for raw bytes that must be exactly canonical (SPEC.md 4.8): orjson, where present.
#
# ``parse_canonical(raw)`` returns the parsed value only when it can prove that ``parse(raw)``
# would return an equal value AND that ``canon`` of that value is ``raw`` itself; otherwise None,
# and the caller runs the reference path (``parse``, ``encode_checked``), which alone produces
# refusal reasons. The proof, for raw bytes orjson parses to ``v`` with
# ``orjson.dumps(v, option=_FAST_OPTIONS) == raw`` (sorted keys, strict integers):
# - orjson refuses invalid UTF-8, a BOM, lone surrogates (escaped or encoded), NaN/Infinity,
#   leading zeros and nesting past 1024 (past 254, dumps fails): the reference refuses those too,
#   and here they only mean None.
# - Duplicate keys: orjson keeps the last, so the re-encoding has fewer members than raw: no match.
# - Integers: orjson reads up to 64 bits (larger ones as floats); dumps with OPT_STRICT_INTEGER
#   refuses any beyond +-(2^53 - 1), so those (and the two edges +-2^53 themselves) mean None.
# - Floats: in raw (canonical, so no whitespace) a float is a number token right after ``[``, ``,``
#   or ``:``, its digits (and ``-``) followed by ``.``, ``e`` or ``E``. Deleting digits and ``-``
#   and mapping those marks turns any such token into ``,.`` (_FLOAT_MARKS): found, it means None
#   (also for such text inside a string, a harmless false alarm).
# - Strings: orjson escapes exactly as json.dumps(ensure_ascii=False) (", \, \b \f \n \r \t,
#   other C0 controls as lower-case \u00XX; "/", DEL, U+2028/2029 raw: checked for every scalar
#   value in tests/protocol/test_protocol_accel.py), and it sorts keys by UTF-8 bytes, which for valid
#   strings is code-point order. So the match makes raw == canon(v), and the bytes that parse to v
#   under both parsers (no whitespace, no escapes beyond the canonical ones) give equal values.
try:  # pragma: no branch
    import orjson as _orjson
except ImportError:  # pragma: no cover - the reference path does everything
    _orjson = None

_FLOAT_MARKS = bytes.maketrans(b"[,:.eE", b",,,...")
_FLOAT_DELETE = b"0123456789-"
_FAST_OPTIONS = 0 if _orjson is None else _orjson.OPT_SORT_KEYS | _orjson.OPT_STRICT_INTEGER


def maybe_float(raw: bytes) -> bool:
    """True if canonical-looking bytes may hold a float (see above); False proves they hold none."""
    return b",." in raw.translate(_FLOAT_MARKS, _FLOAT_DELETE)


def parse_canonical(raw: bytes) -> Any:
    """The value of ``raw`` if ``raw`` is provably ``canon`` of it and ``parse`` would agree (see
    above), else None (then use ``parse`` and compare, the reference path). Only dicts are returned."""
    fast = _orjson
    if fast is None:
        return None
    try:
        value = fast.loads(raw)
        if type(value) is not dict or fast.dumps(value, option=_FAST_OPTIONS) != raw:
            return None
    except (ValueError, TypeError):  # orjson.JSONDecodeError / JSONEncodeError
        return None
    return None if maybe_float(raw) else value
