"""The peer table: who we know, how they have behaved, and who is cooling off.

Pure and synchronous (no sockets, no clock reads): callers pass ``now``. docs/design.md, "Gossip and sync":
peers are scored (invalid messages, broken promises, timeouts); a peer under the threshold is
ignored for a cooling period.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoreSettings:
    ok: float = 1.0  # a useful exchange
    invalid_message: float = -4.0  # each message that failed validation
    broken_promise: float = -3.0  # announced or listed an id, then did not deliver it
    timeout: float = -2.0  # no answer in time / connection refused
    floor: float = -10.0  # under this the peer is ignored ...
    cooling_s: float = 300.0  # ... for this long
    ceiling: float = 20.0


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

    def to_json(self, now: float) -> dict:
        return {
            "address": self.address,
            "pubkey": self.pubkey,
            "score": round(self.score, 2),
            "last_contact": None if self.last_contact is None else int(self.last_contact),
            "last_error": self.last_error,
            "cooling": self.cooling_until > now,
            "source": self.source,
        }


class PeerTable:
    """Known peers by address. ``self_addresses`` are never added (we don't gossip to ourselves)."""

    MAX_HAS = 4096  # bound on the per-peer "knows this id" memory

    def __init__(self, settings: ScoreSettings | None = None, self_pubkey: str | None = None,
                 self_addresses: set[str] | None = None, max_peers: int = 256):
        self.settings = settings or ScoreSettings()
        self.self_pubkey = self_pubkey
        self.self_addresses = set(self_addresses or ())
        self.max_peers = max_peers
        self._peers: dict[str, Peer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, address: str) -> bool:
        return address in self._peers

    def get(self, address: str) -> Peer | None:
        return self._peers.get(address)

    def all(self) -> list[Peer]:
        return list(self._peers.values())

    def add(self, address: str, *, pubkey: str | None = None, source: str = "bootstrap") -> Peer | None:
        address = address.rstrip("/")
        if address in self.self_addresses or (pubkey is not None and pubkey == self.self_pubkey):
            return None
        peer = self._peers.get(address)
        if peer is None:
            if len(self._peers) >= self.max_peers:
                self._evict_one()
            peer = Peer(address=address, pubkey=pubkey, source=source)
            self._peers[address] = peer
        elif pubkey and not peer.pubkey:
            peer.pubkey = pubkey
        return peer

    def remove(self, address: str) -> None:
        self._peers.pop(address, None)

    def _evict_one(self) -> None:
        worst = min(self._peers.values(), key=lambda p: (p.score, p.last_contact or 0))
        del self._peers[worst.address]

    def active(self, now: float) -> list[Peer]:
        return [p for p in self._peers.values() if p.cooling_until <= now]

    def sample(self, k: int, now: float, rng: random.Random, exclude: set[str] = frozenset()) -> list[Peer]:
        pool = [p for p in self.active(now) if p.address not in exclude]
        return pool if len(pool) <= k else rng.sample(pool, k)

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
        capped at ``horizon_s`` (never heard: the cap), plus 1% of it so no peer is never picked."""
        pool = [p for p in self.active(now) if p.address not in exclude]
        if not pool:
            return None
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
