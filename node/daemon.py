"""The node: composes replica, HTTP API, gossip, discovery (and the loops) into one daemon.

Every background task is created here, held in a set and cancelled on stop (docs/design.md, "Conventions");
stop() closes the database last, so every accepted message is on disk when the process exits.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
import random
import time
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from protocol import PROTOCOL_VERSION, Envelope, Identity, build, is_hex, task_id
from store import Replica, StoreSettings, VerifyPool
from trainer.tasks import Task, TaskError

from node import VERSION
from node.net import api
from node.errors import UserError
from node.net.gossip import Gossip
from node.net.peers import PeerTable
from node.net.ratelimit import RateLimiter, RateSettings
from node.corpus import ReplicaCorpus, TaskBook
from node.extension import Extension
from node.newcomers import Newcomers, wal_pages
from node.settings import NodeSettings, load_noise, to_address
from node.slots import DeviceSlots, detect_devices
from node.telemetry import Telemetry
from node.net.transport import PeerUnavailable
from node.net.http import HttpTransport
from node.net.admission import Admission, is_public_host
from node.net.conn import GuardedSite
from node.net.swarmkey import SwarmKey, install_swarm_key
from node.web import dashboard, metrics
from node.web.shapes import leaderboard_json

log = logging.getLogger(__name__)

PENDING_MAX_MESSAGES = 10_000  # votes and claims waiting for what they refer to (store/pending.py)
TRUST_INTERVAL_S = 2.0  # trust recomputed at most this often (store/replica.py, trust_min_interval_s)
INBOUND_RETRY_S = 600.0  # an inbound address refused at dial-back is not dialled again for this long


class Node:
    def __init__(self, settings: NodeSettings, identity: Identity, *, echo: Callable[[str], None] | None = None):
        self.settings = settings
        self.identity = identity
        self.swarm = settings.swarm
        self.echo = echo or (lambda line: print(line, flush=True))
        self.replica: Replica | None = None
        self.gossip: Gossip | None = None
        self.newcomers: Newcomers | None = None  # budgets of keys without trust, the disk budget (node/newcomers.py)
        self.peers = PeerTable(self_pubkey=identity.pubkey)
        # who may enter the table (node/net/admission.py): non-public ranges only in a local swarm
        self.admission = Admission(allow_private=_local_swarm(settings))
        self._inbound: set[str] = set()  # inbound addresses being dialled back
        self._refused: OrderedDict[str, float] = OrderedDict()  # inbound addresses refused -> when
        self.rate_limiter = RateLimiter(settings.rate)
        # fetch answers' bytes per client address (node/net/api.py fetch): a token bucket in bytes
        self.fetch_limiter = RateLimiter(RateSettings(rate=api.FETCH_PEER_RATE_BPS, burst=api.FETCH_PEER_BURST_BYTES))
        self.bytes_out_fetch = 0
        # ids looked up by fetches per client address (node/net/api.py fetch)
        self.lookup_limiter = RateLimiter(RateSettings(rate=api.LOOKUP_PEER_RATE, burst=api.LOOKUP_PEER_BURST))
        # request body bytes per client address (node/net/api.py guard), beside the request rate
        self.body_limiter = RateLimiter(RateSettings(rate=api.BODY_PEER_RATE_BPS, burst=api.BODY_PEER_BURST_BYTES))
        self.address: str | None = None
        self.bytes_in = 0
        self.started_at = time.time()
        self.swarm_key = None
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self.site: GuardedSite | None = None  # the listening socket; its guard caps and times connections
        self._session: aiohttp.ClientSession | None = None
        self._lan = None
        self._rng = random.Random()
        self._stopping = asyncio.Event()
        self.extensions: list[Extension] = []  # ralph loops, reproduction scheduler (node/extension.py)
        # What the extensions see of the node (node/extension.py, NodeView): these, replica, identity,
        # settings, publish and spawn.
        self.slots: DeviceSlots | None = None
        self.tasks: TaskBook | None = None
        self.corpus: ReplicaCorpus | None = None
        self.telemetry = Telemetry(echo=lambda line: self.echo(line))

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        if s.network.swarm_key_file is not None:
            self.swarm_key = SwarmKey.load(s.network.swarm_key_file, self.swarm)
        self.replica = await Replica.open(s.home / "replica.sqlite3", swarm=self.swarm,
                                          self_key=self.identity.pubkey, trusted=list(s.trusted),
                                          settings=StoreSettings(noise=load_noise(s.home),
                                                                 wal_autocheckpoint=wal_pages(
                                                                     s.newcomers.max_db_bytes, StoreSettings.page_size,
                                                                     StoreSettings.wal_autocheckpoint),
                                                                 trust_min_interval_s=TRUST_INTERVAL_S,
                                                                 pending_max_messages=PENDING_MAX_MESSAGES))
        # Device detection imports torch (1-2 s of CPU): not on the way to listening and catching up.
        # A node that runs no experiment, or was told the CPU, never imports it here; otherwise the
        # devices are detected in the background once the node listens (the loops wait for a slot).
        detect = s.device != "cpu" and (s.ralph or s.reproduce)
        self.slots = DeviceSlots(devices=[] if detect else ["cpu"])
        self.tasks = TaskBook(self.replica)
        self.corpus = ReplicaCorpus(self.replica, self.tasks, self.identity.pubkey)
        app = self.make_app()
        conn = s.connections
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=conn.idle_timeout_s)
        await self._runner.setup()
        self.site = GuardedSite(self._runner, s.network.host, s.network.port, conn, on_event=self.metrics_event)
        await self.site.start()
        port = self._runner.addresses[0][1]
        host = s.network.host
        advertised = list(s.network.advertise) or [to_address(f"{_reachable_host(host, s)}:{port}", what="listen")]
        self.address = advertised[0]
        self.peers.self_addresses.update(advertised + [f"http://127.0.0.1:{port}", f"http://localhost:{port}"])
        self._session = aiohttp.ClientSession()
        transport = HttpTransport(self._session, self_address=self.address, swarm_key=self.swarm_key)
        self.transport = transport
        verifier = VerifyPool()
        if s.network.bootstrap:  # a node given peers to join usually catches up first: workers ready for it
            verifier.warm()
        self.gossip = Gossip(self.replica, transport, self.peers, own_key=self.identity.pubkey,
                             settings=s.gossip, rng=self._rng, on_accepted=self._on_accepted,
                             verifier=verifier, on_progress=self.echo)
        self.newcomers = Newcomers(self.replica, s.newcomers, on_shed=lambda _ids: self.gossip.changed())
        self.gossip.relay_filter = self.newcomers.relay
        self.gossip.unoffered = lambda: self.newcomers.held
        await self.publish_peer_record(advertised)
        await self.publish_task()
        for addr in s.network.bootstrap:
            self.peers.add(addr, source="bootstrap")
        self.spawn(self.gossip.run_push_loop(), "push")
        self.spawn(self.gossip.run_sync_loop(), "sync")
        self.spawn(self._discovery_loop(), "discovery")
        self.spawn(self._republish_loop(), "republish")
        self.spawn(self.newcomers.run(), "newcomers")
        if detect:
            self.spawn(self._detect_devices(), "devices")
        if s.network.lan:
            await self._start_lan(port)
        for ext in self.extensions:
            await ext.start(self)

    async def _detect_devices(self) -> None:
        self.slots.add(await asyncio.to_thread(detect_devices))

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=api.MAX_BODY_BYTES)
        if self.swarm_key is not None:
            # outermost: nothing unsealed reaches a handler, except the dashboard read from loopback
            install_swarm_key(app, self.swarm_key, exempt=dashboard.local_view)
        app.middlewares.append(api.guard)
        app[api.NODE] = self
        api.add_routes(app)
        dashboard.add_routes(app)
        metrics.add_routes(app)
        for ext in self.extensions:
            if hasattr(ext, "add_routes"):
                ext.add_routes(app)
        return app

    async def stop(self) -> None:
        for ext in reversed(self.extensions):
            try:
                await ext.stop()
            except Exception:  # shutdown goes on: the database must still be closed
                log.exception("extension stop failed")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._lan is not None:
            await self._lan.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.gossip is not None:
            await self.gossip.fetcher.close()
            if self.gossip.verifier is not None:
                await asyncio.to_thread(self.gossip.verifier.close)
        if self.replica is not None:
            await self.replica.close()

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task:
        task = asyncio.create_task(self._guarded(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if asyncio.iscoroutine(coro):  # cancelled before it ran (a node stopped as it starts): closed, not leaked
            task.add_done_callback(lambda t: t.cancelled() and coro.close())
        return task

    async def _guarded(self, coro: Awaitable[Any], name: str) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed", name)

    # -- publishing ----------------------------------------------------------------------------
    async def publish(self, kind: str, body: dict) -> Envelope:
        """Sign, store and gossip one of our own messages."""
        env = build(self.identity, self.swarm, kind, body)
        report = await self.gossip.ingest([env.canonical()])
        if report.rejected:
            raise ValueError(report.rejected[0][1])
        return env

    async def publish_peer_record(self, addresses: list[str]) -> None:
        await self.publish("peer", {"addresses": addresses,
                                    "expires_at": int(time.time()) + self.settings.network.peer_record_ttl_s})

    async def publish_task(self) -> None:
        """Make the node's task known to the swarm (once: the task id is the hash of its body)."""
        task = await self.own_task()
        if not any(task_id(t.body) == task.id for t in await self.replica.tasks()):
            await self.publish("task", dict(task.body))

    async def _republish_loop(self) -> None:
        ttl = self.settings.network.peer_record_ttl_s
        while True:
            await asyncio.sleep(max(60.0, ttl / 4))
            await self.publish_peer_record([self.address])

    # -- discovery -----------------------------------------------------------------------------
    def learn_inbound(self, address: str, remote: str | None = None) -> None:
        """A client named its address (X-Ralphswarm-Peer): a candidate, dialled back before it enters
        the table (node/net/admission.py), only at the IP the request came from (so a stranger can
        make the node dial nobody but itself); never more than max_pending at a time."""
        address = address.rstrip("/") if isinstance(address, str) else address
        if address in self.peers or address in self._inbound or address in self.peers.self_addresses:
            return
        refused_at = self._refused.get(address)
        if refused_at is not None and time.monotonic() - refused_at < INBOUND_RETRY_S:
            return
        if len(self._inbound) >= self.admission.settings.max_pending or not self.admission.address_ok(address):
            return
        if remote is not None and not self.admission.from_sender(address, remote):
            return
        self._inbound.add(address)
        self.spawn(self._dial_back(address), "dial back")

    async def _dial_back(self, address: str) -> None:
        try:
            st = await self.transport.status(address)
        except PeerUnavailable:
            st = None
        finally:
            self._inbound.discard(address)
        key = st.get("pubkey") if isinstance(st, dict) else None
        if st is None or st.get("swarm") != self.swarm or not is_hex(key, 64) or key == self.identity.pubkey \
                or self._addresses_of(key) >= self.admission.settings.max_per_author:
            self.metrics_event("inbound_refused")
            self._refused[address] = time.monotonic()  # not dialled again for a while (bounded)
            self._refused.move_to_end(address)
            while len(self._refused) > 4096:
                self._refused.popitem(last=False)
            return
        if self.peers.add(address, pubkey=key, source="inbound") is not None:
            self.metrics_event("inbound_admitted")

    def _addresses_of(self, pubkey: str) -> int:
        return sum(1 for p in self.peers.all() if p.pubkey == pubkey)

    async def _on_accepted(self, envelopes: list[Envelope], origin: str | None) -> None:
        self.newcomers.on_accepted(envelopes)
        for env in envelopes:
            if env.kind == "peer" and env.author != self.identity.pubkey \
                    and env.body["expires_at"] > time.time():
                for address in env.body["addresses"]:
                    address = address.rstrip("/")
                    if address in self.peers or address in self.peers.self_addresses:
                        continue
                    if self.admission.from_record(address, env.author, origin or "direct",
                                                  self._addresses_of(env.author)):
                        self.peers.add(address, pubkey=env.author, source="exchange", origin=origin,
                                       now=time.time())
        for ext in self.extensions:
            ext.on_accepted(envelopes)

    async def hello(self, address: str) -> bool:
        """Check a peer is of our swarm, learn its key, exchange peer records, reconcile."""
        try:
            st = await self.transport.status(address)
        except PeerUnavailable as exc:
            self.peers.record(address, "timeout", time.time(), error=exc.reason)
            return False
        if st.get("swarm") != self.swarm:
            self.echo(f"warning: {address} is in swarm {st.get('swarm')!r}, not {self.swarm!r}; not joining it")
            self.peers.remove(address)
            return False
        peer = self.peers.get(address)
        if peer is not None and isinstance(st.get("pubkey"), str):
            if st["pubkey"] == self.identity.pubkey:
                self.peers.remove(address)  # ourselves under another address
                return False
            if peer.pubkey is not None and peer.pubkey != st["pubkey"] and peer.source == "exchange":
                # a record's author named an address another key answers at: not the author's
                self.metrics_event("peer_key_mismatch")
                self.peers.remove(address)
                return False
            peer.pubkey = st["pubkey"]
        try:
            records = await self.transport.peer_records(address)
            await self.gossip.ingest(records, origin=address)
            await self.gossip.sync_with(address)
        except PeerUnavailable:
            return False
        return True

    async def _discovery_loop(self) -> None:
        greeted: set[str] = set()
        interval = self.settings.network.peer_exchange_interval_s
        while True:
            for peer in list(self.peers.active(time.time())):
                if peer.address not in greeted and await self.hello(peer.address):
                    greeted.add(peer.address)
            if greeted:
                candidates = [p for p in self.peers.active(time.time())]
                if candidates:
                    await self.hello(self._rng.choice(candidates).address)
            for addr in self.settings.network.bootstrap:
                if addr not in self.peers:
                    self.peers.add(addr, source="bootstrap")
            await asyncio.sleep(1.0 if len(greeted) < len(self.peers) else interval)

    async def _start_lan(self, port: int) -> None:
        try:
            from node.net.lan import LanDiscovery  # optional: zeroconf may be missing
        except ImportError:
            self.echo("warning: LAN discovery unavailable")
            return

        def found(address: str, pubkey: str) -> None:
            if self.peers.add(address, pubkey=pubkey, source="lan") is not None:
                log.info("LAN peer %s %s", address, pubkey[:12])

        self._lan = LanDiscovery(swarm=self.swarm, pubkey=self.identity.pubkey, port=port,
                                 interface_addr=self.settings.network.lan_interface, on_peer=found)
        try:
            await self._lan.start()
        except Exception as exc:  # no multicast route, no interface: the node still works by bootstrap
            self.echo(f"warning: LAN discovery not started: {exc}")
            self._lan = None

    # -- views ---------------------------------------------------------------------------------
    def startup_notes(self) -> list[str]:
        notes = []
        if self.swarm_key is not None:
            notes.append("private swarm: requests and answers sealed with the swarm key")
        if self._lan is not None:
            notes.append("lan: announcing _ralphswarm._tcp.local.")
        for ext in self.extensions:
            notes.append(ext.describe())
        return notes

    def stats_json(self) -> dict[str, Any]:
        """Traffic and gossip counters (the bench and /metrics read these)."""
        g = self.gossip.stats
        return {
            "bytes_received": self.bytes_in + self.transport.bytes_in,  # request bodies served + answers read
            "bytes_sent": self.transport.bytes_out,
            "bytes_fetch_served": self.bytes_out_fetch,  # envelope bytes in /v1/fetch answers
            "pending": {"messages": len(self.replica.pending), "bytes": self.replica.pending.bytes,
                        **vars(self.replica.pending.stats)} if self.replica.pending is not None else None,
            "gossip": {k: v for k, v in vars(g).items()},
            "catchup": self.gossip.catchup_json(),
            "disk": self.newcomers.to_json(),
            "events": dict(self.telemetry.events),
            "peer_table": {"tried": len(self.peers.tried()), "new": len(self.peers) - len(self.peers.tried()),
                           **self.peers.counters, **{f"admission_{k}": v for k, v in self.admission.counters.items()}},
            "counters": {**self.telemetry.counters, **{f"busy_s_{k}": v for k, v in self.slots.busy_s.items()}},
        }

    def peers_json(self) -> dict[str, Any]:
        now = time.time()
        return {"peers": [p.to_json(now) for p in sorted(self.peers.all(), key=lambda p: -p.score)]}

    def metrics_event(self, name: str) -> None:
        self.telemetry.event(name)

    async def status(self) -> dict[str, Any]:
        return {
            "pubkey": self.identity.pubkey,
            "swarm": self.swarm,
            "version": PROTOCOL_VERSION,  # the protocol's integer (SPEC.md 10.2); the software's is beside it
            "software": VERSION,
            "address": self.address,
            "peers": len(self.peers.active(time.time())),
            "counts": await self.replica.counts(),
        }

    async def own_task(self) -> Task:
        """The task the node works on (``--task``): a built-in one or one of the corpus, by name, id
        or unique id prefix (the node's TaskRegistry, node.corpus.TaskBook)."""
        await self.tasks.refresh()
        try:
            return self.tasks.registry.resolve(self.settings.task)
        except TaskError as exc:
            raise UserError(str(exc)) from None

    async def default_task_id(self) -> str:
        return (await self.own_task()).id

    async def leaderboard_json(self, task_id: str) -> dict[str, Any]:
        return await leaderboard_json(self.replica, task_id)


def _local_swarm(settings: NodeSettings) -> bool:
    """A LAN or private swarm, or a node that itself listens on a non-public address (a lab, tests):
    addresses in non-public ranges are taken there, and refused on a public node."""
    n = settings.network
    return bool(n.lan or n.swarm_key_file is not None
                or not is_public_host(n.host) and n.host not in ("0.0.0.0", "::", ""))


def _reachable_host(host: str, settings: NodeSettings) -> str:
    if host in ("0.0.0.0", "::", ""):
        return settings.network.lan_interface or "127.0.0.1"
    return host
