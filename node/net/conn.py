"""Connections a stranger cannot hold: read deadlines, a minimum body rate, caps per address and in
total, and accept errors logged once per interval (issue 17, item 3; docs/design.md, "Gossip and sync").

aiohttp's server has no read timeout for a request's head or body: a client that trickles a byte at a
time holds a descriptor for as long as it likes, and at the descriptor limit the node stops answering
(and SQLite and the sandbox's pipes cannot open either). ``GuardedSite`` listens like ``web.TCPSite``
but wraps each connection's aiohttp protocol in ``_Guarded``, which sees every byte before aiohttp does
and tracks where the HTTP/1.1 request is:

- **head**: the request line and headers must be complete within ``header_timeout_s`` of the
  connection (or, on a kept-alive connection, of the next request's first byte), and within
  ``max_head_bytes``;
- **body**: ``Content-Length`` bytes within ``body_timeout_s``, and, after ``rate_grace_s``, never
  slower on average than ``min_rate_bps``; a chunked body is refused (411: every client of the API
  sends a length);
- **answer**: a client that stops reading stalls our writes; after ``write_stall_s`` paused the
  connection is dropped.

A connection past ``max_per_address`` open from one address (an IPv6 /64 counts as one) or past the
total cap is closed as soon as it is accepted. The total cap stays below the process's descriptor
limit by ``fd_headroom`` so the database and the sandbox always have descriptors left. One sweep a
second checks every deadline (so each fires within a second of its time).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web
from aiohttp.web_runner import BaseSite

log = logging.getLogger(__name__)

SWEEP_S = 1.0  # how often deadlines are checked


@dataclass(frozen=True)
class ConnSettings:
    header_timeout_s: float = 10.0  # a request's head complete within this
    body_timeout_s: float = 120.0  # a request's whole body within this (8 MiB at 70 KiB/s)
    min_rate_bps: float = 16 * 1024  # a body slower than this on average, after the grace, is dropped
    rate_grace_s: float = 5.0
    write_stall_s: float = 30.0  # an answer the client does not read for this long is dropped
    idle_timeout_s: float = 30.0  # a kept-alive connection with no request (aiohttp's keepalive_timeout)
    max_head_bytes: int = 64 * 1024  # request line and headers (aiohttp refuses lines over 8 KiB)
    max_per_address: int = 32
    max_total: int = 1024
    fd_headroom: int = 256  # descriptors kept free of connections: SQLite, sandbox pipes, our own dials
    log_interval_s: float = 10.0  # a repeated accept or connection error is logged once per interval


def descriptor_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(settings: ConnSettings, fd_limit: int | None = None) -> int:
    """Connections held at most: the configured total, below the descriptor limit by the headroom
    (never under 8, so a node with a tiny limit still answers someone)."""
    limit = descriptor_limit() if fd_limit is None else fd_limit
    return max(8, min(settings.max_total, limit - settings.fd_headroom))


def address_key(host: str | None) -> str:
    """What the per-address cap counts: the IP, or its /64 for IPv6 (one host holds a whole /64)."""
    if not host:
        return "?"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class OncePerInterval(logging.Filter):
    """Lets a record through once per ``interval_s`` for each (logger, message template); the next one
    let through says how many were held back. Installed on asyncio's and aiohttp's server loggers while
    a site listens: at the descriptor limit asyncio logs every failed accept, aiohttp every broken
    connection, and the log would grow by megabytes a second."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) > 1000:  # bounded: forget templates not seen for an interval
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval_s}
            self._held = {k: n for k, n in self._held.items() if k in self._last}
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.interval_s:g} s not logged]"
        return True


HEAD, BODY, HANDLER = "head", "body", "handler"


