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

from protocol import ProtocolError, decode, is_hex, parse
from protocol import task_id as compute_task_id
from store import Replica, StoreSettings
from store.ingest import claimed_id

from node.cli.client import ask, running_address
from node import ids
from node.cli.common import echo_json, get_home, home_option, json_option, when
from node.corpus import TaskBook
from node.errors import UserError
from node.home import Home
from node.settings import load_noise
from node.web.progress import experiment_rows, results_tsv
from node.web.shapes import OWN_UNVERIFIED, SUPPORT_UNIT, leaderboard_json, message_json

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
    """A task given by name (built-in or of the corpus) or by any unique id prefix of 6+ hex digits
    (node/ids.py; default: the config's task)."""
    task = (task or home.config()["task"]).strip()
    book = TaskBook(replica)
    found = await book.find(task) if not is_hex(task, 64) else None
    if found is not None and (found.name == task or found.id == task):
        return found.id
    if not ids.is_prefix(task):
        raise UserError(f"unknown task {task!r} (give a built-in name, a task name from the corpus, or a task id "
                        f"of {ids.MIN_PREFIX}+ hex digits)")
    full, _ = await ids.resolve(replica, task, kinds=("task",), registry_ids=await book.ids())
    return full


async def resolve_claim(replica: Any, text: str) -> str:
    """The full id of the claim ``text`` (any unique prefix of 6+ hex digits) names."""
    full, _ = await ids.resolve(replica, text, kinds=("claim",))
    return full


_echo_json = echo_json


def register(cli: click.Group) -> None:

    @cli.command()
    @home_option
    @click.option("--swarm", default=None, help="Swarm name (default: public). Part of every message id.")
    @json_option
    def init(home: Path | None, swarm: str | None, as_json: bool) -> None:
        """Create the node's identity, config file and database; print the public key."""
        h = get_home(home)
        identity, created = h.init(swarm=swarm)

        async def make_db() -> None:
            async with open_replica(h):
                pass

        asyncio.run(make_db())
        if as_json:
            _echo_json({"pubkey": identity.pubkey, "home": str(h.path), "created": created,
                        "swarm": h.config()["swarm"]})
            return
        click.echo(identity.pubkey)
        if not created:
            click.echo(f"(kept the existing identity in {h.key_path})", err=True)

    @cli.command("id")
    @home_option
    @json_option
    def id_(home: Path | None, as_json: bool) -> None:
        """Print this node's 64-hex public key."""
        h = get_home(home)
        pubkey = h.identity().pubkey
        if as_json:
            _echo_json({"pubkey": pubkey, "home": str(h.path), "swarm": h.config()["swarm"]})
        else:
            click.echo(pubkey)

    @cli.command("import")
    @home_option
    @click.argument("file", type=click.Path(path_type=Path))
    @json_option
    def import_(home: Path | None, file: Path, as_json: bool) -> None:
        """Import a JSON Lines file of envelopes (one per line, "-" for stdin) into the replica.

        A line may be any JSON spelling of a valid envelope (key order, spaces, escapes: as the HTTP
        API takes it, SPEC 4.8′); what is stored is its canonical bytes. Prints each rejected line's
        number and reason, then the counts; exits 0 whenever the file was read, even if messages
        were rejected."""
        h = get_home(home)
        try:
            handle = sys.stdin.buffer if str(file) == "-" else open(file, "rb")
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
        with handle:
            counts, rejections = asyncio.run(_import(h, handle, file))
        if as_json:
            _echo_json({**counts, "rejections": [{"line": line, "reason": reason} for line, reason in rejections]})
            return
        for line, reason in rejections:
            click.echo(f"line {line}: {reason}")
        click.echo(f"accepted {counts['accepted']}  duplicate {counts['duplicate']}  rejected {counts['rejected']}")

    @cli.command()
    @home_option
    @click.option("--format", "fmt", type=click.Choice(["jsonl", "tsv", "results-tsv"]), default="jsonl",
                  show_default=True)
    @click.option("--task", default=None, help="Only this task (name or id prefix; results-tsv: default the node's).")
    def export(home: Path | None, fmt: str, task: str | None) -> None:
        """Export the corpus: every envelope as stored (jsonl), a table of claims (tsv), or this node's
        experiments as autoresearch's results.tsv (results-tsv)."""
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
    @click.argument("message_id", metavar="ID")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def show(home: Path | None, message_id: str, as_json: bool) -> None:
        """Show a claim (status, estimate, p-value, votes), a vote or a task, by any unique id prefix (6+ hex)."""
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
        was = asyncio.run(_trust(get_home(home), key, False))
        click.echo(f"no longer trusted {key}" if was else f"{key} was not trusted; nothing changed")

    @trust.command("list")
    @home_option
    @json_option
    def trust_list(home: Path | None, as_json: bool) -> None:
        """List the operator-trusted keys."""
        keys = asyncio.run(_trusted_keys(get_home(home)))
        if as_json:
            _echo_json({"trusted": keys})
            return
        for key in keys:
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
            batch.append((line_no, _as_item(line)))
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


