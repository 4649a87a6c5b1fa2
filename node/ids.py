"""One id rule everywhere (docs/design.md, "What a user sees"): every command and the dashboard take
any unique prefix of at least MIN_PREFIX hex digits of a claim, vote or task id, and print ids
shortened to SHORT hex digits, which are always enough to name them again.

``resolve`` answers the full id, or raises a UserError of one line: "not found" or "ambiguous"
(with the candidates it could mean, shortened).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from node.errors import UserError

SHORT = 12  # hex digits of an id as the CLI and the dashboard print it
MIN_PREFIX = 6  # the fewest hex digits a command takes as an id
_PREFIX = re.compile(r"[0-9a-f]+")
KINDS = ("claim", "vote", "task")


def short(full_id: str | None) -> str:
    return full_id[:SHORT] if full_id else "-"


def is_prefix(text: str) -> bool:
    """Whether ``text`` can name an id: MIN_PREFIX to 64 lower-case hex digits."""
    return MIN_PREFIX <= len(text) <= 64 and bool(_PREFIX.fullmatch(text))


def check_prefix(text: str, what: str = "id") -> str:
    text = text.strip()
    if not is_prefix(text):
        raise UserError(f"{what} {text!r} is not an id: give {MIN_PREFIX} to 64 lower-case hex digits of one")
    return text


def pick(prefix: str, candidates: Iterable[str], what: str = "id") -> str:
    """The one candidate starting with ``prefix`` (already checked), else a one-line UserError."""
    hits = sorted({c for c in candidates if c.startswith(prefix)})
    if not hits:
        raise UserError(f"not found: no {what} starts with {prefix}")
    if len(hits) > 1:
        shown = ", ".join(h[:max(SHORT, len(prefix) + 2)] for h in hits[:5])
        more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
        raise UserError(f"ambiguous: {prefix} starts {len(hits)} ids ({shown}{more}); give more digits")
    return hits[0]


async def message_ids(replica: Any, prefix: str) -> list[str]:
    """Ids of stored messages starting with ``prefix`` (every kind)."""
    if len(prefix) == 64:
        return [prefix] if await replica.has_ids([prefix]) else []
    return [i for _, i in await replica.items() if i.startswith(prefix)]


async def task_ids(replica: Any, registry_ids: Iterable[str]) -> set[str]:
    """Task ids this node knows: built-in and corpus tasks, and those claims name."""
    return set(registry_ids) | set(await replica.claim_tasks())


async def resolve(replica: Any, text: str, *, kinds: tuple[str, ...] = KINDS, registry_ids: Iterable[str] = (),
                  what: str | None = None) -> tuple[str, str]:
    """(full id, kind) of the claim, vote or task (those of ``kinds``) that ``text`` names; a task
    need not be stored as a message (a built-in one, or one only claims name: kind "task")."""
    what = what or (", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0])
    prefix = check_prefix(text, what)
    found: dict[str, str] = {}
    for msg_id in await message_ids(replica, prefix):
        env = await replica.get(msg_id)
        if env is not None and env.kind in kinds:
            found[msg_id] = env.kind
    if "task" in kinds:
        for tid in await task_ids(replica, registry_ids):
            if tid.startswith(prefix):
                found.setdefault(tid, "task")
    full = pick(prefix, found, what)
    return full, found[full]
