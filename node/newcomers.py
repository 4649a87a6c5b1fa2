"""Admission by earned trust (issue 17 item 1; docs/design.md, "Admission by earned trust").

Keys cost nothing to make, so what a key this node has no trust in sends is admitted, kept and relayed
only within budgets; what a trusted key sends or touches is not limited here:

* **Pushes** (``POST /v1/messages``): a zero-trust author has ``author_per_hour`` messages an hour and
  ``author_bytes`` stored; all zero-trust authors share ``total_per_hour`` and the newcomers' part of
  the replica (``newcomer_bytes``), so 10,000 fresh keys cannot each use a full author's budget. Past
  a budget the message is refused with the reason ``refused: newcomer budget (...)``; a push of which
  nothing could be taken for that reason answers 429 (node/net/api.py). A claim a trusted vote in the
  same push or in the replica touches is admitted.
* **Fetches** (reconciliation, catch-up) are not budgeted here: a fresh node trusts only its
  pre-trusted keys, and what it fetches is what peers hold. What a fetch brings of the newcomers' part
  is bounded by the sweep instead: the replica's whole newcomers' part is kept under its cap.
* **Relay**: a zero-trust author's claim, task or vote that no trusted vote touches is stored but not
  pushed onward, nor offered to peers' reconciliation (``held``: out of the gossip's snapshot, so what
  a flood pushed into one node is not fetched from it by every other); once a trusted vote touches the
  claim it is relayed (if still within the push window) and offered again, with its ancestors, its task
  and the votes on it. A trusted key's claim releases its ancestors the same way. A task message is
  offered when a trusted key published the same task or an offered claim belongs to it (every node
  publishes the task it works on under its own key: held, those copies would differ between every two
  peers' snapshots at every reconciliation). The sweep recomputes ``held`` from the replica (trust
  earned or lost meanwhile, and at start).
* **The sweep** (every ``sweep_interval_s``, and at once when a budget is passed): sheds what
  ``store/shed.py`` says, oldest first, down to ``low_water`` of the newcomers' cap, and of the
  replica's disk budget (``max_db_bytes``, ``--max-db-mb``) when the replica is over it; junk no
  trusted vote touched goes after ``ttl_s`` whatever the budgets. Shed ids are remembered (the
  replica's tombstones), so reconciliation does not fetch them back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from protocol.envelope import task_id
from store.shed import ROW_OVERHEAD, plan

log = logging.getLogger(__name__)

MIB = 1024 * 1024
REFUSED = "refused: newcomer budget"  # the reason's prefix (protocol/SPEC.md 10.2.2)
HELD_KINDS = ("claim", "vote", "task")  # a zero-trust author's messages of these kinds wait for a trusted touch to be relayed
DELETE_CHUNK = 2000  # ids per delete transaction: ingest goes on between them


@dataclass(frozen=True)
class NewcomerSettings:
    max_db_bytes: int = 2048 * MIB  # the replica's disk budget (--max-db-mb), on its rows' estimated size
    newcomer_bytes: int | None = None  # the newcomers' part; None: max_db_bytes / 16
    author_bytes: int = 4 * MIB  # stored per zero-trust author (pushes)
    author_per_hour: int = 120  # messages per zero-trust author per hour (pushes)
    total_per_hour: int = 10_000  # messages per hour all zero-trust authors share (pushes)
    ttl_s: float = 24 * 3600.0  # junk no trusted vote touched is shed this long after it was received
    sweep_interval_s: float = 60.0
    sweep_gap_s: float = 2.0  # sweeps a budget wakes are at least this far apart (each scans the replica)
    # What a sweep sheds is at once out of reconciliation and refused as a duplicate, but deleted only
    # this much later (at a later sweep): a peer that listed it from an earlier snapshot of ours and
    # fetches it meanwhile is still served, and does not take us for a peer that breaks its promises.
    grace_s: float = 20.0
    low_water: float = 0.9  # a sweep under pressure sheds down to this share of the budget it passed
    max_authors: int = 100_000  # per-author rate buckets kept (the least recent forgotten: the total still binds)
    withheld: int = 10_000  # claims not relayed, remembered so that a trusted vote can release them

    @property
    def newcomer_cap(self) -> int:
        return self.max_db_bytes // 16 if self.newcomer_bytes is None else self.newcomer_bytes


def wal_pages(max_db_bytes: int, page_size: int, default: int) -> int:
    """The replica's WAL checkpoint interval in pages under a disk budget: the library's default
    (store/replica.py, tuned for ingest) unless that lets the WAL, which sits beside the budgeted
    rows, grow past 1/16 of the budget; never under 64 pages."""
    return max(64, min(default, max_db_bytes // 16 // page_size))


@dataclass
class NewcomerStats:
    refused: int = 0  # pushed messages refused for a budget
    refused_by_budget: dict[str, int] = field(default_factory=dict)
    prescreened: int = 0  # of the refused, before their signatures were checked (a budget already spent)
    withheld: int = 0  # messages stored but not relayed (no trusted touch)
    released: int = 0  # withheld claims relayed once a trusted vote touched them
    shed: int = 0  # messages shed by sweeps (out of reconciliation at once, deleted after grace_s)
    deleted: int = 0  # of those, deleted
    shed_bytes: int = 0  # their estimated size (canonical bytes + row overhead)
    expired: int = 0  # of those, for age (ttl_s, expired peer records)
    sweeps: int = 0
    last_sweep_s: float = 0.0  # the last sweep's duration


@dataclass
class _Held:
    """What the relay needs of a withheld claim (gossip.ingest's outbox reads these three)."""

    id: str
    created_at: int
    author: str


class _Bucket:
    """Token buckets per key, the least recently used forgotten past ``max_keys`` (pure; the caller's clock)."""

    def __init__(self, per_hour: float, max_keys: int):
        self.rate, self.burst, self.max_keys = per_hour / 3600.0, float(per_hour), max_keys
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def has(self, key: str, now: float, cost: float = 1.0) -> bool:
        tokens, last = self._b.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate) >= cost

    def take(self, key: str, now: float, cost: float = 1.0) -> None:
        tokens, last = self._b.get(key, (self.burst, now))
        self._b[key] = (min(self.burst, tokens + (now - last) * self.rate) - cost, now)
        self._b.move_to_end(key)
        while len(self._b) > self.max_keys:
            self._b.popitem(last=False)


