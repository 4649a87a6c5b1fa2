"""Bounded answers and sources (issue 17 item 2): /v1/fetch streams under a byte cap per request and per
address, with bounded memory; a claim's rebuilt source is bounded in depth and size; the source cache in
bytes; a claim whose ancestor is missing waits for it. Real replicas, a real node on loopback.

    .venv/bin/python -m pytest tests/node/test_bounded_answers.py -q
"""
from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import aiohttp
import pytest

from node.corpus import MissingAncestor, ReplicaCorpus, SourceError, TaskBook
from node.daemon import Node
from node.net import api
from node.settings import NetworkSettings, NodeSettings
from protocol import Identity, build
from store import Replica
from tests.messages import claim, result
from trainer.patches import make_patch, source_sha256

AUTHOR = Identity.from_seed(b"\x41" * 32)


@pytest.fixture
async def node(tmp_path):
    settings = NodeSettings(home=tmp_path / "n", network=NetworkSettings(port=0, lan=False), ralph=False,
                            reproduce=False, device="cpu")
    n = Node(settings, Identity.generate(), echo=lambda _: None)
    await n.start()
    yield n
    await n.stop()


async def _big_claims(node: Node, count: int, size: int = 60_000, seed: int = 0) -> list[str]:
    envs = []
    for n in range(count):
        env = claim(AUTHOR, n=seed * 100_000 + n)
        body = {**env.body, "patch": env.body["patch"] + "+# " + "x" * size + "\n"}
        envs.append(build(AUTHOR, "public", "claim", body, created_at=env.created_at))
    for i in range(0, count, 200):
        report = await node.gossip.ingest([e.canonical() for e in envs[i:i + 200]])
        assert len(report.accepted) == len(envs[i:i + 200]), report.rejected[:1]
    return [e.id for e in envs]


async def _fetch(session, node, ids) -> tuple[int, bytes, dict]:
    async with session.post(node.address + "/v1/fetch", data=json.dumps({"ids": ids}).encode(),
                            headers={"Content-Type": "application/json"}) as resp:
        size, chunks = 0, []
        async for chunk in resp.content.iter_chunked(65536):
            chunks.append(chunk)
        return resp.status, b"".join(chunks), dict(resp.headers)


@pytest.mark.slow  # ~20 MB of claims signed, stored and served
async def test_fetch_streams_under_the_cap_in_bounded_memory(node):
    ids = await _big_claims(node, 320)  # ~19.5 MB stored
    async with aiohttp.ClientSession() as session:
        status, raw, headers = await _fetch(session, node, ids)
        # again, the client counting bytes and keeping none: the peak is what the node held
        tracemalloc.start()
        try:
            async with session.post(node.address + "/v1/fetch", data=json.dumps({"ids": ids}).encode()) as resp:
                streamed = 0
                async for chunk in resp.content.iter_chunked(65536):
                    streamed += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    assert len(raw) <= api.MAX_FETCH_ANSWER_BYTES and streamed == len(raw)
    got = [m["id"] for m in json.loads(raw)["messages"]]
    assert got == ids[:len(got)] and len(raw) > api.MAX_FETCH_ANSWER_BYTES - 70_000  # cut where the next would pass
    # the node built no answer in memory: a few chunks of envelopes and socket buffers, not 16 MiB
    assert peak < 4 * 1024 * 1024, peak
    assert node.telemetry.events.get("fetch_answer_cut") == 2


@pytest.mark.slow
async def test_fetch_bytes_per_address_are_limited(node):
    ids = await _big_claims(node, 280)  # a ~16 MiB answer
    served, t0 = 0, time.monotonic()
    async with aiohttp.ClientSession() as session:
        for _ in range(12):  # 12 x 16 MiB is far past the 64 MiB burst
            status, raw, headers = await _fetch(session, node, ids)
            if status == 429:
                break
            served += len(raw)
    elapsed = time.monotonic() - t0
    assert status == 429 and int(headers["Retry-After"]) >= 1
    # never more than the burst, the refill over the time taken, and one answer's overshoot of a message
    assert served <= api.FETCH_PEER_BURST_BYTES + api.FETCH_PEER_RATE_BPS * elapsed + 300_000
    assert served >= api.FETCH_PEER_BURST_BYTES * 0.9
    assert node.telemetry.events.get("fetch_bytes_limited", 0) >= 1


