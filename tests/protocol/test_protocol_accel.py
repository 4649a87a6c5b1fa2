"""The orjson accelerator of raw-bytes decode (protocol/canon.py ``parse_canonical``) agrees with
the reference path (``parse`` + ``canon``): the same Envelope or the same refusal reason.
Run: .venv/bin/python -m pytest tests/protocol/test_protocol_accel.py"""
from __future__ import annotations

import importlib
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from tests import protocol_samples as S
from protocol import Identity, ProtocolError, build, canon, parse
from protocol.envelope import _decode
from protocol.limits import MAX_SAFE_INT

canon_module = importlib.import_module("protocol.canon")
orjson = pytest.importorskip("orjson")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALICE = Identity.from_seed(b"\x01" * 32)

# Integers: the whole range, weighted to the edges (and the 15/16-digit boundary of the fast path).
EDGES = [0, -1, 1, MAX_SAFE_INT, -MAX_SAFE_INT, MAX_SAFE_INT - 1, -MAX_SAFE_INT + 1, 10**15 - 1, -(10**15 - 1),
         10**15, -(10**15)]
ints = st.sampled_from(EDGES) | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
# Any scalar value but surrogates (canonical JSON cannot carry them): controls, DEL, U+2028, astral.
chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",))
texts = st.text(chars, max_size=12) | st.sampled_from(["\x00", "\x1f", "\x7f", "/", "\u2028\u2029", "\ufeff",
                                                       "\\", '"', "\b\f\n\r\t", "\uff61", "\U0001f600"])
values = st.recursive(st.none() | st.booleans() | ints | texts,
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                      max_leaves=20)
dicts = st.dictionaries(texts, values, max_size=6)


def reference_reason(raw: bytes) -> str | None:
    try:
        parse(raw)
    except ProtocolError as exc:
        return exc.reason
    return None


def test_orjson_escapes_every_scalar_value_like_canon():
    for cp in range(0x110000):
        if not 0xD800 <= cp <= 0xDFFF:
            s = chr(cp)
            assert orjson.dumps(s) == canon(s), hex(cp)


@SETTINGS
@given(dicts)
def test_orjson_encoding_equals_canon(value):
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == canon(value)


@SETTINGS
@given(dicts)
def test_canonical_bytes_take_the_fast_path_with_the_same_value(value):
    raw = canon(value)
    fast = canon_module.parse_canonical(raw)
    assert parse(raw) == value
    if fast is None:  # only an integer at +-2^53 (or a float false alarm in a string) goes to the reference
        assert canon_module.maybe_float(raw) or b"9007199254740992" in raw
    else:
        assert fast == value


def _check_agreement(raw: bytes) -> None:
    """parse_canonical is sound: a value only when parse gives it and raw is its canon."""
    fast = canon_module.parse_canonical(raw)
    if fast is not None:
        assert reference_reason(raw) is None
        assert parse(raw) == fast and canon(fast) == raw


@SETTINGS
@given(st.data(), dicts)
def test_single_byte_mutations_of_canonical_values(data, value):
    raw = bytearray(canon(value))
    at = data.draw(st.integers(0, len(raw)))
    op = data.draw(st.sampled_from(["set", "insert", "delete"]))
    byte = data.draw(st.integers(0, 255) | st.sampled_from(list(b'.eE0-9",:[]{}\\ u')))
    if op == "set" and at < len(raw):
        raw[at] = byte
    elif op == "insert":
        raw.insert(at, byte)
    elif at < len(raw):
        del raw[at]
    _check_agreement(bytes(raw))


@pytest.mark.parametrize("raw", [
    b'{"a":1.0}', b'{"a":-0.0}', b'{"a":1e3}', b'{"a":1E3}', b'{"a":[0.5]}', b'{"a":-0}', b'{"a":01}',
    b'{"a":9007199254740992}', b'{"a":9007199254740993}', b'{"a":-9007199254740993}',
    b'{"a":18446744073709551615}', b'{"a":18446744073709551616}', b'{"a":' + b"9" * 400 + b"}",
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":1,"a":1}', b'{"a":{"b":1,"b":2}}',
    b'{"a":"\\ud800"}', b'{"a":"\\udc00x"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\\ud83d\\ude00"}', b'{"a":"\\u00e9"}',
    b'{"a":"\\/"}', b'{"a":"\\u001F"}', b'{"a":"\\u001f"}', b'{"a":"\x1f"}', b'{"a":"\\u007f"}',
    b'\xef\xbb\xbf{"a":1}', b'{"a":1} ', b'{"a":"\xff"}', b'{"b":1,"a":2}', b'[1]', b'"x"', b"1",
    b'{"a":' + b"[" * 254 + b"]" * 254 + b"}", b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}",
])
def test_tricky_inputs(raw):
    _check_agreement(raw)


