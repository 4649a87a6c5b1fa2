"""``ralphswarm demo``: a small swarm of local nodes, wired together, to watch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from node.cli.common import get_home, home_option
from node.errors import UserError


def start_demo(base: Path, nodes: int, budget_scale: float, extra: list[str]) -> list[tuple[subprocess.Popen, str]]:
    procs: list[tuple[subprocess.Popen, str]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i in range(nodes):
        home = base / f"node{i}"
        argv = [sys.executable, "-m", "node.cli", "node", "--home", str(home), "--listen", "127.0.0.1:0",
                "--no-lan", "--budget-scale", str(budget_scale), "--sync-interval", "5", *extra]
        if procs:
            argv += ["--bootstrap", procs[0][1]]
        log = open(base / f"node{i}.log", "ab")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env)
        address = None
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline().decode()
            if not line:
                break
            log.write(line.encode())
            if line.startswith("listening: "):
                address = line.split(": ", 1)[1].strip()
                break
        if address is None:
            for p, _ in procs:
                p.terminate()
            proc.terminate()
            raise UserError(f"demo node {i} did not start; see {base / f'node{i}.log'}")
        procs.append((proc, address))
    return procs


def register(cli: click.Group) -> None:

    @cli.command()
    @home_option
    @click.option("--nodes", type=click.IntRange(1, 16), default=3, show_default=True, help="Local nodes to start.")
    @click.option("--budget-scale", type=click.FloatRange(min=0.0001, max=1.0), default=0.25, show_default=True,
                  help="Fraction of the task budget per experiment (smaller = faster demo).")
    def demo(home: Path | None, nodes: int, budget_scale: float) -> None:
        """Start N local nodes wired together; print their dashboard and status URLs; Ctrl-C stops them."""
        base = get_home(home).path / "demo"
        base.mkdir(parents=True, exist_ok=True)
        procs = start_demo(base, nodes, budget_scale, [])
        for i, (_, address) in enumerate(procs):
            click.echo(f"node{i}: dashboard {address}/  status {address}/v1/status  home {base / f'node{i}'}")
        click.echo("demo running; Ctrl-C stops every node")
        stop = {"now": False}

        def handler(signum, frame):
            stop["now"] = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        try:
            while not stop["now"] and all(p.poll() is None for p, _ in procs):
                time.sleep(0.5)
        finally:
            for p, _ in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p, _ in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
            click.echo("demo stopped")
