"""The Anthropic proposer: one Messages API call per proposal through the official SDK.

Key from the environment, configurable model, prompt caching on the fixed context (see prompt.py),
our own retry loop (retry.py), a daily spend cap with a persisted ledger (spend.py), usage and cost
per proposal, and a reply parser that never lets a non-applying diff through (reply.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import anthropic

from ..context import Context
from .base import Proposal, ProposalError, Usage
from .prompt import edit_format, proposal_request, summary_request
from .reply import parse_reply
from .retry import GaveUp, RetryPolicy, call_with_retry
from .spend import SpendLedger, cost_usd


@dataclass(frozen=True)
class AnthropicConfig:
    model: str
    daily_spend_usd: float
    max_tokens: int = 4096
    timeout_s: float = 120.0
    retry: RetryPolicy = RetryPolicy()
    edit_format: str = "auto"  # diff | whole | auto (prompt.edit_format)


class AnthropicProposer:
    def __init__(self, config: AnthropicConfig, *, api_key: str, ledger_dir: Path, base_url: str | None = None,
                 sleep: Callable[[float], None] | None = None, rng: random.Random | None = None) -> None:
        self.config = config
        # max_retries=0: call_with_retry is the single retry loop, so attempts and waits are ours.
        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=config.timeout_s)
        self.ledger = SpendLedger(ledger_dir, config.daily_spend_usd)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.format = edit_format(config.model, config.edit_format)
        where = "" if base_url is None else f" at {base_url}"
        self.description = f"proposer: anthropic ({config.model}{where}, {self.format} edits)"

    def _call(self, request: dict[str, Any]) -> tuple[str, Usage]:
        self.ledger.check()
        kwargs = {"sleep": self._sleep} if self._sleep is not None else {}
        try:
            message = call_with_retry(lambda: self.client.messages.create(**request), self.config.retry,
                                      rng=self._rng, **kwargs)
        except GaveUp as e:
            raise ProposalError(f"anthropic API unavailable: {e}") from None
        except anthropic.AuthenticationError:
            raise ProposalError("anthropic API rejected the key (HTTP 401): check ANTHROPIC_API_KEY") from None
        except anthropic.APIStatusError as e:
            raise ProposalError(f"anthropic API error HTTP {e.status_code}: {_error_text(e)}") from None
        except (anthropic.APIError, ValueError) as e:  # a 200 whose body is not a Message (or not JSON)
            raise ProposalError(f"anthropic API sent an unreadable reply ({type(e).__name__})") from None
        usage = self._usage(message)
        self.ledger.record(usage)  # recorded even if the reply turns out unusable: it was paid for
        text = "".join(getattr(block, "text", "") for block in message.content if block.type == "text")
        return text, usage

    def _usage(self, message: Any) -> Usage:
        u = message.usage
        cache_read = u.cache_read_input_tokens or 0
        cache_write = u.cache_creation_input_tokens or 0
        return Usage(u.input_tokens, u.output_tokens, cache_read, cache_write,
                     cost_usd(self.config.model, u.input_tokens, u.output_tokens, cache_read, cache_write))

    def propose(self, context: Context) -> Proposal:
        text, usage = self._call(proposal_request(context, self.config.model, self.config.max_tokens, self.format))
        try:
            source, note = parse_reply(text, context.seed.source)
        except ProposalError as e:
            raise ProposalError(f"{e} (cost ${usage.cost_usd:.4f})", usage) from None
        return Proposal(source, note, usage)

    def summarize(self, previous: str, history: str, depth: int) -> tuple[str, Usage]:
        """Rewrite the strategy note (memory_type "strategy"); the loop falls back to memory.summarize
        on a ProposalError."""
        text, usage = self._call(summary_request(previous, history, self.config.model, depth, 1024))
        if not text.strip():
            raise ProposalError("empty strategy note in reply", usage)
        return text.strip(), usage


def _error_text(e: anthropic.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str(err.get("message") or e.message)[:200]
