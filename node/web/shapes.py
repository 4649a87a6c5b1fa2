"""JSON shapes of what the node shows: leaderboard entries, claim detail. Shared by the HTTP API,
the CLI's --json output and the dashboard, so all three say the same thing (protocol/SPEC.md 10.2.8).

Luck is not progress (docs/design.md): an entry carries its ``estimate`` (mean, standard error, count
and pooled sigma of the trusted fresh-seed reproductions; null without any) and its ``significance``
(state, corrected p-value, z and the reference claim it was tested against), and keeps the
claimant's own value apart as ``claimed_bpb``: that run may be the luckiest of many seeds.
"""
from __future__ import annotations

from typing import Any

from node.ids import short

# What "support" counts, said wherever it is shown (CLI, dashboard, API).
SUPPORT_UNIT = ("trusted weight of reproducing votes, in runs: 1.0 = one run by this node or by a key "
                "its operator trusts; keys trust was passed on to weigh less")
OWN_UNVERIFIED = "own, unverified by others"


def estimate_json(estimate: Any) -> dict[str, Any] | None:
    """``{"mean", "se", "sigma": decimal strings, "n": int}`` (store/stats.py Estimate), or None."""
    return None if estimate is None else estimate.to_json()


def significance_json(significance: Any) -> dict[str, Any] | None:
    """``{"state", "p": number or null, "z": number or null, "reference": id or null}``, or None."""
    return None if significance is None else significance.to_json()


def rank_value(entry_or_json: Any) -> float | None:
    """The value the board ranks by, as a number: the estimate's mean, else val_bpb."""
    e = entry_or_json
    est = e["estimate"] if isinstance(e, dict) else estimate_json(getattr(e, "estimate", None))
    value = est["mean"] if est else (e["val_bpb"] if isinstance(e, dict) else e.val_bpb)
    return float(value) if value is not None else None


def is_baseline(claim: Any) -> bool:
    """A run of the task's own source: no parent, empty patch (SPEC 5.9)."""
    return claim.body["parent"] is None and claim.body["patch"] == ""


async def own_unverified(replica: Any, entries: list[Any], self_key: str | None) -> set[str]:
    """The ids of this node's own verified claims that no other key has reproduced: the board
    counts the node's own run as support, but nobody else has confirmed it, so the CLI and the
    dashboard list them apart as "own, unverified by others" and rank only the rest."""
    out = set()
    for e in entries:
        if e.claim.author == self_key and e.status == "verified":
            votes = await replica.votes(e.claim.id)
            if not any(v.author != self_key and v.body["verdict"] == "reproduced" for v in votes):
                out.add(e.claim.id)
    return out


def entry_json(entry: Any, self_key: str | None = None, unverified: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """``own_unverified``: see ``own_unverified``."""
    claim = entry.claim
    return {
        "claim": claim.id,
        "short": short(claim.id),
        "author": claim.author,
        "own": claim.author == self_key,
        "own_unverified": claim.id in unverified,
        "baseline": is_baseline(claim),
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


def _baseline(lists: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The task's baseline as the board knows it: its verified baseline run (the best measured:
    most samples), else a pending one; ``val_bpb`` is its rank value (estimate mean or val_bpb)."""
    for section in ("verified", "pending"):
        runs = [e for e in lists[section] if e["baseline"] and rank_value(e) is not None]
        if runs:
            best = max(runs, key=lambda e: ((e["estimate"] or {}).get("n", 0), -rank_value(e)))
            return {"claim": best["claim"], "short": best["short"], "status": section,
                    "val_bpb": f"{rank_value(best):.6f}"}
    return None


async def leaderboard_json(replica: Any, task_id: str) -> dict[str, Any]:
    """The board (SPEC 10.2.8) plus what explains it: ``support_unit``, the ``baseline`` (claim and
    val_bpb) and each entry's ``delta`` from it (negative: better), ``own_unverified`` per entry
    and ``ranked``: the ids of the verified entries ranked, in order (own unverified ones left out)."""
    board = await replica.leaderboard(task_id)
    me = getattr(replica, "self_key", None)
    mine = await own_unverified(replica, board.verified, me)
    lists = {
        "verified": [entry_json(e, me, mine) for e in board.verified],
        "pending": [entry_json(e, me) for e in board.pending],
        "disputed": [entry_json(e, me) for e in board.disputed],
        "over_budget": [entry_json(e, me) for e in getattr(board, "over_budget", [])],
        "non_deterministic": [entry_json(e, me) for e in getattr(board, "non_deterministic", [])],
        "duplicates": [entry_json(e, me) for e in getattr(board, "duplicates", [])],
    }
    base = _baseline(lists)
    for entries in lists.values():
        for e in entries:
            value = rank_value(e)
            e["delta"] = (f"{value - float(base['val_bpb']):+.6f}" if base is not None and value is not None
                          else None)
    return {"task": task_id, **lists, "baseline": base, "support_unit": SUPPORT_UNIT,
            "ranked": [e["claim"] for e in lists["verified"] if not e["own_unverified"]]}


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
             "created_at": v.created_at, "seed": (v.body["result"] or {}).get("seed")}
            for v in votes
        ]
    return out
