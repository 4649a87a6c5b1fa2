"""The Anthropic proposer through the REAL anthropic SDK against tests/fake_anthropic.py (loopback,
port 0, fake key): replies, retries, caching, usage and cost, spend cap.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_anthropic.py"""
from __future__ import annotations

import json
import random

import pytest

from tests.fake_anthropic import FakeAnthropic, Scripted, error_reply, text_reply
from ralph.proposers import AnthropicConfig, AnthropicProposer, OfflineProposer, ProposalError, select_proposer
from ralph.proposers.retry import RetryPolicy
from ralph.proposers.spend import SpendLedger, cost_usd, price_of
from ralph.settings import RalphSettings
from tests.ralph.test_ralph_support import SCRIPT, make_context
from trainer.patches import make_patch

NEW = SCRIPT.replace("MATRIX_LR = 0.02", "MATRIX_LR = 0.03")
DIFF = make_patch(SCRIPT, NEW)
GOOD = f"Note: raise MATRIX_LR to 0.03; the loss was still falling fast.\n\n```diff\n{DIFF}```\n"


@pytest.fixture
def server():
    with FakeAnthropic() as s:
        yield s


class Sleeps(list):
    def __call__(self, seconds: float) -> None:  # record instead of waiting: the policy is what is tested
        self.append(seconds)


def make(server, tmp_path, *, cap=5.0, attempts=4, model="claude-sonnet-5-5"):
    sleeps = Sleeps()
    p = AnthropicProposer(AnthropicConfig(model, cap, retry=RetryPolicy(attempts=attempts, base_s=0.5, max_s=30)),
                          api_key="sk-test-not-real", ledger_dir=tmp_path / "spend", base_url=server.base_url,
                          sleep=sleeps, rng=random.Random(0))
    return p, sleeps


def test_diff_reply_applies_and_usage_cost_recorded(server, tmp_path):
    server.script(text_reply(GOOD, input_tokens=1000, output_tokens=200, cache_read=3000, cache_write=500))
    p, _ = make(server, tmp_path)
    proposal = p.propose(make_context())
    assert proposal.source == NEW
    assert proposal.note == "raise MATRIX_LR to 0.03; the loss was still falling fast."
    u = proposal.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (1000, 200, 3000, 500)
    expected = (1000 * 2.0 + 200 * 10.0 + 3000 * 0.2 + 500 * 2.5) / 1e6  # Sonnet 5 family prices
    assert u.cost_usd == pytest.approx(expected)
    day = json.loads(next((tmp_path / "spend").glob("*.json")).read_text())
    assert day["calls"] == 1 and day["cost_usd"] == pytest.approx(expected) and day["cache_read_tokens"] == 3000


def test_request_caches_the_fixed_context(server, tmp_path):
    server.script(text_reply(GOOD))
    p, _ = make(server, tmp_path)
    p.propose(make_context(memory="#1 [worse] EMBED_LR 0.1 -> 0.2"))
    (req,) = server.requests
    assert req.api_key == "sk-test-not-real" and "anthropic-version" in req.headers
    body = req.body
    assert body["model"] == "claude-sonnet-5-5" and body["max_tokens"] > 0
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    blocks = body["messages"][0]["content"]
    assert [b.get("cache_control") for b in blocks] == [{"type": "ephemeral"}, {"type": "ephemeral"}, None]
    assert blocks[0]["text"].startswith("# Task") and SCRIPT.strip() in blocks[1]["text"]
    assert "EMBED_LR 0.1 -> 0.2" in blocks[2]["text"]  # memory rides in the uncached tail


def test_429_with_retry_after_then_success(server, tmp_path):
    server.script(error_reply(429, "slow down", retry_after="7"), text_reply(GOOD))
    p, sleeps = make(server, tmp_path)
    assert p.propose(make_context()).source == NEW
    assert len(server.requests) == 2 and sleeps == [7.0]


def test_500_then_success_backs_off_with_jitter(server, tmp_path):
    server.script(error_reply(500), error_reply(529, "overloaded"), text_reply(GOOD))
    p, sleeps = make(server, tmp_path)
    assert p.propose(make_context()).source == NEW
    assert len(server.requests) == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter under base * 2^(n-1)