def _as_item(line: bytes) -> Any:
    """What the replica is given for a line: the parsed object when the line is JSON (any spelling;
    checked with SPEC 4.8′ and stored as its canonical bytes), else the line's bytes, which the
    decoder refuses with the reason it refuses them for (not JSON, not UTF-8, duplicate key ...)."""
    try:
        value = parse(line)
    except ProtocolError:
        return line
    return value if isinstance(value, dict) else line


def _import_body(items: list[Any]) -> bytes:
    """A parsed envelope travels as itself (the node checks it with 4.8′, as a direct import does);
    a line that is no JSON object travels as a JSON string of its text, refused one by one."""
    return json.dumps({"messages": [item if isinstance(item, dict) else item.decode("utf-8", "replace")
                                    for item in items]}, ensure_ascii=False).encode()


async def _export(home: Home, fmt: str, task: str | None) -> None:
    out = sys.stdout.buffer
    async with open_replica(home) as replica:
        if fmt == "results-tsv":  # one task: the node's own experiments on it
            tid = await resolve_task_id(replica, home, task)
            out.write(results_tsv(experiment_rows(await replica.claims(tid), replica.self_key)).encode("utf-8"))
            out.flush()
            return
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


SECTIONS = (("verified", "verified"), ("own_unverified", OWN_UNVERIFIED), ("pending", "pending"),
            ("disputed", "disputed"), ("over_budget", "over budget"), ("non_deterministic", "non deterministic"))


def board_sections(board: dict) -> list[tuple[str, list[dict]]]:
    """The board's lists as shown: this node's own claims nobody else has voted on are taken out of
    the verified ranking and listed apart, as "own, unverified by others"."""
    lists = {name: board[name] for name, _ in SECTIONS if name in board}
    lists["own_unverified"] = [e for e in board["verified"] if e["own_unverified"]]
    lists["verified"] = [e for e in board["verified"] if not e["own_unverified"]]
    return [(title, lists[name]) for name, title in SECTIONS]


