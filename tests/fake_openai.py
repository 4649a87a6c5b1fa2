"""A local server that speaks OpenAI's Chat Completions API (POST /v1/chat/completions), for tests.

Like tests/fake_anthropic.py: queue ``chat_reply(...)`` / ``error_reply(...)`` / raw items, point the
real ``openai`` SDK at ``server.base_url`` (``http://127.0.0.1:PORT/v1``), read ``server.requests``.
Runs on 127.0.0.1, port 0, in a thread with its own event loop.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from typing import Any

from aiohttp import web

from tests.fake_anthropic import Recorded, Scripted


def chat_reply(text: str | None, *, prompt_tokens: int = 1500, completion_tokens: int = 250,
               cached_tokens: int = 0) -> Scripted:
    return Scripted(200, {
        "object": "chat.completion", "created": 1_767_225_600,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached_tokens}},
    })


def error_reply(status: int, message: str = "scripted error", *, retry_after: str | None = None) -> Scripted:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Scripted(status, {"error": {"message": message, "type": "server_error", "code": None}}, headers)


class FakeOpenAI:
    def __init__(self) -> None:
        self._queue: deque[Scripted] = deque()
        self.requests: list[Recorded] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Scripted) -> None:
        with self._lock:
            self._queue.extend(replies)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.requests.append(Recorded(body, {k.lower(): v for k, v in request.headers.items()}))
            item = self._queue.popleft() if self._queue else None
        if not request.headers.get("authorization", "").startswith("Bearer "):
            item = error_reply(401, "missing API key")
        if item is None:
            item = error_reply(500, "fake server: no scripted reply left")
        if item.raw is not None:
            return web.Response(status=item.status, body=item.raw, headers=item.headers)
        payload: dict[str, Any] = dict(item.body)
        if item.status == 200:
            payload.setdefault("id", f"chatcmpl-fake{next(self._ids):06d}")
            payload["model"] = body.get("model")
        return web.json_response(payload, status=item.status, headers=item.headers)

    def _serve(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __enter__(self) -> "FakeOpenAI":
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="fake-openai", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
