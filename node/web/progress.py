"""This node's own experiments as autoresearch shows them: ``results.tsv`` rows and the progress
chart (docs/design.md, "What a user sees"). Shared by ``ralphswarm export --format results-tsv``,
``ralphswarm plot`` and the dashboard's chart (``/api/progress``), so all three say the same.

autoresearch's ``results.tsv`` has the columns ``commit val_bpb memory_gb status description``,
status ``keep``, ``discard`` or ``crash``, and the baseline as its first row; its analysis notebook
takes the first row that did not crash as the baseline and the kept rows' running minimum as the
frontier. Here: commit is the claim's short id, val_bpb the node's own run (the claim's result),
status ``keep`` for an improvement the loop kept and for the baseline run, ``crash`` for a crashed
run, ``discard`` otherwise. memory_gb is the result's ``peak_mem_mb`` (SPEC 5.6: the training process's
peak GPU allocation, or its peak resident set on a CPU) in GiB with one decimal, as autoresearch
writes it; 0.0 for a crash and for a result without the figure (older nodes).
"""
from __future__ import annotations

from typing import Any

from node.ids import short
from node.web.shapes import is_baseline

COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
STATUS = {"improved": "keep", "worse": "discard", "crashed": "crash"}


def _description(note: str) -> str:
    """One line, no tabs, no quote a TSV reader would take as quoting."""
    text = " ".join(note.split())
    return text.replace('"', "'") or "-"


def experiment_rows(claims: list[Any], self_key: str) -> list[dict[str, Any]]:
    """The node's own claims among ``claims`` (one task), oldest first, its earliest baseline run
    moved to the front; each row with the results.tsv fields plus the claim id and time."""
    mine = sorted((c for c in claims if c.author == self_key), key=lambda c: (c.created_at, c.id))
    baselines = [c for c in mine if is_baseline(c) and c.body["outcome"] != "crashed"]
    if baselines:
        mine.remove(baselines[0])
        mine.insert(0, baselines[0])
    rows = []
    for c in mine:
        result = c.body["result"] if isinstance(c.body["result"], dict) else {}
        status = "keep" if is_baseline(c) and c.body["outcome"] != "crashed" else STATUS.get(c.body["outcome"], "discard")
        val = result.get("val_bpb") if status != "crash" else None
        mem = result.get("peak_mem_mb") if status != "crash" else None
        rows.append({"claim": c.id, "commit": short(c.id), "created_at": c.created_at,
                     "val_bpb": f"{float(val):.6f}" if val is not None else "0.000000",
                     "memory_gb": f"{mem / 1024:.1f}" if type(mem) is int else "0.0",
                     "status": status, "description": _description(c.body["note"]), "baseline": is_baseline(c)})
    return rows


def results_tsv(rows: list[dict[str, Any]]) -> str:
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(str(row[c]) for c in COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def progress_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the chart draws: every experiment that did not crash as a point (x: its number among
    them, from 0, as the notebook counts), the running best of the kept ones, the baseline value."""
    valid = [r for r in rows if r["status"] != "crash"]
    points = [{"x": i, "claim": r["claim"], "short": r["commit"], "val_bpb": float(r["val_bpb"]),
               "kept": r["status"] == "keep", "description": r["description"]} for i, r in enumerate(valid)]
    best, frontier = None, []
    for p in points:
        if p["kept"] and (best is None or p["val_bpb"] < best):
            best = p["val_bpb"]
            frontier.append({"x": p["x"], "val_bpb": best})
    return {"experiments": len(rows), "kept": sum(r["status"] == "keep" for r in rows),
            "crashed": sum(r["status"] == "crash" for r in rows),
            "baseline": points[0]["val_bpb"] if points else None, "best": best, "points": points,
            "frontier": frontier}


def plot_png(progress: dict[str, Any], path: Any, title: str) -> None:
    """The notebook's chart: discarded as faint dots, kept as green dots, the running best as a
    step line, the baseline as a dashed line; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 6))
    try:
        points = progress["points"]
        disc = [p for p in points if not p["kept"]]
        kept = [p for p in points if p["kept"]]
        ax.scatter([p["x"] for p in disc], [p["val_bpb"] for p in disc], c="#bbbbbb", s=14, label="discarded")
        ax.scatter([p["x"] for p in kept], [p["val_bpb"] for p in kept], c="#2ecc71", s=50, edgecolors="black",
                   linewidths=0.5, zorder=4, label="kept")
        frontier = progress["frontier"]
        if frontier:
            xs = [f["x"] for f in frontier] + [points[-1]["x"]]
            ys = [f["val_bpb"] for f in frontier] + [frontier[-1]["val_bpb"]]
            ax.step(xs, ys, where="post", color="#27ae60", linewidth=2, zorder=3, label="running best")
        if progress["baseline"] is not None:
            ax.axhline(progress["baseline"], color="#555555", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("experiment #")
        ax.set_ylabel("val_bpb (lower is better)")
        ax.set_title(f"{title}: {progress['experiments']} experiments, {progress['kept']} kept")
        ax.grid(True, alpha=0.2)
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
