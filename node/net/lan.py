"""LAN discovery: find nodes of the same swarm with mDNS/DNS-SD, no bootstrap needed.

docs/design.md, "Discovery and swarms": service `_ralphswarm._tcp.local.` with TXT `swarm`, `pk`, `v`;
join only nodes of the same swarm; bind mDNS to the chosen interface, not all.

The TXT checks are a pure function (`check_txt`) so they are tested without a network. Browse
callbacks run inside zeroconf's record-update path and must not block it, so they only schedule
a resolve task; every task is held in a set and cancelled by `stop()` (docs/design.md, "Conventions").

Zeroconf announcements are unauthenticated: a TXT `pk` is only a hint of who answers at an address.
The caller must still check the peer's signed records before trusting it; this module only says
"something of swarm S claims key K at address A".
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger(__name__)

SERVICE_TYPE = "_ralphswarm._tcp.local."
TXT_VERSION = "1"  # TXT `v`: the discovery record layout, not the wire protocol version
RESOLVE_TIMEOUT_MS = 3000  # a responder on the same link answers within ~100 ms; 3 s covers loss + retry

_PUBKEY_RE = re.compile(r"[0-9a-f]{64}")

PeerCallback = Callable[[str, str], None] | Callable[[str, str], Awaitable[None]]
IgnoredCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class TxtCheck:
    """Outcome of `check_txt`: the peer's key when acceptable, else a machine-readable reason."""

    pubkey: str | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.pubkey is not None


def _txt_value(props: dict[bytes, bytes | None], key: bytes) -> str | None:
    raw = props.get(key)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_txt(props: dict[bytes, bytes | None], *, swarm: str, own_pubkey: str) -> TxtCheck:
    """Decide whether a TXT record describes a peer we should join.

    Reasons follow the protocol's `invalid: ...` style so logs and tests can match on them.
    """
    version = _txt_value(props, b"v")
    if version != TXT_VERSION:
        return TxtCheck(None, f"ignored: version {version!r}")
    their_swarm = _txt_value(props, b"swarm")
    if their_swarm is None:
        return TxtCheck(None, "invalid: missing swarm")
    if their_swarm != swarm:
        return TxtCheck(None, "ignored: other swarm")
    pk = _txt_value(props, b"pk")
    # Lower-case only, as everywhere in the protocol: two spellings of one key would defeat dedupe.
    if pk is None or not _PUBKEY_RE.fullmatch(pk):
        return TxtCheck(None, "invalid: malformed pk")
    if pk == own_pubkey:
        return TxtCheck(None, "ignored: own key")
    return TxtCheck(pk, None)


def http_address(host: str, port: int) -> str:
    """Format `http://host:port`, bracketing IPv6 literals (RFC 3986 section 3.2.2)."""
    if ipaddress.ip_address(host).version == 6:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


def pick_address(addresses: list[str]) -> str | None:
    """Choose the address to dial from a resolved service; loopback is useless to a remote peer."""
    usable = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
    return usable[0] if usable else None


class LanDiscovery:
    """Announce this node on the LAN and report other nodes of the same swarm.

    `on_peer(address, pubkey)` is called once per (service, address, key); a service that
    re-announces with a new address or key is reported again, and one that disappears and
    comes back is reported again (the daemon's peer table makes repeated calls harmless).
    """

    def __init__(
        self,
        *,
        swarm: str,
        pubkey: str,
        port: int,
        interface_addr: str | None,
        on_peer: PeerCallback,
        instance_name: str | None = None,
        on_ignored: IgnoredCallback | None = None,
    ) -> None:
        self.swarm = swarm
        self.pubkey = pubkey
        self.port = port
        self.interface_addr = interface_addr
        self.instance_name = instance_name or f"ralphswarm-{pubkey[:16]}"
        self._on_peer = on_peer
        # Diagnostics only (service name, reason): lets tests prove a node of another swarm was
        # seen and refused, rather than merely not seen.
        self._on_ignored = on_ignored
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task] = set()
        self._resolving: dict[str, asyncio.Task] = {}
        self._reported: dict[str, tuple[str, str]] = {}  # service name -> (address, pubkey)
        self._stopping = False

    async def start(self) -> None:
        if self.interface_addr is not None:
            azc = AsyncZeroconf(interfaces=[self.interface_addr], ip_version=IPVersion.V4Only)
            addresses = [self.interface_addr]
        else:
            azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
            addresses = _local_ipv4_addresses()
        self._azc = azc
        try:
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"{self.instance_name}.{SERVICE_TYPE}",
                port=self.port,
                properties={"swarm": self.swarm, "pk": self.pubkey, "v": TXT_VERSION},
                parsed_addresses=addresses,
            )
            # Two nodes may pick the same instance name (same key on two machines, or a user's
            # choice); let zeroconf rename ours rather than fail to start.
            await azc.async_register_service(self._info, allow_name_change=True)
            self._browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change])
        except BaseException:
            await azc.async_close()
            self._azc = None
            raise

    async def stop(self) -> None:
        self._stopping = True
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._azc is not None:
            if self._info is not None:
                # Goodbye packets (TTL 0) let peers drop us now instead of at record expiry.
                await (await self._azc.async_unregister_service(self._info))
            await self._azc.async_close()
            self._azc = None

    # --- browse callback: schedule only ---------------------------------------------------------

    def _on_state_change(
        self, zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if self._stopping:
            return
        previous = self._resolving.pop(name, None)
        if previous is not None:
            previous.cancel()  # the newer record supersedes a resolve still in flight
        if state_change is ServiceStateChange.Removed:
            self._reported.pop(name, None)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name), name=f"lan-resolve {name}")
        self._tasks.add(task)
        self._resolving[name] = task
        task.add_done_callback(lambda t, n=name: self._forget(n, t))

    def _forget(self, name: str, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            log.warning("LAN discovery: resolving %s failed: %r", name, task.exception())

    # --- resolve, validate, dedupe, report ------------------------------------------------------

    async def _resolve(self, name: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._azc.zeroconf, RESOLVE_TIMEOUT_MS):
            log.debug("LAN discovery: %s did not resolve", name)
            return
        verdict = check_txt(info.properties, swarm=self.swarm, own_pubkey=self.pubkey)
        if not verdict.ok:
            self._ignore(name, verdict.reason or "invalid")
            return
        host = pick_address(info.parsed_addresses(IPVersion.V4Only))
        if host is None or info.port is None:
            self._ignore(name, "invalid: no usable address")
            return
        found = (http_address(host, info.port), str(verdict.pubkey))
        if self._reported.get(name) == found:
            return
        self._reported[name] = found
        # From here on a newer record must not cancel us: cancelling the consumer halfway (say,
        # during its hello) would lose the peer, since the newer resolve dedupes against `found`.
        if self._resolving.get(name) is asyncio.current_task():
            del self._resolving[name]
        try:
            result = self._on_peer(*found)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A faulty consumer must not stop discovery of the next peer.
            log.exception("LAN discovery: on_peer failed for %s", found[0])

    def _ignore(self, name: str, reason: str) -> None:
        log.debug("LAN discovery: ignoring %s (%s)", name, reason)
        if self._on_ignored is not None:
            self._on_ignored(name, reason)


def _local_ipv4_addresses() -> list[str]:
    """Every non-loopback IPv4 address, for announcing when no interface was chosen."""
    import ifaddr  # optional: a dependency of zeroconf (itself optional), needed only on this path

    found = {ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4}
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)
