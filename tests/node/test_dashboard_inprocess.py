"""The dashboard's parts that need no node process (tests/node/test_dashboard.py has those): the rule
that lets the operator's loopback browser read in clear, and in-process nodes' /metrics and
/api/activity. Fast, so not marked slow.

    .venv/bin/python -m pytest tests/node/test_dashboard_inprocess.py -q
"""
from __future__ import annotations

from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from node.daemon import Node
from node.settings import NetworkSettings, NodeSettings
from node.telemetry import Counter
from node.web.dashboard import local_view
from protocol import Identity
from ralph.proposers.base import Usage


# -- in-process nodes: what the loops fill in reaches /metrics and /api/activity --------------------

async def test_each_node_has_its_own_registry_and_reports_the_loops(tmp_path):
    nodes = []
    try:
        for name in ("a", "b"):
            settings = NodeSettings(home=tmp_path / name, network=NetworkSettings(port=0, lan=False),
                                    ralph=False, reproduce=False, device="cpu")
            nodes.append(Node(settings, Identity.generate(), echo=lambda _: None))
            await nodes[-1].start()
        a, b = nodes
        a.telemetry.count(Counter.EXPERIMENTS_RUN, 3)
        a.telemetry.count(Counter.EXPERIMENTS_KEPT)
        a.telemetry.count(Counter.VOTES_MISMATCH, 2)
        a.telemetry.count(Counter.VOTES_OVER_BUDGET)
        a.telemetry.count_usage(Usage(input_tokens=1200, cost_usd=0.25))
        a.telemetry.set_experiment("cpu", {"kind": "ralph", "claim": None, "tokens": 2048, "budget": 8192,
                                           "loss": 2.5, "started_at": 1_700_000_000, "device": "cpu"})
        a.telemetry.note("kept claim 1234 (val_bpb 1.40)")
        async with aiohttp.ClientSession() as session:
            async def scrape(n):
                async with session.get(n.address + "/metrics") as resp:
                    text = await resp.text()
                return {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in text_string_to_metric_families(text) for s in f.samples}

            ma, mb = await scrape(a), await scrape(b)
            assert ma[("ralphswarm_experiments_total", (("result", "run"),))] == 3
            assert ma[("ralphswarm_experiments_total", (("result", "kept"),))] == 1
            assert ma[("ralphswarm_votes_cast_total", (("verdict", "mismatch"),))] == 2
            assert ma[("ralphswarm_votes_cast_total", (("verdict", "over budget"),))] == 1
            assert ma[("ralphswarm_proposer_tokens_total", (("direction", "input"),))] == 1200
            assert ma[("ralphswarm_proposer_cost_usd_total", ())] == 0.25
            assert mb[("ralphswarm_experiments_total", (("result", "run"),))] == 0  # b reports only itself
            info = {k for k in mb if k[0] == "ralphswarm_node_info"}
            assert info == {("ralphswarm_node_info", (("pubkey", b.identity.pubkey), ("swarm", "public"),
                                                      ("version", "0.1.0")))}
            async with session.get(a.address + "/api/activity") as resp:
                act = await resp.json()
            assert act["experiment"]["tokens"] == 2048 and act["recent"][0]["text"].startswith("kept claim")
            assert act["experiments"]["cpu"]["tokens"] == 2048
            assert act["counters"]["experiments_run"] == 3
    finally:
        for n in nodes:
            await n.stop()


# -- private swarms: which requests the dashboard answers in clear -----------------------------------

@pytest.mark.parametrize("remote,method,path,headers,clear", [
    ("127.0.0.1", "GET", "/", {}, True),
    ("::1", "GET", "/api/claim/" + "0" * 64, {}, True),
    ("127.0.0.1", "GET", "/metrics", {}, True),
    ("192.168.1.20", "GET", "/", {}, False),  # another machine on the LAN
    ("127.0.0.1", "GET", "/v1/status", {}, False),  # peer API
    ("127.0.0.1", "GET", "/api/peers", {"X-Ralphswarm-Auth": "x"}, False),  # the CLI speaks sealed
    ("127.0.0.1", "POST", "/api/tasks", {}, False),
])
def test_local_view_rule(remote, method, path, headers, clear):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (remote, 5000) if name == "peername" else default
    request = make_mocked_request(method, path, headers=headers, transport=transport)
    assert local_view(request) is clear
