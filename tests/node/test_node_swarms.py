"""Private swarms and LAN swarms with real node processes.

    .venv/bin/python -m pytest tests/node/test_node_swarms.py -q      (LAN part needs root + iproute2)
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.netns import NetnsLab
from tests.messages import claims, claims_author
from tests.nodeproc import ROOT, NodeProcess, cli, wait_until

pytestmark = pytest.mark.slow
FAST = ("--no-lan", "--no-ralph", "--no-reproduce", "--sync-interval", "1")


def _status_code(url: str, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _cli_json(home, *args):
    out = cli(*args, "--json", home=home)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def test_private_swarm_refuses_a_node_without_the_key(tmp_path):
    key = tmp_path / "lab.key"
    assert cli("swarm-key", str(key)).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    lab = ("--swarm", "lab", "--swarm-key-file", str(key))
    # a trusts the imported claims' author: it offers them to b's reconciliation (node/newcomers.py)
    a = NodeProcess(tmp_path / "a", *FAST, *lab, "--trusted", claims_author(21).pubkey).start()
    b = NodeProcess(tmp_path / "b", *FAST, *lab, "--bootstrap", a.address).start()
    other_key = tmp_path / "other.key"
    cli("swarm-key", str(other_key))
    stranger = NodeProcess(tmp_path / "s", *FAST, "--swarm", "lab", "--bootstrap", a.address).start()
    wrong = NodeProcess(tmp_path / "w", *FAST, "--swarm", "lab", "--swarm-key-file", str(other_key),
                        "--bootstrap", a.address).start()
    try:
        # without the key: can neither read nor inject
        assert _status_code(a.address + "/v1/status") == 401
        assert _status_code(a.address + "/v1/peers") == 401
        envs = claims(5, swarm="lab", seed=21)
        body = b'{"messages":[' + b",".join(e.canonical() for e in envs) + b"]}"
        assert _status_code(a.address + "/v1/messages", body) == 401
        # the key holders sync through sealed exchanges: import into a (through the running node)
        jsonl = tmp_path / "in.jsonl"
        jsonl.write_bytes(b"\n".join(e.canonical() for e in envs) + b"\n")
        out = cli("import", str(jsonl), home=a.home)
        assert out.returncode == 0 and b"accepted 5" in out.stdout, out.stdout + out.stderr
        wait_until(lambda: _cli_json(b.home, "status")["counts"]["claim"] == 5, timeout=30, what="b to sync")
        time.sleep(2)
        # neither outsider got anything, and a never learned their peer records
        for outsider in (stranger, wrong):  # only what it made itself: its peer record and task
            assert _cli_json(outsider.home, "status")["counts"] == {"task": 1, "claim": 0, "vote": 0, "peer": 1}
        assert _cli_json(a.home, "status")["counts"]["peer"] == 2
    finally:
        for n in (a, b, stranger, wrong):
            n.stop()


def _node_argv(home, addr, swarm):
    return [sys.executable, "-m", "node.cli", "node", "--home", str(home), "--listen", f"{addr}:7447",
            "--lan-interface", addr, "--swarm", swarm, "--no-ralph", "--no-reproduce", "--sync-interval", "1"]


def test_lan_nodes_find_each_other_without_bootstrap(tmp_path):
    with NetnsLab() as lab:
        sw = lab.switch("sw")
        nss = {name: lab.namespace(name) for name in ("a", "b", "c")}
        addrs = {name: lab.attach(ns, sw, f"10.203.1.{i}/24") and ns.addresses[0]
                 for i, (name, ns) in enumerate(nss.items(), 1)}
        swarms = {"a": "lab", "b": "lab", "c": "elsewhere"}
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        procs = {name: lab.popen(nss[name], _node_argv(tmp_path / name, addrs[name], swarms[name]),
                                 cwd=ROOT, env=env, stdout=open(tmp_path / f"{name}.log", "wb"),
                                 stderr=open(tmp_path / f"{name}.err", "wb"))
                 for name in nss}

        def status(name):
            out = lab.run(nss[name], [sys.executable, "-m", "node.cli", "status", "--json", "--home",
                                      str(tmp_path / name)], cwd=ROOT, env=env, capture_output=True, timeout=30)
            return json.loads(out.stdout) if out.returncode == 0 else None

        try:
            # a and b: discovered over mDNS, then synced (each holds both peer records)
            wait_until(lambda: all((status(n) or {}).get("counts", {}).get("peer") == 2 for n in ("a", "b")),
                       timeout=45, what="a and b to find each other on the LAN")
            # c, another swarm on the same link: never joined, never joined by them
            time.sleep(2)
            assert status("c")["counts"]["peer"] == 1
            assert status("a")["counts"]["peer"] == 2
            assert all(p.poll() is None for p in procs.values())
        finally:
            lab.stop_all()
            for name in nss:
                print(name, (tmp_path / f"{name}.err").read_text()[-1500:])
