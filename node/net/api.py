"""HTTP API v1 (aiohttp): thin handlers over the node's replica and gossip core.

protocol/SPEC.md section 10 specifies every route, answer, header and limit here (and
tests/node/test_spec_http.py fails when a route registered in the app is missing from its tables).

Every handler turns bad input into a 4xx with a reason (400 malformed, 401 private swarm, 404,
413 oversized, 429 past a peer's rate); a bug never becomes a 500 that stops the node serving
its honest peers.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterator

from aiohttp import web

from protocol import ProtocolError, canon, is_hex, parse

from node.net.admission import host_of
from node.newcomers import REFUSED
from node.net.negentropy import NegentropyError
from node.net.swarmkey import PLAIN_BODY, read_body

log = logging.getLogger(__name__)

NODE: web.AppKey[Any] = web.AppKey("node", object)
MAX_BODY_BYTES = 8 * 1024 * 1024  # a push batch of envelopes (each <= 256 KiB)
MAX_IDS = 1000  # ids per announce/fetch, envelopes per push
MAX_FETCH_ANSWER_BYTES = 16 * 1024 * 1024  # a fetch answer's bytes at most (the client's cap, SPEC.md 10.5)
FETCH_CHUNK_BYTES = 256 * 1024  # envelopes' bytes read from the replica at a time while a fetch answer streams
FETCH_PEER_RATE_BPS = 4 * 1024 * 1024  # fetch answer bytes per second per client address, sustained ...
FETCH_PEER_BURST_BYTES = 64 * 1024 * 1024  # ... after a burst of this many (a catch-up)
BODY_PEER_RATE_BPS = 2 * 1024 * 1024  # request body bytes per second per client address, sustained ...
BODY_PEER_BURST_BYTES = 32 * 1024 * 1024  # ... after a burst of this many (four full push batches)
# ids a client address may have looked up by fetches, per second, sustained ... (a 1,000-id fetch
# costs ~2.5 ms of lookups and parsing whatever it finds: a prober asking for what is not stored
# spends no answer bytes; an honest catch-up at FETCH_PEER_RATE_BPS asks ~3,000 a second)
LOOKUP_PEER_RATE = 5_000
LOOKUP_PEER_BURST = 50_000  # ... after a burst of this many (a catch-up of that many messages)
ID_JSON_BYTES = 67  # an id in a request body: 64 hex digits, quotes and a comma
NEWCOMER_RETRY_S = 60  # Retry-After of a push refused whole for the newcomers' budgets
PEER_HEADER = "X-Ralphswarm-Peer"  # the sender's own address (its peer record's), a hint (SPEC.md 10)


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _error(status: int, reason: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def _raw_json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def _body(request: web.Request) -> Any:
    """The request's JSON body, parsed strictly (protocol.parse: no floats, no duplicate keys)."""
    data = await read_body(request)
    if not data:
        raise BadRequest("empty body")
    try:
        return parse(data)
    except ProtocolError as exc:
        raise BadRequest(exc.reason) from None


def _ids(body: Any, field: str = "ids") -> list[str]:
    ids = body.get(field) if isinstance(body, dict) else None
    if not isinstance(ids, list):
        raise BadRequest(f"invalid: schema: {field}")
    if len(ids) > MAX_IDS:
        raise BadRequest(f"invalid: too many ids (max {MAX_IDS})", status=413)
    if not all(is_hex(i, 64) for i in ids):
        raise BadRequest(f"invalid: schema: {field} (64-hex ids)")
    return ids


