"""Connections a stranger cannot hold (node/net/conn.py; issue 17 item 3), against a real node's
server on loopback with real sockets that trickle: a slow head, a slow body, a client that never
reads its answer, too many connections from one address or in all, a chunked body; and accept errors
at the descriptor limit logged once per interval. Each deadline is the node's setting plus the sweep
(conn.SWEEP_S) plus a stated slack; the honest client is served throughout.

    .venv/bin/python -m pytest tests/node/test_connections.py -q   (about 25 s; the pure ones are not slow)
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import time

import aiohttp
import pytest

from node.daemon import Node
from node.net.conn import SWEEP_S, ConnSettings, OncePerInterval, address_key, connection_cap
from node.settings import NetworkSettings, NodeSettings
from protocol import Identity, build
from tests.messages import claim

SLACK_S = 3.0  # a busy 2-core CI machine: scheduling, the node's own start-up work
FAST = ConnSettings(header_timeout_s=1.0, body_timeout_s=4.0, min_rate_bps=2048, rate_grace_s=1.0,
                    write_stall_s=1.0, idle_timeout_s=4.0, max_per_address=8, max_total=20, log_interval_s=2.0)


@pytest.fixture
async def node(tmp_path):
    settings = NodeSettings(home=tmp_path / "n", network=NetworkSettings(port=0, lan=False), ralph=False,
                            reproduce=False, device="cpu", connections=FAST)
    n = Node(settings, Identity.generate(), echo=lambda _: None)
    await n.start()
    yield n
    await n.stop()


def _port(node: Node) -> int:
    return int(node.address.rsplit(":", 1)[1])


async def _status_ok(node: Node) -> bool:
    async with aiohttp.ClientSession() as session:
        async with session.get(node.address + "/v1/status", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status == 200 and (await resp.json())["pubkey"] == node.identity.pubkey


async def _closed_within(reader: asyncio.StreamReader, limit_s: float) -> float:
    """Seconds until the server closes the connection (EOF or reset); fails past ``limit_s``."""
    start = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(65536), timeout=limit_s - (time.monotonic() - start)):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return time.monotonic() - start


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float, stop: asyncio.Event) -> None:
    for i in range(len(data)):
        if stop.is_set() or writer.is_closing():
            return
        try:
            writer.write(data[i:i + 1])
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            return
        await asyncio.sleep(every_s)


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_a_trickled_head_is_dropped_at_the_header_timeout(node):
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    stop = asyncio.Event()
    head = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    trickler = asyncio.create_task(_trickle(writer, head, 0.05, stop))  # 13 s for the whole head
    took = await _closed_within(reader, FAST.header_timeout_s + SWEEP_S + SLACK_S)
    stop.set()
    await trickler
    writer.close()
    assert took >= FAST.header_timeout_s - 0.2  # not before its time
    assert node.telemetry.events.get("conn_dropped_slow_head") == 1
    assert await _status_ok(node)


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_a_silent_connection_is_dropped_at_the_header_timeout(node):
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    took = await _closed_within(reader, FAST.header_timeout_s + SWEEP_S + SLACK_S)
    writer.close()
    assert took >= FAST.header_timeout_s - 0.2
    assert node.telemetry.events.get("conn_dropped_slow_head") == 1


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_a_slow_body_is_dropped_and_a_fast_one_served(node):
    body = json.dumps({"ids": ["ab" * 32] * 100}).encode()  # 6.9 KB
    head = (f"POST /v1/fetch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    writer.write(head + body[:100])  # the head at once, then the body at ~200 B/s, under min_rate_bps
    stop = asyncio.Event()
    trickler = asyncio.create_task(_trickle(writer, body[100:], 0.005, stop))
    took = await _closed_within(reader, FAST.rate_grace_s + SWEEP_S + SLACK_S)
    stop.set()
    await trickler
    writer.close()
    assert took >= FAST.rate_grace_s - 0.2
    assert node.telemetry.events.get("conn_dropped_slow_body") == 1
    # the same request sent at once is answered
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    writer.write(head + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 200")


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_a_body_under_the_total_timeout_but_endless_is_dropped(node):
    # fast enough for the rate, but a Content-Length it never reaches: body_timeout_s ends it
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n")
    stop = asyncio.Event()

    async def steady():
        while not stop.is_set():
            try:
                writer.write(b" " * int(FAST.min_rate_bps))  # twice the minimum rate
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                return
            await asyncio.sleep(0.5)

    sender = asyncio.create_task(steady())
    took = await _closed_within(reader, FAST.body_timeout_s + SWEEP_S + SLACK_S)
    stop.set()
    await sender
    writer.close()
    assert took >= FAST.body_timeout_s - 0.2
    assert node.telemetry.events.get("conn_dropped_slow_body") == 1


async def _big_claims(node: Node, count: int) -> list[str]:
    """``count`` claims of ~60 KiB each in the node's replica; their ids."""
    author = Identity.from_seed(b"\x31" * 32)
    envs = []
    for n in range(count):
        env = claim(author, n=n)
        body = {**env.body, "patch": env.body["patch"] + "+# " + "x" * 60_000 + "\n"}
        envs.append(build(author, "public", "claim", body, created_at=env.created_at))
    report = await node.gossip.ingest([e.canonical() for e in envs])
    assert len(report.accepted) == count, report.rejected[:1]
    return [e.id for e in envs]


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_a_client_that_never_reads_its_answer_is_dropped(node):
    # pipelined fetches of ~2.4 MB answers, never read: the server's writes pause, and after
    # write_stall_s paused the connection goes
    ids = await _big_claims(node, 40)
    body = json.dumps({"ids": ids}).encode()
    request = (f"POST /v1/fetch HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", _port(node)))
    sock.sendall(request * 20)
    deadline = time.monotonic() + FAST.write_stall_s + SWEEP_S + SLACK_S + 5
    while "conn_dropped_write_stall" not in node.telemetry.events and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    sock.close()
    assert node.telemetry.events.get("conn_dropped_write_stall") == 1
    assert await _status_ok(node)


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_caps_per_address_and_in_total(node):
    site = node.site
    assert site.guard.cap == min(FAST.max_total, connection_cap(FAST))
    held = [await asyncio.open_connection("127.0.0.1", _port(node)) for _ in range(FAST.max_per_address)]
    await asyncio.sleep(0.2)
    assert len(site.guard.live) == FAST.max_per_address
    # one more from the same address: accepted by the kernel, closed at once by the node
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    assert await _closed_within(reader, 2.0) < 2.0
    writer.close()
    assert node.telemetry.events.get("conn_refused_per_address") == 1
    # other addresses of the loopback range fill up to the total, then are refused too
    others = []
    for i in range(FAST.max_total - FAST.max_per_address):
        others.append(await asyncio.open_connection("127.0.0.1", _port(node), local_addr=(f"127.0.0.{2 + i // 4}", 0)))
    await asyncio.sleep(0.2)
    assert len(site.guard.live) == FAST.max_total
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node), local_addr=("127.0.1.1", 0))
    assert await _closed_within(reader, 2.0) < 2.0
    writer.close()
    assert node.telemetry.events.get("conn_refused_total") == 1
    for _, w in held + others:
        w.close()
    # the slots come back when they close (or at the header timeout): an honest request is served
    deadline = time.monotonic() + FAST.header_timeout_s + SWEEP_S + SLACK_S
    while site.guard.live and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await _status_ok(node)
    assert not site.guard.by_address


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_a_chunked_body_is_refused_with_411(node):
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 411") and b"Content-Length" in answer
    assert node.telemetry.events.get("conn_refused_chunked") == 1


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_keep_alive_and_pipelining_still_work(node):
    # the guard follows heads and bodies across requests on one connection
    body = json.dumps({"ids": []}).encode()
    one = (f"POST /v1/fetch HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
    writer.write(one * 3 + b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    statuses = []
    for _ in range(4):
        line = await asyncio.wait_for(reader.readline(), 10)
        statuses.append(line.split()[1])
        length, chunked = 0, False
        while (header := await asyncio.wait_for(reader.readline(), 10)) != b"\r\n":
            if header.lower().startswith(b"content-length:"):
                length = int(header.split(b":")[1])
            chunked |= header.lower().replace(b" ", b"") == b"transfer-encoding:chunked\r\n"
        if not chunked:
            await reader.readexactly(length)
            continue
        while (size := int(await asyncio.wait_for(reader.readline(), 10), 16)) > 0:  # /v1/fetch streams
            await reader.readexactly(size + 2)
        await reader.readexactly(2)
    assert statuses == [b"200"] * 4
    # kept alive past the header timeout while idle (aiohttp's idle timeout closes it, not ours)
    await asyncio.sleep(FAST.header_timeout_s + SWEEP_S + 0.5)
    writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
    took = await _closed_within(reader, FAST.idle_timeout_s + SLACK_S + 2)
    writer.close()
    assert took >= FAST.idle_timeout_s - 0.5
    assert "conn_dropped_slow_head" not in node.telemetry.events


def test_cap_stays_below_the_descriptor_limit():
    s = ConnSettings()
    assert connection_cap(s, fd_limit=1024) == 1024 - s.fd_headroom
    assert connection_cap(s, fd_limit=1 << 20) == s.max_total
    assert connection_cap(s, fd_limit=100) == 8
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")


def test_once_per_interval_filter():
    now = [0.0]
    filt = OncePerInterval(10.0, clock=lambda: now[0])
    log = logging.getLogger("test_once_per_interval")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    log.addHandler(handler)
    log.addFilter(filt)
    log.propagate = False
    try:
        for i in range(1000):
            now[0] = i * 0.1  # 1,000 errors over 100 s
            log.error("socket.accept() out of system resource")
            log.error("another %s", "thing")
    finally:
        log.removeHandler(handler)
        log.removeFilter(filt)
    accept = [r for r in records if r.startswith("socket.accept")]
    assert len(accept) == 10 and len(records) == 20
    assert "99 more like this" in accept[1]


@pytest.mark.slow  # a real node and its deadlines: seconds each
async def test_accept_errors_at_the_descriptor_limit_are_logged_once_per_interval(node, caplog):
    # Use up this process's descriptors, so the node's accept() fails with EMFILE; asyncio logs each
    # failure (every second, per connection waiting): the node's filter keeps one per interval.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients = [socket.socket() for _ in range(10)]
    for c in clients:
        c.setblocking(False)
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    caplog.set_level(logging.ERROR, logger="asyncio")
    try:
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        for c in clients:
            try:
                c.connect(("127.0.0.1", _port(node)))
            except BlockingIOError:
                pass
        watch_s = 3 * FAST.log_interval_s
        await asyncio.sleep(watch_s)
        logged = [r for r in caplog.records if r.name == "asyncio" and "accept" in r.getMessage()]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for c in clients:
            c.close()
    assert 1 <= len(logged) <= watch_s / FAST.log_interval_s + 1, [r.getMessage()[:80] for r in logged]
    assert await _status_ok(node)  # accepting again once descriptors are free
