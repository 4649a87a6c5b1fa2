"""Node commands: node (run the daemon), status, peers."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

import click

from protocol.fileio import write_atomic
from ralph.settings import RalphSettings, SettingsError
from trainer.tasks import TaskRegistry

from node.cli.client import ask, running_address, runtime_path
from node.cli.common import budget_scale_option, device_option, get_home, home_option, when
from node.console import ConsoleEvents, Terminal
from node.daemon import Node
from node.errors import UserError
from node.extension import Extension
from node.home import Home
from node.net.swarmkey import generate_swarm_key
from node import ids
from node.ids import short
from node.reproduce import Reproducer
from node.settings import NodeSettings, settings_from


async def run_node(settings: NodeSettings, home: Home, extensions: list[Extension] | None = None,
                   echo=None) -> None:
    say = echo or click.echo
    node = Node(settings, home.identity(), echo=echo)
    node.extensions.extend(extensions or [])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except OSError as exc:
        await node.stop()
        raise UserError(f"cannot listen on {settings.network.host}:{settings.network.port}: {exc.strerror}") from None
    except BaseException:
        await node.stop()  # whatever failed, nothing of the node stays running (no hang)
        raise
    runtime = runtime_path(home)
    key_file = settings.network.swarm_key_file
    write_atomic(runtime, json.dumps({"address": node.address, "pid": os.getpid(), "swarm": node.swarm,
                                      "swarm_key_file": str(key_file.resolve()) if key_file else None}).encode(),
                 mode=0o644)  # atomic: a CLI call racing the start never reads half of it
    say(f"listening: {node.address}")
    say(f"pubkey: {node.identity.pubkey}")
    say(f"swarm: {node.swarm}")
    for line in node.startup_notes():
        say(line)
    try:
        await stop.wait()
    finally:
        say("stopping: finishing writes and closing the database")
        await node.stop()
        runtime.unlink(missing_ok=True)
        say("stopped")


async def check_task(home: Home, settings: NodeSettings) -> str:
    """The node's --task is a built-in task or one of the corpus, by name or any unique id prefix of
    6+ hex digits (node/ids.py): checked before start-up work; returns what the node is to be given
    (the full id, where a prefix named it)."""
    from node.cli.corpus import open_replica  # the corpus commands' replica opener

    from node.corpus import TaskBook

    registry = TaskRegistry()
    if home.exists:
        async with open_replica(home) as replica:
            book = TaskBook(replica)
            found = await book.find(settings.task)
            registry = book.registry
    else:  # a new home's corpus is empty: the built-in tasks only
        found = registry.find(settings.task)
    if found is None and ids.is_prefix(settings.task):
        return ids.pick(settings.task, registry.ids(), "task id")  # "not found" / "ambiguous" in one line
    if found is None:
        names = ", ".join(sorted({t.name for t in registry.all()}))
        raise UserError(f"unknown task {settings.task!r} (known: {names}, or a task id of the corpus)")
    return found.id if found.id.startswith(settings.task) else settings.task


RALPH_FLAGS = [
    ("--experiment-budget", float, "Screening fraction of the budget before a full-budget confirmation."),
    ("--memory-type", click.Choice(["full", "strategy"]), "Full history, or a compressed strategy note."),
    ("--memory-depth", int, "How many past experiments reach the proposer's context."),
    ("--agent-count", int, "Concurrent Ralph loops on this node."),
    ("--boldness", float, "Mutation scale of the proposer."),
    ("--exploration", float, "Epsilon of the epsilon-greedy seed choice."),
    ("--coordinator-frequency", int, "Rewrite the strategy note every N experiments."),
    ("--keep-threshold", float, "Improvement in val_bpb needed to keep a change (never below the task tolerance)."),
    ("--model", str, "Anthropic model, when ANTHROPIC_API_KEY is set."),
    ("--daily-spend-usd", float, "Anthropic spend cap per UTC day (0 = offline proposer)."),
    ("--proposer", click.Choice(["mutate", "tpe", "cmaes", "llm", "hybrid"]),
     "What proposes experiments (default: hybrid with an LLM key, else tpe)."),
    ("--llm-share", float, "Hybrid: share of proposals the LLM makes instead of the optimizer (default 0.3)."),
    ("--llm-api", click.Choice(["anthropic", "openai"]), "LLM API: Anthropic Messages or OpenAI Chat Completions."),
    ("--llm-base-url", str, "LLM server URL (default ANTHROPIC_BASE_URL / OPENAI_BASE_URL); a local one needs no key."),
    ("--edit-format", click.Choice(["auto", "diff", "whole"]), "How the LLM writes its change (auto: by model)."),
    ("--islands", int, "Lineages kept as seeds besides the baseline (0: epsilon-greedy over the top entries)."),
]


def ralph_options(fn):
    for flag, kind, text in reversed(RALPH_FLAGS):
        fn = click.option(flag, type=kind, default=None, help=text)(fn)
    return fn


def ralph_settings(config: dict, ralph_flags: dict) -> RalphSettings:
    try:
        return RalphSettings.from_sources(config.get("ralph"), ralph_flags)
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def make_extensions(settings: NodeSettings, config: dict, ralph_flags: dict,
                    ralph_steps: int | None = None, terminal: Terminal | None = None) -> list[Extension]:
    """The loops a node runs besides gossip: its own Ralph loop(s), the reproduction scheduler, and
    the console's event lines."""
    extensions: list[Extension] = []
    if settings.ralph:
        from node.ralph_runner import RalphRunner  # heavy: ralph.proposers imports anthropic (~1-2 s)

        extensions.append(RalphRunner(ralph_settings(config, ralph_flags), max_steps=ralph_steps))
    if settings.reproduce:
        extensions.append(Reproducer())
    extensions.append(ConsoleEvents(terminal))
    return extensions


