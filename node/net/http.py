"""Gossip over HTTP: the client side of API v1 (node/net/api.py is the server side; protocol/SPEC.md 10).

Envelopes travel as their canonical bytes spliced into a JSON array, so a relay never
re-encodes what it stores. In a private swarm every exchange is sealed with the swarm key
(node/net/swarmkey.py); without the key a peer can neither read nor inject.
"""
from __future__ import annotations

import json
import time
from typing import Any, Sequence

import aiohttp

from node.net.swarmkey import SwarmAuthError, open_response, parse_auth_header, seal_request
from node.net.transport import PeerMisbehaved, PeerUnavailable

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a bigger answer is a misbehaving peer (SPEC.md 10.5)
PEER_HEADER = "X-Ralphswarm-Peer"  # our own address, sent with every request (SPEC.md 10)
TIMEOUT_S = 10.0  # one whole exchange, request and answer (SPEC.md 10.5)
REFUSED = "refused:"  # a push refused for the receiver's budgets, not for its content (SPEC.md 10.2.2)


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole answer body, or its first ``max_bytes`` when longer (``content.read(n)`` alone
    returns only what has arrived so far, which cut every answer bigger than a socket read)."""
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        total += len(chunk)
        if total >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes]


_HEAD, _TAIL = b'{"messages":[', b"]}"
_FIRST = b'{"author":"'
_BETWEEN = b'},{"author":"'


def _error_of(raw: bytes) -> str:
    """The one-line ``error`` of a JSON error answer, or ""."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return ""
    return error[:200] if isinstance(error, str) else ""


def split_envelopes(raw: bytes) -> list[bytes] | None:
    """The envelopes of an answer ``{"messages":[e1,e2,...]}`` spliced from canonical bytes (SPEC.md 10),
    each as its own bytes, or None when the answer is not in that form (then parse it as JSON).

    A canonical envelope starts with ``{"author":"`` (its first key) and cannot hold ``},{"author":"``:
    inside a string every ``"`` is escaped, and no body schema has a list of objects (SPEC.md 5).
    So the cuts fall exactly between honest envelopes; anything a peer forges around them yields
    pieces that fail decode (4.8) and count against it, as any invalid message does.
    """
    if not (raw.startswith(_HEAD) and raw.endswith(_TAIL)):
        return None
    inner = raw[len(_HEAD):-len(_TAIL)]
    if not inner:
        return []
    if not (inner.startswith(_FIRST) and inner.endswith(b"}")):
        return None
    pieces = inner.split(_BETWEEN)
    if len(pieces) == 1:
        return pieces
    return [pieces[0] + b"}"] + [_FIRST + p + b"}" for p in pieces[1:-1]] + [_FIRST + pieces[-1]]