class ConnectionGuard:
    """The caps and the sweep shared by one site's connections; counters for status and metrics."""

    def __init__(self, settings: ConnSettings, inner_factory: Callable[[], asyncio.Protocol], *,
                 on_event: Callable[[str], None] | None = None, fd_limit: int | None = None):
        self.settings = settings
        self.inner_factory = inner_factory
        self.on_event = on_event or (lambda name: None)
        self.cap = connection_cap(settings, fd_limit)
        self.by_address: dict[str, int] = {}
        self.live: set[_Guarded] = set()
        self.counters: dict[str, int] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> "_Guarded":
        return _Guarded(self)

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
        self.on_event(name)

    def admit(self, conn: "_Guarded", key: str) -> bool:
        if len(self.live) >= self.cap:
            self.count("conn_refused_total")
            return False
        if self.by_address.get(key, 0) >= self.settings.max_per_address:
            self.count("conn_refused_per_address")
            return False
        self.by_address[key] = self.by_address.get(key, 0) + 1
        self.live.add(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)
        return True

    def release(self, conn: "_Guarded", key: str) -> None:
        if conn in self.live:
            self.live.discard(conn)
            left = self.by_address.get(key, 1) - 1
            if left > 0:
                self.by_address[key] = left
            else:
                self.by_address.pop(key, None)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for conn in list(self.live):
            reason = conn.overdue(now)
            if reason is not None:
                self.count(reason)
                conn.drop()
        if self.live:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, the request's phase and deadlines outside."""

    def __init__(self, guard: ConnectionGuard):
        self.guard = guard
        self.inner: Any = None
        self.transport: asyncio.Transport | None = None
        self.key = "?"
        self.phase = HEAD
        self.phase_at = time.monotonic()
        self.head = bytearray()
        self.remaining = 0  # body bytes still to come
        self.body_bytes = 0
        self.paused_at: float | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.key = address_key(peer[0] if isinstance(peer, (tuple, list)) and peer else None)
        if not self.guard.admit(self, self.key):
            transport.abort()
            return
        self.phase_at = time.monotonic()
        self.inner = self.guard.inner_factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        verdict = self._track(data)
        if verdict == "drop":
            self.drop()
        elif verdict == "close":  # an answer was written: let it out, then close
            self.transport.close()
        else:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self, self.key)
        if self.inner is not None:
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.paused_at = time.monotonic()
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.paused_at = None
        if self.inner is not None:
            self.inner.resume_writing()

    # -- the request's phase -------------------------------------------------------------------------
    def _track(self, data: bytes) -> str:
        """Follow the bytes through head, body and the next head: "ok", or "drop" or "close" it."""
        view = memoryview(data)
        while view:
            if self.phase == HANDLER:  # the next request's first byte: its head's clock starts
                self._enter(HEAD)
            if self.phase == HEAD:
                start = max(0, len(self.head) - 3)
                self.head += view
                end = self.head.find(b"\r\n\r\n", start)
                if end < 0:
                    if len(self.head) > self.guard.settings.max_head_bytes:
                        self.guard.count("conn_dropped_head_too_large")
                        return "drop"
                    return "ok"
                rest = len(self.head) - (end + 4)
                head = bytes(self.head[:end])
                view = view[len(view) - rest:] if rest else view[:0]
                self.head.clear()
                length = _content_length(head)
                if length is None:
                    self._answer_411()
                    return "close"
                if length > 0:
                    self.remaining = length
                    self.body_bytes = 0
                    self._enter(BODY)
                else:
                    self._enter(HANDLER)
            elif self.phase == BODY:
                take = min(self.remaining, len(view))
                self.remaining -= take
                self.body_bytes += take
                view = view[take:]
                if self.remaining == 0:
                    self._enter(HANDLER)
        return "ok"

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_at = time.monotonic()

    def overdue(self, now: float) -> str | None:
        """Why this connection must go now, or None."""
        s = self.guard.settings
        waited = now - self.phase_at
        # HEAD: a new connection, or a kept-alive one whose next request has begun (an idle kept-alive
        # connection stays in HANDLER, and aiohttp closes it after idle_timeout_s)
        if self.phase == HEAD and waited > s.header_timeout_s:
            return "conn_dropped_slow_head"
        if self.phase == BODY:
            if waited > s.body_timeout_s:
                return "conn_dropped_slow_body"
            if waited > s.rate_grace_s and self.body_bytes < s.min_rate_bps * waited:
                return "conn_dropped_slow_body"
        if self.paused_at is not None and now - self.paused_at > s.write_stall_s:
            return "conn_dropped_write_stall"
        return None

    def drop(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _answer_411(self) -> None:
        self.guard.count("conn_refused_chunked")
        if self.transport is not None:
            body = b'{"error":"a request body needs Content-Length"}'
            self.transport.write(b"HTTP/1.1 411 Length Required\r\nContent-Type: application/json\r\n"
                                 b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                                 + b"\r\n\r\n" + body)


def _content_length(head: bytes) -> int | None:
    """The body's length from a request head: 0 without one, None for a chunked body (refused).
    A malformed length is left to aiohttp, which answers 400 (counted as no body here)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" and value.strip():
            return None
        if name == b"content-length":
            text = value.strip()
            length = int(text) if text.isdigit() and len(text) < 19 else 0
    return length


class GuardedSite(BaseSite):
    """``web.TCPSite`` with every connection guarded (see the module's text)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, settings: ConnSettings, *,
                 on_event: Callable[[str], None] | None = None, fd_limit: int | None = None):
        super().__init__(runner)
        self._host, self._port = host, port
        self.settings = settings
        self._on_event = on_event
        self._fd_limit = fd_limit
        self.guard: ConnectionGuard | None = None
        self._filter = OncePerInterval(settings.log_interval_s)
        self._filtered = [logging.getLogger(n) for n in ("asyncio", "aiohttp.server", "aiohttp.access")]

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.guard = ConnectionGuard(self.settings, server, on_event=self._on_event, fd_limit=self._fd_limit)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.guard, self._host, self._port, backlog=self._backlog)
        if self._server.sockets:
            self._port = self._server.sockets[0].getsockname()[1]
        for logger in self._filtered:
            logger.addFilter(self._filter)

    async def stop(self) -> None:
        for logger in self._filtered:
            logger.removeFilter(self._filter)
        if self.guard is not None:
            self.guard.close()
        await super().stop()