def register(cli: click.Group) -> None:

    @cli.command()
    @home_option
    @click.option("--listen", default=None, metavar="HOST:PORT", help="Address to serve on (default 127.0.0.1:7447; port 0 = any).")
    @click.option("--bootstrap", multiple=True, metavar="HOST:PORT", help="A peer to join through (repeatable).")
    @click.option("--swarm", default=None, help="Swarm name (default from config: public).")
    @click.option("--swarm-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Shared key of a private swarm.")
    @click.option("--lan/--no-lan", default=None, help="LAN discovery via zeroconf (default on).")
    @click.option("--lan-interface", default=None, metavar="ADDR", help="IPv4 address of the interface for LAN discovery.")
    @click.option("--advertise", multiple=True, metavar="HOST:PORT", help="Address peers should use to reach this node.")
    @click.option("--ralph/--no-ralph", default=True, help="Run this node's own Ralph loop.")
    @click.option("--reproduce/--no-reproduce", default=True, help="Reproduce other nodes' claims and vote.")
    @click.option("--trusted", multiple=True, metavar="KEY", help="A key this operator trusts (repeatable).")
    @click.option("--sync-interval", type=click.FloatRange(min=0.1), default=None,
                  help="Seconds between reconciliations with a random peer (default 30).")
    @click.option("--task", default=None, help="Task the own loop works on (default from config: tiny).")
    @device_option(None)
    @budget_scale_option(None, "Fraction of the task's token budget for own experiments (demos, tests).")
    @click.option("--run-untrusted", type=click.Choice(["sandbox", "trusted", "never"]), default=None,
                  help="Run strangers' code only in a working sandbox (default), also without one, or never.")
    @click.option("--verify-share", type=click.FloatRange(0.0, 1.0), default=None,
                  help="Most compute share spent reproducing while the own loop has work (default 0.3).")
    @click.option("--max-db-mb", type=int, default=None, metavar="MIB",
                  help="Disk budget of the replica; past it, keys without trust here lose their oldest "
                       "unverified messages first (default 2048, at least 64).")
    @click.option("--ralph-steps", type=click.IntRange(min=1), default=None,
                  help="Stop the own loop after this many experiments (the node keeps serving and reproducing).")
    @click.option("--quiet", is_flag=True, help="Print only start-up, warnings and errors; no event lines.")
    @click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Also append every line (event lines included) to this file.")
    @ralph_options
    def node(home: Path | None, listen, bootstrap, swarm, swarm_key_file, lan, lan_interface, advertise, ralph,
             reproduce, trusted, sync_interval, task, device, budget_scale, run_untrusted, verify_share,
             max_db_mb, ralph_steps, quiet, log_file, **ralph_flags) -> None:
        """Run a node until SIGINT or SIGTERM."""
        logging.basicConfig(level=logging.INFO if os.environ.get("RALPHSWARM_DEBUG") else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        h = get_home(home)
        # Every check before any start-up work: flags (click), config, settings, task, Ralph settings, the lock.
        config = h.config()
        flags = dict(
            listen=listen, bootstrap=bootstrap, swarm=swarm, swarm_key_file=swarm_key_file, lan=lan,
            lan_interface=lan_interface, advertise=advertise, ralph=ralph, reproduce=reproduce, trusted=trusted,
            sync_interval=sync_interval, task=task, device=device, budget_scale=budget_scale,
            run_untrusted=run_untrusted, verify_share=verify_share, max_db_mb=max_db_mb)
        settings = settings_from(h.path, config, flags)
        if ralph:
            ralph_settings(config, ralph_flags)
        terminal = Terminal(quiet, log_file)
        flags["task"] = asyncio.run(check_task(h, settings))
        settings = settings_from(h.path, config, flags)
        lock = h.lock()  # held until this process ends; before init, so two first starts cannot race
        if not h.exists:
            identity, _ = h.init(swarm=swarm)
            terminal(f"initialised {h.path} (pubkey {identity.pubkey})")
            config = h.config()
            settings = settings_from(h.path, config, flags)
        try:
            asyncio.run(run_node(settings, h, make_extensions(settings, config, ralph_flags, ralph_steps, terminal),
                                 echo=terminal))
        finally:
            terminal.close()
            lock.close()

    @cli.command("swarm-key")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    def swarm_key(file: Path) -> None:
        """Create a new private-swarm key FILE (mode 0600); share it only with the swarm's nodes."""
        try:
            generate_swarm_key(file)
        except OSError as exc:
            raise UserError(f"cannot write {file}: {exc.strerror or exc}") from None
        click.echo(f"wrote {file}; start nodes with: ralphswarm node --swarm NAME --swarm-key-file {file}")

    @cli.command()
    @home_option
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def status(home: Path | None, as_json: bool) -> None:
        """Status of this home's running node."""
        where = get_home(home)

        async def both() -> tuple[dict, dict]:
            return await ask(where, "/v1/status"), await ask(where, "/api/stats")
        st, stats = asyncio.run(both())
        catchup = stats.get("catchup") if isinstance(stats, dict) else None
        disk = stats.get("disk") if isinstance(stats, dict) else None
        if as_json:
            click.echo(json.dumps({**st, "catchup": catchup, "disk": disk}, indent=2))
            return
        counts = st.get("counts", {})
        click.echo(f"node    {st.get('address')}\npubkey  {st.get('pubkey')}\nswarm   {st.get('swarm')}\n"
                   f"peers   {st.get('peers')}\ncorpus  " + "  ".join(f"{k} {v}" for k, v in counts.items()))
        if isinstance(disk, dict):
            mib = lambda n: f"{(n or 0) / 2**20:.1f}"  # noqa: E731
            click.echo(f"disk    {mib(disk.get('used_bytes'))} of {mib(disk.get('budget_bytes'))} MiB; keys without "
                       f"trust {mib(disk.get('newcomer_bytes'))} of {mib(disk.get('newcomer_budget_bytes'))} MiB; "
                       f"shed {disk.get('shed')} messages ({disk.get('expired')} for age), refused "
                       f"{disk.get('refused')} pushed, {disk.get('withheld')} not relayed")
        if catchup:
            state = "fetching" if catchup.get("active") else "done"
            click.echo(f"catchup {state}: {catchup.get('stored')}/{catchup.get('wanted')} messages from "
                       f"{len(catchup.get('peers') or [])} peer(s), {catchup.get('failed')} failed, "
                       f"{catchup.get('remaining')} to go, {catchup.get('rate_per_s')}/s over {catchup.get('elapsed_s')} s")

    @cli.command()
    @home_option
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def peers(home: Path | None, as_json: bool) -> None:
        """Peers of this home's running node, with scores and last contact."""
        table = asyncio.run(ask(get_home(home), "/api/peers"))
        if as_json:
            click.echo(json.dumps(table, indent=2))
            return
        rows = table.get("peers", [])
        if not rows:
            click.echo("no peers yet")
            return
        click.echo(f"{'address':<28} {'pubkey':<12} {'score':>6} {'state':<8} {'source':<9} {'last contact':<26} last error")
        for p in rows:
            state = "cooling" if p["cooling"] else "active"
            seen = when(p.get("last_contact"))
            click.echo(f"{p['address']:<28} {short(p['pubkey']) if p['pubkey'] else '?':<12} {p['score']:>6} "
                       f"{state:<8} {p['source']:<9} {seen:<26} {p['last_error'] or ''}")
