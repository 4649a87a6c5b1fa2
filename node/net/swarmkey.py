"""Private swarms: a shared swarm key seals every HTTP request and answer between nodes.

docs/design.md, "Discovery and swarms": without the swarm key a node can neither read nor inject.
Signed envelopes already stop forgery and cross-swarm replay of *messages*; this layer keeps a
private swarm's corpus, peer lists and sync traffic away from anyone who lacks the key.

The wire is specified byte for byte in protocol/SPEC.md 10.3, with vectors in
tests/vectors/sealing.json (scripts/gen_vectors.py). In short:

- key file: at least 32 random bytes as hex (``generate_swarm_key`` writes 32), mode 0600.
- keys: HKDF-SHA256(ikm=file bytes, salt=SALT, info=b"ralphswarm v1 request|" + swarm) and
  ``... response|`` + swarm, 32 bytes each. A separate response key means a sealed request can never
  be reflected back as an answer; the swarm name in ``info`` means one key file shared by two swarm
  names gives two unrelated swarms.
- request: header ``X-Ralphswarm-Auth: v1 <ts> <nonce>`` (ts = integer Unix seconds, nonce = 24
  hex, random); body = ChaCha20-Poly1305(request key, nonce, plaintext,
  ad = canon(["ralphswarm-request", "v1", swarm, METHOD, raw path+query, ts])).
- answer: status in clear; body = nonce' (12 random bytes) || ChaCha20-Poly1305(response key,
  nonce', plaintext, ad = canon(["ralphswarm-response", "v1", swarm, request nonce hex, status])),
  which binds the answer to its request and its status, so answers cannot be replayed, swapped
  between requests, or turned from a 404 into a 200.
- a receiver accepts a request only within ``SKEW_S`` of its own clock and only once per nonce.

``canon`` is protocol canonical JSON (SPEC.md 2), so the associated data has one spelling that
another implementation can write without imitating Python's ``json.dumps`` spacing.

The seal/open functions are pure (clock and replay cache passed in; a nonce may be passed in for
test vectors); the aiohttp middleware and the client helper at the bottom are the only I/O.
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from yarl import URL

from protocol import ProtocolError, canon
from protocol.fileio import write_atomic
from protocol.keys import read_private_file

from node.errors import UserError

log = logging.getLogger(__name__)

AUTH_HEADER = "X-Ralphswarm-Auth"
CONTENT_TYPE = "application/octet-stream"
VERSION = "v1"
SALT = b"ralphswarm swarm key v1"
MIN_KEY_BYTES = 32  # 256 bits: the AEAD key size; shorter secrets would be the weakest link
MAX_KEY_FILE_BYTES = 4096  # a key file is a line of hex; refuse to slurp anything else
SKEW_S = 120  # accepted clock difference between nodes, each way (seconds)
NONCE_BYTES = 12  # 96-bit AEAD nonces, random: 2^-32 collision odds only after ~2^32 messages per key
TAG_BYTES = 16
REPLAY_MAX = 100_000  # nonces remembered at most; ~4 MB, bounds memory under a flood

_AUTH_RE = re.compile(r"v1 ([0-9]{1,12}) ([0-9a-f]{24})")  # ASCII digits only, unlike \d


class SwarmKeyError(UserError):
    """A swarm key file that cannot be used: missing, malformed, too short, or readable by others."""


class SwarmAuthError(Exception):
    """A request or answer that does not open under this swarm's key; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- key file ---------------------------------------------------------------------------------

