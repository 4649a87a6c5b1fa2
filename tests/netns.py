"""Throw-away Linux network namespaces for multi-node tests (needs root and iproute2).

    with NetnsLab() as lab:
        switch = lab.switch("sw")                 # a namespace holding one Linux bridge: an L2 segment
        a = lab.namespace("a"); b = lab.namespace("b")
        lab.attach(a, switch, "10.201.1.1/24")    # veth: `eth0` in a, its peer enslaved to the bridge
        lab.attach(b, switch, "10.201.1.2/24")
        proc = lab.popen(a, [sys.executable, "-m", "something"], stdout=subprocess.PIPE)

Every link lives inside the lab's own namespaces (veth pairs are created directly in them), so
nothing is added to, or sent from, the host's namespace. `close()` kills the lab's processes and
deletes its namespaces, which deletes their links too. Namespace names carry the creator's pid,
so `reap_stale()` can remove leftovers of a run that was SIGKILLed without touching a namespace
of a run still alive (several test runs may share this machine).

Failures raise `NetnsError` with the failing command and its stderr, so a test can `pytest.fail`
with a reason instead of skipping.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

PREFIX = "rstest"  # all namespaces this helper creates start with this, then `<pid>x<rand>-`
PR_SET_PDEATHSIG = 1  # prctl(2) option: signal this process when its parent dies
KILL_GRACE_S = 3.0  # time a process gets after SIGTERM to shut down cleanly before SIGKILL


class NetnsError(RuntimeError):
    """Namespaces or links could not be set up; the message says which command failed and why."""


def _ip(*args: str) -> str:
    if shutil.which("ip") is None:
        raise NetnsError("iproute2 `ip` not found on PATH")
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def check_available() -> None:
    """Raise NetnsError unless this process can create network namespaces."""
    if os.geteuid() != 0:
        raise NetnsError(f"network namespaces need root (running as uid {os.geteuid()})")
    _ip("-V")


NETNS_DIR = "/run/netns"  # where `ip netns add` mounts named namespaces


def _existing() -> list[str]:
    # Read the directory rather than parse `ip netns list`, which also looks up peer ids and can
    # fail while another run is deleting its namespaces.
    try:
        return os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []


def reap_stale() -> list[str]:
    """Delete namespaces left by runs of this helper whose process no longer exists."""
    removed = []
    for name in _existing():
        if not name.startswith(PREFIX):
            continue
        pid_part = name[len(PREFIX):].split("x", 1)[0]
        if not pid_part.isdigit():
            continue
        try:
            os.kill(int(pid_part), 0)
            continue  # creator still alive: not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            _ip("netns", "del", name)
            removed.append(name)
        except NetnsError:
            pass  # raced with another reaper, or still busy; harmless
    return removed


@dataclass
class Namespace:
    name: str  # the real netns name (unique per run)
    label: str  # the short name the test gave it
    links: int = 0  # veths attached so far; names the next switch-side port
    addresses: list[str] = field(default_factory=list)  # addresses given by `attach`, without prefix length


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class NetnsLab:
    """Owner of a set of namespaces and the processes run inside them."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        self.namespaces: list[Namespace] = []
        self.processes: list[subprocess.Popen] = []
        # Runs on interpreter exit if the owner never reached close() (e.g. Ctrl-C at a bad time).
        atexit.register(self.close)

    def __enter__(self) -> NetnsLab:
        check_available()
        reap_stale()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- topology -------------------------------------------------------------------------------

    def namespace(self, label: str) -> Namespace:
        ns = Namespace(name=f"{self.tag}-{label}", label=label)
        _ip("netns", "add", ns.name)
        self.namespaces.append(ns)  # recorded before anything else can fail, so close() removes it
        # mDNS and most servers expect a working loopback; a fresh namespace has it down.
        _ip("-n", ns.name, "link", "set", "lo", "up")
        return ns

    def switch(self, label: str) -> Namespace:
        """A namespace with a bridge `br0`: everything attached to it shares one L2 segment."""
        ns = self.namespace(label)
        # Snooping off: with no IGMP querier on the segment a snooping bridge may stop forwarding
        # multicast after its timers run out; a dumb hub-like switch is what these tests need.
        _ip("-n", ns.name, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0", "stp_state", "0")
        _ip("-n", ns.name, "link", "set", "br0", "up")
        return ns

    def attach(self, ns: Namespace, switch: Namespace, cidr: str, ifname: str = "eth0") -> str:
        """Join `ns` to `switch` with a veth pair; give `ifname` in `ns` the address `cidr`."""
        switch.links += 1
        port = f"p{switch.links}"
        # Created inside the switch namespace with the peer placed straight into `ns`: the host
        # namespace never holds either end, even for an instant.
        _ip("-n", switch.name, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns.name)
        _ip("-n", switch.name, "link", "set", port, "master", "br0")
        _ip("-n", switch.name, "link", "set", port, "up")
        _ip("-n", ns.name, "addr", "add", cidr, "dev", ifname)
        _ip("-n", ns.name, "link", "set", ifname, "multicast", "on")
        _ip("-n", ns.name, "link", "set", ifname, "up")
        ns.links += 1
        ns.addresses.append(cidr.split("/")[0])
        return ifname

    # --- processes ------------------------------------------------------------------------------

    def run(self, ns: Namespace, argv: list[str], timeout: float = 10, **kwargs
            ) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns.name, *argv], timeout=timeout, **kwargs)

    def popen(self, ns: Namespace, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a process inside `ns`; the lab terminates it on close if it is still running."""
        # `ip netns exec` execs the command in place, so the Popen pid is the command itself.
        # PDEATHSIG survives exec: if the test runner is SIGKILLed, its children still get SIGTERM
        # instead of holding the namespaces open as orphans.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *argv], preexec_fn=_die_with_parent, **kwargs
        )
        self.processes.append(proc)
        return proc

    def stop_all(self, grace_s: float = KILL_GRACE_S) -> None:
        """SIGTERM every live process, wait up to `grace_s` in total, then SIGKILL the rest."""
        live = [p for p in self.processes if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        for p in live:
            try:
                p.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # --- teardown -------------------------------------------------------------------------------

    def close(self) -> None:
        atexit.unregister(self.close)
        errors = []
        try:
            self.stop_all()
        finally:
            # A namespace is freed only when no process holds it; processes are gone by now.
            for ns in reversed(self.namespaces):
                try:
                    _ip("netns", "del", ns.name)
                except NetnsError as e:
                    errors.append(str(e))
            self.namespaces.clear()
        if errors:
            raise NetnsError("; ".join(errors))
