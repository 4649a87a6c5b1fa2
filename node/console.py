"""A terminal that says what happens (docs/design.md, "What a user sees"): the node's event lines.

``Terminal`` is where the node's lines go: stdout (through a rich Console on a terminal, so that a
progress bar and the lines share the screen), minus the event lines with ``--quiet``, and every
line appended to ``--log-file``. An event line starts with its ``HH:MM:SS`` (node/telemetry.py).

``ConsoleEvents`` is a node extension that turns what the node does into event lines: the baseline
measurement announced, with a progress bar on a terminal (milestone lines elsewhere), and its
val_bpb; a reproduction started; a vote received on one of this node's claims; a peer joined or
lost; a new #1 on the board; a summary every SUMMARY_S seconds (experiments, keep rate, best,
peers). The own loop's experiment lines come from ``step_line`` (node/ralph_runner.py), the votes
this node casts from node/reproduce.py.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import click

from node.errors import UserError
from node.ids import short
from node.telemetry import Counter

SUMMARY_S = 300.0  # a summary line every five minutes
POLL_S = 1.0  # peers, experiments in progress
BOARD_S = 15.0  # the board's #1: a leaderboard computed this often, not more
BOARD_EVERY = 4  # ... and at least every this many times when nothing offered changed (see _watch_board)
MILESTONES = (0.25, 0.5, 0.75)  # baseline progress lines where no bar can be drawn


def is_event(line: str) -> bool:
    return line[:2].isdigit() and line[2:3] == ":"


class Terminal:
    """The node's line sink (``__call__``) and, on a terminal, its progress bar."""

    def __init__(self, quiet: bool = False, log_file: Path | None = None, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.log: TextIO | None = None
        if log_file is not None:
            try:
                self.log = open(log_file, "a", encoding="utf-8", buffering=1)
            except OSError as exc:
                raise UserError(f"cannot open --log-file {log_file}: {exc.strerror or exc}") from None
        self.console = None
        if stream is None:
            from rich.console import Console

            console = Console(highlight=False, soft_wrap=True)
            self.console = console if console.is_terminal else None
        self._bar: Any = None
        self._bar_task: Any = None

    @property
    def can_draw(self) -> bool:
        return self.console is not None and not self.quiet

    def __call__(self, line: str) -> None:
        if not (self.quiet and is_event(line)):
            if self.console is not None:
                self.console.print(line, markup=False)
            else:
                click.echo(line)
        if self.log is not None:
            self.log.write(line + "\n")

    def bar_start(self, label: str, total: int) -> None:
        if not self.can_draw:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar_end()
        self._bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                             TimeRemainingColumn(), console=self.console, transient=True)
        self._bar_task = self._bar.add_task(label, total=max(1, total))
        self._bar.start()

    def bar_update(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._bar_task, completed=done, total=max(1, total))

    def bar_end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self) -> None:
        self.bar_end()
        if self.log is not None:
            self.log.close()


def bpb(value: Any) -> str:
    return "-" if value is None else f"{float(value):.6f}"


def step_line(report: Any, step: int) -> str:
    """One own experiment (ralph.loop.StepReport): its val_bpb, the delta against its seed's value,
    and whether the loop kept it."""
    seed = report.seed
    seed_name = "baseline" if seed is None or seed.claim_id is None else short(seed.claim_id)
    if report.status != "published":
        return f"experiment {step}: {report.status} (seed {seed_name}): {report.reason}"
    if report.outcome == "crashed" or report.val_bpb is None:
        return f"experiment {step}: crashed (seed {seed_name}) {short(report.claim_id)}: {report.reason or report.note}"
    delta = ""
    if seed is not None and seed.val_bpb is not None:
        delta = f" ({report.val_bpb - seed.val_bpb:+.6f} vs seed {seed_name} {seed.val_bpb:.6f})"
    verdict = "KEPT" if report.outcome == "improved" else "discarded"
    note = " ".join(report.note.split())
    note = note if len(note) <= 160 else note[:159] + "…"
    why = ""
    if verdict == "discarded" and seed is not None and seed.val_bpb is not None and report.val_bpb < seed.val_bpb:
        # lower, yet not kept: within the keep threshold, screened out, or over the compute cap (the note says)
        why = f" (not kept: see ralphswarm show {short(report.claim_id)})"
    return f"experiment {step}: {verdict} val_bpb {report.val_bpb:.6f}{delta} {short(report.claim_id)}: {note}{why}"


