"""What every proposer offers the loop: ``propose(context) -> Proposal`` or a ``ProposalError``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..context import Context


class ProposalError(Exception):
    """No usable proposal: the reason is one line (``patch does not apply: ...``, ``spend cap reached``).

    A proposal that fails is never run and never published. ``usage`` is what the failed attempt
    cost (a paid reply that held no usable change still counts towards the node's spend)."""

    def __init__(self, message: str, usage: "Usage | None" = None) -> None:
        super().__init__(message)
        self.usage = usage if usage is not None else Usage()


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one proposal; all zero for the offline proposer."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True)
class Proposal:
    source: str  # the whole new train script
    note: str  # what changed and why, one or a few lines
    usage: Usage = field(default_factory=Usage)


@runtime_checkable
class Proposer(Protocol):
    description: str  # one line for logs: "proposer: offline mutation (no ANTHROPIC_API_KEY)"

    def propose(self, context: "Context") -> Proposal: ...
