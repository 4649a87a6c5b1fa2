"""The gossip core over the in-memory transport, and its pure parts (peer table, rate limiter).

    .venv/bin/python -m pytest tests/node/test_gossip.py -q
"""
from __future__ import annotations

import random

import pytest

from node.net.gossip import Gossip, GossipSettings
from node.net.peers import PeerTable, ScoreSettings
from node.net.ratelimit import RateLimiter, RateSettings
from node.net.transport import PeerUnavailable
from node.net.memory import MemNetwork, MemoryStore
from protocol import Identity
from tests.messages import claims

SWARM = "public"


def make_net(n: int, *, full: bool = True, seed: int = 0, settings: GossipSettings | None = None):
    net = MemNetwork()
    rng = random.Random(seed)
    gossips = []
    for i in range(n):
        addr = f"mem://{i}"
        g = Gossip(MemoryStore(SWARM), net.transport(addr), PeerTable(self_addresses={addr}),
                   own_key=f"{i:064x}", settings=settings or GossipSettings(fanout=3), rng=random.Random(rng.random()),
                   clock=lambda: 1000.0)
        net.nodes[addr] = g
        gossips.append(g)
    for i, g in enumerate(gossips):
        for j in range(n):
            if j != i and (full or abs(i - j) == 1):
                g.peers.add(f"mem://{j}")
    return net, gossips


async def rounds_until(gossips, ids, limit=50):
    for r in range(1, limit + 1):
        batches = [(g, g.take_outbox()) for g in gossips]
        for g, batch in batches:
            if batch:
                await g.push_batch(batch)
        if all(all(i in g.store for i in ids) for g in gossips):
            return r
    return None


async def test_push_reaches_every_node_and_bodies_are_sent_about_once():
    # the node's fanout (6): pushes alone reach all 12 (at fanout 3, about half the seeds of make_net
    # leave a node without one of the 5 messages until a pull; none of 300 does at 6)
    net, gossips = make_net(12, settings=GossipSettings())
    envs = claims(5, seed=1)
    await gossips[0].ingest([e.canonical() for e in envs])
    r = await rounds_until(gossips, [e.id for e in envs])
    assert r is not None and r <= 6
    # announce-then-send: each node receives each body exactly once, not once per announcer
    assert sum(g.stats.sent for g in gossips) == 5 * 11
    assert net.stats.by_kind["announce"] > net.stats.by_kind["send"]


async def test_chain_propagates_hop_by_hop_and_duplicates_are_not_relayed_again():
    net, gossips = make_net(6, full=False)
    envs = claims(3, seed=2)
    await gossips[0].ingest([e.canonical() for e in envs])
    assert await rounds_until(gossips, [e.id for e in envs]) == 5
    calls = net.stats.calls
    await gossips[0].ingest([e.canonical() for e in envs])  # duplicates: nothing new to relay
    assert gossips[0].pending() == 0 and await rounds_until(gossips, [e.id for e in envs]) == 1
    assert net.stats.calls == calls


async def test_pull_reconciliation_heals_a_node_that_missed_the_push():
    net, gossips = make_net(4)
    net.offline.add("mem://3")
    envs = claims(20, seed=3)
    await gossips[0].ingest([e.canonical() for e in envs])
    await rounds_until(gossips[:3], [e.id for e in envs])
    assert not any(e.id in gossips[3].store for e in envs)
    net.offline.clear()
    result = await gossips[3].sync_with("mem://1")
    assert result.need == 20 and result.fetched == 20 and result.have == 0
    assert all(e.id in gossips[3].store for e in envs)
    again = await gossips[3].sync_with("mem://2")
    assert again.rounds == 1 and again.need == again.have == 0


async def test_sync_sends_what_the_peer_lacks():
    net, gossips = make_net(2)
    mine = claims(7, seed=4)
    await gossips[0].store.ingest([e.canonical() for e in mine])  # stored without pushing
    result = await gossips[0].sync_with("mem://1")
    assert result.have == 7
    assert all(e.id in gossips[1].store for e in mine)


async def test_announce_wants_only_missing_and_not_already_promised():
    _, gossips = make_net(3)
    envs = claims(2, seed=5)
    await gossips[0].store.ingest([envs[0].canonical()])
    want = await gossips[0].handle_announce([envs[0].id, envs[1].id], "mem://1")
    assert want == [envs[1].id]
    assert await gossips[0].handle_announce([envs[1].id], "mem://2") == []  # promised by mem://1


async def test_invalid_messages_cool_a_peer_off():
    _, gossips = make_net(2)
    g = gossips[0]
    forged = [e.to_dict() | {"sig": "00" * 64} for e in claims(3, seed=6)]
    good = claims(1, seed=7)[0]
    # the memory store skips signatures, so forge the id instead: every one is rejected
    bad = [dict(f, id="11" * 32) for f in forged]
    await g.ingest(bad, origin="mem://1")
    peer = g.peers.get("mem://1")
    assert peer.score < 0 and peer.last_error.startswith("invalid: bad id")
    await g.ingest(bad, origin="mem://1")
    assert g.peers.active(1000.0) == [] and peer.cooling_until > 1000.0
    await g.ingest([good.canonical()])
    assert await g.flush() == 0  # nobody to push to while the only peer cools off


