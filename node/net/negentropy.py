"""Range-based set reconciliation speaking Negentropy protocol v1 (NIP-77).

Spec: hoytech/negentropy ``docs/negentropy-protocol-v1.md``; section names in the comments
(§Preparation, §Varint, §Message, §Range, §Bound, §Fingerprint) refer to it. Splitting rules and
frame-size handling follow the reference implementation (``cpp/negentropy.h``).

Pure: bytes in, bytes out; no I/O, no clock. In ralphswarm an item is ``(created_at, id)`` with
``id = bytes.fromhex(envelope.id)`` (docs/design.md, "Gossip and sync").

    client = Negentropy(Storage(mine), frame_size_limit=FRAME)   server = Negentropy(Storage(theirs))
    msg = client.initiate()
    while msg is not None:
        msg, have, need = client.reconcile_client(server.reconcile(msg))
"""
from __future__ import annotations

import bisect
import hashlib
from typing import Iterable

PROTOCOL_VERSION = 0x61  # §Message: version 1 is the byte 0x61; 0x60..0x6F are versions 0..15
ID_SIZE = 32  # §Id: bytes per id
FINGERPRINT_SIZE = 16  # §Fingerprint: leading bytes of the SHA-256 kept
INFINITY = 2**64 - 1  # §Preparation: timestamp reserved as "infinity"; no item may use it
BUCKETS = 16  # a range whose fingerprints differ is split into this many (reference impl.)
ID_LIST_THRESHOLD = 2 * BUCKETS  # a range with fewer items is sent as an IdList instead
MIN_FRAME_SIZE_LIMIT = 4096  # smallest non-zero frame_size_limit (reference impl.)
FRAME_RESERVE = 200  # bytes kept free under the limit for the ranges that close a cut message
MAX_VARINT_BYTES = 10  # base-128 digits of a 64-bit value; longer varints are malformed
MAX_BOUND_BYTES = MAX_VARINT_BYTES + 1 + ID_SIZE  # timestamp, prefix length, full id
ECHO_BYTES = MAX_BOUND_BYTES + 1 + FINGERPRINT_SIZE  # largest Fingerprint range

MODE_SKIP, MODE_FINGERPRINT, MODE_ID_LIST = 0, 1, 2  # §Range
_SUM_MODULUS = 1 << 256  # §Fingerprint: ids add mod 2^256
_ZERO_ID = bytes(ID_SIZE)

Bound = tuple[int, bytes]  # (timestamp, id prefix of 0..32 bytes; missing bytes are zeros)


class NegentropyError(ValueError):
    """A peer's message is malformed or unusable; ``str(err)`` says why (the HTTP layer sends 400)."""


# ---------------------------------------------------------------- §Varint


def encode_varint(n: int) -> bytes:
    """Base-128, most significant digit first, high bit set on every byte but the last."""
    if n < 0:
        raise ValueError(f"varint must be non-negative, got {n}")
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


class Reader:
    """A cursor over one message; every read checks the bytes left and raises NegentropyError."""

    __slots__ = ("_buf", "pos")

    def __init__(self, buf: bytes):
        self._buf = bytes(buf)
        self.pos = 0

    def remaining(self) -> int:
        return len(self._buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise NegentropyError(f"message ends inside {what} ({n} bytes wanted, {self.remaining()} left)")
        out = self._buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str) -> int:
        value = 0
        for _ in range(MAX_VARINT_BYTES):
            if self.pos >= len(self._buf):
                raise NegentropyError(f"message ends inside {what} varint")
            byte = self._buf[self.pos]
            self.pos += 1
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                if value > INFINITY:
                    raise NegentropyError(f"{what} varint exceeds 64 bits")
                return value
        raise NegentropyError(f"{what} varint longer than {MAX_VARINT_BYTES} bytes")


