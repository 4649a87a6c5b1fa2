"""Getting the best out and autoresearch's views, as a user runs them: real `python -m node.cli`
processes on a real home holding this node's own signed experiments on the built-in tiny task.

    .venv/bin/python -m pytest tests/node/test_cli_views.py -q

One id rule (any unique prefix of 6+ hex digits; "not found" / "ambiguous" in one line), `source`
(the full script rebuilt along the lineage), `diff`, `experiment --parent CLAIM`, `export --format
results-tsv` read by the autoresearch notebook's own code (pandas), and `plot`.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from pathlib import Path

import pytest
from tests.node.test_cli_corpus import assert_error, err, init, out, write_lines
from tests.nodeproc import cli

from protocol import Identity, build, compute_id
from trainer.patches import make_patch
from trainer.tasks import builtin_tasks

from node import ids
from node.errors import UserError

TINY = builtin_tasks()["tiny"]
OTHER = Identity.from_seed(b"\x31" * 32)  # another node: its claims are never in this node's results


def result(val_bpb: str, seed: int = 0, mem: int | None = None) -> dict:
    out = {"val_bpb": val_bpb, "curve": [[0, "5.5"], [4096, "2.1"]], "tokens": 4096, "seed": seed,
           "wall_s": "1.0", "device": "cpu", "torch": "2.13.0", "flops_per_token": 1000}
    if mem is not None:
        out["peak_mem_mb"] = mem
    return out


def edit(source: str, old: str, new: str) -> str:
    assert old in source, old
    return source.replace(old, new, 1)


class Experiments:
    """This node's own run of the tiny task, as its Ralph loop publishes it: a crash before the
    baseline was published (so the baseline must be moved first), the baseline, a kept change, a
    discarded one, a crash, a second kept change on the first; and another node's claim."""

    def __init__(self, me: Identity, t0: int = 1_750_000_000):
        base_src = TINY.source
        lr = edit(base_src, "MATRIX_LR = 0.03", "MATRIX_LR = 0.04")
        worse = edit(lr, "MATRIX_LR = 0.04", "MATRIX_LR = 0.4")
        lr2 = edit(lr, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
        self.sources: dict[str, str] = {}

        def claim(author, parent, parent_src, src, outcome, val, note, at, mem=None):
            body = {"task": TINY.id, "parent": parent.id if parent else None,
                    "patch": make_patch(parent_src, src) if parent else "",
                    "source_sha256": hashlib.sha256(src.encode()).hexdigest(), "note": note, "outcome": outcome,
                    "result": result(val, mem=mem) if val else None}
            env = build(author, "public", "claim", body, created_at=t0 + at)
            self.sources[env.id] = src
            return env

        self.early_crash = claim(me, None, None, base_src, "crashed", None, "a crash before the baseline", 0)
        self.baseline = claim(me, None, None, base_src, "improved", "1.950000", "the task baseline", 10, mem=45056)
        self.kept = claim(me, self.baseline, base_src, lr, "improved", "1.940000", "MATRIX_LR 0.03 -> 0.04", 20, mem=46080)
        self.discarded = claim(me, self.kept, lr, worse, "worse", "1.990000", 'MATRIX_LR 0.04 -> 0.4 "too far"', 30)
        self.crashed = claim(me, self.kept, lr, worse, "crashed", None, "crashed\twith a tab", 40)
        self.kept2 = claim(me, self.kept, lr, lr2, "improved", "1.930000", "MATRIX_LR 0.04 -> 0.05", 50, mem=46694)
        self.foreign = claim(OTHER, self.baseline, base_src, lr2, "improved", "1.900000", "someone else's", 60)
        self.mine = [self.early_crash, self.baseline, self.kept, self.discarded, self.crashed, self.kept2]
        self.all = [*self.mine, self.foreign]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> tuple[Path, Experiments]:
    path = tmp_path_factory.mktemp("views") / "node"
    init(path)
    exp = Experiments(Identity.load(path / "identity.key"))
    proc = cli("import", str(write_lines(path.parent / "in.jsonl", [c.canonical() for c in exp.all])), home=path)
    assert out(proc).splitlines() == [f"accepted {len(exp.all)}  duplicate 0  rejected 0"], out(proc) + err(proc)
    return path, exp


# -- one id rule -----------------------------------------------------------------------------------

def test_pick_says_not_found_or_ambiguous_in_one_line():
    assert ids.pick("abcdef", ["abcdef" + "0" * 58, "abcdee" + "0" * 58]) == "abcdef" + "0" * 58
    with pytest.raises(UserError, match=r"^not found: no claim starts with 123456$"):
        ids.pick("123456", ["abcdef" + "0" * 58], "claim")
    with pytest.raises(UserError) as info:
        ids.pick("abcdef", ["abcdef1" + "0" * 57, "abcdef2" + "0" * 57])
    assert info.value.message.startswith("ambiguous: abcdef starts 2 ids (abcdef100000, abcdef200000)")
    assert "\n" not in info.value.message
    for bad in ("abcde", "ABCDEF", "abcdeg", "a" * 65, ""):
        assert not ids.is_prefix(bad)
    assert ids.is_prefix("abcdef") and ids.is_prefix("a" * 64)


def _twins(author: Identity) -> tuple[object, object]:
    """Two claims whose ids share their first 6 hex digits, found by hashing only (no signature)."""
    body = {"task": "c" * 64, "parent": None, "patch": "", "source_sha256": "d" * 64, "note": "twin",
            "outcome": "improved", "result": result("1.500000")}
    seen: dict[str, int] = {}
    for at in range(1_700_000_000, 1_700_000_000 + 200_000):
        prefix = compute_id("public", author.pubkey, at, "claim", body)[:6]
        if prefix in seen:
            return (build(author, "public", "claim", body, created_at=seen[prefix]),
                    build(author, "public", "claim", body, created_at=at))
        seen[prefix] = at
    raise AssertionError("no two ids shared 6 hex digits")  # p < 1e-300 over 200,000 ids


@pytest.mark.slow  # several CLI processes: 4 s
def test_every_command_takes_a_unique_prefix_and_refuses_others_in_one_line(home, tmp_path):
    path, exp = home
    kept = exp.kept.id
    for n in (6, 12, 64):
        shown = cli("show", kept[:n], "--json", home=path)
        assert shown.returncode == 0, err(shown)
        assert json.loads(out(shown))["envelope"]["id"] == kept
    task = cli("show", TINY.id[:6], home=path)  # a built-in task, by its id prefix
    assert task.returncode == 0 and f"task {TINY.id}" in out(task) and "name    tiny" in out(task)
    assert cli("leaderboard", "--task", TINY.id[:6], "--json", home=path).returncode == 0
    assert json.loads(out(cli("task", "show", TINY.id[:6], "--json")))["id"] == TINY.id

    assert_error(cli("show", "0123456789", home=path), "not found: no claim, vote or task starts with 0123456789")
    assert_error(cli("source", "abcde", home=path), "is not an id", "6 to 64")
    assert_error(cli("show", kept[:5], home=path), "is not an id")
    assert_error(cli("task", "show", "fedcba"), "not found")

    # Two real claims whose ids share 6 hex digits: that prefix is ambiguous, one more digit is not.
    a, b = _twins(OTHER)
    twins = tmp_path / "twins"
    init(twins)
    assert cli("import", str(write_lines(tmp_path / "t.jsonl", [a.canonical(), b.canonical()])), home=twins).returncode == 0
    common = next(i for i in range(64) if a.id[i] != b.id[i])
    assert_error(cli("show", a.id[:6], home=twins), f"ambiguous: {a.id[:6]} starts 2 ids")
    assert_error(cli("source", a.id[:common], home=twins), "ambiguous")
    assert json.loads(out(cli("show", a.id[:common + 1], "--json", home=twins)))["envelope"]["id"] == a.id


# -- get the best out ------------------------------------------------------------------------------

@pytest.mark.slow  # several CLI processes: 3 s
def test_source_rebuilds_the_full_script_along_the_lineage(home, tmp_path):
    path, exp = home
    proc = cli("source", exp.kept2.id[:8], home=path)
    assert proc.returncode == 0, err(proc)
    assert out(proc) == exp.sources[exp.kept2.id]  # two patches applied from the baseline, byte for byte
    target = tmp_path / "train.py"
    proc = cli("source", exp.kept2.id[:8], "--out", str(target), home=path)
    assert proc.returncode == 0 and out(proc) == "" and "wrote" in err(proc)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == exp.kept2.body["source_sha256"]
    assert_error(cli("source", exp.kept2.id[:8], "--out", str(target / "t.py"), home=path),  # under a file
                 "cannot write")
    # A claim whose parent this replica lacks cannot be rebuilt: said in one line, nothing written.
    orphan_home = tmp_path / "orphan"
    init(orphan_home)
    assert cli("import", str(write_lines(tmp_path / "o.jsonl", [exp.kept2.canonical()])), home=orphan_home).returncode == 0
    assert_error(cli("source", exp.kept2.id[:8], "--out", str(tmp_path / "o.py"), home=orphan_home),
                 "cannot rebuild the source of", "missing ancestor")
    assert not (tmp_path / "o.py").exists()


@pytest.mark.slow  # several CLI processes: 2 s
def test_diff_between_claims_and_from_the_baseline(home):
    path, exp = home
    proc = cli("diff", exp.kept.id[:8], exp.kept2.id[:8], home=path)
    assert proc.returncode == 0, err(proc)
    text = out(proc)
    assert f"--- {exp.kept.id[:12]}/train.py" in text and f"+++ {exp.kept2.id[:12]}/train.py" in text
    assert "-MATRIX_LR = 0.04" in text and "+MATRIX_LR = 0.05" in text
    base = out(cli("diff", exp.kept2.id[:8], home=path))  # one claim: from its task's baseline script
    assert f"--- {TINY.id[:12]}/train.py" in base and "-MATRIX_LR = 0.03" in base and "+MATRIX_LR = 0.05" in base
    same = cli("diff", exp.baseline.id[:8], "tiny", home=path)
    assert same.returncode == 0 and "no difference" in out(same)


@pytest.mark.slow  # trains tiny at 1% of its budget: ~5 s
def test_experiment_parent_is_a_claim_show_finds(home):
    path, exp = home
    proc = cli("experiment", "--parent", exp.kept2.id[:8], "--budget-scale", "0.01", "--device", "cpu", "--json",
               home=path)
    assert proc.returncode == 0, err(proc)
    run = json.loads(out(proc))
    assert run["ok"] and run["source_sha256"] == exp.kept2.body["source_sha256"]  # trained the claim's script
    assert_error(cli("experiment", "--parent", "0123456789", home=path), "not found")


# -- autoresearch's views --------------------------------------------------------------------------

def _notebook(tsv: str) -> dict:
    """karpathy/autoresearch analysis.ipynb, its parsing and summary cells rewritten as a function
    (pandas, as the notebook runs them): what the notebook would compute from our results.tsv."""
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(io.StringIO(tsv), sep="\t")
    df["val_bpb"] = pd.to_numeric(df["val_bpb"], errors="coerce")
    df["memory_gb"] = pd.to_numeric(df["memory_gb"], errors="coerce")
    df["status"] = df["status"].str.strip().str.upper()
    counts = df["status"].value_counts()
    n_keep, n_discard, n_crash = (int(counts.get(k, 0)) for k in ("KEEP", "DISCARD", "CRASH"))
    kept = df[df["status"] == "KEEP"].copy()
    for _, row in kept.iterrows():  # the notebook prints each kept row with these formats
        f"bpb={row['val_bpb']:.6f}  mem={row['memory_gb']:.1f}GB  {row['description']}"
    valid = df[df["status"] != "CRASH"].copy().reset_index(drop=True)
    baseline_bpb = valid.loc[0, "val_bpb"]  # the progress chart's baseline: the first row that ran
    kept_mask = valid["status"] == "KEEP"
    running_min = valid.loc[kept_mask, "val_bpb"].cummin()
    summary_baseline = df.iloc[0]["val_bpb"]  # the summary cell's baseline: the first row
    best_bpb = kept["val_bpb"].min()
    best_row = kept.loc[kept["val_bpb"].idxmin()]
    kept["prev_bpb"] = kept["val_bpb"].shift(1)
    kept["delta"] = kept["prev_bpb"] - kept["val_bpb"]
    hits = kept.iloc[1:].copy().sort_values("delta", ascending=False)  # the baseline dropped: no delta
    return {"columns": list(df.columns), "rows": len(df), "keep": n_keep, "discard": n_discard, "crash": n_crash,
            "baseline": float(baseline_bpb), "summary_baseline": float(summary_baseline),
            "best": float(best_bpb), "best_description": best_row["description"],
            "running_min": [float(v) for v in running_min], "hits": [round(float(d), 6) for d in hits["delta"]],
            "statuses": list(df["status"]), "memory": [float(m) for m in df["memory_gb"]]}


@pytest.mark.slow  # several CLI processes: 2 s
def test_results_tsv_is_what_the_autoresearch_notebook_reads(home):
    path, exp = home
    proc = cli("export", "--format", "results-tsv", home=path)  # the node's task: tiny
    assert proc.returncode == 0, err(proc)
    tsv = out(proc)
    lines = tsv.splitlines()
    assert lines[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    assert all(len(line.split("\t")) == 5 for line in lines)  # no tab or newline inside a field
    nb = _notebook(tsv)
    assert nb["columns"] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    order = [exp.baseline, exp.early_crash, exp.kept, exp.discarded, exp.crashed, exp.kept2]
    # the baseline first, then in order; only our own (read as text: pandas may take an all-digit id for a number)
    assert [line.split("\t")[0] for line in lines[1:]] == [c.id[:12] for c in order]
    assert nb["statuses"] == ["KEEP", "CRASH", "KEEP", "DISCARD", "CRASH", "KEEP"]
    assert (nb["keep"], nb["discard"], nb["crash"]) == (3, 1, 2)
    assert nb["baseline"] == nb["summary_baseline"] == 1.95
    assert nb["best"] == 1.93 and nb["best_description"] == "MATRIX_LR 0.04 -> 0.05"
    assert nb["running_min"] == [1.95, 1.94, 1.93]
    assert nb["hits"] == [0.01, 0.01]
    # peak_mem_mb in GiB with one decimal; 0.0 for a crash and for a result without the figure (older nodes)
    assert nb["memory"] == [44.0, 0.0, 45.0, 0.0, 0.0, 45.6]
    assert "crashed with a tab" in tsv and "\"" not in tsv


@pytest.mark.slow  # several CLI processes and matplotlib: 10-20 s on a busy machine
def test_plot_writes_a_png_of_the_progress(home, tmp_path):
    path, exp = home
    target = tmp_path / "progress.png"
    proc = cli("plot", "--out", str(target), home=path)
    assert proc.returncode == 0, err(proc)
    assert out(proc).startswith(f"wrote {target}: 6 experiments, 3 kept, best 1.930000, baseline 1.950000")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300
    assert not list(tmp_path.glob("*.part*"))
    empty = tmp_path / "empty"
    init(empty)
    assert_error(cli("plot", "--out", str(tmp_path / "none.png"), home=empty), "nothing to plot")
    assert not (tmp_path / "none.png").exists()
    assert_error(cli("plot", "--out", str(target / "dir.png"), home=path), "cannot write")  # under a file


# -- the leaderboard explains itself -----------------------------------------------------------------

@pytest.mark.slow  # several CLI processes: 6 s
def test_own_claims_stay_unverified_by_others_until_another_key_reproduces_them(tmp_path):
    from tests.node.test_cli_corpus import VOTER, vote

    path = tmp_path / "node"
    init(path)
    exp = Experiments(Identity.load(path / "identity.key"))
    raws = [c.canonical() for c in exp.all]
    assert cli("import", str(write_lines(tmp_path / "in.jsonl", raws)), home=path).returncode == 0

    def board() -> dict:
        proc = cli("leaderboard", "--task", "tiny", "--json", home=path)
        assert proc.returncode == 0, err(proc)
        return json.loads(out(proc))

    lb = board()
    own = {e["claim"] for e in lb["verified"] if e["own_unverified"]}
    assert own == {exp.baseline.id, exp.kept.id, exp.kept2.id} and lb["ranked"] == []
    assert lb["baseline"] == {"claim": exp.baseline.id, "short": exp.baseline.id[:12], "status": "verified",
                              "val_bpb": "1.950000"}
    # A vote that is not a reproduction (a key nobody trusts says mismatch) confirms nothing.
    cli("import", str(write_lines(tmp_path / "v1.jsonl", [vote(VOTER, exp.kept.id, "mismatch", "1.990000", 1)])),
        home=path)
    assert exp.kept.id in {e["claim"] for e in board()["verified"] if e["own_unverified"]}
    # Another key reproduced it: ranked, as on every other node that sees the vote.
    cli("import", str(write_lines(tmp_path / "v2.jsonl", [vote(VOTER, exp.kept2.id, "reproduced", "1.930500", 2)])),
        home=path)
    lb = board()
    assert lb["ranked"] == [exp.kept2.id]
    table = out(cli("leaderboard", "--task", "tiny", home=path, env={"COLUMNS": "200"}))
    assert "own, unverified by others (2)" in table and "verified (1)" in table
    assert re.search(rf"│ 1 +│ {exp.kept2.id[:12]} │ own +│", table), table
