"""Corpus commands: init, id, import, export, leaderboard, show, trust."""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from protocol import ProtocolError, decode, is_hex
from protocol import task_id as compute_task_id
from store import Replica, StoreSettings
from store.ingest import claimed_id

from node.cli.client import ask, running_address
from node.cli.common import get_home, home_option
from node.corpus import TaskBook
from node.errors import UserError
from node.home import Home
from node.settings import load_noise
from node.web.shapes import leaderboard_json, message_json

IMPORT_BATCH = 500  # messages per transaction: a crash keeps whole batches only
WIDE = 120  # terminal columns from which the leaderboard table also shows reproduced, votes, support


@contextlib.asynccontextmanager
async def open_replica(home: Home) -> AsyncIterator[Any]:
    if not home.exists:
        raise UserError(f"no node in {home.path}; run: ralphswarm init --home {home.path}")
    identity = home.identity()
    config = home.config()
    replica = await Replica.open(home.db_path, swarm=config["swarm"], self_key=identity.pubkey,
                                 trusted=list(config.get("trusted", [])),
                                 settings=StoreSettings(noise=load_noise(home.path)))
    try:
        yield replica
    finally:
        await replica.close()


async def resolve_task_id(replica: Any, home: Home, task: str | None) -> str:
    """A task given by id, by name of a task in the corpus, or by built-in name (default: config)."""
    task = task or home.config()["task"]
    if is_hex(task, 64):
        return task
    found = await TaskBook(replica).find(task)
    if found is None:
        raise UserError(f"unknown task {task!r} (give a built-in name, a task name from the corpus, or a 64-hex id)")
    return found.id


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def register(cli: click.Group) -> None:

    @cli.command()
    @home_option
    @click.option("--swarm", default=None, help="Swarm name (default: public). Part of every message id.")
    def init(home: Path | None, swarm: str | None) -> None:
        """Create the node's identity, config file and database; print the public key."""
        h = get_home(home)
        identity, created = h.init(swarm=swarm)

        async def make_db() -> None:
            async with open_replica(h):
                pass

        asyncio.run(make_db())
        click.echo(identity.pubkey)
        if not created:
            click.echo(f"(kept the existing identity in {h.key_path})", err=True)

    @cli.command("id")
    @home_option
    def id_(home: Path | None) -> None:
        """Print this node's 64-hex public key."""
        click.echo(get_home(home).identity().pubkey)

    @cli.command("import")
    @home_option
    @click.argument("file", type=click.Path(path_type=Path))
    def import_(home: Path | None, file: Path) -> None:
        """Import a JSON Lines file of envelopes (one per line, "-" for stdin) into the replica.

        Prints each rejected line's number and reason, then the counts; exits 0 whenever the file
        was read, even if messages were rejected."""
        h = get_home(home)
        try:
            handle = sys.stdin.buffer if str(file) == "-" else open(file, "rb")
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
        with handle:
            counts, rejections = asyncio.run(_import(h, handle, file))
        for line, reason in rejections:
            click.echo(f"line {line}: {reason}")
        click.echo(f"accepted {counts['accepted']}  duplicate {counts['duplicate']}  rejected {counts['rejected']}")

    @cli.command()
    @home_option
    @click.option("--format", "fmt", type=click.Choice(["jsonl", "tsv"]), default="jsonl", show_default=True)
    @click.option("--task", default=None, help="Only this task (name or id).")
    def export(home: Path | None, fmt: str, task: str | None) -> None:
        """Export the corpus: every envelope as stored (jsonl), or a results table (tsv)."""
        asyncio.run(_export(get_home(home), fmt, task))

    @cli.command()
    @home_option
    @click.option("--task", default=None, help="Task name or id (default: the node's task).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def leaderboard(home: Path | None, task: str | None, as_json: bool) -> None:
        """Claims ranked by mean val_bpb at fresh seeds (± se, n), with their state; pending and disputed apart."""
        asyncio.run(_leaderboard(get_home(home), task, as_json))

    @cli.command()
    @home_option
    @click.argument("message_id")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def show(home: Path | None, message_id: str, as_json: bool) -> None:
        """Show one message (a claim with its status, estimate, p-value and votes)."""
        asyncio.run(_show(get_home(home), message_id, as_json))

    @cli.group()
    def trust() -> None:
        """Keys this node's operator trusts (pre-trusted in the ranking)."""

    @trust.command("add")
    @home_option
    @click.argument("key")
    def trust_add(home: Path | None, key: str) -> None:
        """Trust KEY (64-hex public key)."""
        asyncio.run(_trust(get_home(home), key, True))
        click.echo(f"trusted {key}")

    @trust.command("remove")
    @home_option
    @click.argument("key")
    def trust_remove(home: Path | None, key: str) -> None:
        """Stop trusting KEY."""
        asyncio.run(_trust(get_home(home), key, False))
        click.echo(f"no longer trusted {key}")

    @trust.command("list")
    @home_option
    def trust_list(home: Path | None) -> None:
        """List the operator-trusted keys."""
        for key in asyncio.run(_trusted_keys(get_home(home))):
            click.echo(key)


async def _import(home: Home, handle, name: Path) -> tuple[dict[str, int], list[tuple[int, str]]]:

    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    rejections: list[tuple[int, str]] = []
    live = running_address(home) is not None  # a running node gossips what we hand it
    async with contextlib.AsyncExitStack() as stack:
        replica = None if live else await stack.enter_async_context(open_replica(home))
        batch: list[tuple[int, Any]] = []

        async def flush() -> None:
            if live:
                answer = await ask(home, "/v1/messages", "POST", _import_body([item for _, item in batch]))
                accepted, duplicate = answer["accepted"], answer["duplicate"]
                rejected = [(r["id"], r["reason"]) for r in answer["rejected"]]
            else:
                report = await replica.ingest([item for _, item in batch])
                accepted, duplicate, rejected = report.accepted, report.duplicate, report.rejected
            counts["accepted"] += len(accepted)
            counts["duplicate"] += len(duplicate)
            counts["rejected"] += len(rejected)
            rejections.extend(_rejected_lines(batch, rejected, swarm))
            batch.clear()

        swarm = home.config()["swarm"]
        for line_no, line in _numbered_lines(handle, name):
            batch.append((line_no, line))
            if len(batch) >= IMPORT_BATCH:
                await flush()
        if batch:
            await flush()
    rejections.sort()
    return counts, rejections


def _numbered_lines(handle, name: Path):
    """(line number, line without its end) for each non-blank line; a read error is a UserError
    (the batches stored before it stay: each is whole)."""
    try:
        for line_no, line in enumerate(handle, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line_no, line
    except OSError as exc:
        raise UserError(f"cannot read {name}: {exc.strerror or exc}") from None


def _rejected_lines(batch: list[tuple[int, bytes]], rejected: list[tuple[str | None, str]],
                    swarm: str) -> list[tuple[int, str]]:
    """The line of each rejection. The replica reports rejections in the order of its items, each
    with the id its item claims (None for garbage): each goes to the first unused line claiming that
    id, or, where several lines claim it (a forged copy beside the real message), to the first of
    them that decode refuses for the same reason."""
    def refusal(item: bytes) -> str | None:
        try:
            decode(item, swarm=swarm)
        except ProtocolError as exc:
            return exc.reason
        return None

    by_id: dict[str | None, list[tuple[int, bytes]]] = {}
    for line_no, item in batch:
        by_id.setdefault(claimed_id(item), []).append((line_no, item))
    out = []
    for msg_id, reason in rejected:
        candidates = by_id.get(msg_id)
        if not candidates:  # cannot happen with the replica's own ids; never lose the reason
            out.append((0, reason))
            continue
        pick = 0
        if len(candidates) > 1:
            pick = next((i for i, (_, item) in enumerate(candidates) if refusal(item) == reason), 0)
        out.append((candidates.pop(pick)[0], reason))
    return out


def _import_body(lines: list[bytes]) -> bytes:
    """Each line travels as a JSON string holding its exact bytes, so a running node applies the
    same checks (canonical form included) as a direct import, and rejects bad lines one by one."""
    return json.dumps({"messages": [line.decode("utf-8", "replace") for line in lines]},
                      ensure_ascii=False).encode()


async def _export(home: Home, fmt: str, task: str | None) -> None:
    out = sys.stdout.buffer
    async with open_replica(home) as replica:
        tid = await resolve_task_id(replica, home, task) if task else None
        if fmt == "jsonl":
            async for raw in replica.export(task_id=tid):
                out.write(raw + b"\n")
            out.flush()
            return
        if tid:
            task_ids = [tid]
        else:
            task_ids = sorted({compute_task_id(t.body) for t in await replica.tasks()} | await _claim_tasks(replica))
        out.write(b"claim\tparent\tval_bpb\tstatus\toutcome\tnote\n")
        for t in task_ids:
            for claim in await replica.claims(t):
                st = await replica.claim_status(claim.id)
                result = claim.body["result"] or {}
                bpb = st.reproduced_bpb or result.get("val_bpb") or ""
                note = claim.body["note"].replace("\t", " ").replace("\n", " ")
                row = [claim.id, claim.body["parent"] or "", bpb, st.status, claim.body["outcome"], note]
                out.write(("\t".join(row) + "\n").encode("utf-8"))
        out.flush()


async def _claim_tasks(replica: Any) -> set[str]:
    """Task ids named by claims, including tasks whose own message this replica lacks."""
    tasks = set()
    async for raw in replica.export():
        env = json.loads(raw)
        if env["kind"] == "claim":
            tasks.add(env["body"]["task"])
    return tasks


def estimate_text(est: dict | None) -> str:
    """``mean ± se (n)`` of an estimate's JSON (store/stats.py), with the decimals its se needs (4 to 6)."""
    if est is None:
        return "-"
    mean, se = float(est["mean"]), float(est["se"])
    digits = min(6, max(4, 1 - math.floor(math.log10(se)))) if se > 0 else 4
    return f"{mean:.{digits}f} ± {se:.{digits}f} (n {est['n']})"


def p_text(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.1e}" if 0 < p < 0.001 else f"{p:.2g}"


def state_text(sig: dict | None) -> str:
    """The test's state, and its p-value where there is one: ``significant (p 1.5e-15)``."""
    if sig is None:
        return "-"
    return sig["state"] if sig["p"] is None else f"{sig['state']} (p {p_text(sig['p'])})"


async def _leaderboard(home: Home, task: str | None, as_json: bool) -> None:
    async with open_replica(home) as replica:
        tid = await resolve_task_id(replica, home, task)
        board = await leaderboard_json(replica, tid)
    if as_json:
        _echo_json(board)
        return
    console = Console()
    console.print(f"task {tid}")
    console.print("ranked by the mean val_bpb of trusted fresh-seed reproductions (± standard error, n runs); "
                  "state: the test against the parent or the task baseline, significant at p < 0.01; "
                  "claimed: the claimant's own run, never ranked", style="dim", markup=False)
    for section in ("verified", "pending", "disputed", "over_budget", "non_deterministic"):
        rows = board[section]
        title = section.replace("_", " ")  # the over_budget list holds claims of status "over budget"
        table = Table(title=f"{title} ({len(rows)})", title_justify="left")
        columns = ["#", "claim", "mean ± se (n)", "state", "reproduced", "claimed", "votes", "support"]
        cells = [[str(i), e["claim"][:12], estimate_text(e["estimate"]), state_text(e["significance"]),
                  e["val_bpb"] if e["status"] == "verified" and e["val_bpb"] else "-",
                  e["claimed_bpb"] or "-", str(e["votes"]), f"{e['support']:.2f}"] for i, e in enumerate(rows, 1)]
        if console.width < WIDE:  # a narrow terminal keeps the estimate, the state and the claimed value
            keep = [i for i, col in enumerate(columns) if col not in ("reproduced", "votes", "support")]
            columns, cells = [columns[i] for i in keep], [[row[i] for i in keep] for row in cells]
            for row, e in zip(cells, rows):  # p is in `show` and --json
                row[3] = e["significance"]["state"] if e["significance"] else "-"
        # The note gets what the other columns leave of the console's width (each column: its text,
        # a space either side, a rule), so a row is one line where the terminal allows.
        used = sum(max(len(c) for c in column) + 3 for column in zip(columns, *cells)) + 4
        room = max(8, min(60, console.width - used))
        for row, e in zip(cells, rows):
            note = e["note"].split("\n")[0]
            row.append(escape(note if len(note) <= room else note[:room - 1] + "…"))
        for col in columns:  # the numbers stay whole (the claim's id prefix is what `show` is given)
            table.add_column(col, no_wrap=col in ("#", "claim", "mean ± se (n)", "reproduced", "claimed"),
                             min_width=len("significant") if col == "state" else None)
        table.add_column("note")
        for row in cells:
            table.add_row(*row)
        console.print(table)


async def _show(home: Home, message_id: str, as_json: bool) -> None:
    if not is_hex(message_id, 64):
        raise UserError("a message id is 64 lower-case hex characters")
    async with open_replica(home) as replica:
        env = await replica.get(message_id)
        if env is None:
            raise UserError(f"no message {message_id} in this replica")
        detail = await message_json(replica, env)
    if as_json:
        _echo_json(detail)
        return
    e = detail["envelope"]
    click.echo(f"{e['kind']} {e['id']}\nauthor  {e['author']}\ncreated {e['created_at']}")
    if e["kind"] == "claim":
        b = e["body"]
        st = detail["status"]
        click.echo(f"task    {b['task']}\nparent  {b['parent'] or '(baseline)'}\noutcome {b['outcome']}")
        click.echo(f"status  {st['status']} (support {st['support']}, against {st['against']}, "
                   f"reproduced val_bpb {st['reproduced_bpb'] or '-'})")
        sig = st["significance"] or {}
        click.echo(f"estimate {estimate_text(st['estimate'])}  (mean ± se of trusted fresh-seed reproductions)")
        click.echo(f"state   {sig.get('state', '-')}  p {p_text(sig.get('p'))}"
                   + (f"  z {sig['z']}" if sig.get("z") is not None else ""))
        if sig.get("reference"):
            click.echo(f"reference {sig['reference']}  {estimate_text(st['reference_estimate'])}")
        click.echo(f"claimed val_bpb {st['claimed_bpb'] or '-'}  (the claimant's own run)\nnote: {b['note']}")
        for v in detail["votes"]:
            fresh = "  fresh seed" if v["fresh"] else ""  # a sample of the estimate when its voter is trusted
            click.echo(f"  vote {v['verdict']:<10} by {v['voter'][:12]} val_bpb {v['val_bpb'] or '-'}{fresh}  {v['reason']}")
        click.echo("patch:\n" + b["patch"])
    else:
        click.echo(json.dumps(e["body"], indent=2, ensure_ascii=False))


async def _trust(home: Home, key: str, on: bool) -> None:
    """Trust a key (the replica keeps it) or stop trusting it (in the replica and in the config file's
    "trusted", which a node also starts with): what ``trust list`` shows is what ranking uses."""
    if not is_hex(key, 64):
        raise UserError("a key is 64 lower-case hex characters (see: ralphswarm id)")
    async with open_replica(home) as replica:
        await replica.set_trusted(key, on)
    config = home.config()
    if not on and key in config["trusted"]:
        config["trusted"] = [k for k in config["trusted"] if k != key]
        home.save_config(config)


async def _trusted_keys(home: Home) -> list[str]:
    async with open_replica(home) as replica:
        return await replica.trusted_keys()