@web.middleware
async def guard(request: web.Request, handler):
    """Rate limit per client, count bytes, turn every failure into a 4xx with a reason."""
    node = request.app[NODE]
    peer_ip = request.remote or "?"
    wait = node.rate_limiter.take(peer_ip, time.monotonic())
    if wait > 0:
        node.metrics_event("rate_limited")
        return _error(429, "rate limited", headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    node.bytes_in += request.content_length or 0
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(413, "invalid: too large")
    if request.content_length:  # bytes per second beside requests per second (issue 17)
        wait = node.body_limiter.take(peer_ip, time.monotonic(), request.content_length)
        if wait > 0:
            node.metrics_event("body_bytes_limited")
            return _error(429, "rate limited (bytes)", headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    try:
        response = await handler(request)
    except BadRequest as exc:
        return _error(exc.status, exc.reason)
    except web.HTTPException as exc:
        if exc.status == 413:
            return _error(413, "invalid: too large")
        raise
    except NegentropyError as exc:
        return _error(400, f"invalid: negentropy: {exc}")
    except ProtocolError as exc:
        return _error(400, exc.reason)
    except Exception:  # a bug must not take the node down or leak a traceback to a peer
        log.exception("handler failed: %s %s", request.method, request.path)
        return _error(500, "internal error")
    announced = request.headers.get(PEER_HEADER)
    if announced and response.status < 400:
        node.learn_inbound(announced, request.remote)
    return response


async def status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].status())