def generate_swarm_key(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write 32 random bytes as hex to ``path``, created with mode 0600.

    Refuses to replace an existing file unless ``overwrite``: losing a swarm key cuts the node
    off from its swarm, and the old key cannot be recovered from anywhere.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SwarmKeyError(f"swarm key file {path} already exists; refusing to overwrite it")
    return write_atomic(path, (os.urandom(32).hex() + "\n").encode("ascii"), mode=0o600)


def _derive(secret: bytes, label: bytes, swarm: str) -> bytes:
    info = b"ralphswarm v1 " + label + b"|" + swarm.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(secret)


@dataclass(frozen=True)
class SwarmKey:
    """Per-direction AEAD keys of one private swarm, derived from the shared secret and the swarm name."""

    swarm: str
    request_key: bytes = field(repr=False)
    response_key: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes, swarm: str) -> "SwarmKey":
        if len(secret) < MIN_KEY_BYTES:
            raise SwarmKeyError(f"a swarm key needs at least {MIN_KEY_BYTES} bytes, got {len(secret)}")
        return cls(swarm, _derive(secret, b"request", swarm), _derive(secret, b"response", swarm))

    @classmethod
    def load(cls, path: str | os.PathLike, swarm: str) -> "SwarmKey":
        path = Path(path)
        raw = read_private_file(path, what="swarm key file", max_bytes=MAX_KEY_FILE_BYTES, error=SwarmKeyError,
                                missing="; create one with a fresh 32-byte hex key")
        text = raw.decode("ascii", errors="replace").strip()
        if len(raw) > MAX_KEY_FILE_BYTES or not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text):
            raise SwarmKeyError(f"swarm key file {path} is not one line of hex (expected 64 hex characters)")
        secret = bytes.fromhex(text)
        if len(secret) < MIN_KEY_BYTES:
            raise SwarmKeyError(
                f"swarm key in {path} is too short: {len(secret)} bytes, need at least {MIN_KEY_BYTES}"
            )
        return cls.from_secret(secret, swarm)


# -- replay cache -----------------------------------------------------------------------------

class ReplayCache:
    """Request nonces seen within the skew window, so each sealed request is accepted once.

    A nonce only needs remembering while its timestamp is still fresh: past that, the timestamp
    check rejects a replay anyway. When full, the oldest entries are dropped and ``floor`` rises to
    their timestamp; requests at or below the floor are refused, so eviction never reopens a replay.
    """

    def __init__(self, skew_s: int = SKEW_S, max_entries: int = REPLAY_MAX):
        self.skew_s = skew_s
        self.max_entries = max_entries
        self.floor = -1
        self._seen: set[bytes] = set()
        self._by_ts: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, nonce: bytes, ts: int, now: float) -> None:
        while self._by_ts and self._by_ts[0][0] < now - self.skew_s:
            self._seen.discard(heapq.heappop(self._by_ts)[1])
        if ts <= self.floor:
            raise SwarmAuthError("replay window full; retry with a fresh request")
        if nonce in self._seen:
            raise SwarmAuthError("replayed request")
        while len(self._seen) >= self.max_entries:
            old_ts, old = heapq.heappop(self._by_ts)
            self._seen.discard(old)
            self.floor = max(self.floor, old_ts)
        if ts <= self.floor:  # the eviction above may have raised the floor past this request
            raise SwarmAuthError("replay window full; retry with a fresh request")
        self._seen.add(nonce)
        heapq.heappush(self._by_ts, (ts, nonce))


# -- pure seal / open -------------------------------------------------------------------------

def _ad(fields: list) -> bytes:
    """Associated data: canonical JSON of a list, unambiguous field boundaries whatever the path holds."""
    try:
        return canon(fields)
    except ProtocolError:  # a lone surrogate in a path or swarm name: nothing can open or be sealed
        raise SwarmAuthError("request target or swarm name cannot be encoded") from None


def _request_ad(key: SwarmKey, method: str, path_qs: str, ts: int) -> bytes:
    return _ad(["ralphswarm-request", VERSION, key.swarm, method.upper(), path_qs, ts])


def _response_ad(key: SwarmKey, request_nonce: bytes, status: int) -> bytes:
    return _ad(["ralphswarm-response", VERSION, key.swarm, request_nonce.hex(), int(status)])


def _nonce(nonce: bytes | None) -> bytes:
    if nonce is None:
        return os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes, got {len(nonce)}")
    return bytes(nonce)


