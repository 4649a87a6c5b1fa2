"""An LLM that learns from the run, and the hybrid: the last crash's traceback tail, the loss curves
of the seed and the last attempt and the dead ends (grouped by what they changed) reach the prompt;
a proposal equal to a tried script but for comments, spacing or number spelling is rejected before
it runs; the hybrid hands a share of its steps to the LLM (which sees the optimizer's best
constants) and falls back to the optimizer when the LLM gives nothing usable, the failed call's
cost carried. The LLM is the real anthropic SDK against tests/fake_anthropic.py.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_learning.py"""
from __future__ import annotations

import asyncio
import random

import pytest

from ralph.context import crash_tail, curve_text, dead_ends
from ralph.corpus import Observation
from ralph.proposers import AnthropicConfig, AnthropicProposer, HybridProposer, OptimizerProposer, Proposal, ProposalError
from ralph.proposers.base import Usage
from ralph.proposers.retry import RetryPolicy
from tests.fake_anthropic import FakeAnthropic, text_reply
from tests.ralph.test_ralph_loop import ListProposer, lr, make_loop
from tests.ralph.test_ralph_support import SCRIPT

CODE_CHANGE = SCRIPT.replace("return MATRIX_LR * min(1.0, (1.0 - progress) / WARMDOWN_FRAC)",
                             "return MATRIX_LR * min(1.0, (1.0 - progress) / WARMDOWN_FRAC) ** 2")


@pytest.fixture
def server():
    with FakeAnthropic() as s:
        yield s


def run_steps(loop, n):
    async def go():
        return [await loop.step() for _ in range(n)]
    return asyncio.run(go())


def test_normalized_duplicate_is_rejected_before_it_runs(tmp_path):
    tried = lr("0.03")
    respelled = tried.replace("MATRIX_LR = 0.03  # Muon learning rate", "MATRIX_LR=0.030\n\n# same, respelled")
    loop, corpus, runner = make_loop(tmp_path, ListProposer(tried, respelled, SCRIPT + "# only a comment\n"))
    first, second, third = run_steps(loop, 3)
    assert first.status == "published"
    assert second.status == "skipped" and "but for comments, spacing or number spelling" in second.reason
    assert third.status == "skipped"  # the baseline, commented: tried too
    assert len(runner.calls) == 2  # the baseline's measurement and the first proposal; nothing else ran
    from ralph.space import source_key
    assert loop.memory.tried_keys() == {source_key(tried), source_key(SCRIPT)}  # remembered across restarts


def test_crash_tail_curves_and_dead_ends_reach_the_prompt(tmp_path, server):
    crash = lr("0.05") + "CRASH = 1\n"
    loop, corpus, runner = make_loop(tmp_path, ListProposer(crash, lr("0.2"), lr("0.3")))
    run_steps(loop, 3)
    server.script(text_reply(f"Note: schedule squared\n```python\n{CODE_CHANGE}```"))
    llm = AnthropicProposer(AnthropicConfig("claude-sonnet-5-5", 5.0, retry=RetryPolicy(attempts=1)),
                            api_key="sk-test", ledger_dir=tmp_path / "spend", base_url=server.base_url)
    loop.proposer = llm
    (report,) = run_steps(loop, 1)
    assert report.status == "published"
    text = server.requests[0].body["messages"][0]["content"][-1]["text"]
    assert "## Your last crash (tail of the traceback)" in text and "RuntimeError: boom" in text
    assert "## Loss curves" in text and "seed: 0: 5.545" in text and "last attempt (scripted change): 0: 5.545" in text
    dead = text.split("## Dead ends")[1].split("##")[0]
    assert "- MATRIX_LR up: 2 worse, 0 crashed" in dead
    assert "- MATRIX_LR up, code: 0 worse, 1 crashed" in dead  # CRASH = 1 is a new constant: new code


def test_context_helpers_bound_what_they_show():
    long = "Traceback (most recent call last):\n" + "  frame\n" * 1000 + "ValueError: the end"
    tail = crash_tail(long, 200)
    assert len(tail) <= 203 and tail.endswith("ValueError: the end") and tail.startswith("...")
    curve = tuple((i * 100, 5.0 - i * 0.01) for i in range(100))
    shown = curve_text(curve, 5)
    assert shown.count(":") == 5 and shown.startswith("0: 5.000") and shown.endswith("9900: 4.010")
    many = tuple(Observation(f"{i:064x}", SCRIPT.replace("0.4", f"0.{i + 50}") if i % 2 else lr(f"0.0{i + 3}"),
                             2.0, 1000, "worse", f"note {i}") for i in range(6))
    assert dead_ends(many, SCRIPT).splitlines() == [
        "- MATRIX_LR up: 3 worse, 0 crashed; latest: note 4",
        "- WARMDOWN_FRAC up: 3 worse, 0 crashed; latest: note 5"]


def test_hybrid_shares_steps_and_shows_the_optimizer_best(tmp_path, server):
    replies = [text_reply(f"Note: schedule squared\n```python\n{CODE_CHANGE}```")]
    replies += [text_reply("I have no idea.", input_tokens=500, output_tokens=10)] * 20  # then garbage
    server.script(*replies)
    llm = AnthropicProposer(AnthropicConfig("claude-sonnet-5-5", 5.0, retry=RetryPolicy(attempts=1)),
                            api_key="sk-test", ledger_dir=tmp_path / "spend", base_url=server.base_url)
    hybrid = HybridProposer(OptimizerProposer("tpe", seed=4), llm, share=0.3, seed=7)
    loop, corpus, runner = make_loop(tmp_path, hybrid)
    reports = run_steps(loop, 16)
    draws = random.Random("hybrid:7")
    expected_llm = sum(draws.random() < 0.3 for _ in range(16))
    assert len(server.requests) == expected_llm and 2 <= expected_llm <= 9
    assert hybrid.calls == {"llm": 1, "llm_failed": expected_llm - 1, "optimizer": 16 - 1}
    assert all(r.status == "published" for r in reports)  # a garbage reply never costs a step
    paid = [r for r in reports if r.usage.input_tokens]
    assert len(paid) == expected_llm and all(r.usage.cost_usd > 0 for r in paid)
    later = [req.body["messages"][0]["content"][-1]["text"] for req in server.requests[1:]]
    assert any("## The optimizer's best constants so far" in t and "val_bpb 1." in t for t in later)


def test_proposal_failure_reports_its_cost(tmp_path):
    class Paid:
        description = "proposer: paid garbage (test)"

        def propose(self, context):
            raise ProposalError("reply holds nothing", Usage(100, 20, 0, 0, 0.01))

    loop, _, _ = make_loop(tmp_path, Paid())
    (report,) = run_steps(loop, 1)
    assert report.status == "proposal_failed" and report.usage.cost_usd == 0.01


def test_hybrid_with_share_zero_never_calls_the_llm(tmp_path):
    class Never:
        description = "proposer: never (test)"

        def propose(self, context):
            raise AssertionError("called")

    loop, _, _ = make_loop(tmp_path, HybridProposer(OptimizerProposer("cmaes", seed=1), Never(), share=0.0))
    assert all(r.status == "published" for r in run_steps(loop, 3))
    assert isinstance(Proposal(SCRIPT, "x"), Proposal)
