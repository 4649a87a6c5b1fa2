"""Envelopes (SPEC.md sections 3-4): build, sign, and the receiver's checks.

    id  = sha256(canon([1, swarm, author, created_at, kind, body]))   lower-case hex
    sig = Ed25519(author, bytes.fromhex(id))                           128 hex

``decode`` is on the ingest hot path, so the body (the only large part) is encoded once: the
envelope's canonical bytes and the id preimage are both assembled around that one encoding.
"""
from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from .canon import canon, encode_checked, parse, parse_canonical
from .errors import ProtocolError, schema_error
from .keys import Identity, is_hex, verify
from .limits import MAX_ENVELOPE_BYTES, MAX_FUTURE_SECONDS, MAX_SAFE_INT, MAX_SWARM_BYTES, PROTOCOL_VERSION
from .schemas import VALIDATORS
from .seeds import check_seed_proof

ENVELOPE_FIELDS = frozenset({"id", "author", "created_at", "swarm", "kind", "body", "sig"})
# The reason for the last check of SPEC.md 4, also given by callers that verify in bulk (store/ingest.py).
BAD_SIGNATURE = "invalid: bad signature"


@dataclass(frozen=True)
class Envelope:
    id: str
    author: str
    created_at: int
    swarm: str
    kind: str
    body: Mapping[str, Any]
    sig: str
    # The canonical bytes, kept when already known (decode, build) so storing costs no re-encoding.
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def __hash__(self) -> int:  # the body is a dict; the id already commits to everything
        return hash(self.id)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "author": self.author,
            "created_at": self.created_at,
            "swarm": self.swarm,
            "kind": self.kind,
            "body": self.body,
            "sig": self.sig,
        }

    def canonical(self) -> bytes:
        """The envelope's canonical bytes: what is stored and sent."""
        return self.raw if self.raw is not None else canon(self.to_dict())


def compute_id(swarm: str, author: str, created_at: int, kind: str, body: Any) -> str:
    """The id of an envelope with these fields (SPEC.md 3.2), by the definition itself."""
    return hashlib.sha256(canon([PROTOCOL_VERSION, swarm, author, created_at, kind, body])).hexdigest()


def _id_from_parts(swarm_json: bytes, author: str, created_at: int, kind: str, body_json: bytes) -> str:
    # canon([1, swarm, author, created_at, kind, body]) written out; author is 64 hex and kind
    # a known kind name, so neither needs escaping. tests/protocol/test_protocol_envelope.py checks this
    # equals compute_id for generated envelopes.
    preimage = b"".join((
        b"[%d," % PROTOCOL_VERSION, swarm_json, b',"', author.encode(), b'",%d,"' % created_at,
        kind.encode(), b'",', body_json, b"]",
    ))
    return hashlib.sha256(preimage).hexdigest()


def _envelope_bytes(env_id: str, author: str, created_at: int, swarm_json: bytes, kind: str,
                    body_json: bytes, sig: str) -> bytes:
    # canon(envelope) written out: keys in code-point order author < body < created_at < id <
    # kind < sig < swarm (SPEC.md 3.1).
    return b"".join((
        b'{"author":"', author.encode(), b'","body":', body_json, b',"created_at":%d,"id":"' % created_at,
        env_id.encode(), b'","kind":"', kind.encode(), b'","sig":"', sig.encode(), b'","swarm":', swarm_json,
        b"}",
    ))


def task_id(body: Mapping[str, Any]) -> str:
    """A task's id is the sha256 of its canonical body, so every node shipping it agrees."""
    return hashlib.sha256(canon(body)).hexdigest()


def _check_swarm_name(swarm: Any) -> bytes:
    """Validate a swarm name; return its canonical JSON string."""
    if not isinstance(swarm, str) or not swarm:
        raise schema_error("swarm", "not a non-empty string")
    if len(swarm) > MAX_SWARM_BYTES or len(swarm.encode("utf-8", "surrogatepass")) > MAX_SWARM_BYTES:
        raise schema_error("swarm", f"longer than {MAX_SWARM_BYTES} bytes")
    return canon(swarm)


# A node sees one or a few swarm names, and every message names one: check each name once.
# (lru_cache keeps no exceptions, so a bad name is refused every time with the same reason.)
_swarm_json = functools.lru_cache(maxsize=64)(_check_swarm_name)


def _check_created_at(created_at: Any) -> int:
    if not isinstance(created_at, int) or isinstance(created_at, bool) or not 0 <= created_at <= MAX_SAFE_INT:
        raise schema_error("created_at", "not an integer in [0, 2^53]")
    return created_at


def build(identity: Identity, swarm: str, kind: str, body: dict, created_at: int | None = None) -> Envelope:
    """Validate ``body`` for ``kind`` and sign a new envelope.

    The envelope holds a fresh copy of ``body`` (as a receiver would parse it), so later changes
    to the caller's dict cannot make it disagree with its id.
    """
    if kind not in VALIDATORS:
        raise ProtocolError("invalid: unknown kind")
    swarm_json = _check_swarm_name(swarm)
    created_at = _check_created_at(int(time.time()) if created_at is None else created_at)
    body_json = canon(body)
    body = parse(body_json)
    VALIDATORS[kind](body)
    env_id = _id_from_parts(swarm_json, identity.pubkey, created_at, kind, body_json)
    sig = identity.sign(bytes.fromhex(env_id)).hex()
    raw = _envelope_bytes(env_id, identity.pubkey, created_at, swarm_json, kind, body_json, sig)
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise ProtocolError("invalid: too large")
    return Envelope(env_id, identity.pubkey, created_at, swarm, kind, body, sig, raw)


