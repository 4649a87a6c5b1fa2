"""Patches: a claim's change to its parent's source, as a unified diff (protocol/SPEC.md 5.3).

The applier is strict: every hunk must match its context and removed lines exactly at the stated
position (no fuzz, no offset search), because a patch that means something different on another
node would make the same claim id stand for different code.
"""
from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
NO_NEWLINE = "\\ No newline at end of file"


class PatchError(Exception):
    """The patch is malformed or does not apply to this source; the message says where."""


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def make_patch(old: str, new: str, name: str = "train.py") -> str:
    """A unified diff (3 lines of context) that apply_patch(old, ...) turns into ``new``."""
    if old == new:
        return ""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=f"a/{name}", tofile=f"b/{name}"
    )
    out = []
    for line in lines:
        if line.endswith("\n"):
            out.append(line)
        else:  # the last line of a file without a final newline
            out.append(line + "\n" + NO_NEWLINE + "\n")
    return "".join(out)


@dataclass
class _Hunk:
    old_start: int  # 1-based; 0 when the hunk inserts at the top of an empty range
    old_len: int
    new_len: int
    lines: list[tuple[str, str]]  # (tag ' ', '-' or '+', line text including its newline, if any)
    header_line: int  # line number in the patch, for messages


def _parse(patch: str) -> list[_Hunk]:
    hunks: list[_Hunk] = []
    rows = patch.splitlines(keepends=True)
    i = 0
    while i < len(rows) and not rows[i].startswith("@@"):
        if not rows[i].startswith(("--- ", "+++ ", "diff ", "index ")) and rows[i].strip():
            raise PatchError(f"patch line {i + 1}: expected a diff header or hunk, got {rows[i][:40].rstrip()!r}")
        i += 1
    while i < len(rows):
        m = _HUNK_RE.match(rows[i])
        if not m:
            raise PatchError(f"patch line {i + 1}: expected a hunk header '@@ -a,b +c,d @@'")
        hunk = _Hunk(int(m[1]), int(m[2] if m[2] is not None else 1), int(m[4] if m[4] is not None else 1), [], i + 1)
        i += 1
        old_seen = new_seen = 0
        while i < len(rows) and (old_seen < hunk.old_len or new_seen < hunk.new_len):
            row = rows[i]
            tag, text = row[:1], row[1:]
            if row.rstrip("\n") == NO_NEWLINE:
                raise PatchError(f"patch line {i + 1}: misplaced '{NO_NEWLINE}'")
            if tag not in (" ", "-", "+"):
                if row in ("\n", "\r\n"):  # some tools drop the space of an empty context line
                    tag, text = " ", row
                else:
                    raise PatchError(f"patch line {i + 1}: hunk line must start with ' ', '-' or '+'")
            i += 1
            if i < len(rows) and rows[i].rstrip("\n") == NO_NEWLINE:
                text = text[:-1] if text.endswith("\n") else text
                i += 1
            hunk.lines.append((tag, text))
            old_seen += tag in " -"
            new_seen += tag in " +"
        if old_seen != hunk.old_len or new_seen != hunk.new_len:
            raise PatchError(f"patch line {hunk.header_line}: hunk is truncated "
                             f"(expected -{hunk.old_len} +{hunk.new_len} lines)")
        hunks.append(hunk)
    if not hunks:
        raise PatchError("patch holds no hunks")
    return hunks


def apply_patch(source: str, patch: str) -> str:
    """``source`` with ``patch`` applied; an empty patch returns ``source`` unchanged."""
    if not patch.strip():
        return source
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    pos = 0  # index into lines of the next line not yet copied
    for hunk in _parse(patch):
        # A hunk with no old lines names the line *after which* it inserts.
        start = hunk.old_start if hunk.old_len == 0 else hunk.old_start - 1
        if start < pos:
            raise PatchError(f"patch line {hunk.header_line}: hunks overlap or are out of order")
        if start > len(lines):
            raise PatchError(f"patch line {hunk.header_line}: starts at line {hunk.old_start}, "
                             f"beyond the end of the source ({len(lines)} lines)")
        out.extend(lines[pos:start])
        pos = start
        for tag, text in hunk.lines:
            if tag in " -":
                if pos >= len(lines) or lines[pos] != text:
                    found = lines[pos].rstrip("\n") if pos < len(lines) else "<end of file>"
                    raise PatchError(f"patch does not apply at line {pos + 1}: expected "
                                     f"{text.rstrip(chr(10))[:60]!r}, found {found[:60]!r}")
                pos += 1
            if tag in " +":
                out.append(text)
    out.extend(lines[pos:])
    return "".join(out)
