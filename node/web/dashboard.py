"""The dashboard (docs/design.md, "What a user sees"): one page at `/`, its JS and CSS from node/web/static/,
and the read-only JSON it polls under /api/.

The page is static and draws everything from the JSON, so what the browser shows is exactly what
the API says; nothing is fetched from outside the node (it must work on an offline LAN). All text
that comes from the corpus (notes, diffs, reasons) is inserted by the JS as text, never as HTML.
"""
from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from protocol import is_hex, task_id

from node import ids
from node.errors import UserError
from node.net.api import NODE, BadRequest
from node.net.swarmkey import AUTH_HEADER
from node.web.progress import experiment_rows, progress_json
from node.web.shapes import leaderboard_json, message_json, own_unverified

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css",
         "favicon.svg": "image/svg+xml"}
# The page runs only its own script and style: a note or diff that slipped past escaping still
# could not load or run anything.
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
}
LOCAL_PATHS = ("/", "/static/", "/api/", "/metrics", "/favicon.ico")


def local_view(request: web.Request) -> bool:
    """In a private swarm, let the operator's own browser read the dashboard in clear.

    Only GETs from loopback to the dashboard's paths that carry no swarm-key header: peers (and
    the CLI, which speaks sealed) still go through the swarm key, and nobody off this machine can
    read the corpus without it (docs/design.md, "Discovery and swarms").
    """
    if request.method != "GET" or AUTH_HEADER in request.headers:
        return False
    try:
        if not ipaddress.ip_address(request.remote or "").is_loopback:
            return False
    except ValueError:
        return False
    path = request.path
    return path == "/" or any(path.startswith(p) for p in LOCAL_PATHS[1:])


def _static(name: str):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=(STATIC / name).read_bytes(), content_type=FILES[name], charset="utf-8",
                            headers=HEADERS)
    return handler


async def _task_param(request: web.Request) -> str:
    node = request.app[NODE]
    task = request.query.get("task") or await node.default_task_id()
    if not is_hex(task, 64):
        raise BadRequest("invalid: task must be a 64-hex task id")
    return task


def _points(result: Any) -> list[list[float]]:
    """A result's loss curve as numbers for drawing (the wire carries decimal strings)."""
    if not isinstance(result, dict):
        return []
    out = []
    for tokens, loss in result.get("curve") or []:
        try:
            out.append([int(tokens), float(loss)])
        except (TypeError, ValueError):
            continue
    return out


def _result_summary(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, dict):
        return None
    return {k: result.get(k) for k in ("val_bpb", "tokens", "seed", "wall_s", "cpu_s", "peak_mem_mb", "device", "torch", "sandbox")}


async def tasks(request: web.Request) -> web.Response:
    """Every task this node knows: its default task, task messages, and task ids that claims name."""
    node = request.app[NODE]
    default = await node.default_task_id()
    counts = await node.replica.claim_tasks()
    names = {task_id(env.body): env.body.get("name") for env in await node.replica.tasks()}
    ids = list(dict.fromkeys([default, *sorted(counts, key=lambda t: -counts[t]), *names]))
    out = []
    for tid in ids:
        task = await node.tasks.get(tid)
        out.append({"id": tid, "name": task.name if task is not None else names.get(tid),
                    "claims": counts.get(tid, 0), "default": tid == default})
    return web.json_response({"default": default, "tasks": out})


async def leaderboard(request: web.Request) -> web.Response:
    return web.json_response(await leaderboard_json(request.app[NODE].replica, await _task_param(request)))


async def claim(request: web.Request) -> web.Response:
    """A claim as this node sees it, plus the loss curves of the claim and of every reproduction."""
    node = request.app[NODE]
    text = request.match_info["id"]
    if not ids.is_prefix(text):
        raise BadRequest(f"invalid: a claim id is {ids.MIN_PREFIX} to 64 lower-case hex digits")
    try:  # any unique prefix, as the CLI takes it (node/ids.py)
        claim_id, _ = await ids.resolve(node.replica, text, kinds=("claim",))
    except UserError as exc:
        if exc.message.startswith("ambiguous"):
            raise BadRequest(exc.message, status=409) from None
        raise BadRequest("unknown claim", status=404) from None
    env = await node.replica.get(claim_id)
    out = await message_json(node.replica, env)
    trust = await node.replica.trust()
    trusted = node.replica.trusted_set()
    votes = {v.id: v for v in await node.replica.votes(claim_id)}
    for vote in out["votes"]:
        vote["trust"] = round(trust.get(vote["voter"], 0.0), 4)
        vote["operator_trusted"] = vote["voter"] in trusted or vote["voter"] == node.identity.pubkey
        vote["result"] = _result_summary(votes[vote["id"]].body["result"])
    out["claimed"] = _result_summary(env.body["result"])
    out["curves"] = [{"label": "claim", "kind": "claim", "author": env.author, "verdict": None,
                      "points": _points(env.body["result"])}]
    for vote in votes.values():
        points = _points(vote.body["result"])
        if points:
            out["curves"].append({"label": f"vote {vote.author[:8]}", "kind": "vote", "author": vote.author,
                                  "verdict": vote.body["verdict"], "points": points})
    lineage = await node.replica.lineage(claim_id)
    out["lineage"] = {k: [{"claim": c.id, "note": c.body["note"], "outcome": c.body["outcome"]} for c in v]
                      for k, v in lineage.items()}
    return web.json_response(out)