def test_doubtful_numbers_go_to_the_reference_path():
    for raw in (b'{"a":1.0}', b'{"a":9007199254740992}', b'{"a":[1e3]}'):
        assert canon_module.parse_canonical(raw) is None
    assert canon_module.parse_canonical(b'{"a":"x,1.5","b":1}') is None  # false alarm: fine
    edge = MAX_SAFE_INT - 1
    assert canon_module.parse_canonical(b'{"a":"1.5","b":%d,"c":%d}' % (edge, -edge)) == {"a": "1.5", "b": edge, "c": -edge}


def test_without_orjson_the_reference_path_decides(monkeypatch):
    env = build(ALICE, S.SWARM, "vote", S.vote(), created_at=S.CREATED_AT)
    monkeypatch.setattr(canon_module, "_orjson", None)
    assert canon_module.parse_canonical(env.canonical()) is None
    assert _decode(env.canonical(), S.SWARM, S.NOW, True, True) == env


# -- decode: fast and reference paths give the same Envelope or the same reason ------------------

def outcome(data, accelerate: bool):
    try:
        env = _decode(data, S.SWARM, S.NOW, True, accelerate)
    except ProtocolError as exc:
        return ("refused", exc.reason)
    return ("accepted", env, env.canonical(), dict(env.body))


def assert_same(data) -> None:
    assert outcome(data, True) == outcome(data, False)


notes = st.text(chars, max_size=30)


@st.composite
def envelopes(draw):
    kind = draw(st.sampled_from(sorted(S.BODIES)))
    body = S.BODIES[kind]()
    if kind == "claim":
        body["note"] = draw(notes)
        body["result"]["seed"] = draw(st.sampled_from([0, MAX_SAFE_INT, 10**15 - 1, 10**15]) | st.integers(0, 10**6))
    elif kind == "vote":
        body["reason"] = draw(notes)
    elif kind == "task":
        body["description"] = draw(notes)
    created_at = draw(st.sampled_from([0, S.CREATED_AT]) | st.integers(0, S.NOW))
    return build(ALICE, S.SWARM, kind, body, created_at=created_at)


@SETTINGS
@given(envelopes())
def test_generated_envelopes_agree_and_take_the_fast_path(env):
    raw = env.canonical()
    assert_same(raw)
    assert outcome(raw, True)[0] == "accepted"
    if not canon_module.maybe_float(raw) and b"9007199254740992" not in raw:
        assert canon_module.parse_canonical(raw) is not None


@SETTINGS
@given(st.data(), envelopes())
def test_single_byte_mutations_of_envelopes_agree(data, env):
    raw = bytearray(env.canonical())
    at = data.draw(st.integers(0, len(raw) - 1))
    op = data.draw(st.sampled_from(["set", "insert", "delete"]))
    byte = data.draw(st.integers(0, 255) | st.sampled_from(list(b'.eE0-9",:[]{}\\ u')))
    if op == "set":
        assume(raw[at] != byte)
        raw[at] = byte
    elif op == "insert":
        raw.insert(at, byte)
    else:
        del raw[at]
    assert_same(bytes(raw))
    assert outcome(bytes(raw), True)[0] == "refused"


def test_targeted_envelope_changes_agree():
    env = build(ALICE, S.SWARM, "vote", S.vote(), created_at=S.CREATED_AT)
    raw = env.canonical()
    assert b'"seed":7' in raw
    for changed in (
        raw.replace(b'"seed":7', b'"seed":7.0'),
        raw.replace(b'"seed":7', b'"seed":9007199254740993'),
        raw.replace(b'"seed":7', b'"seed":18446744073709551616'),
        raw.replace(b'"seed":7', b'"seed":NaN'),
        raw.replace(b'"seed":7', b'"seed":7,"seed":7'),
        raw.replace(b'"reason":""', b'"reason":"\\ud800"'),
        raw.replace(b'"reason":""', b'"reason":"\\u0041"'),
        raw.replace(b'"seed":7', b'"seed": 7'),
        raw + b"\n",
        raw.replace(b'"kind":"vote"', b'"kind":"vote","kind":"vote"'),
        json.dumps(json.loads(raw), sort_keys=True).encode(),
        raw.decode("utf-8"),
    ):
        assert_same(changed)
