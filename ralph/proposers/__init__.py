"""Proposers, chosen by ``ralph.proposer`` (select_proposer): an optimizer over the script's
constants (TPE, CMA-ES), random mutation, an LLM (Anthropic's Messages API, or any server speaking
OpenAI's Chat Completions), or the hybrid of an optimizer and an LLM."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..settings import DEFAULT_PROPOSER, RalphSettings
from .anthropic_ import AnthropicConfig, AnthropicProposer
from .base import Proposal, ProposalError, Proposer, Usage
from .hybrid import HybridProposer
from .offline import OfflineProposer
from .openai_ import OpenAIProposer
from .optimizer import OptimizerProposer

__all__ = ["AnthropicConfig", "AnthropicProposer", "HybridProposer", "OfflineProposer", "OpenAIProposer",
           "OptimizerProposer", "Proposal", "ProposalError", "Proposer", "Usage", "select_proposer"]

KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
BASE_URL_ENV = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL"}
LOCAL_KEY = "no-key"  # sent to a server named by llm_base_url when no key is set (local servers need none)


def _offline(name: str, settings: RalphSettings, seed: int, study_path: Path | None) -> Proposer:
    if name == "mutate":
        p: Proposer = OfflineProposer(settings.boldness, seed)
        p.description = "proposer: offline mutation"
        return p
    return OptimizerProposer(name, seed=seed, study_path=study_path)


def _llm(settings: RalphSettings, env: Mapping[str, str], home: Path | None,
         base_url: str | None) -> tuple[Proposer | None, str]:
    """The LLM proposer the settings and environment allow, or (None, why not)."""
    api = settings.llm_api
    key = env.get(KEY_ENV[api], "").strip()
    url = base_url or settings.llm_base_url or env.get(BASE_URL_ENV[api], "").strip() or None
    if not key and not settings.llm_base_url and not base_url:
        return None, f"no {KEY_ENV[api]}"
    if settings.daily_spend_usd <= 0:
        return None, "ralph.daily_spend_usd is 0"
    ledger = Path(home if home is not None else ".") / "spend"
    if api == "openai":
        return OpenAIProposer(settings.model, settings.daily_spend_usd, api_key=key or LOCAL_KEY, ledger_dir=ledger,
                              base_url=url, edit_format=settings.edit_format), ""
    config = AnthropicConfig(settings.model, settings.daily_spend_usd, edit_format=settings.edit_format)
    return AnthropicProposer(config, api_key=key or LOCAL_KEY, ledger_dir=ledger, base_url=url), ""


def select_proposer(settings: RalphSettings, env: Mapping[str, str], *, home: Path | None = None,
                    seed: int = 0, base_url: str | None = None, study_path: Path | None = None) -> Proposer:
    """The proposer this node uses, with ``.description`` saying which and why (log it at start).

    ``ralph.proposer`` "" means the hybrid when an LLM is usable, else DEFAULT_PROPOSER. An LLM is
    usable with its key (ANTHROPIC_API_KEY or OPENAI_API_KEY, by ``llm_api``) or with an explicit
    ``llm_base_url`` (a local server), and a spend cap above 0. ``home`` holds the spend ledger
    (``<home>/spend/``); ``study_path`` the optimizer's study file (None: in memory)."""
    name = settings.proposer
    wants_llm = name in ("", "llm", "hybrid")
    llm, why = _llm(settings, env, home, base_url) if wants_llm else (None, "")
    if name == "" and llm is None:
        chosen = _offline(DEFAULT_PROPOSER, settings, seed, study_path)
        chosen.description += f" ({why})"
        return chosen
    if name == "":
        name = "hybrid"
    if name in ("llm", "hybrid") and llm is None:
        fallback = _offline(DEFAULT_PROPOSER, settings, seed, study_path)
        fallback.description += f" ({why}; --proposer {name} needs an LLM)" if settings.proposer else f" ({why})"
        return fallback
    if name == "llm":
        assert llm is not None
        return llm
    if name == "hybrid":
        assert llm is not None
        optimizer = OptimizerProposer(DEFAULT_PROPOSER, seed=seed, study_path=study_path)
        return HybridProposer(optimizer, llm, settings.llm_share, seed=seed)
    return _offline(name, settings, seed, study_path)
