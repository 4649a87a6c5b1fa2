"""Turn a model's reply into a new train script: a ```diff fence, a whole ```python file, or a bare diff.

Whatever comes back must yield a script that differs from the seed and compiles; a diff that does not
apply is a ``ProposalError``, so such a proposal is never run and never published.
"""
from __future__ import annotations

import re

from trainer.patches import PatchError, apply_patch

from .base import ProposalError

_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_NOTE = re.compile(r"^\s*(?:\*\*)?note(?:\*\*)?\s*:\s*(.+)$", re.I | re.M)
_DIFF_START = re.compile(r"^(--- |@@ )", re.M)
MAX_NOTE_CHARS = 1000


def _looks_like_diff(text: str) -> bool:
    return bool(re.search(r"^@@ .* @@", text, re.M)) and bool(re.search(r"^[-+]", text, re.M))


def extract_note(reply: str) -> str:
    """A ``Note: ...`` line if the model wrote one (the prompt asks for it), else the first prose line."""
    m = _NOTE.search(_FENCE.sub("", reply))
    if m:
        return m.group(1).strip()[:MAX_NOTE_CHARS]
    for line in _FENCE.sub("", reply).splitlines():
        if line.strip() and not line.lstrip().startswith(("#", "---", "+++", "@@")):
            return line.strip()[:MAX_NOTE_CHARS]
    return "(no note)"


def parse_reply(reply: str, seed_source: str) -> tuple[str, str]:
    """(new source, note) from the reply text; ``ProposalError`` when nothing usable is in it."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply)]
    diffs = [b for lang, b in blocks if lang in ("diff", "patch", "udiff") or (not lang and _looks_like_diff(b))]
    files = [b for lang, b in blocks if lang in ("python", "py", "python3")]
    if diffs:
        source = _apply(seed_source, diffs[0])
    elif files:
        source = max(files, key=len)  # the whole file, not a quoted snippet
    elif _looks_like_diff(reply):
        start = _DIFF_START.search(reply)
        source = _apply(seed_source, reply[start.start():] if start else reply)
    else:
        raise ProposalError("reply holds no ```diff or ```python block and no unified diff")
    if not source.endswith("\n"):
        source += "\n"
    if source == seed_source:
        raise ProposalError("proposal leaves the seed source unchanged")
    try:
        compile(source, "train.py", "exec")
    except SyntaxError as e:
        raise ProposalError(f"proposed script does not compile: {e.msg} at line {e.lineno}") from None
    return source, extract_note(reply)


def _apply(seed_source: str, diff: str) -> str:
    try:
        return apply_patch(seed_source, diff)
    except PatchError as e:
        raise ProposalError(f"patch does not apply: {e}") from None
