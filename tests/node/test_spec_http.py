"""protocol/SPEC.md section 10 against the node: every route the node's aiohttp app registers is in
the spec's route tables and every route there is served; every limit of 10.5 is the constant named
beside it; the recorded HTTP exchange (tests/vectors/http_exchange.json, written by
scripts/gen_vectors.py) replayed against a real node on a loopback port gives the same answers.

    .venv/bin/python -m pytest tests/node/test_spec_http.py -q
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from protocol import Identity

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "protocol" / "SPEC.md"
VECTORS = ROOT / "tests" / "vectors"
ROUTE_ROW = re.compile(r"^\| `(GET|POST|PUT|DELETE|PATCH) (/[^`?\s]*)(?:\?[^`]*)?` \|")


def section(number: str) -> str:
    """The text of SPEC.md section ``number`` ("10", "10.5"), up to the next heading of its level or above."""
    text = SPEC.read_text(encoding="utf-8")
    level = "##" if "." not in number else "###"
    start = re.search(rf"^{level} {re.escape(number)}\.? .*$", text, re.M)
    assert start, f"SPEC.md has no section {number}"
    rest = text[start.end():]
    stop = re.search(rf"^#{{2,{len(level)}}} ", rest, re.M)
    return rest[:stop.start()] if stop else rest


def spec_routes(number: str) -> set[tuple[str, str]]:
    return {(m.group(1), m.group(2)) for line in section(number).splitlines() if (m := ROUTE_ROW.match(line))}


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    heads = {path for method, path in routes if method == "HEAD"}
    # aiohttp answers HEAD on every GET route (SPEC.md 10: "every GET route also answers HEAD")
    assert heads == {path for method, path in routes if method == "GET"}, "a HEAD route without its GET"
    return {(method, path) for method, path in routes if method != "HEAD"}


def node_settings(home: Path, **network):
    from node.settings import NetworkSettings, NodeSettings

    return NodeSettings(home=home, network=NetworkSettings(port=0, lan=False, **network), ralph=False,
                        reproduce=False, device="cpu")


# -- routes --------------------------------------------------------------------------------------

def test_every_registered_route_is_in_the_spec_and_back(tmp_path):
    from node.cli.node import make_extensions
    from node.daemon import Node
    from node.settings import NodeSettings

    # the node as the CLI composes it, extensions included (one of them could add routes)
    settings = NodeSettings(home=tmp_path)
    node = Node(settings, Identity.from_seed(b"\x02" * 32), echo=lambda _: None)
    node.extensions.extend(make_extensions(settings, {}, {}))
    registered = app_routes(node.make_app())
    peer, local = spec_routes("10.1"), spec_routes("10.6")
    assert peer and local and not peer & local
    assert all(path.startswith("/v1/") for _, path in peer), "10.1 lists peer routes, all under /v1/"
    assert not any(path.startswith("/v1/") for _, path in local), "10.6 lists local routes, none under /v1/"
    assert registered - (peer | local) == set(), "routes the node serves that SPEC.md 10.1/10.6 do not list"
    assert (peer | local) - registered == set(), "routes SPEC.md 10.1/10.6 list that the node does not serve"


def test_route_table_parser_sees_the_rows():
    # guard the guard: the parser reads the tables as written, query strings and path parameters too
    assert ("GET", "/v1/leaderboard") in spec_routes("10.1")
    assert ("GET", "/v1/messages/{id}") in spec_routes("10.1")
    assert ("GET", "/api/claim/{id}") in spec_routes("10.6")


# -- limits --------------------------------------------------------------------------------------

LIMIT_ROW = re.compile(r"^\|[^|]+\| ([0-9][0-9_,]*(?:\.[0-9]+)?)[^|]*\|.*`([A-Za-z_.]+)` \|$")


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"cannot resolve {dotted}")


def test_limits_table_matches_the_code():
    rows = [LIMIT_ROW.match(line) for line in section("10.5").splitlines()]
    rows = [m for m in rows if m]
    assert len(rows) >= 12, "SPEC.md 10.5 lost its limit rows"
    for m in rows:
        value, name = float(m.group(1).replace(",", "").replace("_", "")), m.group(2)
        assert float(_resolve(name)) == value, (name, value)


# -- the recorded exchange -----------------------------------------------------------------------

@contextlib.asynccontextmanager
async def recorded_node(tmp_path: Path, spec: dict):
    from node.daemon import Node

    assert spec["task"] == "tiny"  # the node's default task
    node = Node(node_settings(tmp_path, advertise=(spec["advertise"],)), Identity.from_seed(
        bytes.fromhex(spec["identity_seed"])), echo=lambda _: None)
    assert node.swarm == spec["swarm"] and node.identity.pubkey == spec["pubkey"]
    await node.start()
    try:
        yield node, f"http://127.0.0.1:{node._runner.addresses[0][1]}"
    finally:
        await node.stop()


async def test_recorded_exchange_replays_byte_for_byte(tmp_path):
    data = json.loads((VECTORS / "http_exchange.json").read_text(encoding="ascii"))
    from node import VERSION

    assert data["node"]["software"] == VERSION
    async with recorded_node(tmp_path, data["node"]) as (node, base), aiohttp.ClientSession() as session:
        for ex in data["exchanges"]:
            req, want = ex["request"], ex["answer"]
            body = None if req["body"] is None else req["body"].encode("utf-8")
            async with session.request(req["method"], base + req["target"], data=body,
                                       headers=req["headers"]) as resp:
                got = await resp.read()
                assert resp.status == want["status"], (ex["name"], got)
                for name, value in want["headers"].items():
                    assert resp.headers.get(name) == value, (ex["name"], name)
                assert got == want["body"].encode("utf-8"), ex["name"]
                if want["headers"]["Content-Type"].startswith("application/json"):
                    json.loads(got)  # every JSON answer parses
        # X-Ralphswarm-Peer (SPEC.md 10): the sender's address is dialled back once (nothing answers
        # at 127.0.0.1:9) and not learned: no peer at an address that does not answer as one
        address = data["exchanges"][0]["request"]["headers"]["X-Ralphswarm-Peer"]
        deadline = time.monotonic() + 10
        while not node.telemetry.events.get("inbound_refused") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert node.telemetry.events.get("inbound_refused") == 1 and node.peers.get(address) is None


async def test_status_version_is_the_protocol_integer(tmp_path):
    from node import VERSION
    from protocol import PROTOCOL_VERSION

    spec = json.loads((VECTORS / "http_exchange.json").read_text(encoding="ascii"))["node"]
    async with recorded_node(tmp_path, spec) as (node, base), aiohttp.ClientSession() as session:
        async with session.get(base + "/v1/status") as resp:
            st = await resp.json()
    assert st["version"] == PROTOCOL_VERSION == 1 and type(st["version"]) is int
    assert st["software"] == VERSION and isinstance(VERSION, str)


# -- the client reads whole answers (10.5) --------------------------------------------------------

async def test_client_reads_answers_up_to_the_limit_and_refuses_bigger(tmp_path):
    from node.net.http import MAX_ANSWER_BYTES, HttpTransport
    from node.net.transport import PeerMisbehaved

    async def big(request: web.Request) -> web.Response:
        size = int(request.query["size"])
        pad = size - len('{"x":""}')
        return web.Response(body=b'{"x":"' + b"a" * pad + b'"}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/big", big)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with aiohttp.ClientSession() as session:
            transport = HttpTransport(session)
            for size in (100, 3 * 1024 * 1024, MAX_ANSWER_BYTES):
                answer = await transport.request("GET", base, f"/big?size={size}")
                assert len(answer["x"]) == size - 8
            with pytest.raises(PeerMisbehaved, match="too large"):
                await transport.request("GET", base, f"/big?size={MAX_ANSWER_BYTES + 1}")
    finally:
        await runner.cleanup()
