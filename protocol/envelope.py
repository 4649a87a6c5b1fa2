"""Envelopes (DESIGN.md, "The wire"): build, sign, and the receiver's checks.

    id  = sha256(canon([1, swarm, author, created_at, kind, body]))   lower-case hex
    sig = Ed25519(author, bytes.fromhex(id))                           128 hex

A receiver checks, cheapest first: size, envelope shape, swarm, clock, kind, body schema,
then recomputes the id and verifies the signature. Only then is a message stored.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .canon import canon, parse
from .errors import ProtocolError, schema_error
from .keys import Identity, is_hex, verify
from .limits import MAX_ENVELOPE_BYTES, MAX_FUTURE_SECONDS, MAX_SAFE_INT, MAX_SWARM_BYTES, PROTOCOL_VERSION
from .schemas import VALIDATORS

ENVELOPE_FIELDS = frozenset({"id", "author", "created_at", "swarm", "kind", "body", "sig"})


@dataclass(frozen=True)
class Envelope:
    id: str
    author: str
    created_at: int
    swarm: str
    kind: str
    body: Mapping[str, Any]
    sig: str

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
        return canon(self.to_dict())


def compute_id(swarm: str, author: str, created_at: int, kind: str, body: Any) -> str:
    return hashlib.sha256(canon([PROTOCOL_VERSION, swarm, author, created_at, kind, body])).hexdigest()


def task_id(body: Mapping[str, Any]) -> str:
    """A task's id is the sha256 of its canonical body, so every node shipping it agrees."""
    return hashlib.sha256(canon(body)).hexdigest()


def build(identity: Identity, swarm: str, kind: str, body: dict, created_at: int | None = None) -> Envelope:
    """Validate ``body`` for ``kind`` and sign a new envelope."""
    if kind not in VALIDATORS:
        raise ProtocolError("invalid: unknown kind")
    _check_swarm_name(swarm)
    VALIDATORS[kind](body)
    created_at = int(time.time()) if created_at is None else created_at
    env_id = compute_id(swarm, identity.pubkey, created_at, kind, body)
    sig = identity.sign(bytes.fromhex(env_id)).hex()
    env = Envelope(env_id, identity.pubkey, created_at, swarm, kind, body, sig)
    if len(env.canonical()) > MAX_ENVELOPE_BYTES:
        raise ProtocolError("invalid: too large")
    return env


def _check_swarm_name(swarm: Any) -> str:
    if not isinstance(swarm, str) or not swarm or len(swarm.encode("utf-8", "surrogatepass")) > MAX_SWARM_BYTES:
        raise schema_error("swarm")
    return swarm


def decode(data: bytes | str | Mapping[str, Any], *, swarm: str, now: int | None = None,
           check_sig: bool = True) -> Envelope:
    """Run every receiver check on one envelope (raw JSON or an already-parsed dict).

    Raises ProtocolError whose ``reason`` says why the message is refused.
    ``check_sig=False`` is only for callers that verify signatures elsewhere (e.g. in bulk).
    """
    if isinstance(data, Mapping):
        obj = data
        size = len(canon(obj))
    else:
        size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
        if size > MAX_ENVELOPE_BYTES:
            raise ProtocolError("invalid: too large")
        obj = parse(data)
    if size > MAX_ENVELOPE_BYTES:
        raise ProtocolError("invalid: too large")
    if not isinstance(obj, Mapping):
        raise schema_error("envelope", "not an object")
    missing = ENVELOPE_FIELDS - obj.keys()
    if missing:
        raise schema_error(sorted(missing)[0], "missing")
    extra = obj.keys() - ENVELOPE_FIELDS
    if extra:
        raise schema_error(sorted(extra)[0], "unknown field")
    env_id, author, created_at, env_swarm = obj["id"], obj["author"], obj["created_at"], obj["swarm"]
    kind, body, sig = obj["kind"], obj["body"], obj["sig"]
    if not is_hex(env_id, 64):
        raise schema_error("id")
    if not is_hex(author, 64):
        raise schema_error("author")
    if not isinstance(created_at, int) or isinstance(created_at, bool) or not 0 <= created_at <= MAX_SAFE_INT:
        raise schema_error("created_at")
    _check_swarm_name(env_swarm)
    if not is_hex(sig, 128):
        raise schema_error("sig")
    if env_swarm != swarm:
        raise ProtocolError("invalid: wrong swarm")
    now = int(time.time()) if now is None else now
    if created_at > now + MAX_FUTURE_SECONDS:
        raise ProtocolError("invalid: from the future")
    if not isinstance(kind, str) or kind not in VALIDATORS:
        raise ProtocolError("invalid: unknown kind")
    VALIDATORS[kind](body)
    if compute_id(env_swarm, author, created_at, kind, body) != env_id:
        raise ProtocolError("invalid: bad id")
    if check_sig and not verify(author, bytes.fromhex(sig), bytes.fromhex(env_id)):
        raise ProtocolError("invalid: bad signature")
    return Envelope(env_id, author, created_at, env_swarm, kind, body, sig)


def verify_sig(env: Envelope) -> bool:
    return verify(env.author, bytes.fromhex(env.sig), bytes.fromhex(env.id))
