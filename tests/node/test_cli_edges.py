"""No sharp edges (issue 18 item 6), each through a real `python -m node.cli` process.

    .venv/bin/python -m pytest tests/node/test_cli_edges.py -q

Flags refused before any start-up work, by one shared definition for `node` and `experiment`;
unknown config keys refused; one node per home (a lock); an unknown --task exits; homes and files
that cannot be written are one line, never a traceback; --json where a command prints data; human
times; `show` of a vote without raw JSON; `trust remove` of a key never trusted; the peers header;
the favicon; `import` of another JSON spelling stores the canonical bytes.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.messages import claim
from tests.node.test_cli_corpus import AUTHOR, VOTER, assert_error, err, init, out, vote, write_lines
from tests.nodeproc import ROOT, NodeProcess, cli
from tests.timing import PROCESS_SLACK_S

from protocol import canon

from node.settings import BUDGET_SCALE_MAX, CONFIG_KEYS

FAST = ("--no-lan", "--no-ralph", "--no-reproduce")


# -- flags: refused while the command line is parsed, one definition for node and experiment --------

@pytest.mark.parametrize("flag, value, message", [
    ("--device", "tpu", "unknown device 'tpu' (auto, cpu, cuda, cuda:N, mps)"),
    ("--device", "cuda:x", "unknown device 'cuda:x'"),
    ("--budget-scale", "2", f"budget scale must be in [0.0001, {BUDGET_SCALE_MAX:g}]"),
    ("--budget-scale", "0", "budget scale must be in [0.0001, 1]"),
    ("--budget-scale", "nan", "budget scale must be in [0.0001, 1]"),
])
@pytest.mark.slow  # two CLI processes each: 2-4 s
def test_node_and_experiment_refuse_the_same_flag_values_before_any_work(tmp_path, flag, value, message):
    for command in ("node", "experiment"):
        home = tmp_path / command
        proc = cli(command, flag, value, "--no-lan" if command == "node" else "--json", home=home)
        assert_error(proc, message, code=2)
        assert not home.exists()  # refused before the home was created: no start-up work done


@pytest.mark.parametrize("args, message", [
    (("--listen", "nowhere"), "--listen 'nowhere' is not HOST:PORT"),
    (("--task", "no-such-task"), "unknown task 'no-such-task'"),
    (("--task", "0123456789"), "not found: no task id starts with 0123456789"),
    (("--trusted", "xyz"), "trusted key 'xyz' is not 64 lower-case hex"),
    (("--swarm-key-file", "/nonexistent/swarm.key"), "swarm key file /nonexistent/swarm.key does not exist"),
    (("--verify-share", "3"), "--verify-share"),
    (("--memory-type", "none"), "--memory-type"),
])
def test_bad_node_flags_exit_at_once_and_create_nothing(tmp_path, args, message):
    home = tmp_path / "home"
    started = time.monotonic()
    proc = cli("node", *FAST, "--listen", "127.0.0.1:0", *args, home=home, timeout=PROCESS_SLACK_S * 4)
    code = 2 if args[0] in ("--verify-share", "--memory-type") else 1
    assert_error(proc, message, code=code)
    assert not home.exists()
    # An unknown task used to print its error and hang; now it is a process start and an exit.
    assert time.monotonic() - started < PROCESS_SLACK_S


def test_an_unknown_task_of_an_existing_home_exits(tmp_path):
    home = tmp_path / "home"
    init(home)
    proc = cli("node", *FAST, "--listen", "127.0.0.1:0", "--task", "nope", home=home, timeout=PROCESS_SLACK_S * 4)
    assert_error(proc, "unknown task 'nope' (known: shakespeare, tiny, or a task id of the corpus)")
    assert not (home / "node.json").exists()


# -- config ----------------------------------------------------------------------------------------

@pytest.mark.slow  # several CLI processes: 10 s
def test_unknown_config_keys_are_refused_by_every_command(tmp_path):
    home = tmp_path / "home"
    init(home)
    config = json.loads((home / "config.json").read_text())
    assert set(config) <= set(CONFIG_KEYS)  # what init writes is all known
    (home / "config.json").write_text(json.dumps({**config, "tusted": [VOTER.pubkey]}))  # a typo
    for args in (("node", *FAST), ("leaderboard",), ("trust", "list")):
        assert_error(cli(*args, home=home), "config.json: unknown key 'tusted'", "known: swarm")
    (home / "config.json").write_text(json.dumps({**config, "device": "tpu"}))  # a bad value: the flag's own check
    assert_error(cli("node", *FAST, home=home), "unknown device 'tpu'")
    (home / "config.json").write_text(json.dumps({**config, "budget_scale": 5}))
    assert_error(cli("node", *FAST, home=home), "budget scale must be in")


# -- homes and files that cannot be written --------------------------------------------------------

@pytest.mark.slow  # several CLI processes: 10 s
def test_a_home_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    home = blocker / "home"
    assert_error(cli("init", home=home), "cannot create the home", str(home))
    assert_error(cli("node", *FAST, "--listen", "127.0.0.1:0", home=home), "cannot create the home")
    assert_error(cli("experiment", "--json", home=home), "cannot create", str(home))
    assert_error(cli("swarm-key", str(blocker / "swarm.key")), "cannot write", "swarm.key")
    assert blocker.read_text() == "not a directory"


@pytest.mark.slow  # several CLI processes: 13 s
def test_id_and_trust_list_print_json(tmp_path):
    home = tmp_path / "home"
    pubkey = init(home)
    assert json.loads(out(cli("id", "--json", home=home))) == {"pubkey": pubkey, "home": str(home), "swarm": "public"}
    assert json.loads(out(cli("trust", "list", "--json", home=home))) == {"trusted": []}
    never = cli("trust", "remove", VOTER.pubkey, home=home)
    assert never.returncode == 0 and out(never) == f"{VOTER.pubkey} was not trusted; nothing changed\n"
    assert cli("trust", "add", VOTER.pubkey, home=home).returncode == 0
    assert json.loads(out(cli("trust", "list", "--json", home=home))) == {"trusted": [VOTER.pubkey]}
    removed = cli("trust", "remove", VOTER.pubkey, home=home)
    assert out(removed) == f"no longer trusted {VOTER.pubkey}\n"


@pytest.mark.slow  # several CLI processes: 4 s
def test_show_prints_human_times_and_a_vote_without_its_raw_json(tmp_path):
    home = tmp_path / "home"
    init(home)
    c = claim(AUTHOR, n=1)
    v = vote(VOTER, c.id, "reproduced", "1.500500", 1)
    assert cli("import", str(write_lines(tmp_path / "in.jsonl", [c.canonical(), v])), home=home).returncode == 0
    shown = out(cli("show", c.id[:8], home=home))
    assert re.search(r"^created 2023-11-14 22:13:21 UTC \(\d+ d ago\)$", shown, re.M), shown
    assert "1700000001" not in shown
    vote_id = json.loads(v)["id"]
    text = out(cli("show", vote_id[:8], home=home))
    assert f"claim   {c.id}" in text and "verdict reproduced" in text and "val_bpb 1.500500" in text
    assert "curve   2 points, loss 5.545177 -> 2.100000" in text
    assert "{" not in text and len(text.splitlines()) < 12  # a summary, not the vote's JSON


@pytest.mark.slow  # several CLI processes: 14 s
def test_import_stores_the_canonical_bytes_of_any_json_spelling(tmp_path):
    home = tmp_path / "home"
    init(home)
    c = claim(AUTHOR, n=7, note="é ünïcödé \u2028")
    d = c.to_dict()
    spellings = [
        json.dumps(d, indent=1).replace("\n", " "),  # spaces (one line: JSON Lines)
        json.dumps(dict(reversed(list(d.items())))),  # another key order
        json.dumps(d, ensure_ascii=True),  # \\u escapes
    ]
    for i, text in enumerate(spellings):
        assert text.encode() != c.canonical()
        target = tmp_path / f"h{i}"
        init(target)
        proc = cli("import", str(write_lines(tmp_path / f"s{i}.jsonl", [text.encode()])), home=target)
        assert out(proc) == "accepted 1  duplicate 0  rejected 0\n", out(proc)
        assert cli("export", home=target).stdout == c.canonical() + b"\n"  # stored canonical, byte for byte
    dup = json.dumps(d)[:-1] + ', "id": "' + d["id"] + '"}'  # a duplicate key: no valid spelling
    proc = cli("import", str(write_lines(tmp_path / "dup.jsonl", [dup.encode()])), home=home)
    assert out(proc).splitlines()[0].startswith("line 1: invalid: ") and "rejected 1" in out(proc)
    assert canon(d) == c.canonical()


# -- one node per home; what a running node shows ------------------------------------------------

@pytest.mark.slow  # a node process and several CLI processes: 6 s
def test_a_second_node_on_the_same_home_exits_at_once_and_the_first_keeps_serving(tmp_path):
    from trainer.tasks import builtin_tasks

    tiny = builtin_tasks()["tiny"].id
    node = NodeProcess(tmp_path / "node", *FAST, "--task", tiny[:6]).start()  # a task by its id prefix
    try:
        assert node.get("/api/tasks")["default"] == tiny
        started = time.monotonic()
        second = cli("node", *FAST, "--listen", "127.0.0.1:0", home=node.home, timeout=PROCESS_SLACK_S * 4)
        assert_error(second, "another node is running on", str(node.home), f"pid {node.proc.pid}")
        assert time.monotonic() - started < PROCESS_SLACK_S
        assert node.get("/v1/status")["pubkey"] == node.pubkey  # the first is untouched
        assert json.loads((node.home / "node.json").read_text())["pid"] == node.proc.pid

        peers = out(cli("peers", home=node.home))
        assert peers == "no peers yet\n"
        with urllib.request.urlopen(node.address + "/favicon.ico", timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("image/svg+xml")
            assert resp.read().startswith(b"<svg")
    finally:
        assert node.stop() == 0
    again = NodeProcess(tmp_path / "node", *FAST).start()  # the lock went with the process
    try:
        assert again.pubkey == node.pubkey
    finally:
        assert again.stop() == 0


@pytest.mark.slow  # two node processes
def test_peers_prints_a_header_and_human_times(tmp_path):
    a = NodeProcess(tmp_path / "a", *FAST, "--sync-interval", "1").start()
    b = None
    try:
        b = NodeProcess(tmp_path / "b", *FAST, "--sync-interval", "1", "--bootstrap",
                        a.address.removeprefix("http://")).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(p["last_contact"] for p in b.get("/api/peers")["peers"]):
            time.sleep(0.5)
        lines = out(cli("peers", home=b.home)).splitlines()
        assert lines[0].split()[:5] == ["address", "pubkey", "score", "state", "source"]
        assert a.address in lines[1] and a.pubkey[:12] in lines[1]
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\)", lines[1]), lines
    finally:
        for n in (b, a):
            if n is not None:
                assert n.stop() == 0


def test_quiet_and_log_file_are_checked_before_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    home = tmp_path / "home"
    assert_error(cli("node", *FAST, "--log-file", str(blocker / "node.log"), home=home), "cannot open --log-file")
    assert not home.exists()


@pytest.mark.slow  # several CLI processes: 4 s
def test_init_and_import_print_json(tmp_path):
    home = tmp_path / "home"
    first = json.loads(out(cli("init", "--json", home=home)))
    assert first["created"] is True and first["home"] == str(home) and first["swarm"] == "public"
    again = json.loads(out(cli("init", "--json", home=home)))
    assert again == {**first, "created": False}
    good = claim(AUTHOR, n=3).canonical()
    proc = cli("import", "--json", str(write_lines(tmp_path / "in.jsonl", [good, b"not json", good])), home=home)
    assert proc.returncode == 0 and err(proc) == ""
    report = json.loads(out(proc))
    assert {k: report[k] for k in ("accepted", "duplicate", "rejected")} == {"accepted": 1, "duplicate": 1, "rejected": 1}
    [rejection] = report["rejections"]
    assert rejection["line"] == 2 and rejection["reason"].startswith("invalid: not JSON")
