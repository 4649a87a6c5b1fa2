"""The OpenAI-compatible proposer through the REAL openai SDK against tests/fake_openai.py (loopback,
port 0): replies in both edit formats, usage and cost (free on loopback, priced elsewhere), retries,
garbage replies, the key.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_openai.py"""
from __future__ import annotations

import random

import pytest

from ralph.proposers import OpenAIProposer, ProposalError, select_proposer
from ralph.proposers.retry import RetryPolicy
from ralph.proposers.spend import cost_usd
from ralph.settings import RalphSettings
from tests.fake_anthropic import Scripted
from tests.fake_openai import FakeOpenAI, chat_reply, error_reply
from tests.ralph.test_ralph_support import SCRIPT, make_context
from trainer.patches import make_patch

NEW = SCRIPT.replace("EMBED_LR = 0.1", "EMBED_LR = 0.2")
DIFF = make_patch(SCRIPT, NEW)


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def make(server, tmp_path, *, model="qwen3-coder-30b", attempts=3, free=None, cap=5.0, fmt="auto"):
    sleeps: list[float] = []
    p = OpenAIProposer(model, cap, api_key="sk-local", ledger_dir=tmp_path / "spend", base_url=server.base_url,
                       edit_format=fmt, free=free, retry=RetryPolicy(attempts=attempts, base_s=0.5, max_s=30),
                       sleep=sleeps.append, rng=random.Random(0))
    return p, sleeps


def test_whole_file_reply_for_a_local_model(server, tmp_path):
    server.script(chat_reply(f"Note: EMBED_LR up\n```python\n{NEW}```", prompt_tokens=2000, completion_tokens=400,
                             cached_tokens=1500))
    p, _ = make(server, tmp_path)
    assert p.format == "whole" and p.free  # an unknown model on loopback: whole files, no cost
    proposal = p.propose(make_context(memory="#1 [worse] MATRIX_LR 0.02 -> 0.01"))
    assert proposal.source == NEW and proposal.note == "EMBED_LR up"
    u = proposal.usage
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.cost_usd) == (500, 1500, 400, 0.0)
    (req,) = server.requests
    assert req.api_key == "sk-local" and req.body["model"] == "qwen3-coder-30b"
    system, user = req.body["messages"]
    assert system["role"] == "system" and "whole new train.py" in system["content"]
    assert user["content"].startswith("# Task") and SCRIPT.strip() in user["content"]
    assert "MATRIX_LR 0.02 -> 0.01" in user["content"]


def test_diff_reply_priced_when_not_local(server, tmp_path):
    server.script(chat_reply(f"Note: diff\n```diff\n{DIFF}```", prompt_tokens=1000, completion_tokens=100))
    p, _ = make(server, tmp_path, model="gpt-5-mini", free=False)
    assert p.format == "diff"
    proposal = p.propose(make_context())
    assert proposal.source == NEW
    assert proposal.usage.cost_usd == pytest.approx(cost_usd("gpt-5-mini", 1000, 100, 0, 0))
    assert proposal.usage.cost_usd > 0
    assert "unified diff" in server.requests[0].body["messages"][0]["content"]


def test_retries_then_success(server, tmp_path):
    server.script(error_reply(429, "slow down", retry_after="4"), error_reply(503), chat_reply(f"```python\n{NEW}```"))
    p, sleeps = make(server, tmp_path)
    assert p.propose(make_context()).source == NEW
    assert len(server.requests) == 3 and sleeps[0] == 4.0 and 0 <= sleeps[1] <= 1.0


@pytest.mark.parametrize("reply, match", [
    (Scripted(200, raw=b"\x00garbage", headers={"content-type": "application/json"}), "unreadable reply"),
    (Scripted(200, raw=b"<html>proxy error</html>", headers={"content-type": "text/html"}), "unreadable reply|without a message"),
    (Scripted(200, {"id": "x", "object": "chat.completion", "choices": []}), "without a message"),
    (chat_reply(None), "no ```diff or ```python block"),
    (chat_reply("I think a larger learning rate would help."), "no ```diff or ```python block"),
    (error_reply(400, "context length exceeded"), "HTTP 400: context length exceeded"),
    (error_reply(401, "bad key"), "rejected the key"),
])
def test_bad_replies_are_one_line_proposal_errors(server, tmp_path, reply, match):
    server.script(reply)
    p, _ = make(server, tmp_path, attempts=1)
    with pytest.raises(ProposalError, match=match) as info:
        p.propose(make_context())
    assert "\n" not in str(info.value)


def test_server_down_gives_up(tmp_path):
    p = OpenAIProposer("m", 5.0, api_key="k", ledger_dir=tmp_path, base_url="http://127.0.0.1:9/v1",
                       retry=RetryPolicy(attempts=2, base_s=0.01), sleep=lambda s: None, timeout_s=2)
    with pytest.raises(ProposalError, match="unavailable: gave up after 2 attempts: APIConnectionError"):
        p.propose(make_context())


def test_selected_by_llm_api(server, tmp_path):
    s = RalphSettings(proposer="llm", llm_api="openai", model="llama-3.3-70b")
    p = select_proposer(s, {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-x"}, home=tmp_path)
    assert isinstance(p, OpenAIProposer)
    assert p.description == f"proposer: openai-compatible (llama-3.3-70b at {server.base_url}, whole edits)"
    local = select_proposer(s.merged({"llm_base_url": server.base_url}), {}, home=tmp_path)
    server.script(chat_reply(f"```python\n{NEW}```"))
    assert local.propose(make_context()).source == NEW and server.requests[-1].api_key == "no-key"
    assert "OPENAI_API_KEY" in select_proposer(s, {}, home=tmp_path).description
