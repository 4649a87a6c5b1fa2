"""The CPU half of ingest: run protocol.decode on each item and sort the batch into
accepted / duplicate-within-batch / rejected, before any database work (DESIGN.md, "The wire":
a receiver checks everything, and only then stores).

Pure apart from the signature check, so it can run in a worker thread while the event loop
keeps serving, and outside the write transaction, which then holds the lock only for SQLite.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from protocol import Envelope, ProtocolError, decode, is_hex

from .extract import canonical_bytes, row


@dataclass
class IngestReport:
    accepted: list[Envelope] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    rejected: list[tuple[str | None, str]] = field(default_factory=list)  # (claimed id or None, reason)


@dataclass
class PreparedBatch:
    """Decoded candidates (still to be checked against the table) and what was already decided."""

    envelopes: list[Envelope] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    in_batch_duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[str | None, str]] = field(default_factory=list)


def claimed_id(item: Any) -> str | None:
    """The id a refused item says it has, so a peer's bad message can be named in the report."""
    obj = item
    if not isinstance(item, Mapping):
        try:
            obj = json.loads(item)
        except (ValueError, TypeError, RecursionError):
            return None
    value = obj.get("id") if isinstance(obj, Mapping) else None
    return value if is_hex(value, 64) else None


_ID_KEY = b',"id":"'


def quick_id(item: Any) -> str | None:
    """The envelope id an item names, found without parsing it, or None.

    In canonical bytes the envelope's keys are sorted (author, body, created_at, id, kind, sig,
    swarm), so the last ``,"id":"`` is the envelope's: kind, sig and swarm that follow cannot hold
    it unescaped. Used only to skip decoding items whose id is already stored; a message's id
    commits to its content, so an item naming a stored id is that message or an invalid copy,
    and neither adds anything (NIP-01 relays dedupe by id the same way).
    """
    if isinstance(item, Mapping):
        value = item.get("id")
    else:
        raw = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
        at = bytes(raw).rfind(_ID_KEY) if isinstance(raw, (bytes, bytearray, memoryview)) else -1
        value = bytes(raw[at + 7:at + 71]).decode("ascii", "replace") if at >= 0 else None
    return value if is_hex(value, 64) else None


def prepare(items: Iterable[Any], *, swarm: str, now: int | None, check_sig: bool = True) -> PreparedBatch:
    batch = PreparedBatch()
    seen: set[str] = set()
    for item in items:
        try:
            env = decode(item, swarm=swarm, now=now, check_sig=check_sig)
            raw = canonical_bytes(env)
        except ProtocolError as exc:
            batch.rejected.append((claimed_id(item), exc.reason))
            continue
        if env.id in seen:
            batch.in_batch_duplicates.append(env.id)
            continue
        seen.add(env.id)
        batch.envelopes.append(env)
        batch.rows.append(row(env, raw))
    return batch