class ConsoleEvents:
    """A node extension that only watches and says (it runs nothing, holds no device)."""

    def __init__(self, terminal: Terminal | None = None, summary_s: float = SUMMARY_S, poll_s: float = POLL_S,
                 board_s: float = BOARD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.terminal = terminal
        self.summary_s, self.poll_s, self.board_s, self.clock = summary_s, poll_s, board_s, clock
        self.node: Any = None
        self._task: asyncio.Task | None = None
        self._peers: set[str] = set()
        self._seen_runs: set[int] = set()
        self._baseline: dict[str, Any] | None = None  # the entry of the baseline run in progress
        self._milestone = 0
        self._best: str | None = None
        self._board_version: int | None = None  # the gossip's version the board was last ranked at
        self._board_skips = 0
        self._baseline_started: float | None = None

    @property
    def busy(self) -> bool:
        return False

    def describe(self) -> str:
        return "console: event lines (experiments, reproductions, votes, peers, the board's best)"

    async def start(self, node: Any) -> None:
        self.node = node
        self._task = node.spawn(self._loop(), "console")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.terminal is not None:
            self.terminal.bar_end()

    def say(self, text: str, **fields: Any) -> None:
        self.node.telemetry.note(text, kind="console", **fields)

    # -- votes on this node's claims -------------------------------------------------------------
    def on_accepted(self, envelopes: list) -> None:
        me = self.node.identity.pubkey if self.node is not None else None
        votes = [e for e in envelopes if e.kind == "vote" and e.author != me]
        if votes and self.node is not None:
            self.node.spawn(self._votes(votes), "console-votes")

    async def _votes(self, votes: list) -> None:
        me = self.node.identity.pubkey
        for v in votes:
            claim = await self.node.replica.get(v.body["claim"])
            if claim is None or claim.kind != "claim" or claim.author != me:
                continue
            result = v.body.get("result") or {}
            claimed = (claim.body.get("result") or {}).get("val_bpb")
            seed = " at a fresh seed" if "seed_proof" in v.body else ""
            self.say(f"vote received: {v.body['verdict']} on own claim {short(claim.id)} by {short(v.author)}"
                     f"{seed}: val_bpb {bpb(result.get('val_bpb'))} (claimed {bpb(claimed)})")

    # -- the watch loop ---------------------------------------------------------------------------
    async def _loop(self) -> None:
        last_summary = last_board = self.clock()
        while True:
            await asyncio.sleep(self.poll_s)
            now = self.clock()
            try:
                self._watch_runs()
                self._watch_peers()
                if now - last_board >= self.board_s:
                    last_board = now
                    await self._watch_board()
                if now - last_summary >= self.summary_s:
                    last_summary = now
                    await self._summary()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a line not said is no reason to stop saying the next
                self.say(f"console: {type(exc).__name__}: {exc}")

    def _watch_runs(self) -> None:
        running = self.node.telemetry.activity["experiments"]
        for entry in list(running.values()):
            if id(entry) in self._seen_runs:
                continue
            self._seen_runs.add(id(entry))
            if entry.get("kind") == "reproduce" and entry.get("claim"):
                self.say(f"reproducing {short(entry['claim'])} on {entry.get('device')} "
                         f"({entry.get('budget', 0):,} tokens)", claim=entry["claim"])
            elif entry.get("kind") == "ralph" and entry.get("phase") == "baseline" and self._baseline is None:
                self._baseline, self._milestone, self._baseline_started = entry, 0, self.clock()
                self.say(f"measuring the task baseline on {entry.get('device')} ({entry.get('budget', 0):,} tokens): "
                         "every experiment is compared with it")
                if self.terminal is not None:
                    self.terminal.bar_start("baseline", int(entry.get("budget") or 1))
        self._seen_runs &= {id(e) for e in running.values()}
        entry = self._baseline
        if entry is None:
            return
        done, total = int(entry.get("tokens") or 0), int(entry.get("budget") or 1)
        if entry not in running.values():
            self._baseline = None
            if self.terminal is not None:
                self.terminal.bar_end()
            return
        if self.terminal is not None and self.terminal.can_draw:
            self.terminal.bar_update(done, total)
            return
        passed = self._milestone
        while passed < len(MILESTONES) and done >= MILESTONES[passed] * total:
            passed += 1
        if passed > self._milestone:  # one line for the furthest milestone passed since the last look
            self._milestone = passed
            elapsed = self.clock() - (self._baseline_started or self.clock())
            self.say(f"baseline {done / total:.0%} ({done:,} / {total:,} tokens, {elapsed:.0f} s)")

    def _watch_peers(self) -> None:
        peers = getattr(self.node, "peers", None)
        if peers is None:
            return
        now = time.time()
        live = {p.address: p for p in peers.active(now) if p.last_contact is not None}
        for address in sorted(set(live) - self._peers):
            key = live[address].pubkey
            self.say(f"peer joined: {address}" + (f" ({short(key)})" if key else ""))
        for address in sorted(self._peers - set(live)):
            self.say(f"peer lost: {address}")
        self._peers = set(live)

    async def _board_top(self) -> dict | None:
        from node.web.shapes import leaderboard_json

        task = await self.node.own_task()
        board = await leaderboard_json(self.node.replica, task.id)
        ranked = [e for e in board["verified"] if not e["own_unverified"]]
        return {"entry": ranked[0], "baseline": board["baseline"]} if ranked else None

    async def _watch_board(self) -> None:
        # The board changes with what this node offers its peers (node/net/gossip.py version): a flood
        # of claims held back from keys without trust here (node/newcomers.py) leaves it as it was,
        # and is not worth ranking every claim again for every board_s. Still ranked every
        # BOARD_EVERY-th time: a view of trust computed since (it lags the votes by a few seconds)
        # may have changed it.
        gossip = getattr(self.node, "gossip", None)
        version = None if gossip is None else gossip.version
        if version is not None and version == self._board_version and self._board_skips < BOARD_EVERY - 1:
            self._board_skips += 1
            return
        self._board_version, self._board_skips = version, 0
        top = await self._board_top()
        if top is None or top["entry"]["claim"] == self._best:
            return
        e = top["entry"]
        self._best = e["claim"]
        est = e["estimate"]
        value = f"{est['mean']} ± {est['se']} (n {est['n']})" if est else (e["val_bpb"] or "-")
        who = "own" if e["own"] else short(e["author"])
        delta = f", {e['delta']} vs baseline" if e.get("delta") else ""
        self.say(f"new best on the board: {short(e['claim'])} by {who}: val_bpb {value}{delta}: "
                 f"{' '.join(e['note'].split())[:80]}", claim=e["claim"])

    async def _summary(self) -> None:
        c = self.node.telemetry.counters
        run, kept = int(c.get(Counter.EXPERIMENTS_RUN, 0)), int(c.get(Counter.EXPERIMENTS_KEPT, 0))
        rate = f"{kept / run:.0%}" if run else "-"
        best = await self.node.corpus.own_best((await self.node.own_task()).id)
        peers = getattr(self.node, "peers", None)
        n_peers = len([p for p in peers.active(time.time()) if p.last_contact is not None]) if peers else 0
        self.say(f"summary: {run} experiments, {kept} kept ({rate}), own best {bpb(best.val_bpb if best else None)}, "
                 f"{int(c.get(Counter.REPRODUCTIONS_RUN, 0))} reproductions, {n_peers} peers")
