"""The CPU half of ingest: run protocol.decode on each item and sort the batch into
accepted / duplicate-within-batch / rejected, before any database work (docs/design.md, "The wire":
a receiver checks everything, and only then stores).

Pure apart from the signature check, so it can run in a worker thread while the event loop
keeps serving, and outside the write transaction, which then holds the lock only for SQLite.
"""
from __future__ import annotations

import gc
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from protocol import BAD_SIGNATURE, Envelope, ProtocolError, decode, is_hex, verify_sig

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
    if type(item) is bytes:  # the usual case first: the Mapping check below is an ABC lookup
        at = item.rfind(_ID_KEY)
        value = item[at + 7:at + 71].decode("ascii", "replace") if at >= 0 else None
    elif isinstance(item, Mapping):
        value = item.get("id")
    else:
        raw = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
        at = bytes(raw).rfind(_ID_KEY) if isinstance(raw, (bytes, bytearray, memoryview)) else -1
        value = bytes(raw[at + 7:at + 71]).decode("ascii", "replace") if at >= 0 else None
    return value if is_hex(value, 64) else None


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False
# A pause that leaves at least this many new containers (a bulk batch: ~45 per message) hands them
# to the oldest generation unexamined, rather than to a collection of the youngest (see gc_paused).
GC_PROMOTE_AT = 10_000
# ... at most this many since the last full collection: past it, one is run there and then, so
# cyclic garbage that other code made during pauses (promoted with the rest) waits no longer.
GC_FULL_AFTER = 2_000_000
_gc_promoted = 0


def _gc_collected(phase: str, info: dict) -> None:
    global _gc_promoted
    if phase == "stop" and info.get("generation") == 2:
        _gc_promoted = 0


gc.callbacks.append(_gc_collected)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Automatic garbage collection off while a batch is parsed, back on (if it was) after.

    Parsing allocates a few dozen containers per message (a result's curve is one list per
    point), all kept until the batch is stored, and all acyclic: collections triggered meanwhile
    traverse them again and again and free nothing. Counted, so that concurrent batches in
    several threads leave the collector as they found it.

    When the last pause ends, the collector would examine everything the pauses allocated at
    once, the batches still alive: with thousands of messages that was a fifth of the
    catch-up's Python time in a node (py-spy, scripts/bench/gossip --catchup) and ~7 us a
    message in scripts/bench/ingest (c). So a big pause's young objects go straight to the oldest
    generation (``gc.freeze()`` then ``gc.unfreeze()``: two list splices, nothing examined); the
    batches die by reference counting as usual, and anything cyclic among them waits for a full
    collection, forced here once GC_FULL_AFTER objects were promoted since the last one.
    """
    global _gc_pausers, _gc_was_enabled, _gc_promoted
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                young = gc.get_count()[0]
                # (not where someone else keeps objects frozen: unfreeze would thaw theirs too)
                if young >= GC_PROMOTE_AT and gc.get_freeze_count() == 0:
                    _gc_promoted += young
                    if _gc_promoted >= GC_FULL_AFTER:
                        gc.collect()  # resets _gc_promoted (_gc_collected)
                    else:
                        gc.freeze()
                        gc.unfreeze()
                gc.enable()


@dataclass
class Decoded:
    """A batch after decode (every check but the signature), before the signatures are checked."""

    envelopes: list[tuple[int, Envelope]] = field(default_factory=list)  # (item index, envelope)
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)  # (index, claimed id, reason)


def decode_all(items: Iterable[Any], *, swarm: str, now: int | None) -> Decoded:
    """``decode(item, check_sig=False)`` of every item, refusals kept with their item's index."""
    out = Decoded()
    with gc_paused():
        for index, item in enumerate(items):
            try:
                out.envelopes.append((index, decode(item, swarm=swarm, now=now, check_sig=False)))
            except ProtocolError as exc:
                out.rejected.append((index, claimed_id(item), exc.reason))
    return out


def finish(decoded: Decoded, sig_ok: list[bool] | None, received_at: int | None) -> PreparedBatch:
    """Sort a decoded batch into rows, in-batch duplicates and refusals (in item order), given
    each envelope's signature verdict (``sig_ok``, None when the caller verified them already)."""
    batch = PreparedBatch()
    rejected = list(decoded.rejected)
    seen: set[str] = set()
    for n, (index, env) in enumerate(decoded.envelopes):
        if sig_ok is not None and not sig_ok[n]:
            rejected.append((index, env.id, BAD_SIGNATURE))
            continue
        if env.id in seen:
            batch.in_batch_duplicates.append(env.id)
            continue
        seen.add(env.id)
        batch.envelopes.append(env)
        batch.rows.append(row(env, canonical_bytes(env), received_at))
    rejected.sort(key=lambda r: r[0])
    batch.rejected = [(claimed, reason) for _, claimed, reason in rejected]
    return batch


def prepare(items: Iterable[Any], *, swarm: str, now: int | None, check_sig: bool = True,
            received_at: int | None = None) -> PreparedBatch:
    """Decode every item, then check the signatures of those that passed everything else.

    The same verdicts and reasons, in item order, as ``decode(item, check_sig=check_sig)`` one by
    one: the signature is decode's last check. Two passes because one tight loop of Ed25519
    verifies keeps their code and tables in the CPU caches; interleaved with the JSON work of
    decoding, each verify was measured about 15% slower (scripts/bench/ingest). A caller with a
    pool of verifying processes (store/verify.py) runs the two halves itself: ``decode_all``,
    the pool, ``finish``.
    """
    decoded = decode_all(items, swarm=swarm, now=now)
    sig_ok = [verify_sig(env) for _, env in decoded.envelopes] if check_sig else None
    return finish(decoded, sig_ok, received_at)
