"""``ralphswarm demo``: a small swarm of local nodes, wired together, to watch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from node.cli.common import budget_scale_option, get_home, home_option
from node.errors import UserError
from node.home import Home

START_TIMEOUT_S = 120  # a node prints "listening:" within this, or the demo gives up


class Stream:
    """One demo node's output, read to its end by a daemon thread: every line appended to
    ``nodeN.log`` and echoed on the demo's terminal prefixed ``nodeN |`` (unless quiet). Reading
    never stops while the node runs, so a talkative node can never fill its pipe and stall."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path, echo: bool) -> None:
        self.name, self.proc, self.echo = name, proc, echo
        self.log = open(log, "ab")
        self.address: str | None = None
        self.started = threading.Event()  # "listening:" seen, or the output ended
        self.thread = threading.Thread(target=self._read, name=f"demo-{name}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.log.write(raw)
            self.log.flush()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if self.address is None and line.startswith("listening: "):
                self.address = line.split(": ", 1)[1].strip()
                self.started.set()
            if self.echo:
                click.echo(f"{self.name} | {line}")
        self.started.set()
        self.log.close()


def start_demo(base: Path, nodes: int, budget_scale: float, extra: list[str], echo: bool = True) -> list[Stream]:
    streams: list[Stream] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The demo's nodes trust each other (each is started with the others' keys): their votes verify
    # claims, so every node's board ranks the same claims once votes have flowed.
    keys = [Home(base / f"node{i}").init()[0].pubkey for i in range(nodes)]
    for i in range(nodes):
        home = base / f"node{i}"
        trusted = [arg for j, key in enumerate(keys) if j != i for arg in ("--trusted", key)]
        argv = [sys.executable, "-m", "node.cli", "node", "--home", str(home), "--listen", "127.0.0.1:0",
                "--no-lan", "--budget-scale", str(budget_scale), "--sync-interval", "5", *trusted, *extra]
        if streams:
            argv += ["--bootstrap", streams[0].address]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        stream = Stream(f"node{i}", proc, base / f"node{i}.log", echo)
        stream.started.wait(timeout=START_TIMEOUT_S)
        if stream.address is None:
            stop_all([*streams, stream])
            raise UserError(f"demo node {i} did not start; see {base / f'node{i}.log'}")
        streams.append(stream)
    return streams


def stop_all(streams: list[Stream]) -> None:
    for s in streams:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    for s in streams:
        try:
            s.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()
        s.thread.join(timeout=5)  # its last lines written


def register(cli: click.Group) -> None:

    @cli.command()
    @home_option
    @click.option("--nodes", type=click.IntRange(1, 16), default=3, show_default=True, help="Local nodes to start.")
    @budget_scale_option(0.25, "Fraction of the task budget per experiment (smaller = faster demo).")
    @click.option("--quiet", is_flag=True, help="Do not stream the nodes' lines (they still go to nodeN.log).")
    def demo(home: Path | None, nodes: int, budget_scale: float, quiet: bool) -> None:
        """Start N local nodes wired together; stream their lines prefixed by node; Ctrl-C stops them."""
        base = get_home(home).path / "demo"
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {base}: {exc.strerror or exc}") from None
        streams = start_demo(base, nodes, budget_scale, [], echo=not quiet)
        for s in streams:
            click.echo(f"{s.name}: dashboard {s.address}/  status {s.address}/v1/status  home {base / s.name}  "
                       f"log {base / (s.name + '.log')}")
        click.echo("demo running; Ctrl-C stops every node")
        stop = {"now": False}

        def handler(signum, frame):
            stop["now"] = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        try:
            while not stop["now"] and all(s.proc.poll() is None for s in streams):
                time.sleep(0.5)
        finally:
            stop_all(streams)
            click.echo("demo stopped")
