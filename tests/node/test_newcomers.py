"""Admission by earned trust (issue 17 item 1; node/newcomers.py, store/shed.py): real in-process nodes
(node/daemon.py) on loopback, real replicas on SQLite files.

* a flood of claims from fresh keys over HTTP stays within the newcomers' budgets (per author and
  shared), refused with a one-line reason (429 when nothing of a push could be taken), counted in
  /metrics; a trusted key's messages are not limited;
* a zero-trust author's claim is stored but not relayed until a trusted vote touches it; an honest
  trusted claim propagates meanwhile;
* a fresh node trusting one key catches up what that key wrote and touched while a flood of junk
  shares the peer it catches up from: its replica stays within --max-db-mb, the verified claim and the
  trusted votes survive shedding, and what was shed is not fetched again by the next reconciliations.

    .venv/bin/python -m pytest tests/node/test_newcomers.py -q
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.daemon import Node
from node.newcomers import MIB, REFUSED, NewcomerSettings, Newcomers
from node.net.gossip import GossipSettings
from node.net.http import HttpTransport
from node.settings import NetworkSettings, NodeSettings
from protocol import Identity, build
from store import Replica
from store.shed import ROW_OVERHEAD, Row
from tests.store.test_store_factory import NOW, SWARM, key, tid
from tests.store.test_store_factory import claim as claim_on
from tests.store.test_store_factory import task, vote
from tests.messages import claim, result

TRUSTED = Identity.from_seed(b"\x54" * 32)  # a key the nodes pre-trust
GRACE_S = 1.0  # shed messages are deleted this long after (NewcomerSettings.grace_s), here
WAIT_S = 30.0  # event waits: seconds of work at most on a busy 2-core machine


def _settings(tmp_path, name: str, *, newcomers: NewcomerSettings, trusted=(TRUSTED.pubkey,), bootstrap=(),
              sync_interval_s: float = 3600.0) -> NodeSettings:
    return NodeSettings(home=tmp_path / name, network=NetworkSettings(port=0, lan=False, bootstrap=tuple(bootstrap)),
                        gossip=GossipSettings(sync_interval_s=sync_interval_s), trusted=tuple(trusted),
                        ralph=False, reproduce=False, device="cpu", newcomers=newcomers)


async def _start(settings: NodeSettings, nodes: list) -> Node:
    node = Node(settings, Identity.generate(), echo=lambda _: None)
    nodes.append(node)
    await node.start()
    return node


async def _until(predicate, what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _junk(key: Identity, n: int, pad: int = 1500, outcome: str = "improved"):
    env = claim(key, n=n, created_at=1_700_000_000 + n * 7)
    body = {**env.body, "outcome": outcome, "patch": env.body["patch"] + "+# " + "j" * pad + "\n"}
    return build(key, "public", "claim", body, created_at=env.created_at)


def _vote(voter: Identity, claim_id: str, verdict: str = "reproduced", at: int = 1_700_100_000):
    body = {"claim": claim_id, "verdict": verdict, "result": result("1.500000") if verdict != "failed" else None,
            "reason": ""}
    return build(voter, "public", "vote", body, created_at=at)


async def _push(session, node: Node, envs) -> tuple[int, dict, dict]:
    data = b'{"messages":[' + b",".join(e.canonical() for e in envs) + b"]}"
    async with session.post(node.address + "/v1/messages", data=data,
                            headers={"Content-Type": "application/json"}) as resp:
        return resp.status, json.loads(await resp.read()), dict(resp.headers)


async def _newcomer_bytes_stored(node: Node) -> int:
    """What zero-trust authors' messages take in the replica, as budgeted (canonical bytes + ROW_OVERHEAD)."""
    rows = [Row(*r) for r in await node.replica.shed_rows()]
    return sum(r.size + ROW_OVERHEAD for r in rows if not node.replica.relied_on(r.author))


