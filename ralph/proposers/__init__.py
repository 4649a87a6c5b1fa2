"""Proposers: Anthropic when ANTHROPIC_API_KEY is set, offline hyperparameter mutation otherwise."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..settings import RalphSettings
from .anthropic_ import AnthropicConfig, AnthropicProposer
from .base import Proposal, ProposalError, Proposer, Usage
from .offline import OfflineProposer

__all__ = ["AnthropicConfig", "AnthropicProposer", "OfflineProposer", "Proposal", "ProposalError",
           "Proposer", "Usage", "select_proposer"]


def select_proposer(settings: RalphSettings, env: Mapping[str, str], *, home: Path | None = None,
                    seed: int = 0, base_url: str | None = None) -> Proposer:
    """The proposer this node uses, with ``.description`` saying which and why (log it at start).

    ``home`` holds the spend ledger (``<home>/spend/``); ``base_url`` falls back to
    ANTHROPIC_BASE_URL as the SDK itself does."""
    key = env.get("ANTHROPIC_API_KEY", "").strip()
    if not key:
        p = OfflineProposer(settings.boldness, seed)
        p.description = "proposer: offline mutation (no ANTHROPIC_API_KEY)"
        return p
    if settings.daily_spend_usd <= 0:
        p = OfflineProposer(settings.boldness, seed)
        p.description = "proposer: offline mutation (ralph.daily_spend_usd is 0)"
        return p
    ledger = Path(home if home is not None else ".") / "spend"
    return AnthropicProposer(AnthropicConfig(settings.model, settings.daily_spend_usd), api_key=key,
                             ledger_dir=ledger, base_url=base_url or env.get("ANTHROPIC_BASE_URL") or None)
