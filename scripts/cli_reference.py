#!/usr/bin/env python3
"""Print the README's command reference from the CLI itself (so the two cannot drift apart).

    .venv/bin/python scripts/cli_reference.py            # print the markdown
    .venv/bin/python scripts/cli_reference.py --write    # replace the block in README.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def commands(group: click.Group, prefix: str = "ralphswarm"):
    """(command path, one-line help, usage line) for every leaf command, in name order."""
    ctx = click.Context(group, info_name=prefix)
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        path = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path)
        else:
            sub = click.Context(cmd, info_name=path, parent=ctx)
            usage = " ".join(cmd.collect_usage_pieces(sub))
            yield path, cmd.get_short_help_str(limit=200), f"{path} {usage}".strip()


def render() -> str:
    from node.cli import cli

    lines = [START, "", "| command | what it does |", "|---|---|"]
    for path, short, usage in commands(cli):
        lines.append(f"| `{usage}` | {short} |")
    lines += ["", "Commands that use a node home take `--home DIR` (default `$RALPHSWARM_HOME` or `~/.ralphswarm`); every command takes `--help`.", END]
    return "\n".join(lines)


def main() -> None:
    block = render()
    if "--write" not in sys.argv:
        print(block)
        return
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit("README.md has no cli-reference block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + block + tail, encoding="utf-8")


if __name__ == "__main__":
    main()