async def test_a_flood_of_fresh_keys_over_http_stays_within_the_budgets(tmp_path):
    budgets = NewcomerSettings(max_db_bytes=64 * MIB, newcomer_bytes=200_000, author_bytes=30_000,
                               author_per_hour=5, total_per_hour=100_000)
    nodes: list[Node] = []
    try:
        node = await _start(_settings(tmp_path, "n", newcomers=budgets), nodes)
        async with aiohttp.ClientSession() as session:
            # one fresh key: its per-hour count binds (5 of 8 taken, the rest refused with a reason)
            one = Identity.generate()
            status, report, _ = await _push(session, node, [_junk(one, n, pad=100) for n in range(8)])
            assert status == 200 and len(report["accepted"]) == budgets.author_per_hour
            reasons = [r["reason"] for r in report["rejected"]]
            assert len(reasons) == 3 and all(r.startswith(REFUSED) and "messages per hour per author" in r
                                             for r in reasons), reasons
            # ... and its bytes stored: big claims stop before author_bytes
            big = Identity.generate()
            status, report, _ = await _push(session, node, [_junk(big, n, pad=12_000) for n in range(4)])
            assert 1 <= len(report["accepted"]) < 4 and "MiB stored per author" in report["rejected"][0]["reason"]
            # 10,000 fresh keys cannot each use a full author's budget: they share newcomer_bytes
            status_codes, refused_whole = [], None
            for batch in range(12):
                keys = [Identity.generate() for _ in range(50)]
                status, report, headers = await _push(session, node, [_junk(k, batch) for k in keys])
                status_codes.append(status)
                if status == 429:
                    refused_whole = (report, headers)
            assert 429 in status_codes, status_codes
            report, headers = refused_whole
            assert set(report) == {"error"} and report["error"].startswith(REFUSED) \
                and "for all new keys" in report["error"] and "\n" not in report["error"]
            assert int(headers["Retry-After"]) >= 1
            # an honest peer offering such messages (its reconciliation's offer) gets an empty report,
            # not a failed exchange that would lower its view of this node
            answer = await HttpTransport(session).send(node.address, [_junk(Identity.generate(), 99).canonical()])
            assert answer["accepted"] == [] and answer["refused"].startswith(REFUSED)
            stored = await _newcomer_bytes_stored(node)
            assert stored <= budgets.newcomer_bytes, (stored, budgets.newcomer_bytes)
            # filled, not refused early (a message stored while a sweep scans may be counted twice until
            # the next sweep: the estimate errs on the safe side)
            assert stored >= 0.8 * budgets.newcomer_bytes
            # a trusted key is not limited by any of it
            mine = [_junk(TRUSTED, 100 + n, pad=100) for n in range(budgets.author_per_hour + 3)]
            status, report, _ = await _push(session, node, mine)
            assert status == 200 and len(report["accepted"]) == len(mine)
            async with session.get(node.address + "/metrics") as resp:
                text = await resp.text()
            async with session.get(node.address + "/api/stats") as resp:
                disk = (await resp.json())["disk"]
        samples = {(s.name, tuple(s.labels.items())): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        refused = {labels: v for (name, labels), v in samples.items() if name == "ralphswarm_newcomer_refused_total"}
        assert sum(refused.values()) == disk["refused"] >= 3 + 1 + 50
        assert samples[("ralphswarm_replica_bytes", (("part", "newcomer_budget"),))] == budgets.newcomer_bytes
        assert samples[("ralphswarm_http_events_total", (("event", "newcomer_push_refused"),))] >= 1
        # the node's own view of the newcomers' part matches what is stored
        await node.newcomers.sweep()
        assert node.newcomers.newcomer_bytes == await _newcomer_bytes_stored(node)
    finally:
        for n in reversed(nodes):
            await n.stop()


def _forged(env):
    """``env`` with one bit of its signature flipped: refused as invalid by any signature check."""
    raw = json.loads(env.canonical())
    raw["sig"] = ("1" if raw["sig"][0] == "0" else "0") + raw["sig"][1:]
    return raw


async def test_a_spent_budget_refuses_before_any_signature_is_checked(tmp_path):
    budgets = NewcomerSettings(max_db_bytes=64 * MIB, author_per_hour=3, total_per_hour=100_000)
    nodes: list[Node] = []
    try:
        node = await _start(_settings(tmp_path, "n", newcomers=budgets), nodes)
        key = Identity.generate()
        async with aiohttp.ClientSession() as session:
            status, report, _ = await _push(session, node, [_junk(key, n, pad=100) for n in range(3)])
            assert status == 200 and len(report["accepted"]) == 3  # the author's hour is spent
            # its next messages are refused for the budget even when their signatures are bad: no check ran
            later = [_junk(key, 10 + n, pad=100) for n in range(4)]
            body = json.dumps({"messages": [_forged(later[0]), *(json.loads(e.canonical()) for e in later[1:])]})
            async with session.post(node.address + "/v1/messages", data=body) as resp:
                assert resp.status == 429
                assert (await resp.json())["error"].startswith(REFUSED)
            assert node.newcomers.stats.prescreened == 4
            # forged messages under a key with budget left spend none of it: checked, refused as invalid
            other = Identity.generate()
            status, report, _ = await _push_raw(session, node, [_forged(_junk(other, n, pad=100)) for n in range(5)])
            assert status == 200 and len(report["rejected"]) == 5 \
                and all(not r["reason"].startswith(REFUSED) for r in report["rejected"]), report
            status, report, _ = await _push(session, node, [_junk(other, 20 + n, pad=100) for n in range(3)])
            assert len(report["accepted"]) == 3  # its whole hour still there
            # a spent author's claim that a vote in the same push names goes on to the check: a trusted
            # vote touches it, so it is taken
            touched = _junk(key, 30, pad=100)
            status, report, _ = await _push(session, node, [touched, _vote(TRUSTED, touched.id)])
            assert status == 200 and touched.id in report["accepted"], report
            # a message already stored reads as a duplicate, not as refused
            status, report, _ = await _push(session, node, [_junk(key, 0, pad=100)])
            assert report["duplicate"] == [_junk(key, 0, pad=100).id] and report["rejected"] == []
            async with session.get(node.address + "/metrics") as resp:
                text = await resp.text()
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples["ralphswarm_newcomer_prescreened_total"] == node.newcomers.stats.prescreened == 4
    finally:
        for n in reversed(nodes):
            await n.stop()


async def _push_raw(session, node: Node, raws: list[dict]) -> tuple[int, dict, dict]:
    async with session.post(node.address + "/v1/messages", data=json.dumps({"messages": raws}),
                            headers={"Content-Type": "application/json"}) as resp:
        return resp.status, json.loads(await resp.read()), dict(resp.headers)


async def test_junk_is_not_relayed_until_a_trusted_vote_touches_it(tmp_path):
    budgets = NewcomerSettings()
    nodes: list[Node] = []
    try:
        a = await _start(_settings(tmp_path, "a", newcomers=budgets), nodes)
        b = await _start(_settings(tmp_path, "b", newcomers=budgets, bootstrap=[a.address]), nodes)

        a.peers.add(b.address, source="bootstrap")

        async def linked() -> bool:  # b greeted a: it holds a's peer record
            return bool(a.peers.active(time.time())) and (await b.replica.counts())["peer"] >= 2
        await _until(linked, "the two nodes to know each other")

        async def at_b(msg_id: str) -> bool:
            return await b.replica.get_raw(msg_id) is not None
        stranger = Identity.generate()
        junk = _junk(stranger, 1)
        honest = _junk(TRUSTED, 2)
        async with aiohttp.ClientSession() as session:
            assert (await _push(session, a, [junk]))[1]["accepted"] == [junk.id]
            assert (await _push(session, a, [honest]))[1]["accepted"] == [honest.id]
            await _until(lambda: at_b(honest.id), "the trusted claim to reach b by push")
            await asyncio.sleep(3 * GossipSettings().flush_interval_s)  # the flush after the honest one's
            assert not await at_b(junk.id)  # stored first, never pushed
            assert a.newcomers.stats.withheld >= 1
            # a vote of a trusted key touches it: the vote and the claim are relayed
            touch = _vote(TRUSTED, junk.id)
            assert (await _push(session, a, [touch]))[1]["accepted"] == [touch.id]
            await _until(lambda: at_b(junk.id), "the touched claim to reach b")
            await _until(lambda: at_b(touch.id), "the trusted vote to reach b")
        assert a.newcomers.stats.released == 1
    finally:
        for n in reversed(nodes):
            await n.stop()


async def test_a_fresh_node_catches_up_within_its_disk_budget_and_does_not_refetch_what_it_shed(tmp_path):
    """The holder has a legitimate corpus (the trusted key's claims and votes, a stranger's claims
    it voted on, one of them with a parent it did not vote on) and 1,000 junk claims from 200 fresh
    keys (~2 MiB). The fresh node pre-trusts the key, has a 1 MiB disk budget, and reconciles every
    second."""
    nodes: list[Node] = []
    stranger = Identity.generate()
    parent = _junk(stranger, 10, pad=50)
    child = claim(stranger, n=11, parent=parent.id, created_at=1_700_000_500)
    verified = _junk(stranger, 12, pad=50)
    failed = _junk(stranger, 13, pad=50, outcome="worse")
    legit = [parent, child, verified, failed, _junk(TRUSTED, 14, pad=50),
             _vote(TRUSTED, child.id), _vote(TRUSTED, verified.id), _vote(TRUSTED, failed.id, "failed")]
    keys = [Identity.generate() for _ in range(200)]
    junk = [_junk(keys[n % len(keys)], 1000 + n) for n in range(1000)]
    junk_votes = [_vote(keys[n], verified.id, at=1_700_100_100 + n) for n in range(20)]  # strangers' votes on a kept claim
    budget = 1 * MIB
    try:
        holder = await _start(_settings(tmp_path, "holder", newcomers=NewcomerSettings(), trusted=()), nodes)
        for i in range(0, len(junk), 250):
            report = await holder.replica.ingest([e.canonical() for e in junk[i:i + 250]])
            assert len(report.accepted) == 250
        report = await holder.replica.ingest([e.canonical() for e in legit + junk_votes])
        assert len(report.accepted) == len(legit + junk_votes), report.rejected
        fresh = await _start(_settings(tmp_path, "fresh", bootstrap=[holder.address], sync_interval_s=1.0,
                                       newcomers=NewcomerSettings(max_db_bytes=budget, newcomer_bytes=budget,
                                                                  sweep_interval_s=3600.0, grace_s=GRACE_S)), nodes)

        async def caught_up() -> bool:
            have = await fresh.replica.has_ids(e.id for e in legit)
            return len(have) == len(legit) and fresh.newcomers.stats.shed > 0 and \
                not (fresh.gossip.catchup_json() or {"active": True})["active"]
        await _until(caught_up, "the fresh node to catch up the trusted corpus and shed junk", timeout=120)
        await fresh.newcomers.sweep()  # settle: whatever the last batches added ...
        await asyncio.sleep(GRACE_S)
        await fresh.newcomers.sweep()  # ... and delete what was shed, its grace over
        assert fresh.newcomers.to_json()["in_grace"] == 0
        assert fresh.newcomers.usage["used"] <= budget
        rows = [Row(*r) for r in await fresh.replica.shed_rows()]
        assert sum(r.size + ROW_OVERHEAD for r in rows) <= budget
        # never shed: the trusted key's messages, the claims it voted on (verified and failed alike), the
        # parent of one (its source is rebuilt from it), this node's own messages
        assert await fresh.replica.has_ids(e.id for e in legit) == {e.id for e in legit}
        assert fresh.identity.pubkey in {r.author for r in rows}
        junk_left = len(await fresh.replica.has_ids(e.id for e in junk))
        assert junk_left < len(junk) // 2
        shed = [e.id for e in junk if e.id in fresh.replica.tombstones]
        assert len(shed) >= len(junk) - junk_left - 5
        # the next reconciliations list the shed ids again, and none is fetched back
        before_syncs, before_fetched = fresh.gossip.stats.syncs, fresh.gossip.stats.fetched

        async def two_more_syncs() -> bool:
            return fresh.gossip.stats.syncs >= before_syncs + 2
        await _until(two_more_syncs, "two more reconciliations with the holder")
        assert fresh.gossip.stats.fetched == before_fetched
        assert await fresh.replica.has_ids(shed) == set()
        # status says so: the disk line, in words and in JSON
        (tmp_path / "fresh" / "node.json").write_text(json.dumps(
            {"address": fresh.address, "pid": os.getpid(), "swarm": fresh.swarm, "swarm_key_file": None}))
        for args, want in ((["status"], "disk    "), (["status", "--json"], '"budget_bytes": 1048576')):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "node.cli", *args, "--home", str(tmp_path / "fresh"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0 and want in out.decode(), (out, err)
            if args == ["status"]:
                line = next(x for x in out.decode().splitlines() if x.startswith("disk"))
                assert "of 1.0 MiB" in line and f"shed {fresh.newcomers.stats.shed} messages" in line, line
    finally:
        for n in reversed(nodes):
            await n.stop()


async def test_junk_no_trusted_vote_touched_expires(tmp_path):
    ttl = NewcomerSettings().ttl_s
    nodes: list[Node] = []
    try:
        node = await _start(_settings(tmp_path, "n", newcomers=NewcomerSettings(grace_s=0)), nodes)
        stranger = Identity.generate()
        junk, kept = _junk(stranger, 1), _junk(stranger, 2)
        report = await node.gossip.ingest([junk.canonical(), kept.canonical(), _vote(TRUSTED, kept.id).canonical()])
        assert len(report.accepted) == 3
        received = await node.replica.received_at(junk.id)
        assert await node.newcomers.sweep(now=received + int(ttl) - 1) == 0  # not yet
        assert await node.newcomers.sweep(now=received + int(ttl) + 1) == 1
        assert await node.replica.get_raw(junk.id) is None and await node.replica.get_raw(kept.id) is not None
        assert node.newcomers.stats.expired == 1 and junk.id in node.replica.tombstones
    finally:
        for n in reversed(nodes):
            await n.stop()


@pytest.mark.slow  # a CLI process per value (~3 s each here)
@pytest.mark.parametrize("value", ["10", "-5", "lots", "64.5"])
def test_max_db_mb_is_checked_before_start_up(tmp_path, value):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "node.cli", "node", "--home", str(tmp_path / "h"), "--no-lan",
                           "--no-ralph", "--max-db-mb", value], capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "Traceback" not in err and "max-db-mb" in err.lower(), err
    assert not (tmp_path / "h").exists()  # nothing initialised


def test_max_db_mb_from_config_and_flag(tmp_path):
    from node.errors import UserError
    from node.settings import settings_from

    assert settings_from(tmp_path, {}, {}).newcomers.max_db_bytes == NewcomerSettings().max_db_bytes
    assert settings_from(tmp_path, {"max_db_mb": 100}, {}).newcomers.max_db_bytes == 100 * MIB
    assert settings_from(tmp_path, {"max_db_mb": 100}, {"max_db_mb": 300}).newcomers.max_db_bytes == 300 * MIB
    assert settings_from(tmp_path, {"max_db_mb": 100}, {}).newcomers.newcomer_cap == 100 * MIB // 16
    for bad in (63, "lots", 1.5, True, 0, -1, "64.0"):
        with pytest.raises(UserError, match="max-db-mb"):
            settings_from(tmp_path, {"max_db_mb": bad}, {})


async def test_what_is_shed_leaves_reconciliation_at_once_and_is_served_until_its_grace_is_over(tmp_path):
    """A peer that listed a message from an earlier snapshot of ours and fetches it is still served
    (else it would score us a broken promise and cool us off); the message is deleted later."""
    nodes: list[Node] = []
    try:
        node = await _start(_settings(tmp_path, "n", newcomers=NewcomerSettings(
            newcomer_bytes=10_000, sweep_interval_s=3600.0, grace_s=3600.0)), nodes)
        junk = [_junk(Identity.generate(), n) for n in range(20)]  # ~45 KB: over the 10 KB budget
        await node.gossip.ingest([e.canonical() for e in junk])
        await node.newcomers.sweep()  # the node's own sweep, woken past the budget, may have run first
        shed = [e.id for e in junk if e.id in node.replica.tombstones]
        assert len(shed) >= 14 and node.newcomers.to_json()["in_grace"] == len(shed)
        stored = len(await node.gossip.store.items())  # still stored in their grace ...
        # ... but out of reconciliation at once, as the rest of the junk (held: no trusted vote touched it)
        assert {e.id for e in junk if e.id in node.newcomers.held} == {e.id for e in junk} - set(shed)
        assert len(await node.gossip.snapshot()) == stored - len(junk)
        async with aiohttp.ClientSession() as session:
            async with session.post(node.address + "/v1/fetch", json={"ids": shed}) as resp:
                served = [m["id"] for m in (await resp.json())["messages"]]
            assert served == shed  # ... and still served
            status, report, _ = await _push(session, node, [e for e in junk if e.id in set(shed)][:3])
            assert status == 200 and len(report["duplicate"]) == 3  # not taken back
            assert await node.newcomers._delete_due(force=True) == len(shed)
            async with session.get(f"{node.address}/v1/messages/{shed[0]}") as resp:
                assert resp.status == 404
        assert node.newcomers.stats.deleted == node.newcomers.stats.shed == len(shed)
    finally:
        for n in reversed(nodes):
            await n.stop()


async def test_the_wal_stays_within_a_sixteenth_of_a_small_budget(tmp_path):
    """Beside the budgeted rows, the write-ahead log: checkpointed every budget/16 bytes of pages
    (node/newcomers.py wal_pages), where the library's interval (64 MiB at 16 KiB pages) would let it
    alone pass a 64 MiB budget."""
    budget = 64 * MIB
    nodes: list[Node] = []
    try:
        node = await _start(_settings(tmp_path, "n", newcomers=NewcomerSettings(max_db_bytes=budget)), nodes)
        async with node.replica._writer.execute("PRAGMA wal_autocheckpoint") as cur:
            (pages,) = await cur.fetchone()
        assert pages * node.replica.settings.page_size == budget // 16
        batch_bytes = 0
        for b in range(8):  # ~10 MiB of a trusted key's claims, none of it shed
            envs = [_junk(TRUSTED, b * 100 + n, pad=12_000) for n in range(100)]
            batch_bytes = max(batch_bytes, sum(len(e.canonical()) for e in envs))
            report = await node.gossip.ingest([e.canonical() for e in envs])
            assert len(report.accepted) == 100
        wal = (await node.replica.disk_usage())["wal"]
        assert wal <= budget // 16 + 2 * batch_bytes, (wal, budget // 16)
    finally:
        for n in reversed(nodes):
            await n.stop()


ME, P, A, C = key(0), key(1), key(2), key(4)  # self, pre-trusted, strangers (tests/store/test_store_shed.py)


async def test_newcomers_hold_what_they_withhold_and_release_it_with_a_trusted_touch(tmp_path):
    """node/newcomers.py keeps ``held`` as it stores (relay), releases a claim with its ancestors, their
    task and the votes on them when a trusted vote touches it, and a trusted key's claim releases its
    ancestors; a sweep (as at start, on another instance over the same replica) agrees with the plan."""
    r = await Replica.open(tmp_path / "r.sqlite3", swarm=SWARM, self_key=ME.pubkey, trusted=[P.pubkey])
    changed: list[list[str]] = []
    n = Newcomers(r, NewcomerSettings(), on_shed=changed.append)
    try:
        other = task(C, name="other")
        root = claim_on(C, tid(other), "0.990000", note="root")
        child = claim_on(C, tid(other), "0.980000", parent=root.id, note="child")
        on_child = vote(A, child.id)
        for env in (other, root, child, on_child):
            report = await r.ingest([env.canonical()], now=NOW)
            assert report.accepted and n.relay(report.accepted) == []
        assert set(n.held) == {other.id, root.id, child.id, on_child.id}
        await n.sweep(now=NOW)
        assert set(n.held) == {other.id, root.id, child.id, on_child.id} and changed == []
        # a pre-trusted key builds on the root: the root and its task are offered, the child is not
        mine = claim_on(P, tid(other), "0.970000", parent=root.id, note="mine")
        report = await r.ingest([mine.canonical()], now=NOW)
        assert [e.id for e in n.relay(report.accepted)] == [mine.id]
        assert set(n.held) == {child.id, on_child.id}
        await n.sweep(now=NOW)
        assert set(n.held) == {child.id, on_child.id} and changed == []
        # a restarted node's newcomers hold nothing until their first sweep, which rebuilds the snapshot
        fresh = Newcomers(r, NewcomerSettings(), on_shed=changed.append)
        await fresh.sweep(now=NOW)
        assert set(fresh.held) == {child.id, on_child.id} and changed == [[]]
        # a stranger's task is offered once a trusted key publishes the same task
        third = task(C, name="third")
        report = await r.ingest([third.canonical()], now=NOW)
        assert n.relay(report.accepted) == [] and third.id in n.held
        ours = task(P, name="third", at=NOW - 5)
        report = await r.ingest([ours.canonical()], now=NOW)
        assert [e.id for e in n.relay(report.accepted)] == [ours.id] and third.id not in n.held
        # stored, then built on by a trusted key, while a sweep scans (it saw neither): offered after it
        n._scan_held, n._scan_released = {}, set()
        late = claim_on(C, tid(other), "0.960000", note="late")
        report = await r.ingest([late.canonical()], now=NOW)
        assert n.relay(report.accepted) == [] and late.id in n._scan_held
        on_late = claim_on(P, tid(other), "0.950000", parent=late.id, note="on late")
        report = await r.ingest([on_late.canonical()], now=NOW)
        assert [e.id for e in n.relay(report.accepted)] == [on_late.id] and late.id not in n.held
        n._rehold(dict(n.held), [])
        assert late.id not in n.held
        # a trusted vote touches the child: it and the vote on it are offered
        touch = vote(P, child.id)
        report = await r.ingest([touch.canonical()], now=NOW)
        assert {e.id for e in n.relay(report.accepted)} == {touch.id, child.id}
        assert n.held == {} and n.stats.released == 1
    finally:
        await r.close()


async def test_junk_is_not_fetched_by_reconciliation_until_a_trusted_vote_touches_it(tmp_path):
    """Reconciliation is a relay too: what a flood pushes into one node is not fetched from it by every
    other node. A node offers what it trusts, and one that holds a message it was offered does not
    fetch it again; once a trusted vote touches a claim, the claim, its ancestors and the vote are
    offered."""
    friend, stranger = Identity.generate(), Identity.generate()
    nodes: list[Node] = []
    try:
        a = await _start(_settings(tmp_path, "a", newcomers=NewcomerSettings(),
                                   trusted=(TRUSTED.pubkey, friend.pubkey)), nodes)
        b = await _start(_settings(tmp_path, "b", newcomers=NewcomerSettings()), nodes)
        root = _junk(stranger, 1)
        child = claim(stranger, n=2, parent=root.id)
        ours = _junk(friend, 3)  # a trusts its author, b does not
        async with aiohttp.ClientSession() as session:
            assert len((await _push(session, a, [root, child, ours]))[1]["accepted"]) == 3
            assert (await _push(session, b, [ours]))[1]["accepted"] == [ours.id]
            assert ours.id in b.newcomers.held and root.id in a.newcomers.held and ours.id not in a.newcomers.held
            duplicates = b.gossip.stats.duplicate
            first = await asyncio.wait_for(b.gossip.sync_with(a.address), WAIT_S)
            assert first.rounds >= 1
            assert await b.replica.get_raw(root.id) is None and await b.replica.get_raw(child.id) is None
            assert b.gossip.stats.duplicate == duplicates  # ours was offered by a: not fetched again
            touch = _vote(TRUSTED, child.id)
            assert (await _push(session, a, [touch]))[1]["accepted"] == [touch.id]
            assert not {root.id, child.id} & set(a.newcomers.held)  # (b's task, sent by b, still is)
            await asyncio.wait_for(b.gossip.sync_with(a.address), WAIT_S)
            for env in (root, child, touch):
                assert await b.replica.get_raw(env.id) is not None, env.kind
            assert root.id not in b.newcomers.held and child.id not in b.newcomers.held  # touched there too
    finally:
        for n in reversed(nodes):
            await n.stop()