async def post_messages(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await _body(request)
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        raise BadRequest("invalid: schema: messages")
    if len(messages) > MAX_IDS:
        raise BadRequest(f"invalid: too many messages (max {MAX_IDS})", status=413)
    # An element that is neither an object nor a string goes to the decoder as its canonical text,
    # which 4.3 refuses (schema: envelope); the parsed value itself is no envelope input at all.
    items = [m if isinstance(m, (dict, str)) else canon(m) for m in messages]
    origin = request.headers.get(PEER_HEADER)
    newcomers = node.newcomers
    report = await node.gossip.ingest(items, origin=origin if origin in node.peers else None,
                                      admit=newcomers.admit if newcomers is not None else None,
                                      screen=newcomers.prescreen if newcomers is not None else None)
    if report.rejected and not report.accepted and not report.duplicate \
            and all(r.startswith(REFUSED) for _, r in report.rejected):
        # nothing of it could be taken, for the budgets of keys without trust (node/newcomers.py)
        node.metrics_event("newcomer_push_refused")
        return _error(429, report.rejected[0][1], headers={"Retry-After": str(NEWCOMER_RETRY_S)})
    return web.json_response({
        "accepted": [e.id for e in report.accepted],
        "duplicate": list(report.duplicate),
        "rejected": [{"id": i, "reason": r} for i, r in report.rejected],
    })


async def get_message(request: web.Request) -> web.Response:
    msg_id = request.match_info["id"]
    if not is_hex(msg_id, 64):
        raise BadRequest("invalid: id must be 64 lower-case hex")
    raw = await request.app[NODE].replica.get_raw(msg_id)
    if raw is None:
        return _error(404, "unknown message")
    return _raw_json(raw)


async def fetch(request: web.Request) -> web.StreamResponse:
    """Streamed (SPEC.md 10.2.4): which of the ids are stored, and their sizes, is one lookup (a
    prober's misses cost no read each); the envelopes are then read FETCH_CHUNK_BYTES at a time and
    each such chunk written at once, so an answer costs the node a chunk of memory, not its size; it
    stops before the envelope that would take it past MAX_FETCH_ANSWER_BYTES or past what the
    client's address may still read (``Node.fetch_limiter``, bytes per second per address). In a
    private swarm the answer is sealed whole, so it is built in memory, under the same cap."""
    node = request.app[NODE]
    key = request.remote or "?"
    # lookups per address: estimated from the body's length before it is read, the rest once parsed
    estimate = max(1, (request.content_length or 0) // ID_JSON_BYTES)
    wait = node.lookup_limiter.take(key, time.monotonic(), estimate)
    ids = list(dict.fromkeys(_ids(await _body(request)))) if wait <= 0 else []
    if wait <= 0 and len(ids) > estimate:
        wait = node.lookup_limiter.take(key, time.monotonic(), len(ids) - estimate)
    if wait > 0:
        node.metrics_event("fetch_lookups_limited")
        return _error(429, "rate limited (ids looked up)", headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    sizes = await node.replica.sizes(ids)
    chunks = _chunks([i for i in ids if i in sizes], sizes)
    first_chunk = next(chunks, [])
    if first_chunk:  # the first stored envelope decides between an answer and 429
        wait = node.fetch_limiter.take(key, time.monotonic(), sizes[first_chunk[0]])
        if wait > 0:
            node.metrics_event("fetch_bytes_limited")
            return _error(429, "rate limited (bytes)", headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    sealed = PLAIN_BODY in request
    out: list[bytes] = []
    resp: web.StreamResponse | None = None
    if not sealed:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"messages":[')
    size, first, charged = len(b'{"messages":[]}'), True, True
    chunk = first_chunk
    while chunk:
        pieces: list[bytes] = []
        cut = False
        for raw in await node.replica.get_many_raw(chunk):
            if size + len(raw) + 1 > MAX_FETCH_ANSWER_BYTES or (
                    not charged and node.fetch_limiter.take(key, time.monotonic(), len(raw)) > 0):
                node.metrics_event("fetch_answer_cut")
                cut = True
                break
            charged = False
            pieces.append(raw if first else b"," + raw)
            first = False
            size += len(pieces[-1])
            node.bytes_out_fetch += len(raw)
        if resp is not None and pieces:
            await resp.write(b"".join(pieces))
        else:
            out.extend(pieces)
        chunk = [] if cut else next(chunks, [])
    if resp is None:
        return _raw_json(b'{"messages":[' + b"".join(out) + b"]}")
    await resp.write(b"]}")
    await resp.write_eof()
    return resp


def _chunks(ids: list[str], sizes: dict[str, int]) -> Iterator[list[str]]:
    """``ids`` in order, in runs of at most FETCH_CHUNK_BYTES (a bigger envelope alone)."""
    chunk: list[str] = []
    total = 0
    for i in ids:
        if chunk and total + sizes[i] > FETCH_CHUNK_BYTES:
            yield chunk
            chunk, total = [], 0
        chunk.append(i)
        total += sizes[i]
    if chunk:
        yield chunk


async def announce(request: web.Request) -> web.Response:
    node = request.app[NODE]
    ids = _ids(await _body(request))
    origin = request.headers.get(PEER_HEADER)
    want = await node.gossip.handle_announce(ids, origin if origin in node.peers else None)
    return web.json_response({"want": want})


async def sync(request: web.Request) -> web.Response:
    body = await _body(request)
    msg = body.get("msg") if isinstance(body, dict) else None
    if not isinstance(msg, str):
        raise BadRequest("invalid: schema: msg")
    try:
        data = bytes.fromhex(msg)
    except ValueError:
        raise BadRequest("invalid: msg is not hex") from None
    node = request.app[NODE]
    # The reconciling peer, when its announced address is at the IP the request came from (the
    # header alone proves nothing): the node then skips reconciling with it in turn for a while.
    origin = request.headers.get(PEER_HEADER)
    origin = origin if origin and host_of(origin) == request.remote else None
    answer = await node.gossip.handle_sync(data, origin)
    return web.json_response({"msg": answer.hex()})


async def peers(request: web.Request) -> web.Response:
    records = await request.app[NODE].replica.peer_records()
    return _raw_json(b'{"peers":[' + b",".join(r.canonical() for r in records) + b"]}")


async def leaderboard(request: web.Request) -> web.Response:
    node = request.app[NODE]
    task = request.query.get("task") or await node.default_task_id()
    if not is_hex(task, 64):
        raise BadRequest("invalid: task must be a 64-hex task id")
    return web.json_response(await node.leaderboard_json(task))


async def local_peers(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].peers_json())


async def local_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].stats_json())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/peers", local_peers)
    app.router.add_get("/api/stats", local_stats)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/messages", post_messages)
    app.router.add_get("/v1/messages/{id}", get_message)
    app.router.add_post("/v1/fetch", fetch)
    app.router.add_post("/v1/announce", announce)
    app.router.add_post("/v1/sync", sync)
    app.router.add_get("/v1/peers", peers)
    app.router.add_get("/v1/leaderboard", leaderboard)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
