"""A terminal that says what happens: the node's event lines, --quiet, --log-file, and the demo
streaming every node's lines prefixed by node (issue 18 item 1).

    .venv/bin/python -m pytest tests/node/test_console.py -q

The line formats and the sink are checked in process; the events themselves on real node
processes: a node measuring its baseline and publishing an experiment, a second node (trusting the
first) reproducing its claims, the first hearing the vote; and a real `ralphswarm demo`.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.nodeproc import ROOT, NodeProcess, wait_until

from ralph.context import Seed
from ralph.loop import StepReport

from node.console import Terminal, is_event, step_line

EVENT = re.compile(r"^\d\d:\d\d:\d\d ")


def test_quiet_keeps_start_up_lines_and_the_log_file_gets_everything(tmp_path, capsys):
    log = tmp_path / "node.log"
    loud, quiet = Terminal(stream=sys.stdout), Terminal(quiet=True, log_file=log, stream=sys.stdout)
    for sink in (loud, quiet):
        sink("listening: http://127.0.0.1:1")
        sink("10:00:01 experiment 1: KEPT val_bpb 1.900000")
    loud.close()
    quiet.close()
    assert capsys.readouterr().out.splitlines() == [
        "listening: http://127.0.0.1:1", "10:00:01 experiment 1: KEPT val_bpb 1.900000",  # loud
        "listening: http://127.0.0.1:1"]  # quiet: no event line
    assert log.read_text().splitlines() == ["listening: http://127.0.0.1:1", "10:00:01 experiment 1: KEPT val_bpb 1.900000"]
    assert is_event("10:00:01 x") and not is_event("listening: x") and not is_event("1:")


def test_experiment_lines_name_val_bpb_the_delta_against_the_seed_and_the_verdict():
    seed = Seed("ab" * 32, "src", "cd" * 32, 1.95, "top")
    kept = StepReport("published", seed, "LR 0.03 -> 0.04", "improved", 1.93, "ef" * 32)
    assert step_line(kept, 3) == (f"experiment 3: KEPT val_bpb 1.930000 (-0.020000 vs seed {'ab' * 6} 1.950000) "
                                  f"{'ef' * 6}: LR 0.03 -> 0.04")
    base = Seed(None, "src", "cd" * 32, 1.95, "baseline")
    worse = StepReport("published", base, "a\nnote", "worse", 1.99, "12" * 32)
    assert step_line(worse, 4).startswith("experiment 4: discarded val_bpb 1.990000 (+0.040000 vs seed baseline")
    assert step_line(worse, 4).endswith(": a note")
    over = StepReport("published", base, "DEPTH 2 -> 8 trained 3.1x the baseline's time", "worse", 1.90, "56" * 32)
    assert step_line(over, 4).endswith(f"(not kept: see ralphswarm show {'56' * 6})")  # lower, yet discarded: why
    assert "not kept" not in step_line(worse, 4)
    crashed = StepReport("published", base, "boom", "crashed", None, "34" * 32, reason="OOM")
    assert step_line(crashed, 5) == f"experiment 5: crashed (seed baseline) {'34' * 6}: OOM"
    skipped = StepReport("skipped", None, reason="duplicate source")
    assert step_line(skipped, 5) == "experiment 5: skipped (seed baseline): duplicate source"


def _log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def _own_claim(home: Path, tmp_path: Path) -> bytes:
    """A real experiment (MATRIX_LR 0.03 -> 0.04 on tiny at 2% of its budget, run by the CLI) as a
    claim signed with the key of the node at ``home``: what its loop would publish for a kept change."""
    from tests.nodeproc import cli

    from protocol import Identity, build
    from trainer.patches import make_patch, source_sha256
    from trainer.tasks import builtin_tasks

    tiny = builtin_tasks()["tiny"]
    new = tiny.source.replace("MATRIX_LR = 0.03", "MATRIX_LR = 0.04")
    patch = make_patch(tiny.source, new)
    (tmp_path / "lr.diff").write_text(patch)
    run = cli("experiment", "--patch", str(tmp_path / "lr.diff"), "--budget-scale", "0.02", "--device", "cpu",
              "--json", home=tmp_path / "runner")
    assert run.returncode == 0, run.stderr.decode()
    result = __import__("json").loads(run.stdout)["result"]
    body = {"task": tiny.id, "parent": None, "patch": patch, "source_sha256": source_sha256(new),
            "note": "MATRIX_LR 0.03 -> 0.04", "outcome": "improved", "result": result}
    return build(Identity.load(home / "identity.key"), "public", "claim", body).canonical()


@pytest.mark.slow  # two node processes and three tiny runs at 2% of its budget: 1-4 min on a busy 2-core box
@pytest.mark.timeout(600)
def test_a_node_says_its_baseline_experiments_votes_and_peers(tmp_path):
    """Node A runs its loop (one experiment), B only reproduces: A's terminal says the baseline
    measurement and its val_bpb, the experiment, B joining and B's vote on its claim (a real kept
    change signed with A's key: a pending claim that would enter the top-K is what B reproduces);
    B's says A joining, the reproduction started and its vote; the log file has every line;
    --quiet keeps the event lines off A's stdout."""
    a_log = tmp_path / "a-events.log"
    a = NodeProcess(tmp_path / "a", "--no-lan", "--no-reproduce", "--budget-scale", "0.02", "--ralph-steps", "1",
                    "--sync-interval", "1", "--quiet", "--log-file", str(a_log)).start()
    b = None
    try:
        b = NodeProcess(tmp_path / "b", "--no-lan", "--no-ralph", "--budget-scale", "0.02", "--sync-interval", "1",
                        "--verify-share", "1.0", "--run-untrusted", "trusted", "--bootstrap",
                        a.address.removeprefix("http://")).start()
        claim = _own_claim(a.home, tmp_path)
        assert len(a.push([claim])["accepted"]) == 1
        wait_until(lambda: any("vote received: " in line for line in _log_lines(a_log)),
                   420, interval=1, what="A hearing B's vote")
        wait_until(lambda: any(" experiment 1: " in line for line in _log_lines(a_log)), 120, what="A's experiment")
        a_lines = _log_lines(a_log)
        text = "\n".join(line for line in a_lines if EVENT.match(line))
        assert "measuring the task baseline on cpu (6,000 tokens)" in text
        assert re.search(r"baseline val_bpb \d\.\d{6} \(6,000 tokens, trained in \d+ s\)", text), text
        assert re.search(r"experiment 1: (KEPT|discarded|crashed)", text), text
        assert f"peer joined: {b.address} ({b.pubkey[:12]})" in text
        verdict = r"(reproduced|mismatch|failed|refused|over budget)"  # a verdict may hold a space
        assert re.search(rf"vote received: {verdict} on own claim [0-9a-f]{{12}} by {b.pubkey[:12]}", text), text
        assert any(line.startswith("listening: ") for line in a_lines)
        stdout = a.log.read_text(errors="replace")  # NodeProcess keeps A's stdout (and stderr) here
        assert "listening: " in stdout and not any(EVENT.match(line) for line in stdout.splitlines())
        b_text = b.log.read_text(errors="replace")
        assert f"peer joined: {a.address}" in b_text
        assert re.search(r"reproducing [0-9a-f]{12} on cpu", b_text) and re.search(rf"vote {verdict} on ", b_text)
    finally:
        for n in (b, a):
            if n is not None:
                assert n.stop() == 0