class Newcomers:
    def __init__(self, replica: Any, settings: NewcomerSettings | None = None, *,
                 on_shed: Callable[[list[str]], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.replica = replica
        self.settings = settings or NewcomerSettings()
        self.on_shed = on_shed  # the gossip's reconciliation snapshot is rebuilt
        self.clock = clock
        self.stats = NewcomerStats()
        s = self.settings
        self._authors = _Bucket(s.author_per_hour, s.max_authors)
        self._total = _Bucket(s.total_per_hour, 1)
        self.author_bytes: dict[str, int] = {}  # zero-trust authors' stored bytes (estimated; the sweep recounts)
        self.newcomer_bytes = 0  # the newcomers' part of the replica (estimated; the sweep recounts)
        self.touched: set[str] = set()  # claims a trusted key voted on
        # not offered to peers (see the module's docstring): id -> (kind, the claim's parent | the vote's
        # claim | the task's id, the claim's task), as store/shed.py's Plan.held
        self.held: dict[str, tuple[str, str | None, str | None]] = {}
        self._refs: dict[str, list[str]] = {}  # claim id -> held votes on it; task id -> held task messages
        # task ids a trusted key published or an offered claim belongs to: their task messages, by any
        # author, are offered (every node publishes the task it works on, under its own key)
        self.known_tasks: set[str] = set()
        self._scan_held: dict[str, tuple[str, str | None, str | None]] | None = None  # held while a sweep scans
        self._scan_released: set[str] | None = None  # released while a sweep scans
        self._withheld: OrderedDict[str, _Held] = OrderedDict()
        # used: the replica's size as budgeted (canonical bytes + store/shed.py's ROW_OVERHEAD per row, as
        # of the last sweep plus what was stored since); file, wal: the files' sizes at the last sweep
        self.usage: dict[str, int] = {"used": 0, "file": 0, "wal": 0, "pages": 0}
        self._wake = asyncio.Event()
        self._since_scan: dict[str, int] | None = None  # zero-trust authors' bytes stored while a sweep runs
        # (when to delete, ids, their estimated bytes): shed, still served (grace_s)
        self._doomed: list[tuple[float, list[str], int]] = []
        self._trust_at = float("-inf")
        self._trust_task: asyncio.Future | None = None
        self._sweeping = asyncio.Lock()

    def trusted(self, key: str) -> bool:
        return self.replica.relied_on(key)

    def _refresh_trust(self) -> None:
        """Have the replica's trust view recomputed (at most once a second), in the background: a push
        is judged by the latest view computed (relied_on), never waits for a computation."""
        now = self.clock()
        if now - self._trust_at >= 1.0 and (self._trust_task is None or self._trust_task.done()):
            self._trust_at = now
            self._trust_task = asyncio.ensure_future(self.replica.trust())
            self._trust_task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- pushes ------------------------------------------------------------------------------
    def _over(self, author: str, now: float, author_bytes: int = 1, total_bytes: int = 1) -> str | None:
        """The budget of ``author`` (a key without trust here) that storing ``author_bytes`` more of
        its bytes, ``total_bytes`` more of all such keys', would pass; None when none. The defaults
        (one byte) ask whether a budget is already spent."""
        s = self.settings
        if not self._authors.has(author, now):
            return f"{s.author_per_hour} messages per hour per author"
        if self.author_bytes.get(author, 0) + author_bytes > s.author_bytes:
            return f"{s.author_bytes / MIB:g} MiB stored per author"
        if self.newcomer_bytes + total_bytes > s.newcomer_cap:
            return f"{s.newcomer_cap / MIB:g} MiB stored for all new keys"
        if not self._total.has("", now):
            return f"{s.total_per_hour} messages per hour for all new keys"
        return None

    def _refuse(self, budget: str, author: str) -> str:
        self.stats.refused += 1
        self.stats.refused_by_budget[budget] = self.stats.refused_by_budget.get(budget, 0) + 1
        return f"{REFUSED} ({budget}, author {author[:8]} has no trust here)"

    def prescreen(self, items: list[Any]) -> tuple[list[Any], list[tuple[str, str]]]:
        """The store's ``screen`` hook on pushes, before anything is decoded or a signature checked: an
        item whose author has no trust here and has already spent a budget (its own, or the one all
        such authors share) is refused at once, as ``admit`` would refuse it after the check, so a
        flood past its budgets costs no signature checks. Only verified messages spend budgets, so a
        forged item can refuse nothing ``admit`` would take; items that name a claim a trusted key
        voted on, or that a vote in the same push names, and items not in the usual shape, go on."""
        now = self.clock()
        voted = {item["body"].get("claim") for item in items
                 if type(item) is dict and item.get("kind") == "vote" and type(item.get("body")) is dict}
        keep: list[Any] = []
        refused: list[tuple[str, str]] = []
        for item in items:
            author = item.get("author") if type(item) is dict else None
            msg_id = item.get("id") if type(item) is dict else None
            budget = None
            if (type(author) is str and type(msg_id) is str and msg_id not in self.touched
                    and msg_id not in voted and not self.trusted(author)):
                budget = self._over(author, now)
            if budget is None:
                keep.append(item)
            else:
                self.stats.prescreened += 1
                refused.append((msg_id, self._refuse(budget, author)))
        return keep, refused

    async def admit(self, envelopes: list[Any]) -> dict[str, str]:
        """The store's ``admit`` hook on pushes: {id: reason} for the messages over a budget."""
        self._refresh_trust()
        s, now = self.settings, self.clock()
        touched = {e.body["claim"] for e in envelopes if e.kind == "vote" and self.trusted(e.author)}
        refused: dict[str, str] = {}
        author_bytes: dict[str, int] = {}
        total_bytes = 0
        for env in envelopes:
            author = env.author
            if self.trusted(author) or (env.kind == "claim" and (env.id in touched or env.id in self.touched)):
                continue
            size = len(env.canonical()) + ROW_OVERHEAD
            budget = self._over(author, now, author_bytes.get(author, 0) + size, total_bytes + size)
            if budget is None:
                self._authors.take(author, now)
                self._total.take("", now)
                author_bytes[author] = author_bytes.get(author, 0) + size
                total_bytes += size
                continue
            refused[env.id] = self._refuse(budget, author)
        if self.newcomer_bytes + total_bytes > s.newcomer_cap:
            self._wake.set()
        return refused

    # -- what was stored (any path) ------------------------------------------------------------
    def relay(self, accepted: list[Any]) -> list[Any]:
        """Gossip's relay filter: of the newly stored, what is pushed onward, plus withheld claims a
        trusted vote in this batch touched. What is not pushed is held out of reconciliation too."""
        out: list[Any] = []
        touching: list[str] = []
        for env in accepted:
            if env.kind == "vote" and self.trusted(env.author):
                claim = env.body["claim"]
                self.touched.add(claim)
                touching.append(claim)
                held = self._withheld.pop(claim, None)
                if held is not None:
                    out.append(held)
                    self.stats.released += 1
        for env in accepted:
            if env.kind == "task" and self.trusted(env.author):
                self.known_tasks.add(task_id(env.body))
        for env in accepted:
            if env.kind in HELD_KINDS and not self.trusted(env.author):
                if env.kind == "claim" and env.id in self.touched or \
                        env.kind == "vote" and env.body["claim"] in self.touched or \
                        env.kind == "task" and task_id(env.body) in self.known_tasks:
                    out.append(env)
                    continue
                self.stats.withheld += 1
                if env.kind == "claim":
                    self._hold(env.id, ("claim", env.body["parent"], env.body["task"]))
                    self._withheld[env.id] = _Held(env.id, env.created_at, env.author)
                    while len(self._withheld) > self.settings.withheld:
                        self._withheld.popitem(last=False)
                else:
                    self._hold(env.id, ("vote", env.body["claim"], None) if env.kind == "vote"
                               else ("task", task_id(env.body), None))
                continue
            out.append(env)
        # after the whole batch is held: a parent may come in the same batch as its touched child
        for claim in touching:
            self._release(claim)
        for env in accepted:
            if env.kind == "claim" and env.id not in self.held:
                self._release(env.body["parent"])
                self._release_task(env.body["task"])
            elif env.kind == "task" and env.id not in self.held:
                self._release_task(task_id(env.body))
        return out

    def _release_task(self, task: str) -> int:
        """Offer the held messages of a task a trusted key published or an offered claim belongs to."""
        self.known_tasks.add(task)
        return self._release_refs(task)

    def _hold(self, msg_id: str, entry: tuple[str, str | None, str | None]) -> None:
        self.held[msg_id] = entry
        if entry[0] != "claim":
            self._refs.setdefault(entry[1], []).append(msg_id)
        if self._scan_held is not None:
            self._scan_held[msg_id] = entry

    def _release(self, claim: str | None) -> int:
        """Offer again a claim, its held ancestors, their tasks and the held votes on them; how many
        messages that was."""
        n = 0
        for _ in range(4096):  # up a chain (ids cannot form a cycle; a bound all the same)
            if claim is None:
                break
            n += self._release_refs(claim)
            entry = self.held.get(claim)
            if entry is None or entry[0] != "claim":
                break
            del self.held[claim]
            n += 1
            if self._scan_released is not None:
                self._scan_released.add(claim)
            if entry[2] is not None:
                n += self._release_task(entry[2])
            claim = entry[1]
        return n

    def _release_refs(self, ref: str) -> int:
        """The held votes on a claim, or the held messages of a task."""
        n = 0
        for i in self._refs.pop(ref, ()):
            if self.held.pop(i, None) is not None:
                n += 1
                if self._scan_released is not None:
                    self._scan_released.add(i)
        return n

    def on_accepted(self, accepted: list[Any]) -> None:
        """Count the newcomers' bytes stored (pushes and fetches alike); wake the sweep past a budget."""
        s = self.settings
        for env in accepted:
            size = len(env.canonical()) + ROW_OVERHEAD
            self.usage["used"] += size
            if self.trusted(env.author) or (env.kind == "claim" and env.id in self.touched):
                continue
            self.author_bytes[env.author] = self.author_bytes.get(env.author, 0) + size
            self.newcomer_bytes += size
            if self._since_scan is not None:
                self._since_scan[env.author] = self._since_scan.get(env.author, 0) + size
        if self.newcomer_bytes > s.newcomer_cap or self.usage["used"] > s.max_db_bytes:
            self._wake.set()

    # -- the sweep ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Owned by the node: sweep every sweep_interval_s, or at once when a budget is passed."""
        while True:
            self._wake.clear()
            t0 = time.monotonic()
            try:
                await self.sweep()
            except Exception:  # a failed sweep (disk error) is tried again next time; the node goes on
                log.exception("newcomers: sweep failed")
            await asyncio.sleep(max(0.0, self.settings.sweep_gap_s - (time.monotonic() - t0)))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.sweep_interval_s)
            except asyncio.TimeoutError:
                pass

    async def sweep(self, now: int | None = None) -> int:
        """Shed what store/shed.py says, delete what earlier sweeps shed once its grace is over; returns
        how many messages were deleted."""
        async with self._sweeping:
            try:
                return await self._sweep(now)
            finally:
                self._since_scan = self._scan_held = self._scan_released = None

    async def _delete_due(self, force: bool = False) -> int:
        """Delete what earlier sweeps shed once its grace is over (a claim a trusted vote touched
        meanwhile is kept, and can be fetched and pushed again)."""
        due, later, mono = [], [], time.monotonic()
        for item in self._doomed:
            (due if force or item[0] <= mono else later).append(item)
        self._doomed = later
        deleted = 0
        for _, ids, _ in due:
            kept = [i for i in ids if i in self.touched]
            if kept:
                for i in kept:
                    self.replica.tombstones.lift(i)
                if self.on_shed is not None:
                    self.on_shed([])
            ids = [i for i in ids if i not in self.touched] if kept else ids
            for i in range(0, len(ids), DELETE_CHUNK):
                deleted += await self.replica.delete(ids[i:i + DELETE_CHUNK])
        self.stats.deleted += deleted
        return deleted

    async def _sweep(self, now: int | None) -> int:
        t0 = time.monotonic()
        s = self.settings
        deleted = await self._delete_due()
        await self.replica.trust()  # a current view (or one within the replica's interval)
        self._since_scan = {}
        self._scan_held, self._scan_released = {}, set()
        rows = await self.replica.shed_rows()
        doomed = {i for _, ids, _ in self._doomed for i in ids}  # shed already, in their grace: not counted
        if doomed:
            rows = [r for r in rows if r[0] not in doomed]
        out = await asyncio.to_thread(
            plan, rows, self.trusted, self.replica.self_key, int(time.time()) if now is None else now,
            ttl_s=s.ttl_s, newcomer_target=int(s.low_water * s.newcomer_cap), newcomer_limit=s.newcomer_cap,
            total_target=int(s.low_water * s.max_db_bytes), total_limit=s.max_db_bytes)
        del rows
        # a trusted vote stored since the scan touched these: kept
        shed = [i for i in out.shed if i not in self.touched] if self.touched else out.shed
        if shed:  # out of reconciliation and refused from now on, deleted after grace_s
            self.replica.tombstones.add(shed)
            self._doomed.append((time.monotonic() + s.grace_s, shed, out.shed_bytes))
            if s.grace_s <= 0:
                deleted += await self._delete_due()
        self.touched |= out.touched
        since, self._since_scan = self._since_scan or {}, None
        for author, size in since.items():  # stored after the scan: counted on top of it
            out.author_bytes[author] = out.author_bytes.get(author, 0) + size
        self.author_bytes = out.author_bytes
        self.newcomer_bytes = out.newcomer_bytes + sum(since.values())
        for i in shed:
            self._withheld.pop(i, None)
        # the gossip's snapshot is rebuilt when what it leaves out changed: not when all that was shed
        # was held already (a flood's junk), so that sweeps under a flood do not rebuild it each time
        if self._rehold(out.held, shed, out.offered_tasks) and self.on_shed is not None:
            self.on_shed(shed)
        disk = await self.replica.disk_usage()
        self.usage = {"used": out.total_bytes, "file": disk["file"], "wal": disk["wal"], "pages": disk["used"]}
        if shed:
            log.info("newcomers: shed %d messages (%d for age), ~%.1f MiB", len(shed), out.expired,
                     out.shed_bytes / MIB)
        self.stats.shed += len(shed)
        self.stats.shed_bytes += out.shed_bytes
        self.stats.expired += out.expired
        self.stats.sweeps += 1
        self.stats.last_sweep_s = round(time.monotonic() - t0, 3)
        return deleted

    def _rehold(self, held: dict[str, tuple[str, str | None, str | None]], shed: list[str],
                offered_tasks: set[str] = frozenset()) -> bool:
        """Take the sweep's view of what is held (store/shed.py), with what was held and released while
        it scanned and what a trusted vote touched meanwhile; whether what the gossip's snapshot leaves
        out changed: something offered before is now held or shed, or something held is offered."""
        scan_held, released = self._scan_held or {}, self._scan_released or set()
        self._scan_held = self._scan_released = None
        held.update(scan_held)  # stored while it scanned ...
        for i in released:  # ... and released since (a message held then released in the scan is offered)
            held.pop(i, None)
        old, self.held = self.held, held
        self.known_tasks |= offered_tasks
        self._refs = {}
        for i, entry in held.items():
            if entry[0] != "claim":
                self._refs.setdefault(entry[1], []).append(i)
        for claim in [i for i, e in held.items() if e[0] == "claim" and i in self.touched]:
            self._release(claim)
        for task in [e[1] for e in held.values() if e[0] == "task" and e[1] in self.known_tasks]:
            self._release_refs(task)
        gone = set(shed)
        return (any(i not in old for i in shed) or any(i not in old for i in self.held)
                or any(i not in self.held and i not in gone for i in old))

    def to_json(self) -> dict[str, Any]:
        """For /api/stats, ralphswarm status and /metrics."""
        s = self.settings
        return {
            "budget_bytes": s.max_db_bytes, "used_bytes": self.usage["used"], "file_bytes": self.usage["file"],
            "wal_bytes": self.usage["wal"], "pages_bytes": self.usage["pages"], "newcomer_bytes": self.newcomer_bytes,
            "newcomer_budget_bytes": s.newcomer_cap, "newcomer_authors": len(self.author_bytes),
            "tombstones": len(self.replica.tombstones), "withheld_now": len(self._withheld), "held": len(self.held),
            "in_grace": sum(len(ids) for _, ids, _ in self._doomed),
            "in_grace_bytes": sum(size for _, _, size in self._doomed),
            **{k: v for k, v in vars(self.stats).items()},
        }