async def _leaderboard(home: Home, task: str | None, as_json: bool) -> None:
    async with open_replica(home) as replica:
        tid = await resolve_task_id(replica, home, task)
        board = await leaderboard_json(replica, tid)
        me = replica.self_key
    if as_json:
        _echo_json(board)
        return
    console = Console()
    base = board["baseline"]
    console.print(f"task {tid}", markup=False)
    console.print(f"baseline val_bpb {base['val_bpb']} (claim {base['short']}, {base['status']}); "
                  "Δ: each entry's difference from it (negative is better)" if base else
                  "baseline val_bpb: not measured yet (no baseline run on the board)", markup=False)
    console.print("ranked by the mean val_bpb of trusted fresh-seed reproductions (± standard error, n runs); "
                  "state: the test against the parent or the task baseline, significant at p < 0.01; "
                  "claimed: the claimant's own run, never ranked; support: " + SUPPORT_UNIT,
                  style="dim", markup=False)
    for title, rows in board_sections(board):
        if not rows and title not in ("verified", "pending"):
            continue  # empty side lists say nothing
        table = Table(title=f"{title} ({len(rows)})", title_justify="left")
        columns = ["#", "claim", "author", "mean ± se (n)", "Δ", "state", "reproduced", "claimed", "votes", "support"]
        cells = [[str(i) if title == "verified" else "-", e["short"],
                  "own" if e["author"] == me else ids.short(e["author"])[:8],
                  estimate_text(e["estimate"]), e["delta"] or "-", state_text(e["significance"]),
                  e["val_bpb"] if e["status"] == "verified" and e["val_bpb"] else "-",
                  e["claimed_bpb"] or "-", str(e["votes"]), f"{e['support']:.2f}"] for i, e in enumerate(rows, 1)]
        if console.width < WIDE:  # a narrow terminal keeps the estimate, the state and the claimed value
            keep = [i for i, col in enumerate(columns) if col not in ("Δ", "reproduced", "votes", "support")]
            columns, cells = [columns[i] for i in keep], [[row[i] for i in keep] for row in cells]
            state_at = columns.index("state")
            for row, e in zip(cells, rows):  # p is in `show` and --json
                row[state_at] = e["significance"]["state"] if e["significance"] else "-"
        # The note gets what the other columns leave of the console's width (each column: its text,
        # a space either side, a rule), so a row is one line where the terminal allows.
        # A terminal too narrow for 8 characters of it shows no note (`show` has it).
        used = sum(max(len(c) for c in column) + 3 for column in zip(columns, *cells)) + 4
        room = min(60, console.width - used)
        if room >= 8:
            columns.append("note")
            for row, e in zip(cells, rows):
                note = e["note"].split("\n")[0]
                row.append(escape(note if len(note) <= room else note[:room - 1] + "…"))
        for col in columns:  # the numbers stay whole (the claim's short id is what `show` is given)
            table.add_column(col, no_wrap=col in ("#", "claim", "author", "mean ± se (n)", "Δ", "reproduced",
                                                  "claimed"),
                             min_width=len("significant") if col == "state" else None)
        for row in cells:
            table.add_row(*row)
        console.print(table)


async def _show(home: Home, message_id: str, as_json: bool) -> None:
    async with open_replica(home) as replica:
        book = TaskBook(replica)
        full, kind = await ids.resolve(replica, message_id, registry_ids=await book.ids())
        env = await replica.get(full)
        if env is None:  # a task known by its id only: built in, or named by claims
            task = await book.get(full)
            detail = {"task": full, "name": task.name if task else None, "body": dict(task.body) if task else None,
                      "claims": (await replica.claim_tasks()).get(full, 0)}
        else:
            detail = await message_json(replica, env)
            if env.kind == "claim":
                detail["task_name"] = getattr(await book.get(env.body["task"]), "name", None)
    if as_json:
        _echo_json(detail)
        return
    if env is None:
        _show_task(detail)
        return
    e = detail["envelope"]
    click.echo(f"{e['kind']} {e['id']}\nauthor  {e['author']}\ncreated {when(e['created_at'])}")
    if e["kind"] == "claim":
        _show_claim(detail)
    elif e["kind"] == "vote":
        _show_vote(e["body"])
    elif e["kind"] == "task":
        _show_task({"task": e["id"], "name": e["body"].get("name"), "body": e["body"]}, header=False)
    else:
        b = e["body"]
        click.echo("addresses " + ", ".join(map(str, b.get("addresses", []))))


