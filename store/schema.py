"""Schema of the replica and its versioned migrations (docs/design.md, "Layout": store/).

Each migration runs in its own transaction together with the row that records it in
``schema_migrations`` (the sqlite-utils pattern): a crash leaves either both or neither.
Migrations are append-only; a released one is never edited, a change is a new version.
"""
from __future__ import annotations

import time

import aiosqlite

from .errors import StoreError

# (version, name, statements). One message per row; the indexed columns are extracted per
# kind at ingest (store/extract.py) so queries never parse the stored canonical bytes.
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (
        1,
        "messages and local settings",
        (
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,          -- envelope id, 64 hex
                kind TEXT NOT NULL,           -- task | claim | vote | peer
                author TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                raw BLOB NOT NULL,            -- canonical envelope bytes, exactly as sent on
                task TEXT,                    -- task: its task id; claim: body.task
                parent TEXT,                  -- claim: body.parent (NULL = task baseline)
                source_sha256 TEXT,           -- claim
                outcome TEXT,                 -- claim
                claimed_bpb TEXT,             -- claim: body.result.val_bpb (decimal string)
                claim TEXT,                   -- vote: body.claim
                verdict TEXT,                 -- vote
                vote_bpb TEXT,                -- vote: body.result.val_bpb
                expires_at INTEGER            -- peer
            )""",
            # Range-based set reconciliation walks (created_at, id) (docs/design.md, "Gossip and sync").
            "CREATE INDEX messages_by_time ON messages(created_at, id)",
            # The rest are partial, one kind each: a row enters only the indexes its kind's queries
            # use (store/replica.py; each query names its kind, which lets SQLite use them), and
            # each index costs every insert of that kind (scripts/bench/ingest).
            "CREATE INDEX tasks_by_time ON messages(created_at, id) WHERE kind = 'task'",
            "CREATE INDEX claims_by_task ON messages(task) WHERE kind = 'claim'",
            "CREATE INDEX claims_by_parent ON messages(parent) WHERE kind = 'claim' AND parent IS NOT NULL",
            "CREATE INDEX votes_by_claim ON messages(claim) WHERE kind = 'vote'",
            "CREATE INDEX peers_by_author ON messages(author) WHERE kind = 'peer'",
            # Operator-trusted keys persisted by set_trusted (the pre-trusted set: docs/design.md, "Ranking and trust").
            "CREATE TABLE trusted_keys (key TEXT PRIMARY KEY, added_at INTEGER NOT NULL)",
        ),
    ),
    (
        2,
        "device class of results, fresh-seed votes",
        (
            # claim, vote: body.result.device, the hardware class a result was measured on
            # (docs/design.md, "Luck is not progress"); NULL without a result.
            "ALTER TABLE messages ADD COLUMN device TEXT",
            # vote: 1 when it carries a seed_proof (a full run at the voter's fresh seed), else NULL.
            "ALTER TABLE messages ADD COLUMN fresh INTEGER",
            "UPDATE messages SET device = json_extract(raw, '$.body.result.device') "
            "WHERE kind IN ('claim', 'vote')",
            "UPDATE messages SET fresh = 1 WHERE kind = 'vote' AND json_extract(raw, '$.body.seed_proof') IS NOT NULL",
        ),
    ),
    (
        3,
        "receipt times",
        (
            # When this node first stored the message (its own clock; its own messages: when published).
            # Rows from before this migration keep NULL: unknown, never earlier than a known receipt.
            "ALTER TABLE messages ADD COLUMN received_at INTEGER",
            # vote: body.claim_received_at, when the voter first received the claim (protocol/SPEC.md 5.4).
            "ALTER TABLE messages ADD COLUMN claim_received_at INTEGER",
            "UPDATE messages SET claim_received_at = json_extract(raw, '$.body.claim_received_at') WHERE kind = 'vote'",
        ),
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]


async def current_version(conn: aiosqlite.Connection) -> int:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
        (version,) = await cur.fetchone()
    return int(version)


async def migrate(conn: aiosqlite.Connection) -> int:
    """Bring the database to LATEST_VERSION; returns the version found before migrating.

    ``conn`` must be in autocommit mode (isolation_level=None) so that BEGIN/COMMIT here are ours.
    """
    found = await current_version(conn)
    if found > LATEST_VERSION:
        raise StoreError(
            f"database schema version {found} is newer than this ralphswarm understands ({LATEST_VERSION}); "
            "upgrade ralphswarm"
        )
    for version, name, statements in MIGRATIONS:
        if version <= found:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, int(time.time())),
            )
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    return found
