"""Who enters the peer table (node/net/admission.py; issue 17 item 5), on real in-process nodes on
loopback: an X-Ralphswarm-Peer address is dialled back and its key checked first; a flood of fresh-key
peer records plants at most max_per_origin addresses, at most max_per_author per key; non-public
ranges are refused on a public node (checked without dialling them).

    .venv/bin/python -m pytest tests/node/test_peer_admission.py -q
"""
from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from node.daemon import Node
from node.net.admission import Admission, AdmissionSettings, host_of, is_public_host
from node.settings import NetworkSettings, NodeSettings
from protocol import Identity, build

SLACK_S = 10.0


async def _node(tmp_path, name, swarm="public") -> Node:
    settings = NodeSettings(home=tmp_path / name, swarm=swarm, network=NetworkSettings(port=0, lan=False),
                            ralph=False, reproduce=False, device="cpu")
    n = Node(settings, Identity.generate(), echo=lambda _: None)
    await n.start()
    return n


async def _status_with_header(node: Node, claimed: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(node.address + "/v1/status", headers={"X-Ralphswarm-Peer": claimed}) as resp:
            assert resp.status == 200


async def _until(cond, timeout: float = SLACK_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_inbound_address_is_dialled_back_and_checked(tmp_path):
    a, b, other = await _node(tmp_path, "a"), await _node(tmp_path, "b"), await _node(tmp_path, "o", swarm="lab")
    try:
        assert a.admission.allow_private  # a node on loopback is a local swarm
        dead = f"http://127.0.0.1:{_free_port()}"
        await _status_with_header(a, dead)
        await _status_with_header(a, other.address)  # answers, but in another swarm
        assert await _until(lambda: a.telemetry.events.get("inbound_refused", 0) == 2)
        assert dead not in a.peers and other.address not in a.peers
        await _status_with_header(a, b.address)
        assert await _until(lambda: b.address in a.peers)
        assert a.peers.get(b.address).pubkey == b.identity.pubkey and a.peers.get(b.address).source == "inbound"
        # the node's own address never enters, and a malformed one is not dialled
        await _status_with_header(a, a.address)
        await _status_with_header(a, "http://127.0.0.1:1/x?y")
        await asyncio.sleep(0.3)
        assert a.address not in a.peers and not a._inbound
        assert a.admission.counters.get("refused_malformed") == 1
        # an address at another IP than the request's: never dialled (a stranger makes the node dial
        # nobody but itself); b at 127.0.0.1 named by a client at 127.0.0.2 is not taken either
        await _status_with_header(a, f"http://127.0.0.5:{_free_port()}")
        c = await _node(tmp_path, "c")
        try:
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(a.address + "/v1/status", headers={"X-Ralphswarm-Peer": c.address}) as resp:
                    assert resp.status == 200
            await asyncio.sleep(0.3)
            assert c.address not in a.peers and not a._inbound
            assert a.admission.counters.get("refused_not_sender") == 2
            assert a.telemetry.events.get("inbound_refused") == 2  # the two dialled earlier, no more
        finally:
            await c.stop()
    finally:
        for n in (a, b, other):
            await n.stop()


async def test_a_public_node_refuses_non_public_ranges_without_dialling(tmp_path):
    a = await _node(tmp_path, "a")
    try:
        a.admission.allow_private = False  # as on a node listening on a public address without --lan
        for address in ("http://127.0.0.1:7447", "http://10.1.2.3:7447", "http://192.168.0.9:7447",
                        "http://169.254.1.1:7447", "http://[::1]:7447", "http://[fe80::1]:7447",
                        "http://localhost:7447", "http://printer.local:7447", "http://0.0.0.0:7447"):
            await _status_with_header(a, address)
        assert not a._inbound and len(a.peers) == 0
        assert a.admission.counters.get("refused_range") == 9
        assert a.telemetry.events.get("inbound_refused") is None  # none dialled
    finally:
        await a.stop()


async def test_a_flood_of_fresh_key_records_plants_a_handful(tmp_path):
    a = await _node(tmp_path, "a")
    try:
        now = int(time.time())
        records = []
        for i in range(40):
            key = Identity.from_seed(bytes([i + 1]) * 32)
            records.append(build(key, "public", "peer", {
                "addresses": [f"http://127.0.{i}.{j + 1}:7447" for j in range(8)], "expires_at": now + 3600},
                created_at=now))
        body = b'{"messages":[' + b",".join(r.canonical() for r in records) + b"]}"
        async with aiohttp.ClientSession() as session:
            async with session.post(a.address + "/v1/messages", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                report = await resp.json()
        assert len(report["accepted"]) == 40
        s = a.admission.settings
        planted = [p for p in a.peers.all() if p.source == "exchange"]
        assert 0 < len(planted) <= s.max_per_origin
        per_author = {}
        for p in planted:
            per_author[p.pubkey] = per_author.get(p.pubkey, 0) + 1
        assert max(per_author.values()) <= s.max_per_author
    finally:
        await a.stop()


def test_addresses_and_ranges():
    assert host_of("http://1.2.3.4:7447") == "1.2.3.4" and host_of("http://[2001:db8::1]:80") == "2001:db8::1"
    for bad in ("https://1.2.3.4:1", "http://1.2.3.4", "http://1.2.3.4:99999", "http://u@1.2.3.4:1",
                "http://1.2.3.4:1/path", "ftp://x:1", 5, "http://" + "a" * 300 + ":1"):
        assert host_of(bad) is None, bad
    assert is_public_host("8.8.8.8") and is_public_host("seed.example.org")
    for local in ("127.0.0.1", "10.0.0.1", "172.16.5.5", "192.168.1.1", "169.254.0.1", "100.64.0.1", "::1",
                  "fe80::1", "fc00::1", "::ffff:10.0.0.1", "224.0.0.1", "0.0.0.0", "localhost", "x.local", "nas"):
        assert not is_public_host(local), local
    adm = Admission(allow_private=False, settings=AdmissionSettings(max_per_author=2, max_per_origin=3))
    assert adm.from_record("http://8.8.8.8:1", "k1", "o", 0)
    assert not adm.from_record("http://8.8.4.4:1", "k1", "o", 2)  # the author has 2 already
    assert adm.from_record("http://8.8.4.4:1", "k2", "o", 0) and adm.from_record("http://1.1.1.1:1", "k3", "o", 0)
    assert not adm.from_record("http://9.9.9.9:1", "k4", "o", 0)  # a 4th from one origin
    assert adm.from_record("http://9.9.9.9:1", "k4", "p", 0)  # another origin has its own share
    later = time.monotonic() + adm.settings.origin_window_s + 1
    assert adm.from_record("http://9.9.9.9:1", "k4", "o", 0, now=later)  # a new window, a new share