def test_peer_table_scoring_cooling_and_recovery():
    table = PeerTable(ScoreSettings(floor=-4, cooling_s=60), self_pubkey="aa" * 32, self_addresses={"http://me:1"})
    assert table.add("http://me:1") is None and table.add("http://x:1", pubkey="aa" * 32) is None
    p = table.add("http://p:1")
    table.record("http://p:1", "ok", now=0)
    assert p.score == 1 and p.last_contact == 0
    for t in range(3):
        table.record("http://p:1", "timeout", now=t)
    assert p.cooling_until == 62 and table.active(61) == [] and table.active(62) == [p]
    assert p.score == -2.0  # back on probation, not forgiven


def test_peer_table_is_bounded():
    table = PeerTable(max_peers=3)
    for i in range(5):
        table.add(f"http://p:{i}")
        table.record(f"http://p:{i}", "ok", now=i)
    assert len(table) == 3


def test_rate_limiter_bucket():
    rl = RateLimiter(RateSettings(rate=10, burst=5))
    assert all(rl.take("a", 0.0) == 0 for _ in range(5))
    wait = rl.take("a", 0.0)
    assert wait == pytest.approx(0.1)
    assert rl.take("b", 0.0) == 0  # per client
    assert rl.take("a", 0.2) == 0  # refilled


async def test_offline_peer_counts_as_timeout():
    net, gossips = make_net(2)
    net.offline.add("mem://1")
    with pytest.raises(PeerUnavailable):
        await gossips[0].sync_with("mem://1")
    assert gossips[0].peers.get("mem://1").last_error == "offline"


async def test_push_to_an_offline_target_goes_to_another_peer_now_and_to_it_again_later():
    settings = GossipSettings(fanout=1, push_retries=2)
    net, gossips = make_net(4, settings=settings)
    g = gossips[0]
    env = claims(1, seed=8)[0]
    await g.ingest([env.canonical()], origin=None)  # not its own: announced to fanout = 1 peer
    batch = g.take_outbox()
    first = g.rng.getstate()
    chosen = random.Random()
    chosen.setstate(first)
    target = chosen.sample([p for p in g.peers.active(g.clock())], 1)[0].address
    net.offline.add(target)
    await g.push_batch(batch)
    others = [x for x in gossips[1:] if env.id in x.store]
    assert len(others) == 1 and net.nodes[target] not in others  # another peer, at once
    assert g.pending() == 1  # and the target again, later
    net.offline.clear()
    await g.flush()
    assert env.id in net.nodes[target].store
    assert g.pending() == 0


async def test_push_retries_to_an_unavailable_target_stop_after_push_retries():
    settings = GossipSettings(fanout=3, push_retries=2)
    net, gossips = make_net(2, settings=settings)
    g = gossips[0]
    net.offline.add("mem://1")
    await g.ingest([claims(1, seed=9)[0].canonical()])
    tries = 0
    while g.pending():
        tries += 1
        await g.flush()
    assert tries == 1 + settings.push_retries


def test_pull_favours_peers_not_heard_from_recently():
    table = PeerTable()
    for name in ("quiet", "chatty", "never"):
        table.add(f"http://{name}:1")
    table.record("http://quiet:1", "ok", now=0.0)
    table.heard("http://chatty:1", now=995.0)
    rng = random.Random(4)
    picks = [table.pick_for_pull(1000.0, rng, horizon_s=60.0).address for _ in range(3000)]
    quiet, chatty, never = (picks.count(f"http://{n}:1") for n in ("quiet", "chatty", "never"))
    # weights: silence capped at 60 s (never heard: 60) plus 0.6: 60.6, 5.6, 60.6
    assert chatty < 0.15 * quiet and chatty < 0.15 * never and chatty > 0
    table.cut_off("http://quiet:1", 1000.0, "stalled mid-fetch")
    assert {table.pick_for_pull(1000.0, rng, 60.0).address for _ in range(200)} == {"http://chatty:1", "http://never:1"}
    assert table.get("http://quiet:1").last_error == "stalled mid-fetch"


async def test_sync_offers_many_missing_in_concurrent_batches_and_all_arrive():
    settings = GossipSettings(max_batch=16, fetch_window=3)
    net, gossips = make_net(2, settings=settings)
    mine = claims(100, seed=10)
    await gossips[0].store.ingest([e.canonical() for e in mine])
    result = await gossips[0].sync_with("mem://1")
    assert result.have == 100
    assert all(e.id in gossips[1].store for e in mine)
    assert net.stats.by_kind["announce"] == 100 // 16 + 1 and net.stats.by_kind["send"] == 100 // 16 + 1


async def test_a_second_reconciliation_with_a_peer_under_way_is_skipped():
    import asyncio

    net, gossips = make_net(2)
    envs = claims(40, seed=14)
    await gossips[1].store.ingest([e.canonical() for e in envs])
    first, second = await asyncio.gather(gossips[0].sync_with("mem://1"), gossips[0].sync_with("mem://1"))
    assert first.need == 40 and first.fetched == 40
    assert second.rounds == 0 and net.stats.by_kind["sync"] == first.rounds


async def test_the_pull_skips_a_peer_that_just_reconciled_with_us():
    net, gossips = make_net(3)
    g = gossips[0]
    from node.net.negentropy import Negentropy, Storage

    await g.handle_sync(Negentropy(Storage([])).initiate(), origin="mem://1")  # mem://1 reconciled with us
    picked = [(await g.sync_random()).peer for _ in range(20)]
    assert set(picked) == {"mem://2"}
    assert (await g.sync_with("mem://1")).rounds == 0  # asked directly: skipped, nothing exchanged
