"""JSON shapes of what the node shows: leaderboard entries, claim detail. Shared by the HTTP API,
the CLI's --json output and the dashboard, so all three say the same thing."""
from __future__ import annotations

from typing import Any


def entry_json(entry: Any) -> dict[str, Any]:
    claim = entry.claim
    return {
        "claim": claim.id,
        "author": claim.author,
        "created_at": claim.created_at,
        "parent": claim.body["parent"],
        "source_sha256": claim.body["source_sha256"],
        "outcome": claim.body["outcome"],
        "note": claim.body["note"],
        "status": entry.status,
        "val_bpb": entry.val_bpb,
        "claimed_bpb": entry.claimed_bpb,
        "support": round(entry.support, 4),
        "against": round(getattr(entry, "against", 0.0), 4),
        "over": round(getattr(entry, "over", 0.0), 4),
        "votes": entry.votes,
        "duplicate_of": getattr(entry, "duplicate_of", None),
    }


async def leaderboard_json(replica: Any, task_id: str) -> dict[str, Any]:
    board = await replica.leaderboard(task_id)
    return {
        "task": task_id,
        "verified": [entry_json(e) for e in board.verified],
        "pending": [entry_json(e) for e in board.pending],
        "disputed": [entry_json(e) for e in board.disputed],
        "over_budget": [entry_json(e) for e in getattr(board, "over_budget", [])],
        "duplicates": [entry_json(e) for e in getattr(board, "duplicates", [])],
    }


async def message_json(replica: Any, env: Any) -> dict[str, Any]:
    """An envelope plus what this node makes of it (status and votes for a claim)."""
    out: dict[str, Any] = {"envelope": env.to_dict()}
    if env.kind == "claim":
        st = await replica.claim_status(env.id)
        votes = await replica.votes(env.id)
        out["status"] = {
            "status": st.status,
            "support": round(st.support, 4),
            "against": round(st.against, 4),
            "over": round(getattr(st, "over", 0.0), 4),
            "own_vote": st.own_vote,
            "reproduced_bpb": st.reproduced_bpb,
        }
        out["votes"] = [
            {"id": v.id, "voter": v.author, "verdict": v.body["verdict"], "reason": v.body["reason"],
             "val_bpb": (v.body["result"] or {}).get("val_bpb"), "created_at": v.created_at}
            for v in votes
        ]
    return out
