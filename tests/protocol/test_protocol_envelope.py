"""Envelopes: build, decode, and tamper resistance (SPEC.md sections 3-4).
Run: .venv/bin/python -m pytest tests/protocol/test_protocol_envelope.py"""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests import protocol_samples as S
from protocol import Envelope, Identity, ProtocolError, build, canon, compute_id, decode, parse, task_id, verify_sig
from protocol.envelope import _id_from_parts

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ALICE = Identity.from_seed(b"\x01" * 32)
MALLORY = Identity.from_seed(b"\x02" * 32)


def signed(kind="vote", body=None, created_at=S.CREATED_AT, swarm=S.SWARM, identity=ALICE) -> Envelope:
    return build(identity, swarm, kind, body if body is not None else S.BODIES[kind](), created_at=created_at)


def reason_of(data, swarm=S.SWARM, now=S.NOW) -> str:
    with pytest.raises(ProtocolError) as err:
        decode(data, swarm=swarm, now=now)
    return err.value.reason


def sign_raw(obj_fields: dict, identity=ALICE) -> dict:
    """Sign arbitrary fields by the definition (SPEC.md 3.2), bypassing build()'s checks."""
    env_id = hashlib.sha256(canon([1, obj_fields["swarm"], identity.pubkey, obj_fields["created_at"],
                                   obj_fields["kind"], obj_fields["body"]])).hexdigest()
    return {**obj_fields, "author": identity.pubkey, "id": env_id,
            "sig": identity.sign(bytes.fromhex(env_id)).hex()}


@pytest.mark.parametrize("kind", sorted(S.BODIES))
def test_build_decode_round_trip_every_kind(kind):
    env = signed(kind)
    assert env.id == compute_id(env.swarm, env.author, env.created_at, kind, env.body)
    assert verify_sig(env)
    for data in (env.canonical(), env.canonical().decode("utf-8"), env.to_dict()):
        got = decode(data, swarm=S.SWARM, now=S.NOW)
        assert got == env and got.canonical() == env.canonical() == canon(env.to_dict())


def test_envelope_is_hashable_by_id_and_holds_its_own_body_copy():
    body = S.vote()
    env = signed("vote", body)
    body["reason"] = "changed afterwards"
    assert env.body["reason"] == "" and decode(env.canonical(), swarm=S.SWARM, now=S.NOW) == env
    assert {env, decode(env.canonical(), swarm=S.SWARM, now=S.NOW)} == {env}


def test_task_id_is_sha256_of_canonical_body():
    body = S.task()
    assert task_id(body) == hashlib.sha256(canon(body)).hexdigest()
    assert task_id(dict(reversed(list(body.items())))) == task_id(body)  # key order never matters


text = st.text(max_size=30)


@SETTINGS
@given(swarm=st.text(min_size=1, max_size=20), created_at=st.integers(0, 2**53),
       note=text, reason=text, kind=st.sampled_from(["claim", "vote"]))
def test_fast_id_path_matches_definition(swarm, created_at, note, reason, kind):
    body = S.claim(note=note) if kind == "claim" else S.vote(reason=reason)
    if len(swarm.encode()) > 64:
        return
    env = build(ALICE, swarm, kind, body, created_at=created_at)
    assert env.id == compute_id(swarm, ALICE.pubkey, created_at, kind, body)
    assert env.id == _id_from_parts(canon(swarm), ALICE.pubkey, created_at, kind, canon(body))
    assert env.canonical() == canon(env.to_dict())


# --- any change to any field is rejected (SPEC.md 4) -------------------------------------------

def _mutations(env: Envelope):
    d = env.to_dict()
    other_hex = lambda h: ("0" if h[0] != "0" else "1") + h[1:]  # noqa: E731
    yield "author", {**d, "author": MALLORY.pubkey}
    yield "created_at", {**d, "created_at": d["created_at"] + 1}
    yield "created_at", {**d, "created_at": d["created_at"] - 1}
    yield "swarm", {**d, "swarm": "lab"}
    yield "kind", {**d, "kind": "claim" if d["kind"] != "claim" else "vote"}
    yield "sig", {**d, "sig": other_hex(d["sig"])}
    yield "sig", {**d, "sig": d["sig"][:64] + other_hex(d["sig"][64:])}
    yield "id", {**d, "id": other_hex(d["id"])}
    for key, value in d["body"].items():
        yield f"body.{key}", {**d, "body": {**d["body"], key: _changed(value)}}


def _changed(value):
    if value is None:
        return "ab" * 32
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x" if value and value[-1].isdigit() else (value[:-1] or "0") + "1"
    if isinstance(value, list):
        return value[:-1]
    if isinstance(value, dict):
        key = sorted(value)[0]
        return {**value, key: _changed(value[key])}
    raise AssertionError(value)


@pytest.mark.parametrize("kind", sorted(S.BODIES))
def test_every_field_change_rejected(kind):
    env = signed(kind)
    fields = set()
    for field, tampered in _mutations(env):
        assert tampered != env.to_dict()
        fields.add(field)
        for swarm in {S.SWARM, tampered["swarm"]}:  # also as seen by a receiver in the tampered swarm
            for data in (tampered, canon(tampered)):
                with pytest.raises(ProtocolError):
                    decode(data, swarm=swarm, now=S.NOW)
    assert fields == {"author", "created_at", "swarm", "kind", "sig", "id"} | {f"body.{k}" for k in env.body}


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(sorted(S.BODIES)))
def test_any_single_byte_change_rejected(data, kind):
    raw = bytearray(signed(kind).canonical())
    op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    if op == "flip":
        raw[i] ^= data.draw(st.integers(1, 255))
    elif op == "insert":
        raw.insert(i, data.draw(st.integers(0, 255)))
    else:
        del raw[i]
    with pytest.raises(ProtocolError) as err:
        decode(bytes(raw), swarm=S.SWARM, now=S.NOW)
    assert err.value.reason.startswith("invalid: ")


