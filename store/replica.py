"""The local replica (docs/design.md, "Layout": store/): one SQLite file in WAL mode, one writer.

Writes go through one connection, serialized by an asyncio lock, each call in one transaction
(sqlite-utils' "one writer" rule). Reads use a second connection, which in WAL mode sees only
committed transactions, so a reader never observes half a batch. Ranking and trust are pure
functions (store/trust.py, store/ranking.py); the methods here load their inputs.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from time import monotonic as _monotonic  # the trust interval's clock (tests swap time.time)
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Sequence

import aiosqlite

from protocol import KINDS, Envelope, is_hex

from . import ranking
from .errors import StoreError
from .extract import INSERT_OR_IGNORE_SQL, INSERT_SQL
from .ingest import IngestReport, decode_all, finish, prepare, quick_id
from .ranking import ClaimStatus, Entry, Leaderboard, RankingSettings
from .ingest import PreparedBatch, gc_paused
from .pending import PendingSet
from .schema import migrate
from .shed import SCAN_SQL, Tombstones
from .stats import NoiseTable, Significance
from .trust import TrustSettings, TrustState, TrustView, VoteFact
from .verify import VerifyPool

SQL_CHUNK = 500  # ids per IN (...) query, well under SQLite's bound-parameter limit
TASK_CACHE = 64  # tasks whose view a replica keeps computed (a swarm has a few)
VOTE_COLUMNS = "id, author, claim, verdict, vote_bpb, created_at, fresh, device, rowid, claim_received_at"


@dataclass(frozen=True)
class StoreSettings:
    trust: TrustSettings = field(default_factory=TrustSettings)
    ranking: RankingSettings = field(default_factory=RankingSettings)
    noise: NoiseTable = field(default_factory=NoiseTable)  # seed noise per task and device class (store/stats.py)
    busy_timeout_ms: int = 10_000  # another process (a CLI import) may hold the write lock briefly
    # WAL + NORMAL: a committed batch survives a crash of this process (not necessarily a power cut).
    synchronous: str = "NORMAL"
    thread_decode_at: int = 32  # decode batches at least this big in a worker thread, off the event loop
    # Page cache per connection (SQLite's default is 2 MiB). Ids are random, so each insert lands
    # on a random page of the primary-key and votes_by_claim indexes: a cache holding those indexes
    # saves re-reading them from the OS on every batch (scripts/bench/ingest).
    cache_mib: int = 32
    # Page size of a new replica file (an existing one keeps its own). Rows are ~1-2 KiB of canonical
    # bytes beside six indexes keyed by 64-hex ids: 16 KiB pages hold more of each per page, and an
    # insert cost 16 us of CPU instead of 24 at SQLite's 4 KiB (scripts/bench/ingest).
    page_size: int = 16384
    # WAL pages before an automatic checkpoint (default 1000 = 4 MiB): a 500-message batch into a
    # 20k-message replica writes about 900 pages, and each checkpoint costs a copy and an fsync.
    wal_autocheckpoint: int = 4000
    # Trust is recomputed (in a worker thread, off the event loop) at most this often: a reader
    # within this many seconds of the last computation gets that view even if votes arrived since.
    # 0: always current (the library's default); the node sets a few seconds (node/daemon.py), so a
    # flood of votes costs one computation per interval, not one per batch (issue 17).
    trust_min_interval_s: float = 0.0
    # Votes for claims and claims for parents the replica lacks wait in memory, at most this many
    # (0: stored at once, the library's default; a node sets a bound, node/daemon.py; store/pending.py).
    pending_max_messages: int = 0
    pending_max_bytes: int = 32 * 1024 * 1024
    # Ids shed to stay within a disk budget (store/shed.py) remembered, at most this many, so that they
    # are not fetched again at once (a push of one reads as a duplicate).
    tombstones: int = 100_000


def _envelope(raw: bytes) -> Envelope:
    """Rebuild an Envelope from stored canonical bytes (checked at ingest, so no re-validation)."""
    raw = bytes(raw)
    obj = json.loads(raw)
    return Envelope(obj["id"], obj["author"], obj["created_at"], obj["swarm"], obj["kind"], obj["body"], obj["sig"],
                    raw=raw)


def _vote(row: Sequence) -> VoteFact:
    return VoteFact(id=row[0], voter=row[1], claim=row[2], verdict=row[3], val_bpb=row[4], created_at=row[5],
                    fresh=bool(row[6]), device=row[7], seq=row[8], claim_received_at=row[9])


def _check_key(key: Any, what: str) -> str:
    if not is_hex(key, 64):
        raise StoreError(f"{what} must be a 64-hex Ed25519 public key, got {str(key)[:80]!r}")
    return key


def _bound(value: Any) -> tuple[int, str]:
    """A reconciliation bound: (created_at, id) or a bare created_at (= (created_at, ""))."""
    if isinstance(value, int):
        return (value, "")
    created_at, ident = value
    return (int(created_at), str(ident))


class Replica:
    def __init__(self, path: str, swarm: str, self_key: str, trusted: Iterable[str], settings: StoreSettings):
        self.path = path
        self.swarm = swarm
        self.self_key = self_key
        self.settings = settings
        self._config_trusted = set(trusted)
        self._db_trusted: set[str] = set()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._trust: TrustView | None = None  # the latest computed view, current or not
        self._trust_gen = -1  # the generation it was computed at
        self._trust_at = 0.0  # when (_monotonic())
        self._trust_task: asyncio.Future | None = None  # a computation under way (shared by its readers)
        self._trust_task_gen = -1
        self._trust_generation = 0
        # Trust kept up to date incrementally (store/trust.py TrustState): each computation reads only
        # the claims and votes stored since the last (rowid above ``_trust_seen``) and forgets the
        # ids deleted since (``_trust_removed``); another pre-trusted set starts a new state.
        self._trust_state: TrustState | None = None
        self._trust_seen = 0  # the highest rowid the state has read up to
        self._trust_removed: list[str] = []  # ids deleted, for the next computation to forget
        self._trust_reset = False  # too many of them waiting: the next computation starts a new state
        # SQLite gives a new row the highest rowid + 1: after the highest rows go, new ones reuse their
        # rowids, at or below what the state has read. The next computation reads from here instead.
        self._trust_floor: int | None = None
        self._trust_lock = asyncio.Lock()  # one computation at a time: the state changes in place
        # Per-task caches, valid while _trust_generation is unchanged (every stored claim or vote and
        # every trust change bumps it): a dashboard polling the board recomputes nothing in between.
        self._task_bodies: dict[str, dict] = {}  # task messages are immutable: kept once found
        self._status_cache: dict[str, tuple[int, list[Envelope], dict[str, ClaimStatus]]] = {}
        self._board_cache: dict[str, tuple[int, Leaderboard]] = {}
        # votes for claims, and claims for parents, this replica lacks wait here (None: stored at once)
        self.pending = (PendingSet(settings.pending_max_messages, settings.pending_max_bytes)
                        if settings.pending_max_messages > 0 else None)
        self.tombstones = Tombstones(settings.tombstones)  # ids shed (store/shed.py)
        # claims a held vote of a key this node relies on waits for, and their held ancestors' parents
        self._wanted: OrderedDict[str, None] = OrderedDict()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, swarm: str, self_key: str, trusted: Iterable[str] = (),
                   settings: StoreSettings | None = None) -> "Replica":
        """Open (creating and migrating) the replica at ``path``; ``":memory:"`` gives a private one.

        ``trusted`` are the operator's configured keys for this session; keys added with
        ``set_trusted`` are persisted in the database. Both form the pre-trusted set.
        """
        _check_key(self_key, "self_key")
        trusted = [_check_key(k, "trusted key") for k in trusted]
        replica = cls(str(path), swarm, self_key, trusted, settings or StoreSettings())
        try:
            await replica._connect()
        except sqlite3.DatabaseError as exc:
            await replica.close()
            raise StoreError(f"cannot open replica {path}: {exc}") from None
        except BaseException:
            await replica.close()
            raise
        return replica

    async def _connect(self) -> None:
        memory = self.path == ":memory:"
        if not memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        await self._writer.execute(f"PRAGMA page_size={int(self.settings.page_size)}")  # before any table exists
        await self._pragmas(self._writer)
        if not memory:
            async with self._writer.execute("PRAGMA journal_mode=WAL") as cur:
                (mode,) = await cur.fetchone()
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
        await migrate(self._writer)
        async with self._writer.execute("SELECT key FROM trusted_keys") as cur:
            self._db_trusted = {r[0] for r in await cur.fetchall()}
        if not memory:
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._pragmas(self._reader)
            await self._reader.execute("PRAGMA query_only=ON")

    async def _pragmas(self, conn: aiosqlite.Connection) -> None:
        if self.settings.synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"unknown synchronous mode {self.settings.synchronous!r}")
        await conn.execute(f"PRAGMA busy_timeout={int(self.settings.busy_timeout_ms)}")
        await conn.execute(f"PRAGMA synchronous={self.settings.synchronous.upper()}")
        await conn.execute(f"PRAGMA cache_size={-1024 * int(self.settings.cache_mib)}")
        await conn.execute(f"PRAGMA wal_autocheckpoint={int(self.settings.wal_autocheckpoint)}")

    async def close(self) -> None:
        for name in ("_reader", "_writer"):
            conn = getattr(self, name)
            setattr(self, name, None)
            if conn is not None:
                await conn.close()

    async def __aenter__(self) -> "Replica":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _conn(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StoreError("replica is closed")
        return conn

    async def _fetchall(self, sql: str, params: Sequence = ()) -> list:
        if self._reader is not None:
            async with self._reader.execute(sql, params) as cur:
                return list(await cur.fetchall())
        # One connection (":memory:"): read under the write lock so no read sees half a batch.
        async with self._write_lock:
            async with self._conn(self._writer).execute(sql, params) as cur:
                return list(await cur.fetchall())

    async def _fetch_in(self, sql: str, ids: Sequence[str], extra: Sequence = ()) -> list:
        """Run ``sql`` (with one ``{}`` for the placeholders) over ``ids`` in chunks."""
        out: list = []
        for i in range(0, len(ids), SQL_CHUNK):
            chunk = list(ids[i:i + SQL_CHUNK])
            out.extend(await self._fetchall(sql.format(",".join("?" * len(chunk))), [*chunk, *extra]))
        return out

    # -- ingest ------------------------------------------------------------------------------

    async def ingest(self, items: Iterable[Any], now: int | None = None, *, check_sig: bool = True,
                     verifier: VerifyPool | None = None,
                     admit: Callable[[list[Envelope]], Awaitable[dict[str, str]]] | None = None,
                     screen: Callable[[list[Any]], tuple[list[Any], list[tuple[str, str]]]] | None = None,
                     ) -> IngestReport:
        """Validate and store a batch; the stored part of it commits in ONE transaction.

        Each item is raw bytes, str or a dict envelope. The report says, per message, accepted /
        duplicate (already stored, or twice in this batch) / rejected with the protocol reason.
        ``check_sig=False`` only for items whose signatures the caller has verified (bulk import
        verifying on several cores). ``verifier``: check the signatures of a big batch in that
        pool of processes (store/verify.py), same verdicts. An I/O error raises and leaves
        nothing of the batch. ``admit``: given the valid new envelopes, returns those refused
        ({id: reason}), reported as rejected and not stored (a node's budgets, node/newcomers.py).
        ``screen``: given the new items before they are decoded or their signatures checked, returns
        those to go on and the (id, reason) of those refused at once (the budgets already spent).
        An id this replica shed (``tombstones``) reads as stored: a duplicate.
        """
        items = list(items)
        # Gossip and re-imports bring mostly known messages: skip decoding what is already stored.
        named = [quick_id(item) for item in items]
        stored = await self.has_ids([i for i in named if i is not None])
        stored |= self.tombstones.among(named)
        known = [i for i in named if i in stored]
        items = [item for item, i in zip(items, named) if i not in stored]
        screened: list[tuple[str, str]] = []
        if screen is not None and items:
            items, screened = screen(items)
        args = dict(swarm=self.swarm, now=now, check_sig=check_sig, received_at=int(time.time()))
        if check_sig and verifier is not None and len(items) >= verifier.min_batch:
            decoded = await asyncio.to_thread(decode_all, items, swarm=self.swarm, now=now)
            sig_ok = await verifier.verify([env for _, env in decoded.envelopes])
            batch = finish(decoded, sig_ok, args["received_at"])
        elif len(items) >= self.settings.thread_decode_at:
            batch = await asyncio.to_thread(prepare, items, **args)
        else:
            batch = prepare(items, **args)
        if screened:
            batch = dataclasses.replace(batch, rejected=[*screened, *batch.rejected])
        if admit is not None and batch.envelopes:
            refused = await admit(list(batch.envelopes))
            if refused:
                keep = [i for i, env in enumerate(batch.envelopes) if env.id not in refused]
                batch = dataclasses.replace(
                    batch, envelopes=[batch.envelopes[i] for i in keep], rows=[batch.rows[i] for i in keep],
                    rejected=[*batch.rejected, *((env.id, refused[env.id]) for env in batch.envelopes
                                                 if env.id in refused)])
        held: list[str] = []
        if self.pending is not None and batch.rows:
            before = batch
            batch, held = await self._hold_back(batch)
            if held:
                self._lift_tombstones(before.envelopes, set(held))
        # held ones are reported with the duplicates: not stored, not relayed, and no broken promise
        report = IngestReport(rejected=batch.rejected, duplicate=known + batch.in_batch_duplicates + held)
        if not batch.rows:
            return report
        async with self._write_lock:
            present = await self._store_rows(self._conn(self._writer), batch.rows)
        for env in batch.envelopes:
            if env.id in present:
                report.duplicate.append(env.id)
            else:
                report.accepted.append(env)
        if any(env.kind in ("claim", "vote") for env in report.accepted):
            self._invalidate_trust()
        if self.pending is not None and report.accepted:
            released = self.pending.release([env.id for env in report.accepted])
            if released:  # checked before they were held; stored now, after what they waited for
                later = await self.ingest(released, check_sig=False)
                report.accepted.extend(later.accepted)
        return report

    def relied_on(self, key: str) -> bool:
        """A key whose messages this node keeps whatever its budgets (store/shed.py): its own, a
        pre-trusted key, one with earned trust above 0 in the latest computed view."""
        return key == self.self_key or key in self._config_trusted or key in self._db_trusted or (
            self._trust is not None and self._trust.of(key) > 0)

    def _lift_tombstones(self, envelopes: Sequence[Envelope], held: set[str]) -> None:
        """A vote of a key this node relies on, held for a claim it shed, or for a claim held for an
        ancestor it shed: that claim or ancestor may come back (it is fetched at the next sync)."""
        for env in envelopes:
            if env.id not in held:
                continue
            if env.kind == "vote" and self.relied_on(env.author):
                awaited = env.body["claim"]
            elif env.kind == "claim" and env.id in self._wanted:
                awaited = env.body["parent"]
            else:
                continue
            for _ in range(1024):  # up a chain of held claims to the one shed (ids cannot form a cycle)
                self._wanted[awaited] = None
                self._wanted.move_to_end(awaited)
                if self.tombstones.lift(awaited) or self.pending is None:
                    break
                awaited = self.pending.awaited(awaited)
                if awaited is None:
                    break
        while len(self._wanted) > self.settings.tombstones:
            self._wanted.popitem(last=False)

    async def _hold_back(self, batch: PreparedBatch) -> tuple[PreparedBatch, list[str]]:
        """Split off the votes for claims and the claims with parents that neither the replica nor the
        rest of the batch holds (store/pending.py); returns the batch to store and the held ids."""
        need: dict[str, str] = {}
        for env in batch.envelopes:
            awaited = env.body.get("claim") if env.kind == "vote" else env.body.get("parent") if env.kind == "claim" else None
            if awaited:
                need[env.id] = awaited
        if not need:
            return batch, []
        in_batch = {env.id for env in batch.envelopes}
        stored = await self.has_ids({a for a in need.values() if a not in in_batch})
        held: set[str] = set()
        changed = True
        while changed:  # a claim waiting for a held claim of the same batch waits too
            changed = False
            for message_id, awaited in need.items():
                if message_id not in held and awaited not in stored and (awaited not in in_batch or awaited in held):
                    held.add(message_id)
                    changed = True
        if not held:
            return batch, []
        keep = [i for i, env in enumerate(batch.envelopes) if env.id not in held]
        for env in batch.envelopes:
            if env.id in held:
                self.pending.hold(env.id, need[env.id], env.canonical())
        out = dataclasses.replace(batch, envelopes=[batch.envelopes[i] for i in keep], rows=[batch.rows[i] for i in keep])
        return out, [env.id for env in batch.envelopes if env.id in held]

    async def _store_rows(self, writer: aiosqlite.Connection, rows: list[tuple]) -> set[str]:
        """Store the rows not stored yet, in one transaction; returns the ids that already were.

        has_ids skipped what was stored before the batch was decoded, so the rows are normally all
        new: INSERT OR IGNORE stores them and its row count confirms that, with no second
        existence query. A smaller count means another writer (a concurrent ingest of the same
        message, another process) stored some meanwhile; only then is that transaction rolled
        back and the batch stored again with an explicit check, to learn which were duplicates.
        """
        present = await self._insert(writer, rows, check_first=False)
        if present is None:
            present = await self._insert(writer, rows, check_first=True)
            assert present is not None
        return present

    async def _insert(self, writer: aiosqlite.Connection, rows: list[tuple], *, check_first: bool) -> set[str] | None:
        """One transaction; None (rolled back) when, unchecked, some row turned out to be stored."""
        # BEGIN IMMEDIATE takes SQLite's write lock first, so the existence check and the inserts
        # see the same table even if another process writes this file too.
        await writer.execute("BEGIN IMMEDIATE")
        try:
            present: set[str] = set()
            if check_first:
                ids = [r[0] for r in rows]
                for i in range(0, len(ids), SQL_CHUNK):
                    chunk = ids[i:i + SQL_CHUNK]
                    sql = f"SELECT id FROM messages WHERE id IN ({','.join('?' * len(chunk))})"
                    async with writer.execute(sql, chunk) as cur:
                        present.update(r[0] for r in await cur.fetchall())
                rows = [r for r in rows if r[0] not in present]
            if rows:
                async with writer.executemany(INSERT_SQL if check_first else INSERT_OR_IGNORE_SQL, rows) as cur:
                    inserted = cur.rowcount
                if not check_first and inserted != len(rows):
                    await writer.execute("ROLLBACK")
                    return None
            await writer.execute("COMMIT")
            return present
        except BaseException:
            try:
                await writer.execute("ROLLBACK")
            except (sqlite3.Error, ValueError):  # connection already gone: nothing was committed
                pass
            raise

    # -- shedding (store/shed.py) -------------------------------------------------------------

    async def shed_rows(self) -> list[tuple]:
        """Every stored message's columns that shedding decides on (not its bytes), as plain tuples in
        the order of store.shed.Row (``plan`` makes them Rows, in its worker thread)."""
        return await self._fetchall(SCAN_SQL)

    async def delete(self, ids: Iterable[str]) -> int:
        """Delete these messages in one transaction and remember them as shed (``tombstones``);
        returns how many were stored. Ranking and trust are recomputed from what is left."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        deleted = 0
        async with self._write_lock:
            writer = self._conn(self._writer)
            await writer.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(ids), SQL_CHUNK):
                    chunk = ids[i:i + SQL_CHUNK]
                    async with writer.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})",
                                              chunk) as cur:
                        deleted += cur.rowcount
                async with writer.execute("SELECT max(rowid) FROM messages") as cur:
                    top = (await cur.fetchone())[0] or 0
                await writer.execute("COMMIT")
            except BaseException:
                try:
                    await writer.execute("ROLLBACK")
                except (sqlite3.Error, ValueError):
                    pass
                raise
        self.tombstones.add(ids)
        self._trust_removed.extend(ids)  # the incremental trust state forgets them at its next computation
        self._trust_floor = top if self._trust_floor is None else min(self._trust_floor, top)
        if len(self._trust_removed) > 1_000_000:  # bounded: past that, a new state from the rows left
            self._trust_removed, self._trust_reset = [], True
        self._invalidate_trust()
        self._status_cache.clear()
        self._board_cache.clear()
        return deleted

    async def disk_usage(self) -> dict[str, int]:
        """Bytes of the replica: ``used`` (pages holding data; freed pages are reused before the file
        grows), ``file`` (the database file) and ``wal`` (its write-ahead log)."""
        (row,) = await self._fetchall("SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()")
        pages, free, size = row
        wal = 0
        if self.path != ":memory:":
            try:
                wal = Path(self.path + "-wal").stat().st_size
            except OSError:
                wal = 0
        return {"used": (pages - free) * size, "file": pages * size, "wal": wal}

    # -- messages ----------------------------------------------------------------------------

    async def get(self, message_id: str) -> Envelope | None:
        raw = await self.get_raw(message_id)
        return _envelope(raw) if raw is not None else None

    async def get_raw(self, message_id: str) -> bytes | None:
        rows = await self._fetchall("SELECT raw FROM messages WHERE id = ?", (message_id,))
        return bytes(rows[0][0]) if rows else None

    async def get_many_raw(self, ids: Iterable[str]) -> list[bytes]:
        """Canonical bytes of the stored ones among ``ids``, in the order asked (missing skipped)."""
        ids = list(dict.fromkeys(ids))
        rows = await self._fetch_in("SELECT id, raw FROM messages WHERE id IN ({})", ids)
        found = {r[0]: bytes(r[1]) for r in rows}
        return [found[i] for i in ids if i in found]

    async def sizes(self, ids: Iterable[str]) -> dict[str, int]:
        """{id: canonical bytes} of the stored ones among ``ids`` (length() of a blob reads no content)."""
        rows = await self._fetch_in("SELECT id, length(raw) FROM messages WHERE id IN ({})", list(dict.fromkeys(ids)))
        return {r[0]: r[1] for r in rows}

    async def has_ids(self, ids: Iterable[str]) -> set[str]:
        rows = await self._fetch_in("SELECT id FROM messages WHERE id IN ({})", list(dict.fromkeys(ids)))
        return {r[0] for r in rows}

    async def items(self, lo: Any = None, hi: Any = None) -> list[tuple[int, str]]:
        """(created_at, id) pairs in [lo, hi), ascending: the set that reconciliation compares."""
        where, params = [], []
        if lo is not None:
            where.append("(created_at, id) >= (?, ?)")
            params.extend(_bound(lo))
        if hi is not None:
            where.append("(created_at, id) < (?, ?)")
            params.extend(_bound(hi))
        sql = "SELECT created_at, id FROM messages" + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._fetchall(sql + " ORDER BY created_at, id", params)
        return [(r[0], r[1]) for r in rows]

    async def counts(self) -> dict[str, int]:
        # One COUNT per kind: each is answered from that kind's partial index (store/schema.py),
        # where a GROUP BY kind would read every row.
        sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM messages WHERE kind = '{kind}')" for kind in KINDS)
        (row,) = await self._fetchall(sql)
        return dict(zip(KINDS, row))

    async def votes_by_verdict(self) -> dict[str, int]:
        """Stored votes per verdict (every vote, superseded ones included): the /metrics gauge."""
        return dict(await self._fetchall("SELECT verdict, COUNT(*) FROM messages WHERE kind = 'vote' GROUP BY verdict"))

    async def claim_tasks(self) -> dict[str, int]:
        """Claims per task id, tasks this replica holds no task message for included."""
        return dict(await self._fetchall("SELECT task, COUNT(*) FROM messages WHERE kind = 'claim' GROUP BY task"))

    async def tasks(self) -> list[Envelope]:
        """One envelope per task id (the earliest publication of it)."""
        rows = await self._fetchall("SELECT task, raw FROM messages WHERE kind = 'task' ORDER BY created_at, id")
        first: dict[str, bytes] = {}
        for task, raw in rows:
            first.setdefault(task, raw)
        return [_envelope(raw) for raw in first.values()]

    async def claims(self, task_id: str) -> list[Envelope]:
        rows = await self._fetchall(
            "SELECT raw FROM messages WHERE task = ? AND kind = 'claim' ORDER BY created_at, id", (task_id,))
        return [_envelope(r[0]) for r in rows]

    async def votes(self, claim_id: str) -> list[Envelope]:
        rows = await self._fetchall(
            "SELECT raw FROM messages WHERE claim = ? AND kind = 'vote' ORDER BY created_at, id", (claim_id,))
        return [_envelope(r[0]) for r in rows]

    async def lineage(self, claim_id: str) -> dict[str, list[Envelope]]:
        """Ancestors root-first (as far as this replica holds them) and direct children."""
        ancestors: list[Envelope] = []
        seen = {claim_id}
        claim = await self.get(claim_id)
        parent = claim.body.get("parent") if claim is not None and claim.kind == "claim" else None
        while parent and parent not in seen:
            seen.add(parent)
            env = await self.get(parent)
            if env is None or env.kind != "claim":
                break
            ancestors.append(env)
            parent = env.body.get("parent")
        rows = await self._fetchall(
            "SELECT raw FROM messages WHERE parent = ? AND kind = 'claim' ORDER BY created_at, id", (claim_id,))
        return {"ancestors": ancestors[::-1], "children": [_envelope(r[0]) for r in rows]}

    async def peer_records(self, now: int | None = None) -> list[Envelope]:
        """Per author, the newest peer record that has not expired."""
        now = int(time.time()) if now is None else now
        rows = await self._fetchall(
            "SELECT author, raw FROM messages WHERE kind = 'peer' AND expires_at > ? "
            "ORDER BY author, created_at DESC, id DESC", (now,))
        newest: dict[str, bytes] = {}
        for author, raw in rows:
            newest.setdefault(author, raw)
        return [_envelope(raw) for raw in newest.values()]

    async def source_hashes(self, task_id: str) -> set[str]:
        rows = await self._fetchall(
            "SELECT DISTINCT source_sha256 FROM messages WHERE task = ? AND kind = 'claim'", (task_id,))
        return {r[0] for r in rows}

    async def export(self, task_id: str | None = None, page: int = 500) -> AsyncIterator[bytes]:
        """Canonical bytes in (created_at, id) order; with ``task_id``, its task, claims and their votes.

        Pages by key (not one long cursor) so an export never pins a WAL snapshot for its duration.
        """
        if task_id is None:
            where, params = "1", []
        else:
            where = ("((kind IN ('task', 'claim') AND task = ?) OR (kind = 'vote' AND claim IN "
                     "(SELECT id FROM messages WHERE kind = 'claim' AND task = ?)))")
            params = [task_id, task_id]
        after = (-1, "")
        while True:
            rows = await self._fetchall(
                f"SELECT created_at, id, raw FROM messages WHERE {where} AND (created_at, id) > (?, ?) "
                "ORDER BY created_at, id LIMIT ?", [*params, *after, page])
            for row in rows:
                yield bytes(row[2])
            if len(rows) < page:
                return
            after = (rows[-1][0], rows[-1][1])

    # -- trust and ranking -------------------------------------------------------------------

    def _invalidate_trust(self) -> None:
        self._trust_generation += 1  # the view computed before stays, as a stale one

    async def _trust_view(self) -> TrustView:
        """The current trust view; or, within ``trust_min_interval_s`` of the last computation, that
        one. Computed in a worker thread; readers arriving meanwhile share the computation."""
        view, generation = self._trust, self._trust_generation
        if view is not None and (self._trust_gen == generation
                                 or _monotonic() - self._trust_at < self.settings.trust_min_interval_s):
            return view
        task = self._trust_task
        if task is None or task.done() or (self._trust_task_gen != generation
                                           and self.settings.trust_min_interval_s <= 0):
            task = self._trust_task = asyncio.ensure_future(self._compute_trust(generation))
            self._trust_task_gen = generation
        return await asyncio.shield(task)

    @property
    def trust_current(self) -> bool:
        """False while readers are served a trust view older than the messages stored."""
        return self._trust_gen == self._trust_generation

    async def _compute_trust(self, generation: int) -> TrustView:
        async with self._trust_lock:
            trusted, settings = self.trusted_set(), self.settings.trust
            state, seen = self._trust_state, self._trust_seen
            if state is None or self._trust_reset or not state.matches(self.self_key, trusted, settings):
                state, seen, self._trust_reset = TrustState(self.self_key, trusted, settings), 0, False
            if self._trust_floor is not None:  # rows above it went; any there now are new (reused rowids)
                seen, self._trust_floor = min(seen, self._trust_floor), None
            (top,) = await self._fetchall("SELECT max(rowid) FROM messages")
            upto = top[0] or 0  # a snapshot's bound: rows committed later have higher rowids
            claims = await self._fetchall("SELECT id, author, claimed_bpb FROM messages WHERE kind = 'claim' "
                                          "AND rowid > ? AND rowid <= ? ORDER BY rowid", (seen, upto))
            rows = await self._fetchall(f"SELECT {VOTE_COLUMNS} FROM messages WHERE kind = 'vote' "
                                        "AND rowid > ? AND rowid <= ? ORDER BY rowid", (seen, upto))
            # taken after the rows were read: a row deleted since is read and then forgotten
            removed, self._trust_removed = self._trust_removed, []

            def work() -> TrustView:  # rows to facts and the computation: both in the worker thread
                # the collector paused: a collection over these objects would hold the GIL, and the loop
                with gc_paused():
                    state.add(claims, [_vote(r) for r in rows])
                    state.remove(removed)
                    return state.view()

            self._trust_state = None  # until this update is whole (an error or a cancel: a new state next time)
            view = await asyncio.to_thread(work)
            self._trust_state, self._trust_seen = state, upto
        if generation >= self._trust_gen:  # never replace a view of later messages by an older one
            self._trust, self._trust_gen, self._trust_at = view, generation, _monotonic()
        return view

    async def trust(self) -> dict[str, float]:
        return dict((await self._trust_view()).weights)

    async def voting_power(self) -> Callable[[str], float]:
        """What a key's vote weighs in this node's view (pre-trusted 1, distrusted 0, else earned)."""
        return (await self._trust_view()).power_of

    async def statuses(self, task_id: str) -> dict[str, ClaimStatus]:
        """This node's status of every claim of a task (kept with the board until something is stored)."""
        return dict((await self._statuses(task_id))[1])

    async def claim_status(self, claim_id: str) -> ClaimStatus | None:
        """This node's view of one claim; None when the replica does not hold it."""
        claim = await self.get(claim_id)
        if claim is None or claim.kind != "claim":
            return None
        view = await self._trust_view()
        rows = await self._fetchall(f"SELECT {VOTE_COLUMNS} FROM messages WHERE claim = ? AND kind = 'vote'",
                                    (claim_id,))
        sigma_of = await self._sigma_of(claim.body["task"])
        return ranking.claim_status(claim, [_vote(r) for r in rows], view, self.self_key, self.settings.ranking,
                                    sigma_of(claim) if sigma_of else None)

    async def significance(self, claim_id: str) -> Significance | None:
        """The claim's test against its parent or its task's baseline claim (store/stats.py)."""
        claim = await self.get(claim_id)
        if claim is None or claim.kind != "claim":
            return None
        claims, statuses = await self._statuses(claim.body["task"])
        return ranking.significances(claims, statuses, await self._baseline_sha(claim.body["task"])).get(claim_id)

    async def _task_body(self, task_id: str) -> dict | None:
        body = self._task_bodies.get(task_id)
        if body is not None:
            return body
        rows = await self._fetchall("SELECT raw FROM messages WHERE kind = 'task' AND task = ? LIMIT 1", (task_id,))
        if not rows:
            return None
        if len(self._task_bodies) >= TASK_CACHE:
            self._task_bodies.clear()
        body = self._task_bodies[task_id] = _envelope(rows[0][0]).body
        return body

    def _cached(self, cache: dict, task_id: str, generation: int, value: tuple) -> None:
        """Keep a task's computed view if nothing was stored meanwhile and the task is known (a task
        message arriving bumps no generation: without it the view had no noise and no baseline)."""
        # and only if computed with the current trust view (not a stale one within the interval)
        if generation == self._trust_generation == self._trust_gen and task_id in self._task_bodies:
            if len(cache) >= TASK_CACHE:
                cache.clear()
            cache[task_id] = (generation, *value)

    async def _baseline_sha(self, task_id: str) -> str | None:
        """SHA-256 of the task's source: the baseline claim's source (protocol/SPEC.md 5.9)."""
        body = await self._task_body(task_id)
        return hashlib.sha256(body["source"].encode("utf-8")).hexdigest() if body is not None else None

    async def _sigma_of(self, task_id: str) -> Callable[[Envelope], ranking.SigmaOf] | None:
        """For a task this replica holds, a claim's seed noise by device class, at the claim's token
        budget (its reproductions run at result.tokens). None: no task, no estimate."""
        body = await self._task_body(task_id)
        if body is None:
            return None
        tolerance, noise, budget = float(body["tolerance"]), self.settings.noise, body["budget"]["tokens"]

        def for_claim(claim: Envelope) -> ranking.SigmaOf:
            tokens = (claim.body.get("result") or {}).get("tokens")
            return lambda device: noise.sigma(task_id, device, tolerance, tokens, budget)
        return for_claim

    async def _statuses(self, task_id: str) -> tuple[list[Envelope], dict[str, ClaimStatus]]:
        generation = self._trust_generation
        hit = self._status_cache.get(task_id)
        if hit is not None and hit[0] == generation:
            return hit[1], hit[2]
        claims = await self.claims(task_id)
        view = await self._trust_view()
        sigma_of = await self._sigma_of(task_id)
        rows = await self._fetchall(
            f"SELECT {VOTE_COLUMNS} FROM messages WHERE kind = 'vote' AND claim IN "
            "(SELECT id FROM messages WHERE task = ? AND kind = 'claim')", (task_id,))
        by_claim = ranking.group_votes(_vote(r) for r in rows)
        statuses = {c.id: ranking.claim_status(c, by_claim.get(c.id, []), view, self.self_key,
                                               self.settings.ranking, sigma_of(c) if sigma_of else None)
                    for c in claims}
        self._cached(self._status_cache, task_id, generation, (claims, statuses))
        return claims, statuses

    async def received_at(self, message_id: str) -> int | None:
        """When this node first stored a message (its own: when published); None if unknown."""
        rows = await self._fetchall("SELECT received_at FROM messages WHERE id = ?", (message_id,))
        return rows[0][0] if rows else None

    async def _board(self, task_id: str) -> tuple[Leaderboard, dict[str, ClaimStatus]]:
        generation = self._trust_generation
        claims, statuses = await self._statuses(task_id)
        hit = self._board_cache.get(task_id)
        if hit is not None and hit[0] == generation:
            return hit[1], statuses
        own = dict(await self._fetchall(
            "SELECT id, received_at FROM messages WHERE task = ? AND kind = 'claim'", (task_id,)))
        votes = [_vote(r) for r in await self._fetchall(
            f"SELECT {VOTE_COLUMNS} FROM messages WHERE kind = 'vote' AND claim_received_at IS NOT NULL AND claim IN "
            "(SELECT id FROM messages WHERE task = ? AND kind = 'claim')", (task_id,))]
        received = ranking.receipt_times(claims, own, votes, await self._trust_view())
        board = ranking.leaderboard(claims, statuses, await self._baseline_sha(task_id), received)
        self._cached(self._board_cache, task_id, generation, (board,))
        return board, statuses

    async def leaderboard(self, task_id: str) -> Leaderboard:
        return (await self._board(task_id))[0]

    async def top_entries(self, task_id: str, k: int) -> list[Entry]:
        board, statuses = await self._board(task_id)
        return ranking.top_entries(board, statuses, k, self.settings.ranking)

    # -- local settings ----------------------------------------------------------------------

    def trusted_set(self) -> frozenset[str]:
        return frozenset(self._config_trusted | self._db_trusted)

    async def set_trusted(self, key: str, trusted: bool = True) -> None:
        """Trust (persisted) or stop trusting a key, this session's configured keys included."""
        _check_key(key, "trusted key")
        async with self._write_lock:
            writer = self._conn(self._writer)
            if trusted:
                await writer.execute("INSERT OR IGNORE INTO trusted_keys(key, added_at) VALUES (?, ?)",
                                     (key, int(time.time())))
                self._db_trusted.add(key)
            else:
                await writer.execute("DELETE FROM trusted_keys WHERE key = ?", (key,))
                self._db_trusted.discard(key)
                self._config_trusted.discard(key)
        self._invalidate_trust()

    async def trusted_keys(self) -> list[str]:
        return sorted(self.trusted_set())
