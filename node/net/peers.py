"""The peer table: who we know, how they have behaved, and who is cooling off.

Pure and synchronous (no sockets, no clock reads): callers pass ``now``. docs/design.md, "Gossip and sync":
peers are scored (invalid messages, broken promises, timeouts); a peer under the threshold is
ignored for a cooling period.

Two tables in one, after Bitcoin Core's addrman (docs/design.md, "Discovery and swarms"):

- **new**: addresses we were told of and have not had a useful exchange with. Bucketed by the
  network group of whoever told us (``source_group``: the announcing peer's for a peer record, the
  address's own for an inbound, bootstrap or LAN one; node/net/admission.py ``network_group``): one
  source holds at most ``new_per_source`` of them, and a full group takes a newcomer only in place of
  one of its own entries that never answered (``terrible``). When the whole table is full, a newcomer
  takes the place of the worst entry of the source group with most entries in new, never of a tried
  peer.
- **tried**: peers with at least one useful exchange (``record(..., "ok")``), at most ``max_tried``
  and at most ``tried_per_group`` per network group of the peer's own address. A peer moves there on
  its first useful exchange if there is room; when its group or the table is full it takes the place
  of the worst tried peer only if that one has gone bad (``terrible``: cooling, failing, or silent for
  ``stale_s``), which goes back to new; otherwise it stays in new. So a flood of fresh addresses, from
  however many sources, cannot push out a peer with a history of useful exchanges, and servers that
  answer well still cannot displace tried peers that keep answering.

While tried peers are fewer than ``tried_share`` of the candidates (uniform picks otherwise, as
before): a pull goes to a tried peer with probability ``tried_share`` (``pick_for_pull``), so however
many new addresses a stranger plants they get at most ``1 - tried_share`` of the reconciliations; a
push's ``fanout`` targets (``sample_preferring_tried``) include one tried peer and are otherwise
uniform, so every relayed message reaches a proven peer while the push keeps gossip's random spread
(a push biased to the few tried peers took the simulated swarm under churn from 8 rounds to 9:
scripts/bench/gossip_sim; with one, 7).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from node.net.admission import network_group


@dataclass(frozen=True)
class ScoreSettings:
    ok: float = 1.0  # a useful exchange
    invalid_message: float = -4.0  # each message that failed validation
    broken_promise: float = -3.0  # announced or listed an id, then did not deliver it
    timeout: float = -2.0  # no answer in time / connection refused
    floor: float = -10.0  # under this the peer is ignored ...
    cooling_s: float = 300.0  # ... for this long
    ceiling: float = 20.0
    terrible_failures: int = 3  # failures in a row after which a peer may be replaced (new or tried)
    stale_s: float = 7 * 86400.0  # a tried peer without a useful exchange this long may be replaced


@dataclass
class Peer:
    address: str  # "http://host:port"
    pubkey: str | None = None
    score: float = 0.0
    last_contact: float | None = None  # last successful exchange
    last_heard: float | None = None  # last exchange either way (our call answered, or theirs attributed)
    last_error: str | None = None
    cooling_until: float = 0.0
    source: str = "bootstrap"  # bootstrap | exchange | lan | inbound
    failures: int = 0
    has: set[str] = field(default_factory=set, repr=False)  # recent ids this peer is known to hold
    group: str = ""  # network group of the address (node/net/admission.py network_group): tried buckets
    source_group: str = ""  # network group of who told us of it: new buckets
    tried: bool = False  # had a useful exchange, and holds one of the protected places

    def to_json(self, now: float) -> dict:
        return {
            "address": self.address,
            "pubkey": self.pubkey,
            "score": round(self.score, 2),
            "last_contact": None if self.last_contact is None else int(self.last_contact),
            "last_error": self.last_error,
            "cooling": self.cooling_until > now,
            "source": self.source,
            "tried": self.tried,
        }


class PeerTable:
    """Known peers by address. ``self_addresses`` are never added (we don't gossip to ourselves).

    ``max_peers`` bounds the whole table; at most ``max_tried`` (default half) are tried, the rest of
    the places are new's (module docstring)."""

    MAX_HAS = 4096  # bound on the per-peer "knows this id" memory

    def __init__(self, settings: ScoreSettings | None = None, self_pubkey: str | None = None,
                 self_addresses: set[str] | None = None, max_peers: int = 256, *,
                 max_tried: int | None = None, tried_share: float = 0.5):
        self.settings = settings or ScoreSettings()
        self.self_pubkey = self_pubkey
        self.self_addresses = set(self_addresses or ())
        self.max_peers = max(1, max_peers)
        self.max_tried = min(self.max_peers, max(1, self.max_peers // 2) if max_tried is None else max_tried)
        self.tried_per_group = max(2, self.max_tried // 16)  # addrman: a group spans 8 of 256 tried buckets
        self.new_per_source = max(4, (self.max_peers - self.max_tried) // 8)
        self.tried_share = tried_share
        self.counters: dict[str, int] = {}  # dropped_source_full, dropped_full, evicted_new, promotion_refused, ...
        self._peers: dict[str, Peer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, address: str) -> bool:
        return address in self._peers

    def get(self, address: str) -> Peer | None:
        return self._peers.get(address)

    def all(self) -> list[Peer]:
        return list(self._peers.values())

    def tried(self) -> list[Peer]:
        return [p for p in self._peers.values() if p.tried]

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def add(self, address: str, *, pubkey: str | None = None, source: str = "bootstrap",
            origin: str | None = None, now: float | None = None) -> Peer | None:
        """Add an address to new (None: ourselves, or no place for it). ``origin``: who told us of it
        (for ``source="exchange"``, the peer whose records named it; None: a client that is no peer);
        ``now`` lets an entry silent for ``stale_s`` count as replaceable."""
        address = address.rstrip("/")
        if address in self.self_addresses or (pubkey is not None and pubkey == self.self_pubkey):
            return None
        peer = self._peers.get(address)
        if peer is not None:
            if pubkey and not peer.pubkey:
                peer.pubkey = pubkey
            return peer
        group = network_group(address)
        if source == "exchange":
            source_group = network_group(origin) if origin else "label:direct"
        else:  # inbound (dialled back), bootstrap (the operator), lan (the local network): the address itself
            source_group = group
        same = [p for p in self._peers.values() if not p.tried and p.source_group == source_group]
        if len(same) >= self.new_per_source:
            victim = self._worst(same, now)
            if not self.terrible(victim, now):
                self._count("dropped_source_full")
                return None
            self._evict(victim, "evicted_source_full")
        if len(self._peers) >= self.max_peers and not self._evict_one(now):
            self._count("dropped_full")
            return None
        peer = Peer(address=address, pubkey=pubkey, source=source, group=group, source_group=source_group)
        self._peers[address] = peer
        return peer

    def remove(self, address: str) -> None:
        self._peers.pop(address, None)

    def terrible(self, peer: Peer, now: float | None) -> bool:
        """May this entry's place go to another: cooling off, failing ``terrible_failures`` times in a
        row, under zero score after a useful exchange, or (given ``now``) tried and silent for
        ``stale_s``. A new entry that was never tried is not terrible until it fails."""
        s = self.settings
        if peer.failures >= s.terrible_failures or (peer.last_contact is not None and peer.score < 0):
            return True
        if now is None:
            return False
        if peer.cooling_until > now:
            return True
        return peer.tried and (peer.last_contact is None or now - peer.last_contact > s.stale_s)

    def _worst(self, peers: list[Peer], now: float | None) -> Peer:
        """The first to go: terrible first, then the lowest score, then the longest without a useful
        exchange, then the oldest entry."""
        return min(peers, key=lambda p: (not self.terrible(p, now), p.score,
                                         -1.0 if p.last_contact is None else p.last_contact))

    def _evict(self, peer: Peer, counter: str) -> None:
        del self._peers[peer.address]
        self._count(counter)

    def _evict_one(self, now: float | None = None) -> bool:
        """Make room in new: the worst entry of the source group with most entries there (so a
        flood from many sources thins itself, one place each). Never a tried peer; False when new is
        empty."""
        groups: dict[str, list[Peer]] = {}
        for p in self._peers.values():
            if not p.tried:
                groups.setdefault(p.source_group, []).append(p)
        if not groups:
            return False
        biggest = max(groups.values(), key=len)
        self._evict(self._worst(biggest, now), "evicted_new")
        return True

    def _promote(self, peer: Peer, now: float) -> None:
        """A useful exchange: into tried if there is room in its group and the table, else in place of
        the worst tried peer there only if that one is terrible (it goes back to new)."""
        tried = self.tried()
        same = [p for p in tried if p.group == peer.group]
        if len(same) >= self.tried_per_group:
            victim = self._worst(same, now)
        elif len(tried) >= self.max_tried:
            victim = self._worst(tried, now)
        else:
            victim = None
        if victim is not None:
            if not self.terrible(victim, now):
                self._count("promotion_refused")
                return
            victim.tried = False
            self._count("demoted")
        peer.tried = True

    def active(self, now: float) -> list[Peer]:
        return [p for p in self._peers.values() if p.cooling_until <= now]

    def sample(self, k: int, now: float, rng: random.Random, exclude: set[str] = frozenset()) -> list[Peer]:
        pool = [p for p in self.active(now) if p.address not in exclude]
        return pool if len(pool) <= k else self.sample_preferring_tried(pool, k, rng)

    def sample_preferring_tried(self, candidates: list[Peer], k: int, rng: random.Random) -> list[Peer]:
        """``k`` of ``candidates`` (all of them if no more). Uniform while tried peers are at least
        ``tried_share`` of them (a swarm where most peers have proven themselves: gossip's random
        spread as it is); else one tried peer, the rest uniform over all the others, so planted
        addresses cannot keep a push from every proven peer nor narrow its spread to the few tried."""
        if len(candidates) <= k:
            return list(candidates)
        tried = [p for p in candidates if p.tried]
        new = [p for p in candidates if not p.tried]
        if not new or len(tried) >= self.tried_share * len(candidates):
            return rng.sample(candidates, k)
        first = tried.pop(rng.randrange(len(tried))) if tried else None
        rest = rng.sample(tried + new, k - 1) if first is not None else rng.sample(new, k)
        return ([first] if first is not None else []) + rest

    # -- scoring: every outbound call's bookkeeping goes through record() --------------------
    def record(self, address: str, event: str, now: float, *, count: int = 1, error: str | None = None) -> None:
        peer = self._peers.get(address)
        if peer is None:
            return
        s = self.settings
        delta = {"ok": s.ok, "invalid": s.invalid_message, "broken_promise": s.broken_promise,
                 "timeout": s.timeout}[event] * count
        peer.score = min(s.ceiling, peer.score + delta)
        if event == "ok":
            peer.last_contact = now
            peer.last_heard = now if peer.last_heard is None else max(peer.last_heard, now)
            peer.failures = 0
            peer.last_error = None
            if not peer.tried:
                self._promote(peer, now)
        else:
            peer.failures += 1
            peer.last_error = error or event
        if peer.score < s.floor:
            peer.cooling_until = now + s.cooling_s
            peer.score = s.floor / 2  # a second chance after the cooling period, on probation

    def cut_off(self, address: str, now: float, reason: str) -> None:
        """Stop talking to a peer that broke the protocol mid-exchange (a fetch answer with gaps or
        invalid envelopes, a reconciliation that never ends): cooling now, whatever its score, then
        on probation."""
        peer = self._peers.get(address)
        if peer is None:
            return
        peer.last_error = reason
        peer.cooling_until = max(peer.cooling_until, now + self.settings.cooling_s)
        peer.score = min(peer.score, self.settings.floor / 2)

    def heard(self, address: str, now: float) -> None:
        """``address`` reached us (an attributed push or announce)."""
        peer = self._peers.get(address)
        if peer is not None:
            peer.last_heard = now if peer.last_heard is None else max(peer.last_heard, now)

    def pick_for_pull(self, now: float, rng: random.Random, horizon_s: float,
                      exclude: set[str] | frozenset[str] = frozenset()) -> Peer | None:
        """A peer to reconcile with, favouring those not heard from recently: whatever they hold that
        we lack (or the reverse) had no other way to reach us. The weight is the silence in seconds,
        capped at ``horizon_s`` (never heard: the cap), plus 1% of it so no peer is never picked.
        When tried peers are fewer than ``tried_share`` of the pool (but some), the pick is among
        them with probability ``tried_share``, so planted addresses cannot crowd them out."""
        pool = [p for p in self.active(now) if p.address not in exclude]
        if not pool:
            return None
        tried = [p for p in pool if p.tried]
        if tried and len(tried) < self.tried_share * len(pool):
            pool = tried if rng.random() < self.tried_share else [p for p in pool if not p.tried]
        weights = [min(horizon_s, now - p.last_heard) if p.last_heard is not None else horizon_s for p in pool]
        weights = [max(0.0, w) + horizon_s / 100 for w in weights]
        return rng.choices(pool, weights)[0]

    def mark_has(self, address: str, ids) -> None:
        peer = self._peers.get(address)
        if peer is None:
            return
        peer.has.update(ids)
        if len(peer.has) > self.MAX_HAS:
            # Forget arbitrarily: this is only an optimisation to avoid announcing back.
            for _ in range(len(peer.has) - self.MAX_HAS // 2):
                peer.has.pop()
