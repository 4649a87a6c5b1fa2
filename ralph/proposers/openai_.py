"""The OpenAI-compatible proposer: one Chat Completions call per proposal through the ``openai`` package.

For servers that speak only Chat Completions: OpenAI itself, and local or self-hosted models behind
vLLM, llama.cpp's server or Ollama (``llm_base_url``, e.g. ``http://127.0.0.1:8000/v1``). Same
retry loop (retry.py), spend ledger and reply parser as the Anthropic proposer; no router library
in between (a node holds keys). A model on a loopback server costs nothing; elsewhere tokens are
priced by spend.py's table, where an unknown model is priced like the dearest, so the cap errs on
the side of spending less.
"""
from __future__ import annotations

import ipaddress
import random
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import openai

from ..context import Context
from .base import Proposal, ProposalError, Usage
from .prompt import chat_request, chat_summary_request, edit_format
from .reply import parse_reply
from .retry import GaveUp, RetryPolicy, call_with_retry
from .spend import SpendLedger, cost_usd


def is_loopback(url: str | None) -> bool:
    host = urlparse(url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIProposer:
    def __init__(self, model: str, daily_spend_usd: float, *, api_key: str, ledger_dir: Path,
                 base_url: str | None = None, edit_format: str = "auto", free: bool | None = None,
                 max_tokens: int = 4096, timeout_s: float = 120.0, retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] | None = None, rng: random.Random | None = None) -> None:
        """``free``: tokens cost nothing (default: when the server is on loopback, a local model)."""
        self.model, self.max_tokens, self.retry = model, max_tokens, retry
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
        self.ledger = SpendLedger(ledger_dir, daily_spend_usd)
        self.free = is_loopback(base_url) if free is None else free
        self.format = _edit_format(model, edit_format)
        self._sleep = sleep
        self._rng = rng or random.Random()
        where = "" if base_url is None else f" at {base_url}"
        self.description = f"proposer: openai-compatible ({model}{where}, {self.format} edits)"

    def _call(self, request: dict[str, Any]) -> tuple[str, Usage]:
        self.ledger.check()
        kwargs = {"sleep": self._sleep} if self._sleep is not None else {}
        try:
            reply = call_with_retry(lambda: self.client.chat.completions.create(**request), self.retry,
                                    rng=self._rng, sdk=openai, **kwargs)
        except GaveUp as e:
            raise ProposalError(f"LLM server unavailable: {e}") from None
        except openai.AuthenticationError:
            raise ProposalError("LLM server rejected the key (HTTP 401): check OPENAI_API_KEY") from None
        except openai.APIStatusError as e:
            raise ProposalError(f"LLM server error HTTP {e.status_code}: {_error_text(e)}") from None
        except (openai.APIError, ValueError, TypeError) as e:  # a 200 whose body is not a completion
            raise ProposalError(f"LLM server sent an unreadable reply ({type(e).__name__})") from None
        usage = self._usage(reply)
        self.ledger.record(usage)  # recorded even if the reply turns out unusable: it was paid for
        try:
            text = reply.choices[0].message.content or ""
            if not isinstance(text, str):
                raise TypeError
        except (AttributeError, IndexError, TypeError):
            raise ProposalError("LLM server sent a completion without a message", usage) from None
        return text, usage

    def _usage(self, reply: Any) -> Usage:
        u = getattr(reply, "usage", None)
        prompt = _int(getattr(u, "prompt_tokens", 0))
        output = _int(getattr(u, "completion_tokens", 0))
        cached = _int(getattr(getattr(u, "prompt_tokens_details", None), "cached_tokens", 0))
        cached = min(cached, prompt)
        uncached = prompt - cached
        cost = 0.0 if self.free else cost_usd(self.model, uncached, output, cached, 0)
        return Usage(uncached, output, cached, 0, cost)

    def propose(self, context: Context) -> Proposal:
        text, usage = self._call(chat_request(context, self.model, self.max_tokens, self.format))
        try:
            source, note = parse_reply(text, context.seed.source)
        except ProposalError as e:
            raise ProposalError(f"{e} (cost ${usage.cost_usd:.4f})", usage) from None
        return Proposal(source, note, usage)

    def summarize(self, previous: str, history: str, depth: int) -> tuple[str, Usage]:
        text, usage = self._call(chat_summary_request(previous, history, self.model, depth, 1024))
        if not text.strip():
            raise ProposalError("empty strategy note in reply", usage)
        return text.strip(), usage


def _edit_format(model: str, setting: str) -> str:
    return edit_format(model, setting)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _error_text(e: Any) -> str:
    body = e.body if isinstance(getattr(e, "body", None), dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else body
    return str(err.get("message") or getattr(e, "message", "") or "")[:200]
