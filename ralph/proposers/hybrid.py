"""The hybrid: the optimizer proposes, and the LLM replaces a share of its proposals with code changes.

Ferreira and Hutter (arXiv 2603.24647) found that in a fixed search space classical optimizers beat
LLM agents at autoresearch, and that letting an LLM override about 30% of an optimizer's trials beats
both. Here the optimizer (proposers/optimizer.py) tunes the constants; with probability ``share`` a
step goes to the LLM instead, which sees the optimizer's best constants so far next to everything
else in the context, and may change code. When the LLM gives nothing usable (garbage reply, spend
cap, server down) the optimizer proposes for that step: one line in the log, no step lost, and what
the failed call cost is carried on the proposal.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from typing import TYPE_CHECKING, Any

from .base import Proposal, ProposalError, Proposer, Usage

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("ralph.hybrid")


class HybridProposer:
    def __init__(self, optimizer: Any, llm: Proposer, share: float = 0.3, *, seed: int = 0) -> None:
        self.optimizer, self.llm, self.share = optimizer, llm, share
        self.rng = random.Random(f"hybrid:{seed}")
        self.description = (f"proposer: hybrid, {optimizer.description.removeprefix('proposer: ')}; "
                            f"{share:.0%} of proposals by {llm.description.removeprefix('proposer: ')}")
        self.calls = {"llm": 0, "optimizer": 0, "llm_failed": 0}
        summarize = getattr(llm, "summarize", None)
        if summarize is not None:
            self.summarize = summarize

    def propose(self, context: "Context") -> Proposal:
        paid = Usage()
        if self.rng.random() < self.share:
            best = self.optimizer.best_text(context)
            try:
                proposal = self.llm.propose(dataclasses.replace(context, optimizer_best=best))
                self.calls["llm"] += 1
                return proposal
            except ProposalError as e:
                self.calls["llm_failed"] += 1
                paid = e.usage
                log.warning("ralph: the LLM's proposal failed (%s); the optimizer proposes instead", e)
        try:
            proposal = self.optimizer.propose(context)
        except ProposalError as e:
            raise ProposalError(str(e), paid + e.usage) from None
        self.calls["optimizer"] += 1
        return dataclasses.replace(proposal, usage=proposal.usage + paid)