class HttpTransport:
    def __init__(self, session: aiohttp.ClientSession, *, self_address: str | None = None,
                 swarm_key: Any = None, timeout_s: float = TIMEOUT_S):
        self.session = session
        self.self_address = self_address
        self.swarm_key = swarm_key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.bytes_in = 0
        self.bytes_out = 0

    async def request(self, method: str, peer: str, path: str, body: bytes | None = None) -> Any:
        """One exchange; returns the decoded JSON answer or raises PeerUnavailable/PeerMisbehaved."""
        raw = await self.request_raw(method, peer, path, body)
        try:
            return json.loads(raw)
        except ValueError:
            raise PeerMisbehaved("answer is not JSON") from None

    async def request_raw(self, method: str, peer: str, path: str, body: bytes | None = None) -> bytes:
        """One exchange; returns the answer's bytes (opened, in a private swarm) when its status is 2xx/3xx."""
        url = peer.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        if self.self_address:
            headers[PEER_HEADER] = self.self_address
        payload = body if body is not None else b""
        nonce = None
        if self.swarm_key is not None:
            sealed_headers, payload = seal_request(self.swarm_key, method, path, payload, time.time())
            headers.update(sealed_headers)
            headers["Content-Type"] = "application/octet-stream"
            nonce = parse_auth_header(sealed_headers)[1]
        self.bytes_out += len(payload)
        try:
            async with self.session.request(method, url, data=payload if (payload or method != "GET") else None,
                                            headers=headers, timeout=self.timeout) as resp:
                raw = await _read_capped(resp, MAX_ANSWER_BYTES + 1)
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from None
        self.bytes_in += len(raw)
        if len(raw) > MAX_ANSWER_BYTES:
            raise PeerMisbehaved("answer too large")
        if self.swarm_key is not None and status != 401:
            try:
                raw = open_response(self.swarm_key, nonce, status, raw)
            except SwarmAuthError as exc:
                raise PeerMisbehaved(f"answer does not open with the swarm key: {exc}") from None
        if status == 429:
            reason = _error_of(raw)
            raise PeerUnavailable(reason if reason.startswith(REFUSED) else "rate limited", status=status,
                                  retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None)
        if status >= 400:
            reason = raw[:200].decode("utf-8", "replace")
            raise PeerUnavailable(f"HTTP {status}: {reason}", status=status)
        return raw

    async def announce(self, peer: str, ids: Sequence[str]) -> list[str]:
        answer = await self.request("POST", peer, "/v1/announce", json.dumps({"ids": list(ids)}).encode())
        want = answer.get("want") if isinstance(answer, dict) else None
        if not isinstance(want, list) or not all(isinstance(i, str) for i in want):
            raise PeerMisbehaved("announce answer lacks 'want'")
        return want

    async def send(self, peer: str, raws: Sequence[bytes]) -> dict[str, Any]:
        """The peer's ingest report. A push it took nothing of because of its budgets for keys without
        trust (429 ``refused: ...``, SPEC.md 10.2.2) is no failed exchange: an empty report naming it."""
        body = b'{"messages":[' + b",".join(raws) + b"]}"
        try:
            answer = await self.request("POST", peer, "/v1/messages", body)
        except PeerUnavailable as exc:
            if exc.status == 429 and exc.reason.startswith(REFUSED):
                return {"accepted": [], "duplicate": [], "rejected": [], "refused": exc.reason}
            raise
        if not isinstance(answer, dict):
            raise PeerMisbehaved("ingest answer is not an object")
        return answer

    async def fetch(self, peer: str, ids: Sequence[str]) -> list[Any]:
        """The envelopes a peer sends for ``ids``: each one's raw bytes when the answer is spliced
        as SPEC.md 10 says (so ingest takes its fast path), else the parsed objects."""
        raw = await self.request_raw("POST", peer, "/v1/fetch", json.dumps({"ids": list(ids)}).encode())
        pieces = split_envelopes(raw)
        if pieces is not None:
            return pieces
        try:
            answer = json.loads(raw)
        except ValueError:
            raise PeerMisbehaved("fetch answer is not JSON") from None
        messages = answer.get("messages") if isinstance(answer, dict) else None
        if not isinstance(messages, list):
            raise PeerMisbehaved("fetch answer lacks 'messages'")
        return messages

    async def sync(self, peer: str, msg: bytes) -> bytes:
        answer = await self.request("POST", peer, "/v1/sync", json.dumps({"msg": msg.hex()}).encode())
        try:
            return bytes.fromhex(answer["msg"])
        except (KeyError, TypeError, ValueError):
            raise PeerMisbehaved("sync answer lacks a hex 'msg'") from None

    async def peer_records(self, peer: str) -> list[Any]:
        answer = await self.request("GET", peer, "/v1/peers")
        records = answer.get("peers") if isinstance(answer, dict) else None
        if not isinstance(records, list):
            raise PeerMisbehaved("peers answer lacks 'peers'")
        return records

    async def status(self, peer: str) -> dict[str, Any]:
        answer = await self.request("GET", peer, "/v1/status")
        if not isinstance(answer, dict):
            raise PeerMisbehaved("status answer is not an object")
        return answer