def _show_task(detail: dict, header: bool = True) -> None:
    body = detail["body"] or {}
    if header:
        click.echo(f"task {detail['task']}")
    click.echo(f"name    {detail.get('name') or body.get('name') or '-'}")
    if "claims" in detail:
        click.echo(f"claims  {detail['claims']}")
    if body:
        budget = body.get("budget", {})
        click.echo("budget  " + ", ".join(f"{k}={v}" for k, v in budget.items()))
        click.echo(f"tolerance {body.get('tolerance', '-')}")
        click.echo(f"description {body.get('description', '')}")
        click.echo("(ralphswarm task show NAME prints its baseline train script)")
    else:
        click.echo("(this node holds no task message for it)")


def _show_claim(detail: dict) -> None:
    b = detail["envelope"]["body"]
    st = detail["status"]
    name = f" ({detail['task_name']})" if detail.get("task_name") else ""
    click.echo(f"task    {b['task']}{name}\nparent  {b['parent'] or '(baseline)'}\noutcome {b['outcome']}")
    click.echo(f"status  {st['status']} (support {st['support']}, against {st['against']}, "
               f"reproduced val_bpb {st['reproduced_bpb'] or '-'})")
    click.echo(f"        support: {SUPPORT_UNIT}")
    sig = st["significance"] or {}
    click.echo(f"estimate {estimate_text(st['estimate'])}  (mean ± se of trusted fresh-seed reproductions)")
    click.echo(f"state   {sig.get('state', '-')}  p {p_text(sig.get('p'))}"
               + (f"  z {sig['z']}" if sig.get("z") is not None else ""))
    if sig.get("reference"):
        click.echo(f"reference {sig['reference']}  {estimate_text(st['reference_estimate'])}")
    click.echo(f"claimed val_bpb {st['claimed_bpb'] or '-'}  (the claimant's own run)\nnote: {b['note']}")
    votes = detail["votes"]
    click.echo(f"votes   {len(votes)}" + (":" if votes else ""))
    for v in votes:
        fresh = "  fresh seed" if v["fresh"] else ""  # a sample of the estimate when its voter is trusted
        click.echo(f"  vote {v['verdict']:<10} by {ids.short(v['voter'])} val_bpb {v['val_bpb'] or '-'}{fresh}  "
                   f"{when(v['created_at'])}  {ids.short(v['id'])}  {v['reason']}")
    click.echo("patch:\n" + b["patch"])


def _show_vote(b: dict) -> None:
    """A vote in a few lines: what it is about and what its run measured (never its raw JSON)."""
    result = b["result"] or {}
    click.echo(f"claim   {b['claim']}\nverdict {b['verdict']}\nreason  {b['reason']}")
    if result:
        click.echo(f"val_bpb {result.get('val_bpb')}  seed {result.get('seed')}  tokens {result.get('tokens')}  "
                   f"wall_s {result.get('wall_s')}  device {result.get('device')}")
        curve = result.get("curve") or []
        if curve:
            click.echo(f"curve   {len(curve)} points, loss {curve[0][1]} -> {curve[-1][1]}")
    click.echo("fresh seed (carries a seed_proof)" if "seed_proof" in b else "at the claim's seed")
    if "claim_received_at" in b:
        click.echo(f"claim received {when(b['claim_received_at'])}")


async def _trust(home: Home, key: str, on: bool) -> bool:
    """Trust a key (the replica keeps it) or stop trusting it (in the replica and in the config file's
    "trusted", which a node also starts with): what ``trust list`` shows is what ranking uses.
    Returns whether the key was trusted before."""
    if not is_hex(key, 64):
        raise UserError("a key is 64 lower-case hex characters (see: ralphswarm id)")
    async with open_replica(home) as replica:
        was = key in await replica.trusted_keys()
        if was != on:
            await replica.set_trusted(key, on)
    config = home.config()
    if not on and key in config["trusted"]:
        config["trusted"] = [k for k in config["trusted"] if k != key]
        home.save_config(config)
    return was


async def _trusted_keys(home: Home) -> list[str]:
    async with open_replica(home) as replica:
        return await replica.trusted_keys()
