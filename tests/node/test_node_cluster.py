"""Real node processes on loopback: convergence, catch-up after SIGKILL, partition healing.

    .venv/bin/python -m pytest tests/node/test_node_cluster.py -q
"""
from __future__ import annotations

import pytest

from tests.messages import claims, claims_author
from tests.nodeproc import NodeProcess, wait_until

pytestmark = pytest.mark.slow
# the claims' authors are trusted: a zero-trust author's claims are neither relayed nor offered to
# reconciliation until a trusted vote touches them (node/newcomers.py)
TRUST = tuple(a for seed in range(1, 6) for a in ("--trusted", claims_author(seed).pubkey))
FAST = ("--no-lan", "--no-ralph", "--no-reproduce", "--sync-interval", "1", *TRUST)


def _start_chain(tmp_path, n):
    nodes = []
    for i in range(n):
        boot = ("--bootstrap", nodes[-1].address) if nodes else ()
        nodes.append(NodeProcess(tmp_path / f"n{i}", *FAST, *boot).start())
    return nodes


def _same(nodes, at_least):
    totals = [n.total() for n in nodes]
    return totals if len(set(totals)) == 1 and totals[0] >= at_least else False


def test_five_nodes_chained_by_bootstrap_converge(tmp_path):
    nodes = _start_chain(tmp_path, 5)
    try:
        base = len(nodes)  # every node holds every peer record (and the task messages)
        left, right = claims(40, seed=1), claims(40, seed=2)
        assert len(nodes[0].push([e.canonical() for e in left])["accepted"]) == 40
        assert len(nodes[-1].push([e.canonical() for e in right])["accepted"]) == 40
        wait_until(lambda: _same(nodes, base + 80), timeout=60, what="5 nodes to converge")
    finally:
        for n in nodes:
            n.stop()
    sets = [n.ids() for n in nodes]
    assert all(s == sets[0] for s in sets)
    assert {e.id for e in left + right} <= sets[0]


def test_killed_node_catches_up_and_partition_heals(tmp_path):
    a, bridge, c = _start_chain(tmp_path, 3)
    try:
        wait_until(lambda: _same([a, bridge, c], 3), timeout=30, what="peer records to spread")
        c.kill()
        a.push([e.canonical() for e in claims(30, seed=3)])
        wait_until(lambda: bridge.total() >= 33, timeout=30, what="bridge to receive")
        c.start()  # same home, same port: restarted after SIGKILL (it signs a fresh peer record)
        wait_until(lambda: _same([a, bridge, c], 34), timeout=60, what="restarted node to catch up")
        # partition: stop the bridge, write on both sides, restart it: both sides converge
        bridge.stop()
        a.push([e.canonical() for e in claims(10, seed=4)])
        c.push([e.canonical() for e in claims(10, seed=5)])
        bridge.start()
        wait_until(lambda: _same([a, bridge, c], 55), timeout=90, what="partition to heal")
    finally:
        for n in (a, bridge, c):
            n.stop()
    sets = [n.ids() for n in (a, bridge, c)]
    assert sets[0] == sets[1] == sets[2]
