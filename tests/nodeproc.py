"""Real node processes for multi-node tests: start, wait until listening, ask, stop or kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RALPHSWARM = [sys.executable, "-m", "node.cli"]


def cli(*args: str, home: Path | None = None, input: bytes | None = None, timeout: float = 120,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one ralphswarm command; returns the completed process (text output)."""
    argv = [*RALPHSWARM, *args] + (["--home", str(home)] if home else [])
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("ANTHROPIC_API_KEY", None)
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, cwd=ROOT, env=full_env)


class NodeProcess:
    def __init__(self, home: Path, *args: str, env: dict | None = None):
        self.home = home
        self.args = args
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self.pubkey: str | None = None
        self.log = home.parent / f"{home.name}.log"

    def start(self, timeout: float = 60) -> "NodeProcess":
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(self.env or {})}
        env.pop("ANTHROPIC_API_KEY", None)
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log, "ab")
        listen = ["--listen", self.address.removeprefix("http://")] if self.address else ["--listen", "127.0.0.1:0"]
        argv = [*RALPHSWARM, "node", "--home", str(self.home), *listen, *self.args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._logf, cwd=ROOT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"node exited early: {self.log.read_text()[-2000:]}")
            self._logf.write(line.encode())
            if line.startswith("listening: "):
                self.address = line.split(": ", 1)[1].strip()
            elif line.startswith("pubkey: "):
                self.pubkey = line.split(": ", 1)[1].strip()
            elif line.startswith("swarm: "):
                # keep draining stdout into the log: a node printing activity must never block on a full pipe
                threading.Thread(target=self._drain, args=(self.proc, self._logf), daemon=True).start()
                return self
        raise RuntimeError("node did not start in time")

    @staticmethod
    def _drain(proc, logf) -> None:
        for line in proc.stdout:
            try:
                logf.write(line)
                logf.flush()
            except ValueError:  # log closed at stop
                return

    def get(self, path: str, timeout: float = 10):
        with urllib.request.urlopen(self.address + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: bytes, timeout: float = 30):
        req = urllib.request.Request(self.address + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def push(self, raws: list[bytes]) -> dict:
        return self.post("/v1/messages", b'{"messages":[' + b",".join(raws) + b"]}")

    def total(self) -> int:
        return sum(self.get("/v1/status")["counts"].values())

    def ids(self) -> set[str]:
        """Every message id in this node's replica (read from its database, as `export` does)."""
        out = cli("export", home=self.home)
        return {json.loads(line)["id"] for line in out.stdout.decode().splitlines() if line}

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.05)  # let the drain thread write the last lines
        self._logf.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._logf.close()


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
