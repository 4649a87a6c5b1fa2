"""A local server that speaks the Anthropic Messages API (POST /v1/messages), for tests.

Replies are scripted: queue ``text_reply(...)`` and ``error_reply(...)`` items, point the real
``anthropic`` SDK at ``server.base_url`` with any key, and read back ``server.requests`` (the JSON
bodies and headers the SDK sent). The server runs on 127.0.0.1, port 0, in a thread with its own
event loop, because the SDK's synchronous client blocks the caller's loop. Reusable by end-to-end
tests of the node:

    with FakeAnthropic() as server:
        server.script(text_reply("Note: x\\n```diff\\n...```"))
        anthropic.Anthropic(api_key="test", base_url=server.base_url).messages.create(...)
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}


@dataclass
class Scripted:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent instead of JSON (garbage replies)


def text_reply(text: str, *, input_tokens: int = 1200, output_tokens: int = 300, cache_read: int = 0,
               cache_write: int = 0, model: str = "claude-sonnet-5-5") -> Scripted:
    return Scripted(200, {
        "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write},
    })


def error_reply(status: int, message: str = "scripted error", *, retry_after: str | None = None) -> Scripted:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Scripted(status, {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                                         "message": message}}, headers)


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]  # lower-cased names

    @property
    def api_key(self) -> str | None:
        """The key as sent: SDK 2.x sends ``Authorization: Bearer``, older ones ``x-api-key``."""
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else self.headers.get("x-api-key")


class FakeAnthropic:
    def __init__(self) -> None:
        self._queue: deque[Scripted] = deque()
        self.requests: list[Recorded] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Scripted) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    async def _messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.requests.append(Recorded(body, {k.lower(): v for k, v in request.headers.items()}))
            item = self._queue.popleft() if self._queue else None
        if not (request.headers.get("x-api-key") or request.headers.get("authorization", "").startswith("Bearer ")):
            item = error_reply(401, "missing API key (x-api-key or Authorization: Bearer)")
        if item is None:
            item = error_reply(500, "fake server: no scripted reply left")
        if item.raw is not None:
            return web.Response(status=item.status, body=item.raw, headers=item.headers)
        payload = dict(item.body)
        if item.status == 200:
            payload.setdefault("id", f"msg_fake{next(self._ids):06d}")
            payload["model"] = body.get("model", payload.get("model"))
        return web.json_response(payload, status=item.status, headers=item.headers)

    def _serve(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # port 0: the OS picked it
        started.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> "FakeAnthropic":
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="fake-anthropic", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake Anthropic server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