async def test_fetch_answer_is_the_stored_ones_in_order(node):
    ids = await _big_claims(node, 20, size=1000)
    async with aiohttp.ClientSession() as session:
        status, raw, _ = await _fetch(session, node, [ids[3], "00" * 32, ids[1], ids[3], ids[19]])
        assert status == 200
        assert [m["id"] for m in json.loads(raw)["messages"]] == [ids[3], ids[1], ids[19]]
        status, raw, _ = await _fetch(session, node, ["00" * 32])
        assert status == 200 and json.loads(raw) == {"messages": []}


# -- sources ---------------------------------------------------------------------------------------

async def _replica_with_task(tmp_path):
    replica = await Replica.open(tmp_path / "r.sqlite3", swarm="public", self_key="ee" * 32)
    book = TaskBook(replica)
    task = book.registry.resolve("tiny")
    return replica, book, task


async def _chain(replica, task, links: int, grow: int = 0, skip: int | None = None) -> list[str]:
    """A lineage of ``links`` claims on ``task``, each adding ``grow`` bytes; ``skip``: that link is
    built but not stored (a missing ancestor)."""
    source, parent, ids = task.source, None, []
    for n in range(links):
        # short lines after a long one, so the patch's context lines are short
        new = source + f"# link {n}{' ' + 'y' * grow if grow else ''}\n" + ("#\n#\n#\n" if grow else "")
        body = {"task": task.id, "parent": parent, "patch": make_patch(source, new), "source_sha256": source_sha256(new),
                "note": f"link {n}", "outcome": "improved", "result": result("1.400000")}
        env = build(AUTHOR, "public", "claim", body, created_at=1_700_000_000 + n)
        if n != skip:
            report = await replica.ingest([env.canonical()])
            assert report.accepted, report.rejected
        source, parent = new, env.id
        ids.append(env.id)
    return ids


async def test_source_depth_and_size_are_bounded(tmp_path, monkeypatch):
    replica, book, task = await _replica_with_task(tmp_path)
    try:
        corpus = ReplicaCorpus(replica, book, "ee" * 32)
        ids = await _chain(replica, task, 12)
        assert (await corpus.source_of(ids[-1])).endswith("# link 11\n")
        # a lineage one link deeper than the bound is refused without building (fresh corpus: no cache)
        monkeypatch.setattr(ReplicaCorpus, "MAX_CHAIN_DEPTH", 11)
        fresh = ReplicaCorpus(replica, book, "ee" * 32)
        with pytest.raises(SourceError, match="deeper than 11 links"):
            await fresh.source_of(ids[-1])
        assert fresh.cache_bytes == 0  # nothing was built
        assert (await fresh.source_of(ids[10])).endswith("# link 10\n")  # 11 links: within the bound
        # a source that grows past the byte bound: refused at the link that passes it
        monkeypatch.setattr(ReplicaCorpus, "MAX_CHAIN_DEPTH", 1024)
        big = await _chain(replica, task, 12, grow=30_000)
        limit = len(task.source.encode()) + 8 * 30_026
        monkeypatch.setattr(ReplicaCorpus, "MAX_SOURCE_BYTES", limit)
        with pytest.raises(SourceError, match="is over"):
            await ReplicaCorpus(replica, book, "ee" * 32).source_of(big[-1])
        assert len((await ReplicaCorpus(replica, book, "ee" * 32).source_of(big[6])).encode()) <= limit
    finally:
        await replica.close()


