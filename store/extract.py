"""One message -> one ``messages`` row: the canonical bytes plus the columns queries index.

Pure: an already-decoded Envelope in, a tuple out. The columns are a cache of the body,
so queries (claims of a task, votes of a claim, lineage) never re-parse stored bytes.
"""
from __future__ import annotations

from protocol import Envelope, task_id

COLUMNS = (
    "id", "kind", "author", "created_at", "raw", "task", "parent", "source_sha256",
    "outcome", "claimed_bpb", "claim", "verdict", "vote_bpb", "expires_at", "device", "fresh",
    "received_at", "claim_received_at",
)
INSERT_SQL = f"INSERT INTO messages({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
INSERT_OR_IGNORE_SQL = INSERT_SQL.replace("INSERT", "INSERT OR IGNORE", 1)


def canonical_bytes(env: Envelope) -> bytes:
    """The bytes stored and served: decode() keeps the canonical encoding it checked, so this is
    free for decoded envelopes (docs/design.md, "The wire": messages are stored as canonical bytes)."""
    return env.canonical()


def _bpb(result) -> str | None:
    return result.get("val_bpb") if isinstance(result, dict) else None


def _device(result) -> str | None:
    return result.get("device") if isinstance(result, dict) else None


def row(env: Envelope, raw: bytes, received_at: int | None = None) -> tuple:
    """``received_at``: when this node stored it (store/replica.py ingest), for credit and trust by receipt."""
    body = env.body
    task = parent = source = outcome = claimed = claim = verdict = vote_bpb = expires = device = fresh = None
    claim_received = None
    kind = env.kind
    if kind == "claim":
        task, parent, source = body["task"], body["parent"], body["source_sha256"]
        outcome, claimed, device = body["outcome"], _bpb(body["result"]), _device(body["result"])
    elif kind == "vote":
        claim, verdict, vote_bpb = body["claim"], body["verdict"], _bpb(body["result"])
        device, fresh = _device(body["result"]), (1 if "seed_proof" in body else None)
        claim_received = body.get("claim_received_at")
    elif kind == "task":
        task = task_id(body)
    elif kind == "peer":
        expires = body["expires_at"]
    return (env.id, kind, env.author, env.created_at, raw, task, parent, source,
            outcome, claimed, claim, verdict, vote_bpb, expires, device, fresh, received_at, claim_received)