async def lineage(request: web.Request) -> web.Response:
    """The task's claims as a flat list with parent links (the page nests them): a flat list
    cannot hit a JSON nesting limit however long a lineage grows. ``state``: the claim's test
    against its reference (protocol/SPEC.md 5.9) for the claims the board lists, else null."""
    node = request.app[NODE]
    task = await _task_param(request)
    claims = await node.replica.claims(task)
    board = await node.replica.leaderboard(task)
    mine = await own_unverified(node.replica, board.verified, node.identity.pubkey)  # not ranked (shapes.py)
    ranked = [e for e in board.verified if e.claim.id not in mine]
    rank = {e.claim.id: i + 1 for i, e in enumerate(ranked)}
    entries = {e.claim.id: e for group in (board.verified, board.pending, board.disputed, board.over_budget,
                                           board.non_deterministic, board.duplicates) for e in group}
    ids = {c.id for c in claims}
    nodes = []
    for c in claims:
        e = entries.get(c.id)
        parent = c.body["parent"]
        nodes.append({"claim": c.id, "parent": parent if parent in ids else None,
                      "parent_missing": parent is not None and parent not in ids, "author": c.author,
                      "created_at": c.created_at, "note": c.body["note"], "outcome": c.body["outcome"],
                      "status": ("duplicate" if e.duplicate_of else e.status) if e else c.body["outcome"],
                      "val_bpb": e.val_bpb if e else None, "rank": rank.get(c.id),
                      "state": e.significance.state if e and e.significance else None})
    return web.json_response({"task": task, "nodes": nodes})


async def progress(request: web.Request) -> web.Response:
    """This node's own experiments on a task, as the progress chart draws them (node/web/progress.py)."""
    node = request.app[NODE]
    task = await _task_param(request)
    rows = experiment_rows(await node.replica.claims(task), node.identity.pubkey)
    return web.json_response({"task": task, **progress_json(rows)})


async def activity(request: web.Request) -> web.Response:
    """What the node is doing now: its experiments (one per busy device; "experiment" is the most
    recently started), the reproduction queue, recent events."""
    node = request.app[NODE]
    slots = node.slots
    activity = node.telemetry.activity
    return web.json_response({
        "node": {**await node.status(), "uptime_s": int(time.time() - node.started_at)},
        "experiments": {device: dict(entry) for device, entry in activity["experiments"].items()},
        "experiment": activity["experiment"],
        "queue": list(activity["queue"])[:50],
        "recent": list(activity["recent"])[:50],
        "counters": dict(node.telemetry.counters),
        "slots": None if slots is None else {
            "devices": list(slots.devices), "free": slots.free,
            "busy": [{"device": u.device, "purpose": u.purpose, "label": u.label} for u in slots.in_use.values()],
            "reproduce_share": round(slots.share("reproduce"), 4),
        },
        "settings": {"ralph": node.settings.ralph, "reproduce": node.settings.reproduce,
                     "verify_share": node.settings.verify_share},
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", _static("index.html"))
    for name in ("app.js", "style.css", "favicon.svg"):
        app.router.add_get(f"/static/{name}", _static(name))
    app.router.add_get("/favicon.ico", _static("favicon.svg"))  # what browsers ask for unprompted
    app.router.add_get("/api/tasks", tasks)
    app.router.add_get("/api/leaderboard", leaderboard)
    app.router.add_get("/api/claim/{id}", claim)
    app.router.add_get("/api/lineage", lineage)
    app.router.add_get("/api/progress", progress)
    app.router.add_get("/api/activity", activity)
