"""JSON shapes of what the node shows: leaderboard entries, claim detail. Shared by the HTTP API,
the CLI's --json output and the dashboard, so all three say the same thing (protocol/SPEC.md 10.2.8).

Luck is not progress (docs/design.md): an entry carries its ``estimate`` (mean, standard error, count
and pooled sigma of the trusted fresh-seed reproductions; null without any) and its ``significance``
(state, corrected p-value, z and the reference claim it was tested against), and keeps the
claimant's own value apart as ``claimed_bpb``: that run may be the luckiest of many seeds.
"""
from __future__ import annotations

from typing import Any


def estimate_json(estimate: Any) -> dict[str, Any] | None:
    """``{"mean", "se", "sigma": decimal strings, "n": int}`` (store/stats.py Estimate), or None."""
    return None if estimate is None else estimate.to_json()


def significance_json(significance: Any) -> dict[str, Any] | None:
    """``{"state", "p": number or null, "z": number or null, "reference": id or null}``, or None."""
    return None if significance is None else significance.to_json()


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
        "estimate": estimate_json(getattr(entry, "estimate", None)),
        "significance": significance_json(getattr(entry, "significance", None)),
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
        "non_deterministic": [entry_json(e) for e in getattr(board, "non_deterministic", [])],
        "duplicates": [entry_json(e) for e in getattr(board, "duplicates", [])],
    }


async def message_json(replica: Any, env: Any) -> dict[str, Any]:
    """An envelope plus what this node makes of it: for a claim, its status, its estimate from
    fresh-seed reproductions, its test against its reference (with the reference's estimate), and
    its votes (``fresh``: the vote's run was at the voter's fresh seed, carrying a seed_proof)."""
    out: dict[str, Any] = {"envelope": env.to_dict()}
    if env.kind == "claim":
        st = await replica.claim_status(env.id)
        sig = await replica.significance(env.id)
        ref = sig.reference if sig is not None else None
        ref_status = await replica.claim_status(ref) if ref is not None else None
        votes = await replica.votes(env.id)
        out["status"] = {
            "status": st.status,
            "support": round(st.support, 4),
            "against": round(st.against, 4),
            "over": round(getattr(st, "over", 0.0), 4),
            "own_vote": st.own_vote,
            "reproduced_bpb": st.reproduced_bpb,
            "claimed_bpb": (env.body["result"] or {}).get("val_bpb"),
            "estimate": estimate_json(st.estimate),
            "significance": significance_json(sig),
            "reference_estimate": estimate_json(ref_status.estimate if ref_status is not None else None),
        }
        out["votes"] = [
            {"id": v.id, "voter": v.author, "verdict": v.body["verdict"], "reason": v.body["reason"],
             "val_bpb": (v.body["result"] or {}).get("val_bpb"), "fresh": "seed_proof" in v.body,
             "created_at": v.created_at}
            for v in votes
        ]
    return out
