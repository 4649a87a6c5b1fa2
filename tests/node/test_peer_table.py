"""The peer table's new and tried tables (node/net/peers.py; issue 17 item 5, after Bitcoin Core's
addrman): a flood of peer records from many origins and fresh keys, each within the admission caps
(node/net/admission.py), cannot push out peers with a history of useful exchanges; pushes and pulls
still go mostly to those; the table stays bounded. Pure: addresses are documentation ranges and
made-up public ones, nothing is dialled. The last test checks the wiring on real nodes on loopback.

    .venv/bin/python -m pytest tests/node/test_peer_table.py -q
"""
from __future__ import annotations

import asyncio
import random
import time

from node.net.admission import Admission, AdmissionSettings, network_group
from node.net.peers import PeerTable, ScoreSettings

NOW = 1_000_000.0


def _honest(table: PeerTable, n: int, now: float = NOW) -> list[str]:
    """``n`` peers in distinct /16s, each with a few useful exchanges."""
    out = []
    for i in range(n):
        address = f"http://{20 + i}.{i}.0.1:7447"
        assert table.add(address, source="bootstrap") is not None
        for t in range(3):
            table.record(address, "ok", now - 100 + t)
        out.append(address)
    return out


def _flood(table: PeerTable, admission: Admission, origins: int, per_origin: int, now: float,
           rng: random.Random) -> int:
    """Peer records from ``origins`` announcing peers (spread over many /16s), each naming
    ``per_origin`` fresh-key addresses, every one gated by the admission caps as the daemon does.
    Returns how many entered the table."""
    entered = 0
    for o in range(origins):
        origin = f"http://{100 + o % 100}.{o // 100}.{rng.randrange(256)}.{rng.randrange(1, 255)}:7447"
        for j in range(per_origin):
            author = f"{o:032x}{j // admission.settings.max_per_author:032x}"  # fresh keys
            address = f"http://{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}:7447"
            if address in table:
                continue
            have = sum(1 for p in table.all() if p.pubkey == author)
            if admission.from_record(address, author, origin, have, now=now):
                if table.add(address, pubkey=author, source="exchange", origin=origin, now=now) is not None:
                    entered += 1
    return entered


def test_network_groups():
    assert network_group("http://8.8.8.8:1") == network_group("http://8.8.4.4:2") == "v4:8.8"
    assert network_group("http://8.9.8.8:1") != network_group("http://8.8.8.8:1")
    assert network_group("http://[2a00:1450::1]:1") == network_group("http://[2a00:1450:ffff::2]:1") == "v6:2a001450"
    assert network_group("http://[::ffff:8.8.1.1]:1") == "v4:8.8"
    assert network_group("http://a.seed.example.org:1") == network_group("http://b.example.org:2")
    # non-public addresses are only admitted in a local swarm: there each is its own group
    assert network_group("http://127.0.0.1:1") != network_group("http://127.0.0.1:2")
    assert network_group("direct") == "label:direct" and network_group(5) == "?"


def test_a_flood_from_many_origins_cannot_evict_peers_with_useful_exchanges():
    table = PeerTable(max_peers=256)
    honest = _honest(table, 40)
    assert all(table.get(a).tried for a in honest)
    admission = Admission(allow_private=False)
    rng = random.Random(17)
    entered = _flood(table, admission, origins=300, per_origin=40, now=NOW, rng=rng)
    # the planted servers answer well, again and again: their scores pass the honest peers' ...
    for t in range(int(table.settings.ceiling)):
        for p in table.all():
            if p.address not in honest:
                table.record(p.address, "ok", NOW + 1 + t)
    assert max(p.score for p in table.all()) > max(table.get(a).score for a in honest)
    # ... and a second flood arrives, from other origins, in the next admission window
    entered += _flood(table, admission, origins=300, per_origin=40, now=NOW + admission.settings.origin_window_s + 60,
                      rng=rng)
    s = admission.settings
    assert entered > table.max_peers  # the flood did churn new many times over ...
    assert admission.counters["refused_per_origin"] > 0 and table.counters["evicted_new"] > 0
    assert len(table) <= table.max_peers  # ... the table stays bounded ...
    for a in honest:  # ... and every peer with useful exchanges is still there, protected
        assert a in table and table.get(a).tried
    # one origin planted at most its admission share, and no source group holds more than its place in new
    by_source: dict[str, int] = {}
    for p in table.all():
        if not p.tried:
            by_source[p.source_group] = by_source.get(p.source_group, 0) + 1
    assert max(by_source.values()) <= min(s.max_per_origin, table.new_per_source)


