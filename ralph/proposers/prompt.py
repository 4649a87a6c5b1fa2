"""The Messages API request for one proposal, fixed part first so it can be cached.

Prompt caching caches the prefix up to each ``cache_control`` breakpoint: the system prompt never
changes, the task text changes never within a task, the seed source only when the seed does. The
leaderboard, negatives and memory come last, uncached, because they change every step.
"""
from __future__ import annotations

from typing import Any

from ..context import Context

EPHEMERAL = {"type": "ephemeral"}

SYSTEM = """You are one agent in a swarm doing autoresearch: you improve a small GPT training script.
The harness (data, token budget, evaluation) is fixed; you may change only train.py: the model, the
optimizer, the schedules and the hyperparameter constants at its top. The budget is counted in
training tokens, so making the script faster does not buy more training; better use of the same
tokens does. Lower val_bpb is better. A change is kept only if it beats its seed by more than the
task's noise tolerance.

Propose exactly ONE focused change per reply, different from what the swarm already tried.
Answer with:
Note: <one line: what you changed and why>
"""

DIFF_FORMAT = """then the change as a unified diff against the seed train.py in a ```diff fenced block
(--- a/train.py, +++ b/train.py, @@ hunks with exact context lines). Only if the change is too large
for a diff, give the whole new file in a ```python block instead."""

WHOLE_FORMAT = """then the whole new train.py, every line of it, in one ```python fenced block (not a diff,
not an excerpt: the block replaces the file)."""

# Models known to write well-formed unified diffs; others get whole files (aider's edit-format
# measurements: small open models produce valid whole files far more often than valid diffs).
DIFF_CAPABLE = ("claude", "gpt-4", "gpt-5", "o1", "o3", "o4")


def edit_format(model: str, setting: str) -> str:
    """``diff`` or ``whole``: the setting, or for ``auto`` what the model is known to do well."""
    if setting in ("diff", "whole"):
        return setting
    return "diff" if model.lower().startswith(DIFF_CAPABLE) else "whole"


def system_text(fmt: str) -> str:
    return SYSTEM + (DIFF_FORMAT if fmt == "diff" else WHOLE_FORMAT)


SUMMARIZE = """You keep the strategy note of one autoresearch agent. Rewrite the note so it captures
what has been learned: which directions helped, which hurt or crashed, what to try next. At most
{depth} short lines, no preamble, plain text."""


def fixed_blocks(context: Context) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": "# Task\n" + context.task_text, "cache_control": EPHEMERAL},
        {"type": "text", "cache_control": EPHEMERAL,
         "text": (f"# Seed train.py ({context.seed.origin}"
                  + (f", claim {context.seed.claim_id[:12]}" if context.seed.claim_id else "")
                  + (f", val_bpb {context.seed.val_bpb:.6f}" if context.seed.val_bpb is not None else "")
                  + ")\n```python\n" + context.seed.source.rstrip() + "\n```")},
    ]


def instruction(context: Context) -> str:
    return (f"{context.variable_text()}\n\n# Your turn\nPropose one change to the seed train.py "
            f"that you expect to lower val_bpb by more than {context.keep_threshold:g}.")


def proposal_request(context: Context, model: str, max_tokens: int, fmt: str = "diff") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": [{"type": "text", "text": system_text(fmt), "cache_control": EPHEMERAL}],
        "messages": [{"role": "user", "content": fixed_blocks(context) + [{"type": "text", "text": instruction(context)}]}],
    }


def chat_request(context: Context, model: str, max_tokens: int, fmt: str) -> dict[str, Any]:
    """The same prompt for a Chat Completions server: one system and one user message, fixed part
    first (servers with automatic prefix caching reuse it)."""
    user = "\n\n".join(block["text"] for block in fixed_blocks(context)) + "\n\n" + instruction(context)
    return {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": system_text(fmt)}, {"role": "user", "content": user}]}


def chat_summary_request(previous: str, history: str, model: str, depth: int, max_tokens: int) -> dict[str, Any]:
    req = summary_request(previous, history, model, depth, max_tokens)
    return {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": req["system"][0]["text"]},
                         {"role": "user", "content": req["messages"][0]["content"][0]["text"]}]}


def summary_request(previous: str, history: str, model: str, depth: int, max_tokens: int) -> dict[str, Any]:
    text = f"# Previous note\n{previous or '(none)'}\n\n# Experiments since\n{history}\n\nWrite the new note."
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": [{"type": "text", "text": SUMMARIZE.format(depth=depth)}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
