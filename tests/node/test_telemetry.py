"""The node's typed telemetry: counters by name, one activity entry per device, proposer usage.

Run: .venv/bin/python -m pytest tests/node/test_telemetry.py -q
"""
from __future__ import annotations

import asyncio

import pytest

from node.device_run import on_device
from node.slots import DeviceSlots
from node.telemetry import Counter, Telemetry, vote_counter
from protocol import VERDICTS
from ralph.proposers.base import Usage


def test_counters_are_typed_and_read_by_name():
    t = Telemetry()
    t.count(Counter.EXPERIMENTS_RUN)
    t.count("experiments_run", 2)
    assert t.counters["experiments_run"] == 3
    with pytest.raises(ValueError):
        t.count("experiments_runn")
    assert {vote_counter(v) for v in VERDICTS} == {c for c in Counter if c.startswith("votes_")}


def test_proposer_usage_feeds_the_token_and_cost_counters():
    t = Telemetry()
    t.count_usage(Usage())
    assert t.counters == {}
    t.count_usage(Usage(input_tokens=100, output_tokens=20, cache_read_tokens=5, cost_usd=0.01))
    t.count_usage(Usage(input_tokens=50, cost_usd=0.02))
    assert t.counters[Counter.PROPOSER_INPUT_TOKENS] == 150 and t.counters[Counter.PROPOSER_OUTPUT_TOKENS] == 20
    assert t.counters[Counter.PROPOSER_CACHE_READ_TOKENS] == 5
    assert t.counters[Counter.PROPOSER_COST_USD] == pytest.approx(0.03)


async def test_two_devices_keep_two_entries():
    t, slots = Telemetry(), DeviceSlots(devices=["cuda:0", "cuda:1"])
    started, release = asyncio.Event(), asyncio.Event()

    def train(tokens: int, *, device: str, on_progress) -> str:
        on_progress(tokens, 100, 2.5)
        return device

    async def one(kind: str, tokens: int) -> str:
        async with on_device(slots, t, kind, kind=kind, budget=100) as slot:
            done = await slot.run(train, tokens, phase="full")
            if len(t.activity["experiments"]) == 2:
                started.set()
            await asyncio.wait_for(started.wait(), 5)
            await release.wait()
            return done

    tasks = [asyncio.create_task(one("ralph", 10)), asyncio.create_task(one("reproduce", 20))]
    await asyncio.wait_for(started.wait(), 5)
    running = t.activity["experiments"]
    assert set(running) == {"cuda:0", "cuda:1"}
    assert sorted((e["kind"], e["tokens"], e["phase"]) for e in running.values()) == [
        ("ralph", 10, "full"), ("reproduce", 20, "full")]
    assert t.activity["experiment"] in running.values()
    release.set()
    assert sorted(await asyncio.gather(*tasks)) == ["cuda:0", "cuda:1"]
    assert t.activity["experiments"] == {} and t.activity["experiment"] is None and not slots.in_use


def test_each_ralph_step_shows_its_line_and_counts_its_usage():
    from types import SimpleNamespace

    from node.ralph_runner import RalphRunner
    from ralph.loop import StepReport
    from ralph.settings import RalphSettings

    runner = RalphRunner(RalphSettings(), env={})
    runner.node = SimpleNamespace(telemetry=Telemetry())
    runner._stepped(1)(StepReport("skipped", None, "note", reason="duplicate", usage=Usage(input_tokens=7, cost_usd=0.5)))
    t = runner.node.telemetry
    assert t.counters == {Counter.PROPOSER_INPUT_TOKENS: 7, Counter.PROPOSER_COST_USD: 0.5}
    [line] = t.activity["recent"]
    assert line["agent"] == 1 and line["kind"] == "ralph" and "duplicate" in line["text"]
    assert not runner.busy