async def test_source_cache_is_bounded_in_bytes(tmp_path, monkeypatch):
    replica, book, task = await _replica_with_task(tmp_path)
    try:
        ids = await _chain(replica, task, 40, grow=10_000)  # sources from ~task size to ~400 KB, ~8 MB in all
        monkeypatch.setattr(ReplicaCorpus, "MAX_CACHE_BYTES", 2 * 1024 * 1024)
        corpus = ReplicaCorpus(replica, book, "ee" * 32)
        for claim_id in ids:
            await corpus.source_of(claim_id)
            assert corpus.cache_bytes <= ReplicaCorpus.MAX_CACHE_BYTES
        total = sum(len(s.encode()) for s in corpus._sources.values())
        assert total == corpus.cache_bytes and 0 < total <= 2 * 1024 * 1024
        assert ids[-1] in corpus._sources and ids[0] not in corpus._sources  # least recently used went first
        assert (await corpus.source_of(ids[0])).endswith("# link 0 " + "y" * 10_000 + "\n#\n#\n#\n")  # rebuilt again
    finally:
        await replica.close()


async def test_a_missing_ancestor_is_a_wait_not_a_failure(tmp_path):
    replica, book, task = await _replica_with_task(tmp_path)
    try:
        ids = await _chain(replica, task, 5, skip=2)
        corpus = ReplicaCorpus(replica, book, "ee" * 32)
        with pytest.raises(MissingAncestor) as err:
            await corpus.source_of(ids[4])
        assert err.value.ancestor == ids[2]
    finally:
        await replica.close()


@pytest.mark.slow  # 32 MiB of bodies parsed
async def test_request_bytes_per_address_are_limited(node):
    # bodies of 8 MiB (the largest a request may be) from one address: past the burst, 429 with
    # Retry-After, before the body is read; the request-rate bucket alone would never have fired
    body = b'{"messages":[' + b" " * (api.MAX_BODY_BYTES - 16) + b"]}"
    assert len(body) <= api.MAX_BODY_BYTES
    sent, t0 = 0, time.monotonic()
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            async with session.post(node.address + "/v1/messages", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                status, headers = resp.status, dict(resp.headers)
            if status == 429:
                break
            assert status == 200
            sent += len(body)
    elapsed = time.monotonic() - t0
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert api.BODY_PEER_BURST_BYTES - len(body) < sent <= api.BODY_PEER_BURST_BYTES + api.BODY_PEER_RATE_BPS * elapsed
    assert node.telemetry.events.get("body_bytes_limited") == 1
    assert "rate_limited" not in node.telemetry.events


async def test_ids_looked_up_per_address_are_limited(node):
    """A prober asking for ids that are not stored spends no answer bytes, but each 1,000-id fetch
    costs lookups and parsing: past LOOKUP_PEER_BURST ids it is refused with 429 and Retry-After, from
    the body's length before the body is read; what was looked up stays within the burst and the
    refill over the time taken."""
    stored = await _big_claims(node, 3, size=100)
    probe = [f"{n:064x}" for n in range(1000)]
    looked, t0 = 0, time.monotonic()
    async with aiohttp.ClientSession() as session:
        for _ in range(3 * api.LOOKUP_PEER_BURST // len(probe)):
            status, raw, headers = await _fetch(session, node, probe)
            if status == 429:
                break
            assert json.loads(raw) == {"messages": []}
            looked += len(probe)
        elapsed = time.monotonic() - t0
        assert status == 429 and int(headers["Retry-After"]) >= 1 and b"ids looked up" in raw
        assert api.LOOKUP_PEER_BURST - len(probe) <= looked <= api.LOOKUP_PEER_BURST + api.LOOKUP_PEER_RATE * elapsed
        assert node.telemetry.events.get("fetch_lookups_limited") == 1
        # a small fetch after a pause within the refill is answered
        await asyncio.sleep(len(stored) / api.LOOKUP_PEER_RATE + 0.01)
        status, raw, _ = await _fetch(session, node, stored)
        assert status == 200 and [m["id"] for m in json.loads(raw)["messages"]] == stored
