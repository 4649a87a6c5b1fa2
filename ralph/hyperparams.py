"""The train script's hyperparameter block: top-level ``NAME = number  # comment`` lines.

The autoresearch convention (docs/design.md, "The train script") puts every knob as an UPPER_CASE constant
at the top of the one file the agent edits, each with a one-line comment. Reading and rewriting
those lines is all the offline proposer and the deterministic memory summary need, so it lives in
one small module.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Top level only (no indentation), numeric literal only: expressions and strings are left alone.
_LINE = re.compile(
    r"^(?P<name>[A-Z][A-Z0-9_]*)(?P<eq>\s*=\s*)"
    r"(?P<value>[-+]?(?:\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))"
    r"(?P<rest>\s*(?:#.*)?)$"
)


@dataclass(frozen=True)
class Constant:
    name: str
    line: int  # 0-based line index in the source
    text: str  # the literal as written
    value: float | int
    is_int: bool
    comment: str  # without the leading '#', stripped


def parse_constants(source: str) -> dict[str, Constant]:
    """Every numeric hyperparameter constant, by name (the first definition wins, as Python's last
    would only matter for scripts that redefine knobs, which the convention forbids)."""
    found: dict[str, Constant] = {}
    for i, line in enumerate(source.splitlines()):
        m = _LINE.match(line)
        if not m or m["name"] in found:
            continue
        text = m["value"]
        is_int = not any(c in text for c in ".eE")
        try:
            value: float | int = int(text.replace("_", "")) if is_int else float(text.replace("_", ""))
        except ValueError:
            continue
        if not is_int and not math.isfinite(value):
            continue
        comment = m["rest"].strip().lstrip("#").strip()
        found[m["name"]] = Constant(m["name"], i, text, value, is_int, comment)
    return found


def format_value(value: float | int, is_int: bool) -> str:
    """Short, valid Python literal; floats keep 3 significant digits and a '.' or exponent so they stay floats."""
    if is_int:
        return str(int(value))
    text = f"{value:.3g}"
    if not any(c in text for c in ".eEn"):
        text += ".0"
    return text


def set_constants(source: str, values: dict[str, str]) -> str:
    """Rewrite the named constants' literals in place, keeping spacing and comments byte for byte."""
    lines = source.splitlines(keepends=True)
    consts = parse_constants(source)
    for name, literal in values.items():
        c = consts.get(name)
        if c is None:
            raise KeyError(name)
        line = lines[c.line]
        ending = line[len(line.rstrip("\r\n")):]
        m = _LINE.match(line.rstrip("\r\n"))
        assert m is not None  # parse_constants matched this very line
        lines[c.line] = m["name"] + m["eq"] + literal + m["rest"] + ending
    return "".join(lines)


def diff_constants(old: str, new: str) -> list[tuple[str, str, str]]:
    """(name, old literal, new literal) for constants whose value changed, in script order."""
    a, b = parse_constants(old), parse_constants(new)
    changed = [(n, a[n].text, b[n].text) for n in a if n in b and a[n].value != b[n].value]
    return sorted(changed, key=lambda t: a[t[0]].line)