def seal_request(key: SwarmKey, method: str, path_qs: str, body: bytes, now: float,
                 nonce: bytes | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and sealed body for one request; ``path_qs`` is the raw (percent-encoded) target.

    ``nonce`` is for test vectors only: a real request takes a fresh random one (the default).
    """
    ts = int(now)
    nonce = _nonce(nonce)
    sealed = ChaCha20Poly1305(key.request_key).encrypt(nonce, bytes(body), _request_ad(key, method, path_qs, ts))
    return {AUTH_HEADER: f"{VERSION} {ts} {nonce.hex()}", "Content-Type": CONTENT_TYPE}, sealed


def parse_auth_header(headers) -> tuple[int, bytes]:
    """(timestamp, nonce) from a request's auth header, or SwarmAuthError."""
    value = headers.get(AUTH_HEADER)
    if value is None:
        raise SwarmAuthError("missing swarm auth header (this is a private swarm)")
    m = _AUTH_RE.fullmatch(value)
    if m is None:
        raise SwarmAuthError("garbled swarm auth header")
    return int(m.group(1)), bytes.fromhex(m.group(2))


def open_request(
    key: SwarmKey, method: str, path_qs: str, headers, sealed_body: bytes, now: float,
    replay_cache: ReplayCache,
) -> bytes:
    """The plaintext body of an authentic, fresh, first-seen request, else SwarmAuthError."""
    ts, nonce = parse_auth_header(headers)
    if ts < now - SKEW_S:
        raise SwarmAuthError("stale request timestamp (check the clocks)")
    if ts > now + SKEW_S:
        raise SwarmAuthError("request timestamp in the future (check the clocks)")
    try:
        plain = ChaCha20Poly1305(key.request_key).decrypt(
            nonce, bytes(sealed_body), _request_ad(key, method, path_qs, ts)
        )
    except InvalidTag:
        raise SwarmAuthError("bad request tag (wrong swarm key or altered request)") from None
    # only authentic requests enter the cache, so strangers cannot fill it
    replay_cache.check_and_add(nonce, ts, now)
    return plain


def seal_response(key: SwarmKey, request_nonce: bytes, status: int, body: bytes,
                  nonce: bytes | None = None) -> bytes:
    """The sealed answer body: a fresh nonce then the ciphertext (``nonce`` for test vectors only)."""
    nonce = _nonce(nonce)
    ad = _response_ad(key, request_nonce, status)
    return nonce + ChaCha20Poly1305(key.response_key).encrypt(nonce, bytes(body), ad)


def open_response(key: SwarmKey, request_nonce: bytes, status: int, sealed: bytes) -> bytes:
    """The plaintext of an answer sealed for exactly this request and status, else SwarmAuthError."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise SwarmAuthError(f"answer {status} is not sealed")
    try:
        return ChaCha20Poly1305(key.response_key).decrypt(
            sealed[:NONCE_BYTES], bytes(sealed[NONCE_BYTES:]), _response_ad(key, request_nonce, status)
        )
    except InvalidTag:
        raise SwarmAuthError(f"answer {status} does not open (wrong swarm key, altered, or not ours)") from None


# -- aiohttp server side ----------------------------------------------------------------------

PLAIN_BODY = web.RequestKey("plain_body", bytes)  # the opened request body, set by the middleware
_SEALED = web.ResponseKey("ralphswarm_sealed", bool)  # marks the response the middleware built
_ABORTED = web.RequestKey("ralphswarm_aborted", bool)  # the prepare guard dropped this connection


async def read_body(request: web.Request) -> bytes:
    """The request body as the sender wrote it: opened plaintext in a private swarm, else the raw body."""
    if PLAIN_BODY in request:
        return request[PLAIN_BODY]
    return await request.read()


async def read_json(request: web.Request) -> Any:
    """Parsed JSON of the (opened) request body; 400 on a body that is not JSON."""
    raw = await read_body(request)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="invalid JSON body") from None


def _refuse(reason: str) -> web.Response:
    return web.json_response({"error": f"unauthorized: {reason}"}, status=401)


def swarm_key_middleware(
    key: SwarmKey,
    *,
    clock: Callable[[], float] = time.time,
    replay_cache: ReplayCache | None = None,
    exempt: Callable[[web.Request], bool] | None = None,
):
    """Middleware that opens every request and seals every answer with ``key``.

    Prefer ``install_swarm_key(app, key)``, which also adds the guard against streamed answers.
    A request that does not open gets 401 and never reaches a handler (unknown paths too, so a
    stranger cannot even map the API). ``exempt(request) -> True`` lets a request through in clear:
    off by default; meant for a dashboard bound to loopback, never for peer endpoints.
    Handlers read the opened body with ``read_json``/``read_body``. Only ``web.Response`` bodies can
    be sealed: a handler returning anything else gets a sealed 500, and one that streams has its
    connection dropped by the ``install_swarm_key`` guard, rather than leaking plaintext.
    Every answer carries a sealed body, so handlers should not answer 204/304 in a private swarm.
    """
    cache = replay_cache if replay_cache is not None else ReplayCache()

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if exempt is not None and exempt(request):
            return await handler(request)
        sealed = await request.read()  # client_max_size applies to the sealed body
        try:
            plain = open_request(key, request.method, request.raw_path, request.headers, sealed, clock(), cache)
        except SwarmAuthError as e:
            return _refuse(e.reason)
        request[PLAIN_BODY] = plain
        _, nonce = parse_auth_header(request.headers)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # 404, 400, ... from routing or handlers: answered sealed too
            resp = exc
        except Exception:
            if request.get(_ABORTED):
                raise
            log.exception("handler failed for %s %s", request.method, request.path)
            resp = web.json_response({"error": "internal error"}, status=500)
        if not isinstance(resp, web.Response) or not isinstance(resp.body, (bytes, bytearray, type(None))):
            log.error("refusing to send an unsealable %s answer for %s", type(resp).__name__, request.path)
            resp = web.json_response({"error": "internal error: unsealable answer"}, status=500)
        body = seal_response(key, nonce, resp.status, resp.body or b"")
        out = web.Response(status=resp.status, reason=resp.reason, body=body, content_type=CONTENT_TYPE)
        out[_SEALED] = True
        for name, value in resp.headers.items():
            if name.lower() not in ("content-type", "content-length", "content-encoding", "transfer-encoding"):
                out.headers.add(name, value)
        return out

    return middleware


async def _refuse_unsealed_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare guard: a handler that streams (``prepare`` + ``write``) would send
    plaintext before the middleware sees its response; this runs before the headers go out."""
    if PLAIN_BODY in request and not response.get(_SEALED):
        # prepare() has already set up the connection's writer for this stream, so no clean answer
        # can follow: drop the connection (before any header is written) and let the handler fail
        request[_ABORTED] = True
        if request.transport is not None:
            request.transport.close()
        raise RuntimeError(f"unsealed streamed answer refused for {request.path} (private swarm)")


def install_swarm_key(app: web.Application, key: SwarmKey, **options) -> None:
    """Seal ``app``: the middleware plus the guard against streamed answers. Call before startup."""
    app.middlewares.append(swarm_key_middleware(key, **options))
    app.on_response_prepare.append(_refuse_unsealed_prepare)


# -- aiohttp client side ----------------------------------------------------------------------

async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > max_bytes:
            # a ClientError, so callers treat a flooding peer like any other broken connection
            raise aiohttp.ClientPayloadError(f"answer larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes) -> Any:
    """JSON when the answer is JSON, else its text, None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


async def swarm_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    key: SwarmKey | None,
    json_body: Any = None,
    timeout: float = 30.0,
    max_bytes: int = 16 * 1024 * 1024,
    clock: Callable[[], float] = time.time,
) -> tuple[int, Any]:
    """One JSON request to a peer: ``(status, parsed answer)``; sealed and opened when ``key`` is set.

    With a key, a 401 or any answer that does not open raises SwarmAuthError: an unsealed answer
    is never returned as data. Network errors (aiohttp.ClientError, TimeoutError) pass through.
    """
    url = URL(url)
    body = b"" if json_body is None else json.dumps(json_body, ensure_ascii=False).encode()
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    if key is None:
        headers = {"Content-Type": "application/json"} if json_body is not None else {}
        async with session.request(method, url, data=body or None, headers=headers, timeout=client_timeout) as resp:
            return resp.status, _decode(await _read_limited(resp, max_bytes))
    headers, sealed = seal_request(key, method, url.raw_path_qs, body, clock())
    _, nonce = parse_auth_header(headers)
    async with session.request(method, url, data=sealed, headers=headers, timeout=client_timeout) as resp:
        raw = await _read_limited(resp, max_bytes)
        if resp.status == 401:
            raise SwarmAuthError(f"peer refused the request: {raw[:200].decode('utf-8', 'replace')}")
        return resp.status, _decode(open_response(key, nonce, resp.status, raw))
