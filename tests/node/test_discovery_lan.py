"""LAN discovery: TXT validation (pure) and real mDNS between real network namespaces.

Run (as root, needs iproute2):  .venv/bin/python -m pytest tests/node/test_discovery_lan.py -q

Topology of the namespace test (every address lives only inside the test's own namespaces):

    segment 1 (bridge in ns `sw1`, 10.201.1.0/24):  a .1 (lab)   b .2 (lab)   c .3 (other)
    segment 2 (bridge in ns `sw2`, 10.201.2.0/24):  a .1 (second interface, not announced on)   d .4 (lab)

a and b must find each other with no bootstrap; c (another swarm) must be seen and refused by
both sides; a binds mDNS to its segment-1 address only, so d, although of the same swarm and on a
link a is attached to, must never see a nor be seen by it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node.net.lan import TXT_VERSION, check_txt, http_address, pick_address
from tests.netns import PREFIX, NetnsError, NetnsLab, reap_stale

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "scripts" / "lan_probe.py"

KEY_A, KEY_B, KEY_C, KEY_D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
DEADLINE_S = 15.0  # discovery on one quiet link takes ~1-3 s (probe + announce + browse query)
SETTLE_S = 1.0  # after the positives, time for a wrongly-bound responder to give itself away


# --- pure TXT validation ------------------------------------------------------------------------

def txt(**kw: bytes | None) -> dict[bytes, bytes | None]:
    base = {b"swarm": b"lab", b"pk": KEY_B.encode(), b"v": TXT_VERSION.encode()}
    for key, value in kw.items():
        if value is None:
            base.pop(key.encode(), None)  # None means "absent from the record"
        else:
            base[key.encode()] = value
    return base


def test_check_txt_accepts_a_peer_of_our_swarm():
    verdict = check_txt(txt(), swarm="lab", own_pubkey=KEY_A)
    assert verdict.ok and verdict.pubkey == KEY_B and verdict.reason is None


@pytest.mark.parametrize(
    "record, reason",
    [
        (txt(swarm=b"other"), "ignored: other swarm"),
        (txt(swarm=b"Lab"), "ignored: other swarm"),  # swarm names are exact, like in message ids
        (txt(swarm=None), "invalid: missing swarm"),
        (txt(pk=None), "invalid: malformed pk"),
        (txt(pk=b"b" * 63), "invalid: malformed pk"),
        (txt(pk=b"B" * 64), "invalid: malformed pk"),  # upper case would defeat dedupe by key
        (txt(pk=b"g" * 64), "invalid: malformed pk"),
        (txt(pk=b"\xff" * 64), "invalid: malformed pk"),
        (txt(pk=KEY_A.encode()), "ignored: own key"),
        (txt(v=b"2"), "ignored: version '2'"),
        (txt(v=None), "ignored: version None"),
        ({}, "ignored: version None"),
    ],
)
def test_check_txt_refuses_with_a_reason(record, reason):
    verdict = check_txt(record, swarm="lab", own_pubkey=KEY_A)
    assert not verdict.ok and verdict.pubkey is None and verdict.reason == reason


def test_txt_helper_drops_keys_given_as_none():
    # Guards the parametrized cases above: `None` must mean "absent", not "present, empty".
    assert b"pk" not in txt(pk=None) and txt(pk=b"x")[b"pk"] == b"x"


def test_address_formatting_and_choice():
    assert http_address("10.201.1.2", 8002) == "http://10.201.1.2:8002"
    assert http_address("fe80::1", 80) == "http://[fe80::1]:80"
    assert pick_address(["127.0.0.1", "10.201.1.2"]) == "10.201.1.2"
    assert pick_address(["127.0.0.1"]) is None


# --- the namespace helper itself -----------------------------------------------------------------

def test_netns_failure_carries_a_reason(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(NetnsError, match="`ip` not found"):
        NetnsLab().__enter__()


def test_reap_stale_removes_only_namespaces_of_dead_runs(lab: NetnsLab):
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names no process (reuse within this test is vanishingly unlikely)
    stale = f"{PREFIX}{dead.pid}xdead00-a"
    live = lab.namespace("alive").name
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in reap_stale()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale not in names and live in names
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


# --- real zeroconf in namespaces ----------------------------------------------------------------

@pytest.fixture
def lab():
    try:
        lab = NetnsLab().__enter__()
    except NetnsError as e:
        pytest.fail(f"cannot create network namespaces for the LAN discovery test: {e}")
    try:
        yield lab
    finally:
        lab.close()


class Probe:
    """One lan_probe.py process and the JSON events it has printed so far."""

    def __init__(self, lab: NetnsLab, ns, name: str, args: list[str]):
        self.name = name
        self.events: list[dict] = []
        self.stderr = ""
        self._lock = threading.Lock()
        argv = [sys.executable, str(PROBE), *args, "--seconds", str(DEADLINE_S + 10)]
        self.proc = lab.popen(ns, argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        self._threads = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    @classmethod
    def discovery(cls, lab: NetnsLab, ns, *, swarm: str, key: str, port: int, addr: str, name: str) -> Probe:
        return cls(lab, ns, name, ["--swarm", swarm, "--pubkey", key, "--port", str(port),
                                   "--interface-addr", addr, "--instance", name])

    def command(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self.events.append(json.loads(line))

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def snapshot(self, event: str) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["event"] == event]

    def peers(self) -> set[tuple[str, str]]:
        return {(e["address"], e["pubkey"]) for e in self.snapshot("peer")}

    def ignored(self, reason: str) -> set[str]:
        return {e["name"] for e in self.snapshot("ignored") if e["reason"] == reason}

    def finish(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=5)

    def describe(self) -> str:
        return f"{self.name}: rc={self.proc.poll()} events={self.events} stderr={self.stderr[-2000:]!r}"


def service(name: str) -> str:
    return f"{name}._ralphswarm._tcp.local."


def wait_for(condition, probes, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition() and time.monotonic() < deadline:
        assert all(p.proc.poll() is None for p in probes), "\n".join(p.describe() for p in probes)
        time.sleep(0.1)
    assert condition(), f"{what}:\n" + "\n".join(p.describe() for p in probes)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_same_swarm_nodes_find_each_other_and_nothing_else(lab: NetnsLab):
    sw1, sw2 = lab.switch("sw1"), lab.switch("sw2")
    a, b, c, d = (lab.namespace(n) for n in "abcd")
    lab.attach(a, sw1, "10.201.1.1/24")
    lab.attach(b, sw1, "10.201.1.2/24")
    lab.attach(c, sw1, "10.201.1.3/24")
    lab.attach(a, sw2, "10.201.2.1/24", ifname="eth1")
    lab.attach(d, sw2, "10.201.2.4/24")

    pa = Probe.discovery(lab, a, swarm="lab", key=KEY_A, port=8001, addr="10.201.1.1", name="node-a")
    pb = Probe.discovery(lab, b, swarm="lab", key=KEY_B, port=8002, addr="10.201.1.2", name="node-b")
    pc = Probe.discovery(lab, c, swarm="other", key=KEY_C, port=8003, addr="10.201.1.3", name="node-c")
    pd = Probe.discovery(lab, d, swarm="lab", key=KEY_D, port=8004, addr="10.201.2.4", name="node-d")
    probes = (pa, pb, pc, pd)
    want_a = ("http://10.201.1.1:8001", KEY_A)
    want_b = ("http://10.201.1.2:8002", KEY_B)

    def positives_seen() -> bool:
        return (
            want_b in pa.peers() and want_a in pb.peers()
            # c was on the wire and refused, so its absence from the peers below means something
            and service("node-c") in pa.ignored("ignored: other swarm")
            and service("node-c") in pb.ignored("ignored: other swarm")
            and {service("node-a"), service("node-b")} <= pc.ignored("ignored: other swarm")
            # d's browser works (it sees its own record), so it would have seen a leaked a
            and service("node-d") in pd.ignored("ignored: own key")
        )

    wait_for(positives_seen, probes, "discovery incomplete")
    time.sleep(SETTLE_S)

    # Stop c first, so a and b handle its goodbye (a removal) while still running.
    pc.proc.terminate()
    pc.finish()
    time.sleep(0.5)
    lab.stop_all()
    for p in probes:
        p.finish()

    report = "\n".join(p.describe() for p in probes)
    assert pa.peers() == {want_b}, report  # not c (other swarm), not itself, not d (other link)
    assert pb.peers() == {want_a}, report
    assert pc.peers() == set(), report
    assert pd.peers() == set(), report
    assert all(ev.get("name") != service("node-a") for ev in pd.events), report  # not even seen
    for p in probes:
        assert p.proc.returncode == 0, report
        assert p.snapshot("stopped") == [{"event": "stopped", "leaked_tasks": 0}], report
        assert "Traceback" not in p.stderr, report


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_updates_are_re_resolved_and_malformed_records_refused(lab: NetnsLab):
    sw = lab.switch("sw")
    a, e = lab.namespace("a"), lab.namespace("e")
    lab.attach(a, sw, "10.201.3.1/24")
    lab.attach(e, sw, "10.201.3.5/24")
    key_e = "e" * 64
    good = json.dumps({"swarm": "lab", "pk": key_e, "v": TXT_VERSION})
    bad = json.dumps({"swarm": "lab", "pk": "E" * 63, "v": TXT_VERSION})
    pe = Probe(lab, e, "raw-e", ["--interface-addr", "10.201.3.5", "--announce", "raw-good", "9000", good,
                                 "--announce", "raw-bad", "9100", bad])
    pa = Probe.discovery(lab, a, swarm="lab", key=KEY_A, port=8001, addr="10.201.3.1", name="node-a")
    probes = (pa, pe)
    first, moved = ("http://10.201.3.5:9000", key_e), ("http://10.201.3.5:9001", key_e)

    wait_for(lambda: first in pa.peers() and service("raw-bad") in pa.ignored("invalid: malformed pk"),
             probes, "raw services not discovered")
    pe.command("port raw-good 9001")
    wait_for(lambda: moved in pa.peers(), probes, "service update not re-resolved")
    pe.finish()  # stdin EOF: the announcer unregisters, so `a` sees removals while still running
    time.sleep(0.5)
    lab.stop_all()
    pa.finish()

    report = "\n".join(p.describe() for p in probes)
    # The same service, reported once per distinct address, in order; the malformed one never.
    assert [(ev["address"], ev["pubkey"]) for ev in pa.snapshot("peer")] == [first, moved], report
    assert pe.snapshot("updated") == [{"event": "updated", "name": "raw-good"}], report
    for p in probes:
        assert p.proc.returncode == 0, report
        assert "Traceback" not in p.stderr, report
    assert pa.snapshot("stopped") == [{"event": "stopped", "leaked_tasks": 0}], report
