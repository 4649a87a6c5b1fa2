"""Every protocol v1 limit at its edge: exactly at the limit accepted, one over refused (SPEC.md 6).
Run: .venv/bin/python -m pytest tests/protocol/test_protocol_limits.py"""
from __future__ import annotations

import pytest

from tests import protocol_samples as S
from protocol import Identity, ProtocolError, build, canon, decode
from protocol.limits import MAX_CURVE_POINTS, MAX_ENVELOPE_BYTES, MAX_FUTURE_SECONDS, MAX_NOTE_BYTES, MAX_PATCH_BYTES

ALICE = Identity.from_seed(b"\x01" * 32)
KIB = 1024


def roundtrip(kind: str, body: dict, created_at: int = S.CREATED_AT, now: int = S.NOW):
    env = build(ALICE, S.SWARM, kind, body, created_at=created_at)
    return decode(env.canonical(), swarm=S.SWARM, now=now)


def refused(kind: str, body: dict) -> str:
    with pytest.raises(ProtocolError) as err:
        build(ALICE, S.SWARM, kind, body, created_at=S.CREATED_AT)
    return err.value.reason


def test_limit_values_are_the_spec():
    assert (MAX_ENVELOPE_BYTES, MAX_PATCH_BYTES, MAX_NOTE_BYTES, MAX_CURVE_POINTS, MAX_FUTURE_SECONDS) == (
        256 * KIB, 64 * KIB, 4 * KIB, 64, 600)


@pytest.mark.parametrize("fill", ["a", "\u00e9", "\U0001f600"])  # 1, 2 and 4 UTF-8 bytes per character
def test_patch_64k_bytes(fill):
    at = fill * (64 * KIB // len(fill.encode()))
    assert len(at.encode()) == 64 * KIB
    assert roundtrip("claim", S.claim(patch=at)).body["patch"] == at
    over = at + "b"
    assert refused("claim", S.claim(patch=over)) == "invalid: too large: body.patch"


def test_source_64k_bytes():
    assert roundtrip("task", S.task(source="s" * (64 * KIB)))
    assert refused("task", S.task(source="s" * (64 * KIB + 1))) == "invalid: too large: body.source"


@pytest.mark.parametrize("kind,field", [("claim", "note"), ("vote", "reason"), ("task", "description")])
def test_note_4k_bytes(kind, field):
    body = S.BODIES[kind]
    assert roundtrip(kind, body(**{field: "\u00e9" * (2 * KIB)}))  # 4096 bytes in 2048 characters
    assert refused(kind, body(**{field: "\u00e9" * (2 * KIB) + "x"})) == f"invalid: too large: body.{field}"


def test_curve_64_points():
    curve = [[i * 10, "1.5"] for i in range(64)]
    assert roundtrip("claim", S.claim(result=S.result(curve=curve))).body["result"]["curve"] == curve
    assert refused("claim", S.claim(result=S.result(curve=curve + [[650, "1.4"]]))) == (
        "invalid: too large: body.result.curve")
    assert refused("vote", S.vote(result=S.result(curve=curve + [[650, "1.4"]]))) == (
        "invalid: too large: body.result.curve")


def test_created_at_10_minutes_future():
    now = S.CREATED_AT
    assert roundtrip("vote", S.vote(), created_at=now + 600, now=now).created_at == now + 600
    env = build(ALICE, S.SWARM, "vote", S.vote(), created_at=now + 601)
    with pytest.raises(ProtocolError) as err:
        decode(env.canonical(), swarm=S.SWARM, now=now)
    assert err.value.reason == "invalid: from the future"
    assert decode(env.canonical(), swarm=S.SWARM, now=now + 1) == env  # later, the same message is fine


def _claim_of_envelope_size(target: int) -> dict:
    """A claim whose envelope is exactly ``target`` canonical bytes: control characters in the patch
    cost 6 bytes each (\\u0001) but only 1 against the 64 KiB patch limit."""
    base = len(build(ALICE, S.SWARM, "claim", S.claim(patch=""), created_at=S.CREATED_AT).canonical())
    extra = target - base
    return S.claim(patch="\x01" * (extra // 6) + "a" * (extra % 6))


def test_envelope_256k_bytes():
    at = build(ALICE, S.SWARM, "claim", _claim_of_envelope_size(MAX_ENVELOPE_BYTES), created_at=S.CREATED_AT)
    assert len(at.canonical()) == MAX_ENVELOPE_BYTES
    assert decode(at.canonical(), swarm=S.SWARM, now=S.NOW) == at
    assert decode(at.to_dict(), swarm=S.SWARM, now=S.NOW) == at
    assert refused("claim", _claim_of_envelope_size(MAX_ENVELOPE_BYTES + 1)) == "invalid: too large"


def test_envelope_over_256k_refused_by_receiver_raw_and_parsed():
    # Sign a too-large envelope by hand (build refuses to), then hand it to the receiver both ways.
    import hashlib
    body = _claim_of_envelope_size(MAX_ENVELOPE_BYTES + 1)
    env_id = hashlib.sha256(canon([1, S.SWARM, ALICE.pubkey, S.CREATED_AT, "claim", body])).hexdigest()
    d = {"id": env_id, "author": ALICE.pubkey, "created_at": S.CREATED_AT, "swarm": S.SWARM, "kind": "claim",
         "body": body, "sig": ALICE.sign(bytes.fromhex(env_id)).hex()}
    assert len(canon(d)) == MAX_ENVELOPE_BYTES + 1
    for data in (canon(d), canon(d).decode(), d):
        with pytest.raises(ProtocolError) as err:
            decode(data, swarm=S.SWARM, now=S.NOW)
        assert err.value.reason == "invalid: too large"


def test_oversized_raw_refused_before_parsing():
    junk = b"[" * (MAX_ENVELOPE_BYTES + 1)  # would be "not JSON" if parsed
    with pytest.raises(ProtocolError, match="^invalid: too large$"):
        decode(junk, swarm=S.SWARM)
    with pytest.raises(ProtocolError, match="^invalid: too large$"):
        decode(junk.decode(), swarm=S.SWARM)