@pytest.mark.slow  # a demo of two node processes: 20-60 s
def test_demo_streams_every_nodes_lines_prefixed_and_writes_their_logs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "demo", "--home", str(tmp_path), "--nodes", "2",
                             "--budget-scale", "0.02"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=env, start_new_session=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if sum(1 for line in lines if re.match(r"node[01] \| \d\d:\d\d:\d\d measuring the task baseline", line)) == 2:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(300), "\n".join(lines[-40:])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
    assert proc.returncode == 0, "\n".join(lines[-40:])
    for i in (0, 1):
        prefixed = [line for line in lines if line.startswith(f"node{i} | ")]
        assert any(line.startswith(f"node{i} | listening: http://127.0.0.1:") for line in prefixed)
        log = (tmp_path / "demo" / f"node{i}.log").read_text(errors="replace").splitlines()
        # every line the terminal showed for the node is in its log, in order, unprefixed
        shown = [line.removeprefix(f"node{i} | ") for line in prefixed]
        assert [line for line in log if line in set(shown)] == shown
        assert "stopped" in log  # the node's own last line, read after the demo stopped it
    assert any(f"--trusted" not in line for line in lines)  # nothing of the command lines leaks
    assert lines[-1] == "demo stopped"


async def test_the_board_is_ranked_again_only_when_what_the_node_offers_changed_or_every_few_times():
    """A flood of claims held back from keys without trust (node/newcomers.py) does not change what the
    node offers (the gossip's version), nor the board: it is not ranked again at every board_s, but
    still every BOARD_EVERY-th time (a trust view computed since may have changed it)."""
    from types import SimpleNamespace

    from node.console import BOARD_EVERY, ConsoleEvents

    events = ConsoleEvents()
    ranked: list[int] = []
    gossip = SimpleNamespace(version=7)
    events.node = SimpleNamespace(gossip=gossip)

    async def board_top():
        ranked.append(gossip.version)
        return None
    events._board_top = board_top
    for _ in range(2 * BOARD_EVERY):
        await events._watch_board()
    assert len(ranked) == 2  # the first time, then once every BOARD_EVERY
    gossip.version = 8  # something offered changed: ranked at the next tick
    await events._watch_board()
    assert ranked[-1] == 8 and len(ranked) == 3
