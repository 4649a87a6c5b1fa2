"""What a replica may forget, and in which order (issue 17 item 1; docs/design.md, "Admission by earned trust").

A key this node has no trust in costs nothing to make, so what such keys send is kept only within a
budget. ``plan`` sorts the replica's rows into what the node relies on, which is never shed, and the
newcomers' part, which is shed oldest first when the replica is over its disk budget or the
newcomers' part over its own, and after ``ttl_s`` when nothing this node trusts touched it:

* **kept, always**: every message of a trusted key (this node's own, a pre-trusted key, a key with
  earned trust above 0); every claim a trusted key voted on (whatever the verdict: a verified claim
  is one), with every ancestor of such a claim (its source is rebuilt from them) and the task it
  belongs to (when no trusted key published that task; else a zero-trust author's copy is junk);
  peer records that have not expired, of trusted keys;
* **newcomers' part**, in shedding order: expired peer records (not this node's own); a zero-trust
  author's claim no trusted key voted on, with the votes on it (negative results, outcome other
  than ``improved``, before the rest; oldest received first); tasks of zero-trust authors no kept
  claim belongs to, and their copies of a task a trusted key published; peer records of zero-trust
  keys; last, votes of zero-trust keys on kept claims
  (they weigh nothing here, but they are how a newcomer earns trust, so they go last).

Pure: the rows and the trust predicate in, ids out. ``Tombstones`` remembers what was shed (bounded),
so reconciliation does not fetch it again at once (store/replica.py, node/net/gossip.py).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

# A stored row costs more than its canonical bytes: its id and columns in the table and in up to
# three indexes (store/schema.py). An estimate, used to turn "bytes over" into rows to shed.
ROW_OVERHEAD = 400

SCAN_SQL = ("SELECT id, kind, author, task, parent, claim, outcome, received_at, created_at, length(raw), "
            "expires_at FROM messages")


class Row(NamedTuple):
    id: str
    kind: str
    author: str
    task: str | None
    parent: str | None
    claim: str | None
    outcome: str | None
    received_at: int | None
    created_at: int
    size: int  # canonical bytes
    expires_at: int | None


@dataclass
class Plan:
    shed: list[str] = field(default_factory=list)  # ids to delete, in shedding order
    shed_bytes: int = 0  # their estimated cost on disk (canonical bytes + ROW_OVERHEAD each)
    expired: int = 0  # of them, shed for age (ttl_s, an expired peer record), not for space
    newcomer_bytes: int = 0  # the newcomers' part after shedding (estimated, as above)
    total_bytes: int = 0  # the whole replica after shedding (estimated, as above)
    author_bytes: dict[str, int] = field(default_factory=dict)  # per zero-trust author, after shedding
    touched: set[str] = field(default_factory=set)  # claims a trusted key voted on (relayed normally)
    kept: int = 0  # rows never to be shed
    # Of the newcomers' part not shed, what is not offered to peers (node/newcomers.py): a zero-trust
    # author's claim no trusted key touched, or task no kept claim belongs to, and votes on such
    # claims (or on none stored): id -> (kind, the claim's parent | the vote's claim | the task's id,
    # the claim's task)
    held: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    offered_tasks: set[str] = field(default_factory=set)  # task ids whose task messages, by any author, are offered


def cost(row: Row) -> int:
    return row.size + ROW_OVERHEAD


def plan(rows: Iterable[Row | tuple], trusted: Callable[[str], bool], self_key: str, now: int, *, ttl_s: float,
         newcomer_target: int, newcomer_limit: int | None = None, total_target: int | None = None,
         total_limit: int | None = None) -> Plan:
    """Which rows to shed: everything of the newcomers' part older than ``ttl_s`` (received) that no
    trusted key touched, expired peer records; then, when the newcomers' part is over
    ``newcomer_limit`` (default: its target) or the whole replica over ``total_limit`` (its disk
    budget; default: its target; None: none), the newcomers' part oldest first in the order of the
    module's docstring, until it is at most ``newcomer_target`` bytes and the replica at most
    ``total_target`` (or nothing of the newcomers' part is left). Sizes are estimates: canonical
    bytes plus ROW_OVERHEAD per row."""
    rows = [r if isinstance(r, Row) else Row(*r) for r in rows]
    total = sum(cost(r) for r in rows)
    claims: dict[str, Row] = {}
    votes_on: dict[str, list[Row]] = {}
    for r in rows:
        if r.kind == "claim":
            claims[r.id] = r
        elif r.kind == "vote" and r.claim is not None:
            votes_on.setdefault(r.claim, []).append(r)
    is_trusted: dict[str, bool] = {}

    def ok(key: str) -> bool:
        known = is_trusted.get(key)
        if known is None:
            known = is_trusted[key] = key == self_key or bool(trusted(key))
        return known

    out = Plan()
    touched = {cid for cid, vs in votes_on.items() if cid in claims and any(ok(v.author) for v in vs)}
    out.touched = set(touched)
    kept_claims = set(touched) | {cid for cid, c in claims.items() if ok(c.author)}
    for cid in list(kept_claims):  # ancestors of a kept claim: its source is rebuilt from them
        parent = claims[cid].parent
        while parent and parent in claims and parent not in kept_claims:
            kept_claims.add(parent)
            parent = claims[parent].parent
    kept_tasks = {claims[cid].task for cid in kept_claims}
    # a task a trusted key published: a zero-trust author's copy of it is offered (every node publishes
    # the task it works on under its own key), and shed like junk (the trusted one holds the definition)
    trusted_tasks = {r.task for r in rows if r.kind == "task" and ok(r.author)}
    out.offered_tasks = kept_tasks | trusted_tasks
    expired: list[Row] = []
    units: list[tuple[tuple, list[Row]]] = []  # (order key, rows shed together)
    cutoff = now - ttl_s
    held = out.held
    for r in rows:
        mine = ok(r.author)
        if r.kind == "peer":
            if r.author != self_key and r.expires_at is not None and r.expires_at <= now:
                expired.append(r)
            elif not mine:
                units.append(((3, 0, r.received_at or 0, r.id), [r]))
            continue
        if mine:
            continue
        if r.kind == "claim":
            if r.id in kept_claims:
                continue
            unit = [r, *votes_on.get(r.id, ())]
            held[r.id] = ("claim", r.parent, r.task)
            if r.received_at is not None and r.received_at < cutoff:
                expired.extend(unit)
            else:
                units.append(((1, 0 if r.outcome != "improved" else 1, r.received_at or 0, r.id), unit))
        elif r.kind == "vote":
            if r.claim in kept_claims:
                units.append(((4, 0, r.received_at or 0, r.id), [r]))
            # a vote on an unkept claim goes with that claim; one on a claim not stored is an orphan
            elif r.claim not in claims:
                units.append(((1, 0, r.received_at or 0, r.id), [r]))
            if r.claim not in kept_claims:
                held[r.id] = ("vote", r.claim, None)
        elif r.kind == "task":
            if r.task in trusted_tasks:
                units.append(((2, 0, r.received_at or 0, r.id), [r]))
                continue
            if r.task in kept_tasks:  # the definition a kept claim needs, no trusted key published it
                continue
            held[r.id] = ("task", r.task, None)
            if r.received_at is not None and r.received_at < cutoff:
                expired.append(r)
            else:
                units.append(((2, 0, r.received_at or 0, r.id), [r]))
    out.kept = len(rows) - len(expired) - sum(len(u) for _, u in units)
    for r in expired:
        out.shed.append(r.id)
        out.shed_bytes += cost(r)
    out.expired = len(expired)
    newcomer = sum(cost(r) for _, unit in units for r in unit)
    units.sort(key=lambda u: u[0])
    shed_units = 0
    limit = newcomer_target if newcomer_limit is None else newcomer_limit
    if total_target is None:
        free_bytes = 0
    else:
        over = total - out.shed_bytes > (total_target if total_limit is None else total_limit)
        free_bytes = total - total_target if over else 0
    pressed = newcomer > limit or out.shed_bytes < free_bytes
    for _, unit in units:
        if not pressed or (newcomer <= newcomer_target and out.shed_bytes >= free_bytes):
            break
        for r in unit:
            out.shed.append(r.id)
            out.shed_bytes += cost(r)
            newcomer -= cost(r)
        shed_units += 1
    for i in out.shed:
        held.pop(i, None)
    out.newcomer_bytes = newcomer
    out.total_bytes = total - out.shed_bytes
    for _, unit in units[shed_units:]:
        for r in unit:
            out.author_bytes[r.author] = out.author_bytes.get(r.author, 0) + cost(r)
    return out


class Tombstones:
    """Ids this replica shed, the newest ``capacity`` of them: ingest treats them as held (a push of
    one is a duplicate), reconciliation does not fetch them. A trusted vote for a shed claim lifts
    its tombstone (``lift``), so that the claim can come back."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.lifted = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def add(self, ids: Iterable[str]) -> None:
        for i in ids:
            self._ids[i] = None
            self._ids.move_to_end(i)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def among(self, ids: Iterable[str | None]) -> set[str]:
        if not self._ids:
            return set()
        return {i for i in ids if i is not None and i in self._ids}

    def lift(self, message_id: str) -> bool:
        if self._ids.pop(message_id, 0) is None:
            self.lifted += 1
            return True
        return False