def decode_varint(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode one varint at ``pos``; returns (value, position after it)."""
    reader = Reader(buf)
    reader.pos = pos
    return reader.varint("value"), reader.pos


# ---------------------------------------------------------------- §Bound


class BoundEncoder:
    """§Bound: infinity is 0, else 1 + (timestamp - previous timestamp); one encoder per message."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def encode(self, bound: Bound) -> bytes:
        timestamp, prefix = bound
        if timestamp == INFINITY:
            self.last = INFINITY
            head = b"\x00"
        else:
            if timestamp < self.last:
                raise ValueError("bounds must be encoded in ascending order")
            head = encode_varint(1 + timestamp - self.last)
            self.last = timestamp
        return head + encode_varint(len(prefix)) + prefix


class BoundDecoder:
    """Inverse of BoundEncoder; offsets that overflow 64 bits saturate to infinity (reference impl.)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def decode(self, reader: Reader) -> Bound:
        encoded = reader.varint("bound timestamp")
        timestamp = INFINITY if encoded == 0 else min(self.last + encoded - 1, INFINITY)
        self.last = timestamp
        length = reader.varint("bound id length")
        if length > ID_SIZE:
            raise NegentropyError(f"bound id prefix of {length} bytes (at most {ID_SIZE})")
        return timestamp, reader.take(length, "bound id prefix")


def bound_key(bound: Bound) -> tuple[int, bytes]:
    """The (timestamp, 32-byte id) a bound stands for: omitted trailing bytes are zeros (§Bound)."""
    return bound[0], bound[1] + _ZERO_ID[len(bound[1]) :]


def minimal_bound(prev: tuple[int, bytes], curr: tuple[int, bytes]) -> Bound:
    """Shortest bound b with prev < b <= curr (§Bound: common prefix length + 1, or none)."""
    if prev[0] != curr[0]:
        return curr[0], b""
    shared = 0
    while shared < ID_SIZE and prev[1][shared] == curr[1][shared]:
        shared += 1
    return curr[0], curr[1][: shared + 1]


# ---------------------------------------------------------------- §Fingerprint


def fingerprint(id_sum: int, count: int) -> bytes:
    """§Fingerprint: sha256(sum of ids mod 2^256, 32 bytes little-endian || varint(count))[:16]."""
    data = (id_sum % _SUM_MODULUS).to_bytes(ID_SIZE, "little") + encode_varint(count)
    return hashlib.sha256(data).digest()[:FINGERPRINT_SIZE]


class Storage:
    """A sorted, immutable snapshot of (timestamp, id) items (§Preparation order), deduplicated.

    Prefix sums of the ids as integers make any range's fingerprint O(1).
    """

    def __init__(self, items: Iterable[tuple[int, bytes]]):
        unique = set()
        for timestamp, item_id in items:
            if not isinstance(timestamp, int) or not 0 <= timestamp < INFINITY:
                raise ValueError(f"timestamp must be an int in [0, 2^64-1), got {timestamp!r}")
            item_id = bytes(item_id)
            if len(item_id) != ID_SIZE:
                raise ValueError(f"id must be {ID_SIZE} bytes, got {len(item_id)}")
            unique.add((timestamp, item_id))
        self._items = sorted(unique)
        sums = [0] * (len(self._items) + 1)
        total = 0
        for i, (_, item_id) in enumerate(self._items):
            total += int.from_bytes(item_id, "little")
            sums[i + 1] = total
        self._sums = sums  # reduced mod 2^256 only when a fingerprint is taken

    def __len__(self) -> int:
        return len(self._items)

    def item(self, index: int) -> tuple[int, bytes]:
        return self._items[index]

    def ids(self, lower: int, upper: int) -> list[bytes]:
        return [item_id for _, item_id in self._items[lower:upper]]

    def lower_bound(self, bound: Bound, lower: int = 0) -> int:
        """Index of the first item >= bound, searching from ``lower``."""
        return bisect.bisect_left(self._items, bound_key(bound), lower)

    def fingerprint(self, lower: int, upper: int) -> bytes:
        return fingerprint(self._sums[upper] - self._sums[lower], upper - lower)


# ---------------------------------------------------------------- §Message, §Range


class _Range:
    __slots__ = ("bound", "mode", "payload")

    def __init__(self, bound: Bound, mode: int, payload: bytes):
        self.bound, self.mode, self.payload = bound, mode, payload


def _read_range(reader: Reader, bounds: BoundDecoder) -> _Range:
    bound = bounds.decode(reader)
    mode = reader.varint("mode")
    if mode == MODE_SKIP:
        payload = b""
    elif mode == MODE_FINGERPRINT:
        payload = reader.take(FINGERPRINT_SIZE, "fingerprint")
    elif mode == MODE_ID_LIST:
        count = reader.varint("id count")
        if count * ID_SIZE > reader.remaining():  # caps memory by the message length
            raise NegentropyError(f"IdList of {count} ids but only {reader.remaining()} bytes left")
        payload = reader.take(count * ID_SIZE, "id list")
    else:
        raise NegentropyError(f"unknown range mode {mode}")
    return _Range(bound, mode, payload)


class Negentropy:
    """One side of one reconciliation: the client calls initiate() then reconcile_client() until it
    returns no message; the server answers each message with reconcile()."""

    def __init__(self, storage: Storage, frame_size_limit: int = 0):
        if frame_size_limit and frame_size_limit < MIN_FRAME_SIZE_LIMIT:
            raise ValueError(f"frame_size_limit must be 0 or >= {MIN_FRAME_SIZE_LIMIT}")
        self.storage = storage
        self.frame_size_limit = frame_size_limit
        self._is_initiator: bool | None = None  # unset until the first initiate() or reconcile()
        # A server that cuts its answer folds later ranges into one fingerprint, which can
        # bring back ids already reported; the client reports each id once.
        self._reported_have: set[bytes] = set()
        self._reported_need: set[bytes] = set()

    def initiate(self) -> bytes:
        """Client: the first message, the whole space split into fingerprints or one IdList."""
        if self._is_initiator is not None:
            raise RuntimeError("initiate() is called once, before any reconcile")
        self._is_initiator = True
        everything = self._split(BoundEncoder(), 0, len(self.storage), (INFINITY, b""))
        return bytes([PROTOCOL_VERSION]) + everything

    def reconcile(self, msg: bytes) -> bytes:
        """Server: the answer to a client's message (just the version byte when nothing is left)."""
        if self._is_initiator:
            raise RuntimeError("the initiator calls reconcile_client()")
        self._is_initiator = False
        return self._process(msg, [], [])

    def reconcile_client(self, msg: bytes) -> tuple[bytes | None, list[bytes], list[bytes]]:
        """Client: (next message or None when done, ids only we have, ids only the server has)."""
        if not self._is_initiator:
            raise RuntimeError("call initiate() before reconcile_client()")
        have: list[bytes] = []
        need: list[bytes] = []
        out = self._process(msg, have, need)
        return (out if len(out) > 1 else None), have, need

    # -- internals

    def _process(self, msg: bytes, have: list[bytes], need: list[bytes]) -> bytes:
        reader = Reader(msg)
        if reader.remaining() == 0:
            raise NegentropyError("empty message")
        version = reader.take(1, "protocol version")[0]
        if not 0x60 <= version <= 0x6F:
            raise NegentropyError(f"invalid protocol version byte 0x{version:02x}")
        if version != PROTOCOL_VERSION:
            if self._is_initiator:
                raise NegentropyError(f"peer speaks negentropy protocol version {version - 0x60}, not 1")
            return bytes([PROTOCOL_VERSION])  # §Message: reply with the version we support

        storage = self.storage
        budget = self.frame_size_limit - FRAME_RESERVE if self.frame_size_limit else None
        out = bytearray([PROTOCOL_VERSION])
        encoder, decoder = BoundEncoder(), BoundDecoder()
        prev_bound: Bound = (0, b"")
        prev_key = bound_key(prev_bound)
        prev_index = 0
        skip_pending = False  # consecutive skipped ranges are sent as one Skip
        done = False  # set once the frame limit cut the answer; the rest is only validated

        while reader.remaining():
            rng = _read_range(reader, decoder)
            key = bound_key(rng.bound)
            if key < prev_key:
                raise NegentropyError("ranges out of order")  # §Bound: ascending, never overlapping
            prev_key = key
            if done:
                continue
            lower = prev_index
            upper = storage.lower_bound(rng.bound, lower)

            if rng.mode == MODE_SKIP or (
                rng.mode == MODE_FINGERPRINT and rng.payload == storage.fingerprint(lower, upper)
            ):
                skip_pending = True
                prev_index, prev_bound = upper, rng.bound
                continue
            if rng.mode == MODE_ID_LIST and self._is_initiator:  # the server's ids here, all of them
                self._diff(lower, upper, rng.payload, have, need)
                skip_pending = True
                prev_index, prev_bound = upper, rng.bound
                continue

            saved = encoder.last
            head = encoder.encode(prev_bound) + bytes([MODE_SKIP]) if skip_pending else b""
            room = None if budget is None else budget - len(out) - len(head)
            if rng.mode == MODE_FINGERPRINT:  # fingerprints differ: look closer
                piece = self._split(encoder, lower, upper, rng.bound)
            else:  # IdList at the server: answer with every id it holds in the range
                piece = self._id_list(encoder, lower, upper, rng.bound, room)
            if room is not None and len(piece) > room:
                # Over the frame limit: send our fingerprint of the range back unsplit, so the
                # peer asks again next round; if even that does not fit, fold the rest.
                encoder.last = saved
                head = encoder.encode(prev_bound) + bytes([MODE_SKIP]) if skip_pending else b""
                piece = self._fingerprint_range(encoder, lower, upper, rng.bound)
                if len(piece) > room:
                    encoder.last = saved
                    out += self._close(encoder, skip_pending, prev_bound, lower)
                    done = True
                    continue
            out += head + piece
            skip_pending = False
            prev_index, prev_bound = upper, rng.bound
        return bytes(out)

    def _fingerprint_range(self, encoder: BoundEncoder, lower: int, upper: int, bound: Bound) -> bytes:
        return encoder.encode(bound) + bytes([MODE_FINGERPRINT]) + self.storage.fingerprint(lower, upper)

    def _close(self, encoder: BoundEncoder, skip_pending: bool, prev_bound: Bound, start: int) -> bytes:
        """End a cut message: one Fingerprint over [prev_bound, infinity) covers what is left.

        A client folds only ranges it has not processed yet; a server may also fold ranges the
        client already settled, which is why the client reports each id once (_diff)."""
        out = encoder.encode(prev_bound) + bytes([MODE_SKIP]) if skip_pending else b""
        return out + self._fingerprint_range(encoder, start, len(self.storage), (INFINITY, b""))

    def _id_list(self, encoder: BoundEncoder, lower: int, upper: int, bound: Bound, room: int | None) -> bytes:
        """The server's ids in [lower, upper); when they exceed ``room`` bytes, as many as fit
        followed by a Fingerprint over the rest of the range (at least one id, for progress)."""
        end, end_bound = upper, bound
        if room is not None:
            fit = (room - MAX_BOUND_BYTES - 1 - MAX_VARINT_BYTES - ECHO_BYTES) // ID_SIZE
            if upper - lower > fit:
                end = lower + max(fit, 1)
                end_bound = minimal_bound(self.storage.item(end - 1), self.storage.item(end))
        out = encoder.encode(end_bound) + bytes([MODE_ID_LIST]) + encode_varint(end - lower)
        out += b"".join(self.storage.ids(lower, end))
        if end < upper:
            out += self._fingerprint_range(encoder, end, upper, bound)
        return out

    def _split(self, encoder: BoundEncoder, lower: int, upper: int, upper_bound: Bound) -> bytes:
        """Describe [lower, upper): an IdList when small, else BUCKETS fingerprinted sub-ranges."""
        storage, count = self.storage, upper - lower
        if count < ID_LIST_THRESHOLD:
            out = encoder.encode(upper_bound) + bytes([MODE_ID_LIST]) + encode_varint(count)
            return out + b"".join(storage.ids(lower, upper))
        per_bucket, with_extra = divmod(count, BUCKETS)
        parts = []
        curr = lower
        for i in range(BUCKETS):
            start = curr
            curr += per_bucket + (1 if i < with_extra else 0)
            bound = upper_bound if curr == upper else minimal_bound(storage.item(curr - 1), storage.item(curr))
            parts.append(encoder.encode(bound) + bytes([MODE_FINGERPRINT]) + storage.fingerprint(start, curr))
        return b"".join(parts)

    def _diff(self, lower: int, upper: int, payload: bytes, have: list[bytes], need: list[bytes]) -> None:
        theirs = [payload[i : i + ID_SIZE] for i in range(0, len(payload), ID_SIZE)]
        theirs_set = set(theirs)
        ours = self.storage.ids(lower, upper)
        ours_set = set(ours)
        for item_id in ours:
            if item_id not in theirs_set and item_id not in self._reported_have:
                self._reported_have.add(item_id)
                have.append(item_id)
        for item_id in theirs:
            if item_id not in ours_set and item_id not in self._reported_need:
                self._reported_need.add(item_id)
                need.append(item_id)