@SETTINGS
@given(data=st.data())
def test_any_change_of_a_body_text_rejected(data):
    env = signed("claim", S.claim(note="a note", patch="x" * 40))
    d = env.to_dict()
    field = data.draw(st.sampled_from(["note", "patch"]))
    new = data.draw(st.text(max_size=50).filter(lambda t: t != d["body"][field]))
    tampered = {**d, "body": {**d["body"], field: new}}
    assert reason_of(tampered) == "invalid: bad id"
    assert reason_of(canon(tampered)) == "invalid: bad id"


# --- each reason where it belongs (SPEC.md 4) ----------------------------------------------------

def test_reason_bad_signature():
    d = signed().to_dict()
    assert reason_of({**d, "sig": MALLORY.sign(bytes.fromhex(d["id"])).hex()}) == "invalid: bad signature"
    # A correct id and signature, but by another key than the author's: still the author's id fails.
    forged = {**d, "author": MALLORY.pubkey}
    forged["id"] = compute_id(forged["swarm"], forged["author"], forged["created_at"], forged["kind"], forged["body"])
    forged["sig"] = ALICE.sign(bytes.fromhex(forged["id"])).hex()
    assert reason_of(canon(forged)) == "invalid: bad signature"


def test_check_sig_false_skips_only_the_signature():
    d = signed().to_dict()
    bad = {**d, "sig": MALLORY.sign(bytes.fromhex(d["id"])).hex()}
    assert decode(bad, swarm=S.SWARM, now=S.NOW, check_sig=False).id == d["id"]
    with pytest.raises(ProtocolError, match="bad id"):
        decode({**d, "created_at": 5}, swarm=S.SWARM, now=S.NOW, check_sig=False)


def test_reason_bad_id():
    d = signed().to_dict()
    assert reason_of({**d, "body": {**d["body"], "reason": "x"}}) == "invalid: bad id"
    assert reason_of({**d, "id": "00" * 32}) == "invalid: bad id"


def test_reason_wrong_swarm():
    env = signed(swarm="lab")
    assert reason_of(env.canonical()) == "invalid: wrong swarm"
    assert decode(env.canonical(), swarm="lab", now=S.NOW) == env


def test_reason_unknown_kind():
    fields = {"created_at": S.CREATED_AT, "swarm": S.SWARM, "kind": "poll", "body": {}}
    assert reason_of(canon(sign_raw(fields))) == "invalid: unknown kind"
    assert reason_of(sign_raw({**fields, "kind": 7})) == "invalid: unknown kind"
    with pytest.raises(ProtocolError, match="unknown kind"):
        build(ALICE, S.SWARM, "poll", {})


def test_reason_schema_fields():
    d = signed().to_dict()
    assert reason_of({k: v for k, v in d.items() if k != "body"}) == "invalid: schema: body (missing)"
    assert reason_of({**d, "extra": 1}) == "invalid: schema: extra (unknown field)"
    assert reason_of({**d, "author": d["author"].upper()}).startswith("invalid: schema: author")
    assert reason_of({**d, "id": d["id"][:-1]}).startswith("invalid: schema: id")
    assert reason_of({**d, "created_at": -1}).startswith("invalid: schema: created_at")
    assert reason_of({**d, "created_at": True}).startswith("invalid: schema: created_at")
    assert reason_of({**d, "swarm": ""}).startswith("invalid: schema: swarm")
    assert reason_of({**d, "swarm": "s" * 65}).startswith("invalid: schema: swarm")
    assert reason_of(b"[1,2]").startswith("invalid: schema: envelope")
    assert reason_of(sign_raw({"created_at": S.CREATED_AT, "swarm": S.SWARM, "kind": "vote",
                               "body": S.vote(verdict="maybe")})).startswith("invalid: schema: body.verdict")


def test_reason_not_canonical_only_for_raw_input():
    env = signed("claim", S.claim(note="caf\u00e9"))
    raw = env.canonical()
    for variant in (raw + b" ", b" " + raw, raw.replace(b'"kind":', b'"kind" :'),
                    raw.replace("\u00e9".encode(), b"\\u00e9"), raw.replace(b"\\n", b"\\u000a")):
        assert reason_of(variant) == "invalid: not canonical"
        assert parse(variant) == env.to_dict()  # same value, other spelling
    # The same value handed over already parsed is fine: the id covers every field.
    assert decode(env.to_dict(), swarm=S.SWARM, now=S.NOW) == env


def test_reason_parse_errors_surface():
    raw = signed().canonical()
    assert reason_of(raw.replace(b'"result":', b'"result":1.5,"x":')).startswith("invalid: float")
    assert reason_of(raw.replace(b'{"author"', b'{"sig":"","author"')).startswith("invalid: duplicate key")
    assert reason_of(raw[:-1]).startswith("invalid: not JSON")
    assert reason_of(b"\xff" + raw).startswith("invalid: not UTF-8")


def test_build_refuses_bad_input():
    with pytest.raises(ProtocolError, match="schema: body.outcome"):
        build(ALICE, S.SWARM, "claim", S.claim(outcome="great"))
    with pytest.raises(ProtocolError, match="schema: created_at"):
        build(ALICE, S.SWARM, "vote", S.vote(), created_at=-5)
    with pytest.raises(ProtocolError, match="schema: swarm"):
        build(ALICE, "", "vote", S.vote())
    with pytest.raises(ProtocolError, match="float"):
        build(ALICE, S.SWARM, "claim", S.claim(result=S.result(tokens=1.0)))
