"""Canonical JSON (SPEC.md section 2).  Run: .venv/bin/python -m pytest tests/protocol/test_protocol_canon.py"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from protocol import ProtocolError, canon, parse
from protocol.limits import MAX_SAFE_INT

SETTINGS = settings(max_examples=200, deadline=None)

ints = st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
# st.text() never yields lone surrogates; canonical JSON cannot carry them (UTF-8).
scalars = st.none() | st.booleans() | ints | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@SETTINGS
@given(json_values)
def test_round_trip(value):
    assert parse(canon(value)) == value


@SETTINGS
@given(json_values)
def test_canon_is_idempotent_and_agrees_with_parse_of_any_spelling(value):
    once = canon(value)
    assert canon(parse(once)) == once
    # Any other valid spelling of the same value (whitespace, escapes, key order) parses to it too.
    loose = json.dumps(value, indent=2, ensure_ascii=True)
    assert canon(parse(loose)) == once


@SETTINGS
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=8))
def test_keys_sorted_by_code_point(obj):
    text = canon(obj).decode("utf-8")
    keys = list(json.loads(text, object_pairs_hook=lambda pairs: [k for k, _ in pairs]))
    assert keys == sorted(obj)  # Python str order is code-point order
    assert keys == sorted(obj, key=lambda k: [ord(c) for c in k])


def test_escaping_is_exactly_json_dumps_ensure_ascii_false():
    assert canon('"\\\n\r\t\b\f') == b'"\\"\\\\\\n\\r\\t\\b\\f"'
    assert canon("\x00\x1f") == b'"\\u0000\\u001f"'  # lower-case hex
    assert canon("\x1b") == b'"\\u001b"'
    assert canon("/\x7f\u2028\U0001f600\u00e9") == '"/\x7f\u2028\U0001f600\u00e9"'.encode("utf-8")


def test_separators_and_scalars():
    assert canon({"b": [1, True, None], "a": {"y": "", "x": False}}) == b'{"a":{"x":false,"y":""},"b":[1,true,null]}'
    assert canon((1, 2)) == b"[1,2]"  # tuples encode as lists


def test_astral_keys_sort_by_code_point_not_utf16():
    # RFC 8785 (JCS) sorts by UTF-16 unit and would put U+1F600 first; protocol v1 does not.
    assert canon({"\U0001f600": 1, "\uff61": 2}) == '{"\uff61":2,"\U0001f600":1}'.encode("utf-8")


@pytest.mark.parametrize("value", [MAX_SAFE_INT, -MAX_SAFE_INT, 0])
def test_integer_edges_accepted(value):
    assert parse(canon(value)) == value
    assert parse(canon([value])) == [value]


@pytest.mark.parametrize("value", [MAX_SAFE_INT + 1, -MAX_SAFE_INT - 1, 10**30])
def test_integer_out_of_range_rejected(value):
    with pytest.raises(ProtocolError, match="integer out of range"):
        canon({"n": value})
    with pytest.raises(ProtocolError, match="integer out of range"):
        parse(f'{{"n":{value}}}')


def test_huge_digit_string_rejected_quickly():
    with pytest.raises(ProtocolError, match="integer out of range"):
        parse("1" * 100_000)


@SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_rejected(x):
    with pytest.raises(ProtocolError, match="float"):
        canon({"x": [x]})


@pytest.mark.parametrize("raw,why", [
    ('{"a":1.0}', "float"), ("[1e5]", "float"), ("[1E-2]", "float"), ("NaN", "NaN"),
    ("[-Infinity]", "-Infinity"), ('{"a":1,"b":{"c":2,"c":2}}', "duplicate key"),
    ('"\\udc00"', "lone surrogate"), ('{"\\ud83d":1}', "lone surrogate"),
    (b'"\xff"', "not UTF-8"), (b'"\xed\xa0\x80"', "not UTF-8"), ("", "not JSON"), ("[1,]", "not JSON"),
    ("[" * 100_000, "not JSON"),
])
def test_parse_rejects(raw, why):
    with pytest.raises(ProtocolError) as err:
        parse(raw)
    assert err.value.reason.startswith("invalid: ")
    assert why in err.value.reason


def test_surrogate_pair_escape_is_fine():
    assert parse('"\\ud83d\\ude00"') == "\U0001f600"
    assert parse('"\\\\ud800"') == "\\ud800"  # an escaped backslash, not a surrogate


@pytest.mark.parametrize("value,why", [
    ({1: "a"}, "non-string key"), ({"a": {1.5}}, "unsupported type"), ("\ud800", "lone surrogate"),
    (b"bytes", "unsupported type"),
])
def test_canon_rejects(value, why):
    with pytest.raises(ProtocolError, match=why):
        canon(value)


def test_canon_rejects_deep_nesting_with_a_reason():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ProtocolError, match="nested too deeply"):
        canon(deep)