def test_gives_up_after_n_attempts(server, tmp_path):
    server.script(*[error_reply(503)] * 5)
    p, sleeps = make(server, tmp_path, attempts=3)
    with pytest.raises(ProposalError, match="gave up after 3 attempts: HTTP 503"):
        p.propose(make_context())
    assert len(server.requests) == 3 and len(sleeps) == 2


def test_client_errors_are_not_retried(server, tmp_path):
    server.script(error_reply(400, "max_tokens: too large"), text_reply(GOOD))
    p, sleeps = make(server, tmp_path)
    with pytest.raises(ProposalError, match="HTTP 400: max_tokens: too large"):
        p.propose(make_context())
    assert len(server.requests) == 1 and sleeps == []


@pytest.mark.parametrize("reply", [
    text_reply("I would raise the learning rate a little."),
    text_reply("```\njust some text\n```"),
    Scripted(200, raw=b"\x00\x01 not json", headers={"content-type": "application/json"}),
])
def test_malformed_reply_is_a_proposal_error(server, tmp_path, reply):
    server.script(reply)
    p, _ = make(server, tmp_path)
    with pytest.raises(ProposalError):
        p.propose(make_context())


def test_diff_that_does_not_apply_is_a_proposal_error(server, tmp_path):
    bad = DIFF.replace("-MATRIX_LR = 0.02", "-MATRIX_LR = 0.05")
    server.script(text_reply(f"Note: x\n```diff\n{bad}```"))
    p, _ = make(server, tmp_path)
    with pytest.raises(ProposalError, match="patch does not apply"):
        p.propose(make_context())


def test_whole_file_and_bare_diff_replies(server, tmp_path):
    server.script(text_reply(f"Note: whole file\n```python\n{NEW}```"), text_reply(f"Note: bare\n{DIFF}"))
    p, _ = make(server, tmp_path)
    assert p.propose(make_context()).source == NEW
    bare = p.propose(make_context())
    assert bare.source == NEW and bare.note == "bare"


def test_syntax_error_in_whole_file_is_rejected(server, tmp_path):
    server.script(text_reply("Note: oops\n```python\ndef broken(:\n```"))
    p, _ = make(server, tmp_path)
    with pytest.raises(ProposalError, match="does not compile"):
        p.propose(make_context())


def test_spend_cap_refuses_without_calling(server, tmp_path):
    server.script(*[text_reply(GOOD, input_tokens=1000, output_tokens=1000)] * 3)  # $0.012 each
    p, _ = make(server, tmp_path, cap=0.02)
    p.propose(make_context())
    p.propose(make_context())
    with pytest.raises(ProposalError, match=r"daily spend cap reached: \$0.02 of \$0.02"):
        p.propose(make_context())
    assert len(server.requests) == 2
    # The ledger is a file: a restarted proposer sees the same day's spend.
    again, _ = make(server, tmp_path, cap=0.02)
    with pytest.raises(ProposalError, match="daily spend cap reached"):
        again.propose(make_context())
    assert len(server.requests) == 2


def test_ledger_is_per_day(tmp_path):
    from ralph.proposers.base import Usage
    day = ["2030-01-01"]
    ledger = SpendLedger(tmp_path, 1.0, today=lambda: day[0])
    ledger.record(Usage(cost_usd=1.0))
    with pytest.raises(ProposalError):
        ledger.check()
    day[0] = "2030-01-02"
    ledger.check()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["2030-01-01.json"]


def test_pricing_families():
    assert price_of("claude-opus-4-1").input == 15.0 and price_of("claude-opus-4-5").input == 5.0
    assert price_of("claude-haiku-4-5-20251001").output == 5.0
    assert price_of("some-future-model").input == 10.0  # unknown: priced high, never overspend
    assert cost_usd("claude-sonnet-4-5", 1_000_000, 0, 0, 0) == pytest.approx(3.0)