def test_flooded_servers_that_answer_well_cannot_displace_tried_peers_that_keep_answering():
    table = PeerTable(max_peers=64)  # 32 tried places
    honest = _honest(table, table.max_tried)
    rng = random.Random(3)
    _flood(table, Admission(allow_private=False), origins=50, per_origin=16, now=NOW, rng=rng)
    flood = [p.address for p in table.all() if not p.tried]
    assert flood
    for t in range(5):  # every attacker address answers, again and again: a useful exchange each time
        for a in flood:
            table.record(a, "ok", NOW + t)
        for a in honest:  # the honest peers keep answering too
            table.record(a, "ok", NOW + t)
    assert all(table.get(a).tried for a in honest)
    assert len(table.tried()) == table.max_tried and table.counters["promotion_refused"] > 0
    # an honest peer that goes bad (cooling off after failures) gives its place to one that answers
    gone = honest[0]
    for t in range(6):
        table.record(gone, "timeout", NOW + 10 + t)
    assert table.terrible(table.get(gone), NOW + 20)
    table.record(flood[0], "ok", NOW + 20)
    assert table.get(flood[0]).tried and not table.get(gone).tried
    assert all(table.get(a).tried for a in honest[1:])


def test_one_network_group_gets_few_tried_places():
    table = PeerTable(max_peers=256)
    for i in range(40):  # 40 servers in one /16, all answering
        address = f"http://45.33.{i}.1:7447"
        table.add(address, source="inbound")
        table.record(address, "ok", NOW)
    assert len(table.tried()) == table.tried_per_group < table.max_tried
    # the others stay in new, as many as one source group may hold there (inbound: its own group)
    assert len(table) == table.tried_per_group + table.new_per_source


def test_pulls_prefer_peers_with_useful_exchanges_and_every_push_reaches_one():
    table = PeerTable(max_peers=256)
    honest = set(_honest(table, 10))
    _flood(table, Admission(allow_private=False), origins=100, per_origin=16, now=NOW, rng=random.Random(5))
    new = [p for p in table.all() if not p.tried]
    assert len(new) > 10 * len(honest)
    rng = random.Random(9)
    picks = [table.pick_for_pull(NOW, rng, horizon_s=60.0).address for _ in range(2000)]
    share = sum(a in honest for a in picks) / len(picks)
    assert 0.45 < share < 0.55  # tried_share = 0.5 (uniformly: 10 of ~200, 5%)
    candidates = table.active(NOW)
    chosen = [table.sample_preferring_tried(candidates, 6, rng) for _ in range(500)]
    assert all(len(c) == 6 and len({p.address for p in c}) == 6 for c in chosen)
    # a push: one proven peer among its targets whatever was planted, the rest uniform (spread kept)
    assert all(any(p.address in honest for p in c) for c in chosen)
    share = sum(p.address in honest for c in chosen for p in c) / (6 * 500)
    uniform_rest = (len(honest) - 1) / (len(candidates) - 1)
    assert 1 / 6 <= share < (1 + 5 * uniform_rest) / 6 + 0.05, share
    # with only one kind of peer the pick is uniform, as before
    only_new = [p for p in candidates if not p.tried]
    assert all(not p.tried for p in table.sample_preferring_tried(only_new, 6, rng))
    assert table.sample_preferring_tried(only_new[:3], 6, rng) == only_new[:3]


def test_a_source_group_full_of_silent_entries_takes_no_more_until_one_fails():
    table = PeerTable(max_peers=64)
    origin = "http://45.60.113.5:7447"
    placed = [f"http://{30 + i}.1.1.1:1" for i in range(table.new_per_source)]
    for a in placed:
        assert table.add(a, source="exchange", origin=origin) is not None
    assert table.add("http://99.1.1.1:1", source="exchange", origin=origin) is None
    assert table.counters["dropped_source_full"] == 1
    # another /16's origin has its own share; the same /16's does not
    assert table.add("http://99.1.1.1:1", source="exchange", origin="http://46.51.100.1:1") is not None
    assert table.add("http://99.2.1.1:1", source="exchange", origin="http://45.60.7.7:1") is None
    for t in range(ScoreSettings().terrible_failures):
        table.record(placed[0], "timeout", NOW + t)
    assert table.add("http://99.2.1.1:1", source="exchange", origin=origin) is not None
    assert placed[0] not in table


def test_full_table_of_tried_peers_bounds_tried_and_keeps_room_for_new():
    table = PeerTable(max_peers=8)
    for i in range(20):
        address = f"http://{40 + i}.0.0.1:1"
        table.add(address, source="bootstrap")
        table.record(address, "ok", NOW + i)
    assert len(table) <= 8 and len(table.tried()) == table.max_tried == 4
    assert table.add("http://90.0.0.1:1") is not None  # a new place is always there for a newcomer
    assert len(table) <= 8 and len(table.tried()) == 4


async def test_a_node_records_its_exchange_partner_as_tried(tmp_path):
    """Wiring on real nodes: a peer that synced with us is tried in /api/peers and /api/stats."""
    from tests.node.test_peer_admission import _node, _until  # noqa: PLC0415 (shared helpers)

    a, b = await _node(tmp_path, "a"), await _node(tmp_path, "b")
    try:
        a.peers.add(b.address, source="bootstrap")
        assert await a.hello(b.address)
        assert await _until(lambda: a.peers.get(b.address).tried)
        stats = a.stats_json()["peer_table"]
        assert stats["tried"] == 1 and stats["new"] == len(a.peers) - 1
        assert [p for p in a.peers_json()["peers"] if p["address"] == b.address][0]["tried"] is True
    finally:
        for n in (a, b):
            await n.stop()
    await asyncio.sleep(0)
    assert time.time() > 0
