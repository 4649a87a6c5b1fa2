"""The node's settings, grouped in small dataclasses (docs/design.md, "Conventions")."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from protocol import is_hex
from store.stats import NoiseTable

from node.errors import UserError
from node.net.conn import ConnSettings
from node.net.gossip import GossipSettings
from node.net.ratelimit import RateSettings
from node.newcomers import MIB, NewcomerSettings


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
    connections: ConnSettings = field(default_factory=ConnSettings)  # read deadlines and caps (node/net/conn.py)
    # budgets of keys without trust and the replica's disk budget, --max-db-mb (node/newcomers.py)
    newcomers: NewcomerSettings = field(default_factory=NewcomerSettings)
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


DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N; the one list node and experiment accept
BUDGET_SCALE_MIN, BUDGET_SCALE_MAX = 0.0001, 1.0  # a fraction of the task's token budget, never more
# Every key config.json may hold; another is refused (a typo must not be silently ignored).
CONFIG_KEYS = ("swarm", "listen", "bootstrap", "trusted", "lan", "lan_interface", "run_untrusted", "verify_share",
               "task", "budget_scale", "device", "swarm_key_file", "ralph", "max_db_mb")
MAX_DB_MB_MIN = 64  # the replica's disk budget at least (its schema alone is 12 pages of 16 KiB, the rest is corpus)


def check_device(value: Any) -> str:
    """A device the node and ``experiment`` can run on: auto, cpu, cuda, cuda:N or mps."""
    text = str(value).strip()
    if text in DEVICES or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise UserError(f"unknown device {text!r} (auto, cpu, cuda, cuda:N, mps)")


def check_budget_scale(value: Any) -> float:
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = float("nan")
    if not BUDGET_SCALE_MIN <= scale <= BUDGET_SCALE_MAX:  # also refuses nan
        raise UserError(f"budget scale must be in [{BUDGET_SCALE_MIN:g}, {BUDGET_SCALE_MAX:g}] "
                        f"(a fraction of the task's token budget), got {value}")
    return scale


def check_max_db_mb(value: Any) -> int:
    """The replica's disk budget in MiB (``--max-db-mb``, config ``max_db_mb``): a whole number >= 64."""
    try:
        mb = int(value) if not isinstance(value, bool) and str(value).strip().isdigit() else -1
    except (TypeError, ValueError):
        mb = -1
    if mb < MAX_DB_MB_MIN:
        raise UserError(f"max-db-mb must be a whole number of MiB, at least {MAX_DB_MB_MIN}, got {value!r}")
    return mb


def check_config_keys(config: Mapping[str, Any], where: Any) -> None:
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise UserError(f"config file {where}: unknown key {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(CONFIG_KEYS)})")


def default_config() -> dict[str, Any]:
    """The config file a new home gets, and what a missing key reads as: the dataclasses' defaults."""
    node, network = NodeSettings(home=Path(".")), NetworkSettings()
    return {"swarm": node.swarm, "listen": f"{network.host}:{network.port}", "bootstrap": [], "trusted": [],
            "lan": network.lan, "run_untrusted": node.run_untrusted, "verify_share": node.verify_share,
            "task": node.task}


def settings_from(home: Path, config: Mapping[str, Any], flags: Mapping[str, Any]) -> NodeSettings:
    """The node's settings: flags (None or empty: not given) override the config file, which overrides
    the defaults (default_config, the dataclasses). Trusted keys are the config's plus the flags'."""
    conf = {**default_config(), **config}

    def pick(name: str, default: Any = None) -> Any:
        value = flags.get(name)
        return value if value not in (None, ()) else conf.get(name, default)

    host, port = parse_hostport(pick("listen"), what="--listen")
    boots = tuple(to_address(b, what="--bootstrap") for b in (flags.get("bootstrap") or tuple(conf["bootstrap"])))
    keys = tuple(dict.fromkeys([*conf["trusted"], *(flags.get("trusted") or ())]))
    for key in keys:
        if not is_hex(key, 64):
            raise UserError(f"trusted key {key!r} is not 64 lower-case hex")
    key_file = flags.get("swarm_key_file") or (Path(conf["swarm_key_file"]) if conf.get("swarm_key_file") else None)
    if key_file is not None and not key_file.exists():
        raise UserError(f"swarm key file {key_file} does not exist")
    network = NetworkSettings(
        host=host, port=port, advertise=tuple(to_address(a, what="--advertise") for a in flags.get("advertise") or ()),
        bootstrap=boots, lan=pick("lan"), lan_interface=pick("lan_interface"), swarm_key_file=key_file)
    base = NodeSettings(home=Path(home))
    gossip = base.gossip
    if flags.get("sync_interval") is not None:
        gossip = dataclasses.replace(gossip, sync_interval_s=flags["sync_interval"])
    return NodeSettings(
        home=Path(home), swarm=pick("swarm"), network=network, gossip=gossip, trusted=keys,
        ralph=flags.get("ralph", base.ralph), reproduce=flags.get("reproduce", base.reproduce), task=pick("task"),
        run_untrusted=pick("run_untrusted"), verify_share=float(pick("verify_share")),
        budget_scale=check_budget_scale(pick("budget_scale", base.budget_scale)),
        device=check_device(pick("device", base.device)),
        newcomers=dataclasses.replace(base.newcomers, max_db_bytes=check_max_db_mb(
            pick("max_db_mb", base.newcomers.max_db_bytes // MIB)) * MIB))


NOISE_FILE = "noise.json"
BUILTIN_NOISE = Path(__file__).with_name(NOISE_FILE)  # measured sigmas shipped with the code


def load_noise(home: Path) -> NoiseTable:
    """Seed noise per task and device class (store/stats.py): the shipped table, then the node's own
    measurements in ``<home>/noise.json`` (written by ``scripts/bench/noise --write``), which win."""
    try:
        return NoiseTable.load(BUILTIN_NOISE, Path(home) / NOISE_FILE)
    except ValueError as exc:
        raise UserError(str(exc)) from None