def decode(data: bytes | str | Mapping[str, Any], *, swarm: str, now: int | None = None,
           check_sig: bool = True) -> Envelope:
    """Run every receiver check on one envelope, in the order of SPEC.md 4.

    ``data`` is the raw JSON (bytes or str), which must be exactly the canonical encoding, or an
    already-parsed dict (e.g. one item of an HTTP JSON body), whose fields the id covers.
    Raises ProtocolError whose ``reason`` says why the message is refused.
    ``check_sig=False`` is only for callers that verify signatures elsewhere (e.g. in bulk).
    """
    return _decode(data, swarm, now, check_sig, True)


# Offset of the body in canonical envelope bytes: after '{"author":"' + 64 hex + '","body":'.
_BODY_AT = len(b'{"author":"') + 64 + len(b'","body":')
_AFTER_BODY = b',"created_at":'


def _decode(data: Any, swarm: str, now: int | None, check_sig: bool, accelerate: bool) -> Envelope:
    """``decode``; ``accelerate=False`` is the reference path, which the accelerated one (raw
    bytes parsed by ``parse_canonical``) must agree with: same Envelope or same reason. The fast
    path takes only bytes that are provably canonical; anything else, and any doubt later, goes
    to the reference path, so every refusal reason is the reference's."""
    raw: bytes | None = None
    fast = False
    # Bytes first: isinstance(x, Mapping) is an ABC check, slow beside the rest of decode.
    if type(data) is dict or (not isinstance(data, (bytes, bytearray, memoryview, str)) and isinstance(data, Mapping)):
        obj = data
    else:
        if isinstance(data, str):
            # Bound before encoding: each character is at least one UTF-8 byte.
            if len(data) > MAX_ENVELOPE_BYTES:
                raise ProtocolError("invalid: too large")
            data = data.encode("utf-8", "surrogatepass")
        raw = bytes(data)
        if len(raw) > MAX_ENVELOPE_BYTES:
            raise ProtocolError("invalid: too large")
        obj = parse_canonical(raw) if accelerate else None
        if obj is not None:
            fast = True
        else:
            obj = parse(raw)
            if not isinstance(obj, dict):
                raise schema_error("envelope", "not an object")

    # 4.3 envelope shape
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise schema_error("envelope", "not an object")
    if obj.keys() != ENVELOPE_FIELDS:
        missing = ENVELOPE_FIELDS - obj.keys()
        if missing:
            raise schema_error(sorted(missing)[0], "missing")
        extra = obj.keys() - ENVELOPE_FIELDS
        if extra:
            raise schema_error(sorted(extra)[0], "unknown field")
    env_id, author, created_at, env_swarm = obj["id"], obj["author"], obj["created_at"], obj["swarm"]
    kind, body, sig = obj["kind"], obj["body"], obj["sig"]
    if not is_hex(env_id, 64):
        raise schema_error("id", "not 64 lower-case hex")
    if not is_hex(author, 64):
        raise schema_error("author", "not 64 lower-case hex")
    _check_created_at(created_at)
    swarm_json = _swarm_json(env_swarm) if type(env_swarm) is str else _check_swarm_name(env_swarm)
    if not is_hex(sig, 128):
        raise schema_error("sig", "not 128 lower-case hex")
    # 4.4 - 4.6: cheap semantic checks before any hashing
    if env_swarm != swarm:
        raise ProtocolError("invalid: wrong swarm")
    now = int(time.time()) if now is None else now
    if created_at > now + MAX_FUTURE_SECONDS:
        raise ProtocolError("invalid: from the future")
    if not isinstance(kind, str) or kind not in VALIDATORS:
        raise ProtocolError("invalid: unknown kind")
    # 4.7 body schema and field limits
    VALIDATORS[kind](body)
    # 4.8 canonical form / size: one encoding of the body serves the comparison and the id
    if raw is None:
        body_json = canon(body)
    elif fast:  # raw is canon(obj) (parse_canonical): its body is canon(body), cut out, not re-encoded
        body_json = raw[_BODY_AT:raw.rfind(_AFTER_BODY)]
    else:
        body_json = encode_checked(body)
    expected = _envelope_bytes(env_id, author, created_at, swarm_json, kind, body_json, sig)
    if raw is None:
        if len(expected) > MAX_ENVELOPE_BYTES:
            raise ProtocolError("invalid: too large")
    elif expected != raw:
        if fast:  # cannot happen (see parse_canonical); if it did, the reference path decides
            return _decode(raw, swarm, now, check_sig, False)
        raise ProtocolError("invalid: not canonical")
    # 4.9 - 4.10
    if _id_from_parts(swarm_json, author, created_at, kind, body_json) != env_id:
        raise ProtocolError("invalid: bad id")
    if check_sig and not verify(author, bytes.fromhex(sig), bytes.fromhex(env_id)):
        raise ProtocolError(BAD_SIGNATURE)
    if check_sig and not _seed_proof_ok(author, kind, body):
        raise ProtocolError(BAD_SIGNATURE)
    return Envelope(env_id, author, created_at, env_swarm, kind, body, sig, expected)


def _seed_proof_ok(author: str, kind: str, body: Any) -> bool:
    """A vote's seed_proof is the voter's own signature over the claim id's seed message (SPEC.md 5.4.1):
    part of checking the signature, so a vote with a forged proof fails exactly as a forged vote does."""
    if kind != "vote" or "seed_proof" not in body:
        return True
    return check_seed_proof(author, body["claim"], body["seed_proof"])


def verify_sig(env: Envelope) -> bool:
    return (verify(env.author, bytes.fromhex(env.sig), bytes.fromhex(env.id))
            and _seed_proof_ok(env.author, env.kind, env.body))
