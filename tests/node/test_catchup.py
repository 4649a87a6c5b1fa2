"""Catch-up over real HTTP on loopback: pipelined, from several peers, and robust to hostile ones.

A fresh replica (real SQLite file, the real Gossip over HttpTransport, signatures checked in a real
process pool) catches up from real aiohttp servers. The hostile ones stall mid-fetch, send half a
batch, cut the answer short, send forged envelopes, or never let a reconciliation end: each is
scored down and cut off, the catch-up finishes from the honest peer, and nothing is half-stored.

    .venv/bin/python -m pytest tests/node/test_catchup.py -q
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp
import pytest
from aiohttp import web

from node.net.gossip import Gossip, GossipSettings
from node.net.http import HttpTransport, split_envelopes
from node.net.negentropy import FINGERPRINT_SIZE, INFINITY, MODE_FINGERPRINT, PROTOCOL_VERSION, BoundEncoder, \
    Negentropy, Storage
from node.net.peers import PeerTable
from node.net.transport import PeerMisbehaved
from protocol import Identity, build, decode
from store import Replica, VerifyPool
from tests.messages import claims

SWARM = "public"
ME = "00" * 32
EXCHANGE_S = 1.0  # the fresh side's exchange timeout here (HttpTransport timeout_s); a stall costs this
SETTINGS = GossipSettings(max_batch=32, fetch_batch=32, bulk_at=64, fetch_window=3, catchup_peers=3)
N = 300  # ten batches of 32
PREFIX = 10  # envelopes per answer of the "prefix" holder


class Holder:
    """A real HTTP peer holding ``envs``; ``fetch`` and ``sync`` choose how it answers."""

    def __init__(self, envs, *, fetch: str = "honest", sync: str = "honest", delay_per_id: float = 0.0):
        self.raw = {e.id: e.canonical() for e in envs}
        self.storage = Storage((e.created_at, bytes.fromhex(e.id)) for e in envs)
        self.fetch_mode, self.sync_mode = fetch, sync
        self.delay_per_id = delay_per_id  # a slow link: each answer takes this long per id asked
        self.fetches = 0
        self.sizes: list[int] = []  # ids asked, fetch by fetch
        self.release = asyncio.Event()  # ends stalled handlers at teardown
        self.address: str | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> "Holder":
        app = web.Application()
        app.router.add_post("/v1/sync", self.sync)
        app.router.add_post("/v1/fetch", self.fetch)
        app.router.add_post("/v1/announce", self.announce)
        app.router.add_post("/v1/messages", self.messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.address = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        self.release.set()
        await self._runner.cleanup()

    async def announce(self, request: web.Request) -> web.Response:
        return web.json_response({"want": []})

    async def messages(self, request: web.Request) -> web.Response:
        return web.json_response({"accepted": [], "duplicate": [], "rejected": []})

    async def sync(self, request: web.Request) -> web.Response:
        msg = bytes.fromhex((await request.json())["msg"])
        if self.sync_mode == "forever":
            # Every answer a fingerprint over everything that matches nothing: the client splits
            # its range and asks again, round after round.
            answer = bytes([PROTOCOL_VERSION]) + BoundEncoder().encode((INFINITY, b"")) \
                + bytes([MODE_FINGERPRINT]) + b"\x5a" * FINGERPRINT_SIZE
        else:
            answer = Negentropy(self.storage).reconcile(msg)
        return web.json_response({"msg": answer.hex()})

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        ids = (await request.json())["ids"]
        self.fetches += 1
        self.sizes.append(len(ids))
        if self.delay_per_id:
            await asyncio.sleep(self.delay_per_id * len(ids))
        raws = [self.raw[i] for i in ids if i in self.raw]
        mode = self.fetch_mode
        if mode == "half":  # every other one: ids it listed, left out
            raws = raws[::2]
        elif mode == "prefix":  # an honest answer cut at its cap (SPEC.md 10.2.4): ask again for the rest
            raws = raws[:PREFIX]
        elif mode == "busy" and self.fetches <= 2:  # its byte budget for us is spent, twice
            return web.json_response({"error": "rate limited (bytes)"}, status=429, headers={"Retry-After": "1"})
        elif mode == "forged":
            raws = [json.dumps(json.loads(r) | {"sig": "00" * 64}, separators=(",", ":"), sort_keys=True).encode()
                    for r in raws]
        body = b'{"messages":[' + b",".join(raws) + b"]}"
        if mode in ("stall", "truncated"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            if mode == "truncated":
                request.transport.close()
            else:
                await self.release.wait()
            return resp
        return web.Response(body=body, content_type="application/json")


async def fresh_node(tmp_path, addresses, *, pool: VerifyPool | None = None, settings: GossipSettings = SETTINGS,
                     timeout_s: float = EXCHANGE_S):
    replica = await Replica.open(tmp_path / "fresh.sqlite3", swarm=SWARM, self_key=ME)
    session = aiohttp.ClientSession()
    peers = PeerTable()
    for a in addresses:
        peers.add(a)
    lines: list[str] = []
    g = Gossip(replica, HttpTransport(session, timeout_s=timeout_s), peers, own_key=ME, settings=settings,
               verifier=pool, on_progress=lines.append)
    return g, replica, session, lines


async def stored_exactly(replica: Replica, envs) -> None:
    """Every message stored whole (its canonical bytes, decoding as valid), and nothing else."""
    counts = await replica.counts()
    assert sum(counts.values()) == len(envs)
    raws = await replica.get_many_raw([e.id for e in envs])
    assert raws == [e.canonical() for e in envs]
    for raw in raws[:20]:
        decode(raw, swarm=SWARM)


@pytest.fixture
def corpus():
    return claims(N, seed=11)


async def test_catch_up_from_two_honest_peers_fetches_from_both(tmp_path, corpus):
    a, b = await Holder(corpus).start(), await Holder(corpus).start()
    pool = VerifyPool(workers=2, min_batch=8)  # every batch here, the last one's 12 too
    g, replica, session, lines = await fresh_node(tmp_path, [a.address, b.address], pool=pool)
    try:
        result = await asyncio.wait_for(g.sync_with(a.address), 60)
        assert result.need == N and result.fetched == N
        await stored_exactly(replica, corpus)
        assert a.fetches > 0 and b.fetches > 0  # both peers served batches
        assert a.fetches + b.fetches == -(-N // SETTINGS.fetch_batch)  # each id asked once
        assert pool.verified == N  # every signature checked in the pool
        progress = g.catchup_json()
        assert progress["active"] is False and progress["stored"] == N and progress["failed"] == 0
        assert sorted(progress["peers"]) == sorted([a.address, b.address]) and progress["cut_off"] == []
        assert lines and lines[-1].startswith(f"done: {N}/{N} messages from 2 peer(s)")
        assert g.pending() == 0  # old messages learned by reconciliation are not announced onwards
    finally:
        await session.close()
        await replica.close()
        pool.close()
        await a.stop()
        await b.stop()


async def test_fetches_from_a_peer_that_answers_fast_grow_to_the_largest_batch(tmp_path, corpus):
    # Every answer here comes well within half of fetch_slow_s, however loaded the machine.
    settings = GossipSettings(max_batch=16, fetch_batch=128, fetch_slow_s=30.0, bulk_at=64, fetch_window=3)
    holder = await Holder(corpus).start()
    g, replica, session, _ = await fresh_node(tmp_path, [holder.address], settings=settings)
    try:
        result = await asyncio.wait_for(g.sync_with(holder.address), 30)
        assert result.fetched == N
        await stored_exactly(replica, corpus)
        # the first window asks max_batch each; a full batch answered fast doubles the next ones:
        # 3 x 16, then 32, 64, and 128 (the cap) for the rest
        assert holder.sizes[:3] == [16, 16, 16] and max(holder.sizes) == 128
        assert holder.sizes[3:6] == [32, 64, 128] and sum(holder.sizes) == N  # each id asked once
        assert g.fetcher.batch_size(holder.address) == 128
    finally:
        await session.close()
        await replica.close()
        await holder.stop()


async def test_a_slow_peer_is_asked_for_smaller_batches_and_not_cut_off(tmp_path, corpus):
    # 20 ms an id: 32 ids take 0.64 s, over fetch_slow_s (0.25 s): halved until an answer is not slow
    # (8 ids: 0.16 s), never grown back past what was slow (16 ids: 0.32 s, growth needs under 0.125);
    # each answer far inside the 5 s timeout.
    settings = GossipSettings(max_batch=32, fetch_batch=256, fetch_slow_s=0.25, bulk_at=64, fetch_window=3)
    holder = await Holder(corpus, delay_per_id=0.02).start()
    g, replica, session, _ = await fresh_node(tmp_path, [holder.address], settings=settings, timeout_s=5.0)
    try:
        result = await asyncio.wait_for(g.sync_with(holder.address), 60)
        assert result.fetched == N
        await stored_exactly(replica, corpus)
        assert holder.sizes[:3] == [32, 32, 32] and max(holder.sizes) == 32
        assert holder.sizes[3:6] == [16, 16, 16]  # halved once for the window's three slow answers
        assert g.fetcher.batch_size(holder.address) <= 8 and holder.sizes[-1] <= 8
        assert g.catchup_json()["cut_off"] == [] and g.peers.get(holder.address).score > 0
    finally:
        await session.close()
        await replica.close()
        await holder.stop()


@pytest.mark.parametrize("mode", ["stall", "half", "truncated", "forged"])
async def test_a_hostile_fetch_is_cut_off_and_the_catch_up_finishes_from_the_honest_peer(tmp_path, corpus, mode):
    hostile, honest = await Holder(corpus, fetch=mode).start(), await Holder(corpus).start()
    g, replica, session, lines = await fresh_node(tmp_path, [hostile.address, honest.address])
    try:
        # The hostile peer is reconciled with first, so it gets the first batches to fetch.
        result = await asyncio.wait_for(g.sync_with(hostile.address), 4 * EXCHANGE_S + 30)
        assert result.need == N
        await stored_exactly(replica, corpus)
        bad = g.peers.get(hostile.address)
        assert bad.score < 0 and bad.last_error
        # Broke the protocol: cooled off. Did not answer in time, or dropped the connection: only
        # cut off from this catch-up (a busy honest peer looks the same), scored as a timeout.
        cooling = g.peers.active(g.clock()) == [g.peers.get(honest.address)]
        assert cooling == (mode in ("half", "forged")), mode
        progress = g.catchup_json()
        assert progress["cut_off"] == [hostile.address] and progress["stored"] == N and progress["failed"] == 0
        assert hostile.fetches <= SETTINGS.fetch_window  # nothing more asked of it once it failed
        assert f"cut off {hostile.address}" in lines[-1]
    finally:
        await session.close()
        await replica.close()
        await hostile.stop()
        await honest.stop()


@pytest.mark.parametrize("mode", ["prefix", "busy"])
async def test_a_peer_that_answers_a_prefix_or_asks_to_wait_is_asked_again_not_cut_off(tmp_path, corpus, mode):
    holder = await Holder(corpus, fetch=mode).start()
    g, replica, session, _ = await fresh_node(tmp_path, [holder.address])
    try:
        result = await asyncio.wait_for(g.sync_with(holder.address), 30)
        assert result.fetched == N
        await stored_exactly(replica, corpus)
        peer = g.peers.get(holder.address)
        assert peer.cooling_until == 0 and peer.score > 0 and g.catchup_json()["cut_off"] == []
        if mode == "prefix":
            assert holder.fetches >= N // PREFIX
    finally:
        await session.close()
        await replica.close()
        await holder.stop()


async def test_a_peer_that_never_ends_reconciliation_is_cut_off_and_another_serves(tmp_path, corpus):
    hostile, honest = await Holder(corpus, sync="forever").start(), await Holder(corpus).start()
    g, replica, session, _ = await fresh_node(tmp_path, [hostile.address, honest.address])
    try:
        with pytest.raises(PeerMisbehaved, match="did not converge"):
            await asyncio.wait_for(g.sync_with(hostile.address), 30)
        assert g.peers.get(hostile.address).score < 0
        assert g.peers.active(g.clock()) == [g.peers.get(honest.address)]
        result = await asyncio.wait_for(g.sync_random(), 30)  # only the honest peer is left to pick
        assert result.peer == honest.address and result.fetched == N
        await stored_exactly(replica, corpus)
    finally:
        await session.close()
        await replica.close()
        await hostile.stop()
        await honest.stop()


async def test_only_hostile_holders_store_nothing_half_and_give_the_ids_up(tmp_path, corpus):
    hostile = await Holder(corpus, fetch="forged").start()
    g, replica, session, _ = await fresh_node(tmp_path, [hostile.address])
    try:
        result = await asyncio.wait_for(g.sync_with(hostile.address), 30)
        assert result.need == N and result.fetched == 0
        assert sum((await replica.counts()).values()) == 0
        assert g.catchup_json()["failed"] == N and g.fetcher.pending() == 0
    finally:
        await session.close()
        await replica.close()
        await hostile.stop()


def test_split_envelopes_cuts_exactly_between_canonical_envelopes():
    envs = claims(5, seed=12)
    # a note that quotes the separator is escaped inside its string, so it cannot cut
    tricky = build(Identity.from_seed(b"\x01" * 32), SWARM, "claim",
                   dict(envs[0].body, note='},{"author":"' + "a" * 64 + '"'), created_at=1_700_000_000)
    raws = [e.canonical() for e in envs] + [tricky.canonical()]
    assert split_envelopes(b'{"messages":[' + b",".join(raws) + b"]}") == raws
    assert split_envelopes(b'{"messages":[' + raws[0] + b"]}") == raws[:1]
    assert split_envelopes(b'{"messages":[]}') == []
    # anything else is parsed as JSON instead
    assert split_envelopes(b'{"messages": []}') is None
    assert split_envelopes(b'{"messages":[' + raws[0] + b"]") is None
    assert split_envelopes(b'{"messages":[1,2]}') is None


async def test_a_node_joining_a_holder_catches_up_in_the_pool_and_shows_its_progress(tmp_path):
    """Two real in-process nodes (node/daemon.py): the joining one fetches, verifies in its pool,
    prints progress, exposes it in /api/stats and /metrics, and announces none of it onwards."""
    from prometheus_client.parser import text_string_to_metric_families

    from node.daemon import Node
    from node.settings import NetworkSettings, NodeSettings

    bulk_at = GossipSettings().bulk_at  # the node's default
    corpus = claims(2 * bulk_at + 100, seed=13)  # a bulk catch-up
    nodes, lines = [], []
    try:
        holder = Node(NodeSettings(home=tmp_path / "holder", network=NetworkSettings(port=0, lan=False),
                                   ralph=False, reproduce=False, device="cpu"), Identity.generate(), echo=lambda _: None)
        nodes.append(holder)
        await holder.start()
        report = await holder.replica.ingest([e.canonical() for e in corpus])
        assert len(report.accepted) == len(corpus)
        # It advertises an address nobody answers at, so the holder cannot greet it and push it the
        # corpus first (a race the fetch usually wins): this test is about the fetch.
        fresh = Node(NodeSettings(home=tmp_path / "fresh", network=NetworkSettings(
                                      port=0, lan=False, bootstrap=(holder.address,), advertise=("http://127.0.0.1:9",)),
                                  ralph=False, reproduce=False, device="cpu"), Identity.generate(), echo=lines.append)
        nodes.append(fresh)
        await fresh.start()
        deadline = asyncio.get_running_loop().time() + 60  # a few seconds' work; generous for a busy machine
        while (await fresh.replica.counts())["claim"] < len(corpus):
            assert asyncio.get_running_loop().time() < deadline, fresh.stats_json()["catchup"]
            await asyncio.sleep(0.05)
        while fresh.stats_json()["catchup"]["active"]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        stats = fresh.stats_json()
        assert stats["catchup"]["stored"] >= len(corpus) and stats["catchup"]["failed"] == 0
        assert fresh.gossip.verifier.verified >= len(corpus) - fresh.gossip.verifier.min_batch  # in the pool
        assert any(line.startswith(f"done: {len(corpus) + 2}/{len(corpus) + 2} messages from 1 peer(s)")
                   for line in lines), lines  # the claims, the holder's task and peer record
        assert stats["gossip"]["announced"] < len(corpus) // 10  # old news is not relayed
        async with aiohttp.ClientSession() as session:
            port = fresh._runner.addresses[0][1]  # where it listens (it advertises another address)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
        samples = {(s.name, tuple(s.labels.items())): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples[("ralphswarm_catchup_messages", (("state", "stored"),))] >= len(corpus)
        assert samples[("ralphswarm_catchup_messages", (("state", "remaining"),))] == 0
        assert samples[("ralphswarm_catchup_active", ())] == 0
        # ... and `ralphswarm status` says so, in words and in JSON (the runtime file the `node`
        # command writes for an in-process node: where it really listens)
        (tmp_path / "fresh" / "node.json").write_text(json.dumps(
            {"address": f"http://127.0.0.1:{port}", "pid": os.getpid(), "swarm": fresh.swarm, "swarm_key_file": None}))
        for args, want in ((["status"], f"catchup done: {stats['catchup']['stored']}/"),
                           (["status", "--json"], '"catchup": {')):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "node.cli", *args, "--home", str(tmp_path / "fresh"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0 and want in out.decode(), (out, err)
        # The holder will not reconcile with it in turn (it just did the work), and a header naming
        # an address at another IP than the request's is not believed.
        assert (await holder.gossip.sync_with("http://127.0.0.1:9")).rounds == 0
        async with aiohttp.ClientSession() as session:
            async with session.post(holder.address + "/v1/sync", json={"msg": "61"},
                                    headers={"X-Ralphswarm-Peer": "http://192.0.2.7:7447"}) as resp:
                assert resp.status == 200
        assert "http://192.0.2.7:7447" not in holder.gossip._reconciled_by
    finally:
        for n in reversed(nodes):
            await n.stop()
