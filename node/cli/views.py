"""Getting the best out, and autoresearch's chart: ``source``, ``diff`` and ``plot``.

``source`` rebuilds a claim's full train script along its lineage (node/corpus.py, the checks of
SPEC 5.3: every patch applies and every source matches its source_sha256); ``diff`` compares two
claims' sources (or a claim with its task baseline); ``plot`` draws this node's experiments as the
autoresearch notebook does (node/web/progress.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import difflib
from pathlib import Path
from typing import Any

import click

from protocol.fileio import write_atomic

from node import ids
from node.cli.common import get_home, home_option
from node.cli.corpus import open_replica, resolve_task_id
from node.corpus import ReplicaCorpus, SourceError, TaskBook
from node.errors import UserError
from node.home import Home
from node.web.progress import experiment_rows, plot_png, progress_json


async def source_of(replica: Any, text: str) -> tuple[str, str, str]:
    """(full id, kind, source) of a claim or task ``text`` names (6+ hex digits of its id, or a task
    name for a task): a claim's source is rebuilt along its lineage; a task's is its baseline."""
    book = TaskBook(replica)
    task = await book.find(text) if not ids.is_prefix(text) else None
    if task is not None:
        return task.id, "task", task.source
    full, kind = await ids.resolve(replica, text, kinds=("claim", "task"), registry_ids=await book.ids(),
                                   what="claim or task")
    if kind == "task":
        task = await book.get(full)
        if task is None:
            raise UserError(f"task {ids.short(full)} is known only by id here: its train script is not in this replica")
        return full, kind, task.source
    try:
        return full, kind, await ReplicaCorpus(replica, book, replica.self_key).source_of(full)
    except SourceError as exc:
        raise UserError(f"cannot rebuild the source of {ids.short(full)}: {exc}") from None


async def claim_source(home: Home, text: str) -> tuple[str, str]:
    """(full claim or task id, source) for ``experiment --parent`` and ``source``."""
    async with open_replica(home) as replica:
        full, _, source = await source_of(replica, text)
    return full, source


def write_file(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data, mode=0o644)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def register(cli: click.Group) -> None:

    @cli.command()
    @home_option
    @click.argument("claim")
    @click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Write the script to this file (default: stdout).")
    def source(home: Path | None, claim: str, out: Path | None) -> None:
        """Print (or --out) the full train script of CLAIM, rebuilt along its lineage and checked."""
        full, text = asyncio.run(claim_source(get_home(home), claim))
        if out is None:
            click.echo(text, nl=False)
            return
        write_file(out, text.encode("utf-8"))
        click.echo(f"wrote {out} (source of {ids.short(full)}, {len(text.splitlines())} lines)", err=True)

    @cli.command()
    @home_option
    @click.argument("a")
    @click.argument("b", required=False)
    def diff(home: Path | None, a: str, b: str | None) -> None:
        """Unified diff from A's train script to B's (claims or tasks; without B: from A's task baseline)."""

        async def both() -> tuple[str, str, str, str]:
            async with open_replica(get_home(home)) as replica:
                id_b, kind_b, src_b = await source_of(replica, b or a)
                if b is None:
                    env = await replica.get(id_b)
                    task = env.body["task"] if env is not None and env.kind == "claim" else id_b
                    id_a, _, src_a = await source_of(replica, task)
                else:
                    id_a, _, src_a = await source_of(replica, a)
                return id_a, src_a, id_b, src_b

        id_a, src_a, id_b, src_b = asyncio.run(both())
        lines = difflib.unified_diff(src_a.splitlines(keepends=True), src_b.splitlines(keepends=True),
                                     fromfile=f"{ids.short(id_a)}/train.py", tofile=f"{ids.short(id_b)}/train.py")
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        click.echo(text or f"no difference: {ids.short(id_a)} and {ids.short(id_b)} have the same train script",
                   nl=not text)

    @cli.command()
    @home_option
    @click.option("--task", default=None, help="Task name or id prefix (default: the node's task).")
    @click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("progress.png"),
                  show_default=True, help="PNG file to write.")
    def plot(home: Path | None, task: str | None, out: Path) -> None:
        """Chart this node's experiments (val_bpb of each, kept ones as the running best, the baseline) as a PNG."""
        h = get_home(home)

        async def rows() -> tuple[str, list[dict]]:
            async with open_replica(h) as replica:
                tid = await resolve_task_id(replica, h, task)
                name = getattr(await TaskBook(replica).get(tid), "name", None) or ids.short(tid)
                return name, experiment_rows(await replica.claims(tid), replica.self_key)

        name, found = asyncio.run(rows())
        progress = progress_json(found)
        if not progress["points"]:
            raise UserError(f"nothing to plot: this node has no experiment on task {name} yet that did not crash")
        tmp = out.with_name(out.name + ".part.png")
        try:
            plot_png(progress, tmp, f"ralphswarm {name}")
            tmp.replace(out)
        except OSError as exc:
            with contextlib.suppress(OSError):  # where nothing could be written, nothing is left
                tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
        best = "-" if progress["best"] is None else f"{progress['best']:.6f}"
        click.echo(f"wrote {out}: {progress['experiments']} experiments, {progress['kept']} kept, best {best}, "
                   f"baseline {progress['baseline']:.6f}")
