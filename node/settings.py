"""The node's settings, grouped in small dataclasses (docs/design.md, "Conventions")."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from node.errors import UserError
from node.net.gossip import GossipSettings
from node.net.ratelimit import RateSettings


@dataclass(frozen=True)
class NetworkSettings:
    host: str = "127.0.0.1"
    port: int = 7447  # 0 = any free port (tests)
    advertise: tuple[str, ...] = ()  # addresses put in our peer record; default: derived from host:port
    bootstrap: tuple[str, ...] = ()  # "http://host:port"
    lan: bool = True
    lan_interface: str | None = None  # IPv4 address of the interface to announce/browse on
    swarm_key_file: Path | None = None
    peer_exchange_interval_s: float = 60.0
    peer_record_ttl_s: int = 24 * 3600


@dataclass(frozen=True)
class NodeSettings:
    home: Path
    swarm: str = "public"
    network: NetworkSettings = field(default_factory=NetworkSettings)
    gossip: GossipSettings = field(default_factory=GossipSettings)
    rate: RateSettings = field(default_factory=RateSettings)
    trusted: tuple[str, ...] = ()
    ralph: bool = True
    reproduce: bool = True
    task: str = "tiny"
    run_untrusted: str = "sandbox"  # sandbox | trusted | never (docs/design.md, "Sandbox modes")
    verify_share: float = 0.3  # at most this share of compute on reproduction while the own loop has work
    budget_scale: float = 1.0  # fraction of the task's token budget for own experiments (tests, demos)
    device: str = "auto"
    ralph_options: dict = field(default_factory=dict)  # the config file's "ralph" section merged with flags


def parse_hostport(value: str, *, what: str) -> tuple[str, int]:
    """'host:port' or 'http://host:port' -> (host, port), with a clear error."""
    text = value.strip()
    if text.startswith("http://"):
        text = text[len("http://"):]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{what} {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def to_address(value: str, *, what: str) -> str:
    host, port = parse_hostport(value, what=what)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
