"""Spend and usage visible (issue 14 item 6): a real in-process node runs its own Ralph loop with the
LLM proposer talking to tests/fake_anthropic.py; the tokens and cost of its replies reach the node's
counters, /metrics (ralphswarm_proposer_tokens, ralphswarm_proposer_cost_usd) and /api/activity,
including a paid reply that held no usable change. The loop trains the task baseline once for real
(tiny at a small budget scale), so this is slow.
Run: .venv/bin/python -m pytest tests/node/test_proposer_usage.py"""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.daemon import Node
from node.ralph_runner import RalphRunner
from node.settings import NetworkSettings, NodeSettings
from protocol import Identity
from ralph.proposers.spend import cost_usd
from ralph.settings import RalphSettings
from tests.fake_anthropic import FakeAnthropic, text_reply

pytestmark = pytest.mark.slow


async def test_llm_tokens_and_cost_reach_metrics_and_activity(tmp_path):
    with FakeAnthropic() as server:
        # unusable replies: each is paid, none trains (the loop backs off after each)
        server.script(text_reply("no idea", input_tokens=1000, output_tokens=50, cache_read=2000),
                      text_reply("still nothing", input_tokens=700, output_tokens=30))
        settings = NodeSettings(home=tmp_path / "n", network=NetworkSettings(port=0, lan=False), ralph=True,
                                reproduce=False, device="cpu", budget_scale=0.01)
        node = Node(settings, Identity.generate(), echo=lambda _: None)
        runner = RalphRunner(RalphSettings(proposer="llm", model="claude-sonnet-5-5"), max_steps=2, pause_s=0.01,
                             env={"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": server.base_url})
        node.extensions.append(runner)
        await node.start()
        try:
            # the loop's two steps: wait for its task to end (max_steps), bounded by the baseline's run
            await asyncio.wait_for(asyncio.gather(*runner._tasks), timeout=300)
            assert len(server.requests) == 2
            expected = cost_usd("claude-sonnet-5-5", 1000, 50, 2000, 0) + cost_usd("claude-sonnet-5-5", 700, 30, 0, 0)
            async with aiohttp.ClientSession() as session:
                async with session.get(node.address + "/metrics") as resp:
                    text = await resp.text()
                async with session.get(node.address + "/api/activity") as resp:
                    act = await resp.json()
            m = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in text_string_to_metric_families(text) for s in f.samples}
            assert m[("ralphswarm_proposer_tokens_total", (("direction", "input"),))] == 1700
            assert m[("ralphswarm_proposer_tokens_total", (("direction", "output"),))] == 80
            assert m[("ralphswarm_proposer_tokens_total", (("direction", "cache_read"),))] == 2000
            assert m[("ralphswarm_proposer_cost_usd_total", ())] == pytest.approx(expected)
            assert act["counters"]["proposer_cost_usd"] == pytest.approx(expected)
            assert any("proposal_failed" in r["text"] for r in act["recent"])
        finally:
            await node.stop()