def test_strategy_summary_through_the_api(server, tmp_path):
    server.script(text_reply("- MATRIX_LR up helps\n- EMBED_LR down hurts"))
    p, _ = make(server, tmp_path)
    note, usage = p.summarize("", "#1 [KEPT] MATRIX_LR 0.02 -> 0.03", 10)
    assert note.startswith("- MATRIX_LR up helps") and usage.output_tokens == 300
    assert "MATRIX_LR 0.02 -> 0.03" in server.requests[0].body["messages"][0]["content"][0]["text"]


def test_select_proposer_by_environment(tmp_path, server):
    from ralph.proposers import HybridProposer, OptimizerProposer
    from ralph.settings import DEFAULT_PROPOSER
    s = RalphSettings()
    offline = select_proposer(s, {}, home=tmp_path)
    assert isinstance(offline, OptimizerProposer) and offline.sampler_name == DEFAULT_PROPOSER
    assert offline.description.endswith("(no ANTHROPIC_API_KEY)")
    assert isinstance(select_proposer(s.merged({"proposer": "mutate"}), {}, home=tmp_path), OfflineProposer)
    assert select_proposer(s.merged({"proposer": "cmaes"}), {}, home=tmp_path).sampler_name == "cmaes"
    asked = select_proposer(s.merged({"proposer": "llm"}), {}, home=tmp_path)  # no key: says so, runs offline
    assert isinstance(asked, OptimizerProposer) and "--proposer llm needs an LLM" in asked.description
    env = {"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": server.base_url}
    hybrid = select_proposer(s, env, home=tmp_path)  # with a key the default is the hybrid
    assert isinstance(hybrid, HybridProposer) and hybrid.share == 0.3
    assert "30% of proposals by anthropic (claude-sonnet-5-5 at http://127.0.0.1" in hybrid.description
    online = select_proposer(s.merged({"proposer": "llm"}), env, home=tmp_path)
    assert isinstance(online, AnthropicProposer)
    assert online.description == f"proposer: anthropic (claude-sonnet-5-5 at {server.base_url}, diff edits)"
    server.script(text_reply(GOOD))
    online.config = AnthropicConfig(s.model, s.daily_spend_usd, retry=RetryPolicy(attempts=1))
    assert online.propose(make_context()).source == NEW
    assert (tmp_path / "spend").is_dir()
    # --llm-base-url beats ANTHROPIC_BASE_URL, and a local server needs no key
    local = select_proposer(s.merged({"proposer": "llm", "llm_base_url": server.base_url, "model": "qwen3-8b"}),
                            {"ANTHROPIC_BASE_URL": "http://192.0.2.1:9"}, home=tmp_path)
    assert isinstance(local, AnthropicProposer) and local.format == "whole"  # not known for diffs
    local.config = AnthropicConfig("qwen3-8b", s.daily_spend_usd, retry=RetryPolicy(attempts=1))
    server.script(text_reply(f"Note: whole file\n```python\n{NEW}```"))
    assert local.propose(make_context()).source == NEW
    assert server.requests[-1].api_key == "no-key"
    assert "whole new train.py" in server.requests[-1].body["system"][0]["text"]
    assert isinstance(select_proposer(s.merged({"daily_spend_usd": 0}), env, home=tmp_path), OptimizerProposer)


def test_edit_format_setting_reaches_the_prompt(server, tmp_path):
    for fmt, marker in (("diff", "unified diff"), ("whole", "whole new train.py")):
        p = AnthropicProposer(AnthropicConfig("claude-sonnet-5-5", 5.0, retry=RetryPolicy(attempts=1), edit_format=fmt),
                              api_key="sk-test", ledger_dir=tmp_path / "spend", base_url=server.base_url)
        server.script(text_reply(GOOD))
        p.propose(make_context())
        assert marker in server.requests[-1].body["system"][0]["text"]


def test_failed_reply_carries_what_it_cost(server, tmp_path):
    server.script(text_reply("no change here", input_tokens=1000, output_tokens=100))
    p, _ = make(server, tmp_path)
    with pytest.raises(ProposalError) as info:
        p.propose(make_context())
    assert info.value.usage.input_tokens == 1000 and info.value.usage.cost_usd > 0
