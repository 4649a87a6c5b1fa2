"""The corpus commands as a user runs them: real `python -m node.cli` processes on real homes.

    .venv/bin/python -m pytest tests/node/test_cli_corpus.py -q

init / id / import / export / leaderboard / show / trust, their output, exit codes, and the one-line
errors for bad input (never a traceback, nothing written where the command failed).
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest
from tests.messages import claim, result
from tests.nodeproc import NodeProcess, cli

from protocol import Identity, build, canon

HEX64 = re.compile(r"[0-9a-f]{64}")
TASK_A, TASK_B = "a" * 64, "b" * 64
AUTHOR = Identity.from_seed(b"\x02" * 32)
VOTER = Identity.from_seed(b"\x03" * 32)  # a test key the operator will trust


def out(proc) -> str:
    return proc.stdout.decode()


def err(proc) -> str:
    return proc.stderr.decode()


def assert_error(proc, *fragments: str, code: int = 1) -> None:
    """Failed cleanly: the exit code, exactly one `error: ...` line, no traceback."""
    text = err(proc)
    assert proc.returncode == code, (proc.returncode, text, out(proc))
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text + out(proc)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def init(home: Path, *args: str) -> str:
    proc = cli("init", *args, home=home)
    assert proc.returncode == 0, err(proc)
    return out(proc).strip()


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def vote(voter: Identity, claim_id: str, verdict: str, val_bpb: str | None, n: int = 0) -> bytes:
    body = {"claim": claim_id, "verdict": verdict, "result": result(val_bpb) if val_bpb else None,
            "reason": f"{verdict} on a test run"}
    return build(voter, "public", "vote", body, created_at=1_700_100_000 + n).canonical()


def exported(home: Path, *args: str) -> list[bytes]:
    proc = cli("export", *args, home=home)
    assert proc.returncode == 0, err(proc)
    return proc.stdout.splitlines()


def test_init_creates_home_and_keeps_the_key(tmp_path):
    home = tmp_path / "node"
    first = init(home)
    assert HEX64.fullmatch(first), first
    second = cli("init", home=home)
    assert second.returncode == 0 and out(second).strip() == first  # running it twice keeps the key
    assert "kept the existing identity" in err(second)
    ident = cli("id", home=home)
    assert ident.returncode == 0 and out(ident) == first + "\n"

    key = home / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Identity.load(key).pubkey == first
    config = json.loads((home / "config.json").read_text())
    assert config["swarm"] == "public"
    with sqlite3.connect(home / "replica.sqlite3") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"messages", "schema_migrations"} <= tables
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_init_swarm_sets_the_swarm_messages_must_name(tmp_path):
    home = tmp_path / "lab"
    init(home, "--swarm", "lab")
    assert json.loads((home / "config.json").read_text())["swarm"] == "lab"
    lab, public = claim(AUTHOR, "lab", n=1).canonical(), claim(AUTHOR, "public", n=2).canonical()
    proc = cli("import", str(write_lines(tmp_path / "in.jsonl", [public, lab])), home=home)
    assert proc.returncode == 0, err(proc)
    assert out(proc).splitlines() == ["line 1: invalid: wrong swarm", "accepted 1  duplicate 0  rejected 1"]
    assert exported(home) == [lab]


def mixed_file(tmp_path: Path) -> tuple[Path, list, dict[int, str]]:
    """A JSON Lines file of good, duplicate and bad lines: (path, the good envelopes, line -> reason)."""
    good1, good2 = claim(AUTHOR, n=1), claim(AUTHOR, n=2)
    forged_sig = good2.to_dict() | {"sig": "0" * 128}  # the same id as good2, a signature nobody made
    tampered = good1.to_dict() | {"body": {**good1.body, "note": "better than it was"}}  # id no longer matches
    other = Identity.from_seed(b"\x09" * 32)
    stolen = good1.to_dict() | {"author": other.pubkey}  # someone else's claim under my key: bad id
    vote_from_future = build(VOTER, "public", "vote", json.loads(vote(VOTER, good1.id, "failed", None))["body"],
                             created_at=4_000_000_000).canonical()
    lines = [
        good1.canonical(),                                   # 1 accepted
        b"this is not json",                                 # 2
        good1.canonical(),                                   # 3 duplicate
        b"",                                                 # 4 blank: skipped, still counted as a line
        claim(AUTHOR, "elsewhere", n=3).canonical(),         # 5 wrong swarm
        canon(forged_sig),                                   # 6 forged signature
        json.dumps(claim(AUTHOR, n=4).to_dict()).encode(),   # 7 valid, another JSON spelling: stored canonical
        canon(tampered),                                     # 8 body changed after signing
        canon(stolen),                                       # 9 author swapped
        b'{"id": 1, "kind": "claim"',                        # 10 truncated
        b"\xff\xfe not utf-8",                               # 11
        vote_from_future,                                    # 12
        b"[1, 2, 3]",                                        # 13 JSON, not an envelope
        good2.canonical(),                                   # 14 accepted (its forged copy was refused)
    ]
    reasons = {2: "invalid: not JSON", 5: "invalid: wrong swarm", 6: "invalid: bad signature",
               8: "invalid: bad id", 9: "invalid: bad id", 10: "invalid: not JSON",
               11: "invalid: not UTF-8", 12: "invalid: from the future",
               13: "invalid: schema: envelope (not an object)"}
    return write_lines(tmp_path / "mixed.jsonl", lines), [good1, good2, claim(AUTHOR, n=4)], reasons


def import_report(proc) -> tuple[dict[int, str], str]:
    """(line -> printed reason, the counts line) of an import that read its file."""
    assert proc.returncode == 0, err(proc)  # the file was read: exit 0 even with rejections
    assert err(proc) == ""
    report = out(proc).splitlines()
    lines = dict(re.fullmatch(r"line (\d+): (.*)", line).groups() for line in report[:-1])
    return {int(n): reason for n, reason in lines.items()}, report[-1]


@pytest.mark.slow  # several CLI processes: 3.4 s
def test_import_counts_and_names_each_rejected_line(tmp_path):
    home = tmp_path / "node"
    init(home)
    path, goods, expected = mixed_file(tmp_path)
    reasons, counts = import_report(cli("import", str(path), home=home))
    assert counts == "accepted 3  duplicate 1  rejected 9"
    assert set(reasons) == set(expected)
    for line, reason in expected.items():
        assert reasons[line].startswith(reason), (line, reasons[line])
    assert sorted(exported(home)) == sorted(g.canonical() for g in goods)

    again = cli("import", str(path), home=home)  # idempotent: nothing new the second time
    assert again.returncode == 0
    assert re.search(r"^accepted 0  duplicate \d+  rejected \d+$", out(again), re.M), out(again)
    assert sorted(exported(home)) == sorted(g.canonical() for g in goods)


@pytest.mark.slow  # a node process
def test_import_through_a_running_node_reports_the_same(tmp_path):
    node = NodeProcess(tmp_path / "node", "--no-lan", "--no-ralph", "--no-reproduce").start()
    try:
        path, goods, expected = mixed_file(tmp_path)
        reasons, counts = import_report(cli("import", str(path), home=node.home))
        assert counts == "accepted 3  duplicate 1  rejected 9"
        assert set(reasons) == set(expected)
        expected[11] = "invalid: "  # the line travels as text: its bad bytes arrive replaced
        for line, reason in expected.items():
            assert reasons[line].startswith(reason), (line, reasons[line])
        assert {json.loads(r)["id"] for r in exported(node.home)} >= {g.id for g in goods}
    finally:
        node.stop()


def test_import_of_an_unreadable_file_fails_with_one_line(tmp_path):
    home = tmp_path / "node"
    init(home)
    assert_error(cli("import", str(tmp_path / "missing.jsonl"), home=home), "cannot read", "missing.jsonl")
    assert_error(cli("import", str(tmp_path), home=home), "cannot read", "directory")
    # Opens fine, then fails on read (EIO): the error surfaces mid-file, still one line.
    assert_error(cli("import", "/proc/self/mem", home=home), "cannot read", "/proc/self/mem")
    if os.geteuid() != 0:  # root reads any file whatever its mode
        locked = write_lines(tmp_path / "locked.jsonl", [claim(AUTHOR).canonical()])
        locked.chmod(0)
        assert_error(cli("import", str(locked), home=home), "cannot read", "Permission denied")
    assert exported(home) == []


@pytest.mark.slow  # several CLI processes: 3.5 s
def test_export_round_trips_byte_for_byte_into_a_fresh_home(tmp_path):
    home, fresh = tmp_path / "a", tmp_path / "b"
    init(home)
    claims = [claim(AUTHOR, task=TASK_A if i % 2 else TASK_B, n=i, note=f"note é {i}\ttab") for i in range(6)]
    raws = [c.canonical() for c in claims] + [vote(VOTER, claims[0].id, "reproduced", "1.499000")]
    assert cli("import", str(write_lines(tmp_path / "in.jsonl", raws)), home=home).returncode == 0

    dump = exported(home, "--format", "jsonl")
    assert sorted(dump) == sorted(raws)  # every envelope exactly as stored, one per line
    assert [json.loads(line)["created_at"] for line in dump] == sorted(json.loads(r)["created_at"] for r in raws)

    init(fresh)
    proc = cli("import", str(write_lines(tmp_path / "dump.jsonl", dump)), home=fresh)
    assert out(proc).splitlines() == [f"accepted {len(raws)}  duplicate 0  rejected 0"]
    assert set(exported(fresh)) == set(dump)

    only_b = exported(home, "--task", TASK_B)  # task B: its claims and the vote on claim 0
    assert set(only_b) == {c.canonical() for c in claims if c.body["task"] == TASK_B} | {raws[-1]}


@pytest.mark.slow  # several CLI processes: 3 s
def test_export_tsv_has_a_header_and_a_row_per_claim(tmp_path):
    home = tmp_path / "node"
    init(home)
    claims = [claim(AUTHOR, task=TASK_A if i < 3 else TASK_B, n=i, val_bpb=f"1.{i}00000",
                    note=f"try {i}\twith a tab\nand a newline") for i in range(5)]
    raws = [c.canonical() for c in claims] + [vote(VOTER, claims[1].id, "reproduced", "1.100500")]
    assert cli("import", str(write_lines(tmp_path / "in.jsonl", raws)), home=home).returncode == 0
    assert cli("trust", "add", VOTER.pubkey, home=home).returncode == 0

    tsv = out(cli("export", "--format", "tsv", home=home)).splitlines()
    assert tsv[0].split("\t") == ["claim", "parent", "val_bpb", "status", "outcome", "note"]
    rows = {r.split("\t")[0]: r.split("\t") for r in tsv[1:]}
    assert len(tsv) == 6 and set(rows) == {c.id for c in claims}
    assert all(len(r) == 6 for r in rows.values())
    assert rows[claims[1].id][2:5] == ["1.100500", "verified", "improved"]  # reproduced value
    assert rows[claims[0].id][2:5] == ["1.000000", "pending", "improved"]  # claimed value
    assert rows[claims[0].id][5] == "try 0 with a tab and a newline"

    only_a = out(cli("export", "--format", "tsv", "--task", TASK_A, home=home)).splitlines()
    assert only_a[0] == tsv[0]
    assert {r.split("\t")[0] for r in only_a[1:]} == {c.id for c in claims[:3]}


@pytest.fixture
def ranked_home(tmp_path) -> tuple[Path, list]:
    """Three claims on TASK_A: one the voter reproduced, one it found wrong, one nobody checked."""
    home = tmp_path / "node"
    init(home)
    claims = [claim(AUTHOR, task=TASK_A, n=i, val_bpb=v) for i, v in enumerate(["1.400000", "1.300000", "1.500000"])]
    raws = [c.canonical() for c in claims]
    raws += [vote(VOTER, claims[0].id, "reproduced", "1.401000", 1), vote(VOTER, claims[1].id, "mismatch", "1.900000", 2)]
    assert cli("import", str(write_lines(tmp_path / "in.jsonl", raws)), home=home).returncode == 0
    return home, claims


def board(home: Path) -> dict:
    proc = cli("leaderboard", "--task", TASK_A, "--json", home=home)
    assert proc.returncode == 0, err(proc)
    return json.loads(out(proc))


@pytest.mark.slow  # several CLI processes: 5.8 s
def test_trusting_a_voter_verifies_and_disputes(ranked_home):
    home, (reproduced, refuted, unchecked) = ranked_home
    before = board(home)  # votes from a key nobody trusts are worth nothing
    assert before["verified"] == [] and before["disputed"] == []
    assert {e["claim"] for e in before["pending"]} == {c.id for c in (reproduced, refuted, unchecked)}

    added = cli("trust", "add", VOTER.pubkey, home=home)
    assert added.returncode == 0 and VOTER.pubkey in out(added)
    assert out(cli("trust", "list", home=home)).split() == [VOTER.pubkey]
    after = board(home)
    assert [e["claim"] for e in after["verified"]] == [reproduced.id]
    assert after["verified"][0]["val_bpb"] == "1.401000" and after["verified"][0]["claimed_bpb"] == "1.400000"
    assert [e["claim"] for e in after["disputed"]] == [refuted.id]
    assert [e["claim"] for e in after["pending"]] == [unchecked.id]

    table = cli("leaderboard", "--task", TASK_A, home=home)
    assert table.returncode == 0
    assert all(s in out(table) for s in ("verified (1)", "pending (1)", "disputed (1)", reproduced.id[:12]))

    shown = cli("show", reproduced.id, "--json", home=home)
    detail = json.loads(out(shown))
    assert detail["envelope"]["id"] == reproduced.id
    assert detail["status"]["status"] == "verified" and detail["status"]["reproduced_bpb"] == "1.401000"
    assert [(v["voter"], v["verdict"]) for v in detail["votes"]] == [(VOTER.pubkey, "reproduced")]
    text = out(cli("show", refuted.id, home=home))
    assert "status  disputed" in text and "mismatch" in text and refuted.body["patch"] in text

    removed = cli("trust", "remove", VOTER.pubkey, home=home)
    assert removed.returncode == 0
    assert out(cli("trust", "list", home=home)) == ""
    assert board(home)["verified"] == []


@pytest.mark.slow  # several CLI processes: 3.5 s
def test_a_claim_a_trusted_key_found_over_budget_is_listed_apart_never_ranked(tmp_path):
    home = tmp_path / "node"
    init(home)
    assert cli("trust", "add", VOTER.pubkey, home=home).returncode == 0
    fair, costly = (claim(AUTHOR, task=TASK_A, n=i, val_bpb=v) for i, v in enumerate(["1.400000", "1.100000"]))
    raws = [fair.canonical(), costly.canonical(), vote(VOTER, fair.id, "reproduced", "1.401000", 1),
            vote(VOTER, costly.id, "over budget", "1.101000", 2)]
    assert cli("import", str(write_lines(tmp_path / "in.jsonl", raws)), home=home).returncode == 0
    lb = board(home)
    assert [e["claim"] for e in lb["verified"]] == [fair.id]
    assert [(e["claim"], e["status"], e["over"]) for e in lb["over_budget"]] == [(costly.id, "over budget", 1.0)]
    table = out(cli("leaderboard", "--task", TASK_A, home=home))
    assert "verified (1)" in table and "over budget (1)" in table and costly.id[:12] in table
    text = out(cli("show", costly.id, home=home))
    assert "status  over budget" in text and "vote over budget" in text


@pytest.mark.slow  # several CLI processes: 3 s
def test_trust_list_shows_every_key_ranking_uses(ranked_home):
    home, (reproduced, _, _) = ranked_home
    config = json.loads((home / "config.json").read_text())
    (home / "config.json").write_text(json.dumps({**config, "trusted": [VOTER.pubkey]}))  # by hand
    assert out(cli("trust", "list", home=home)).split() == [VOTER.pubkey]
    assert [e["claim"] for e in board(home)["verified"]] == [reproduced.id]
    assert cli("trust", "remove", VOTER.pubkey, home=home).returncode == 0
    assert out(cli("trust", "list", home=home)) == "" and board(home)["verified"] == []
    assert json.loads((home / "config.json").read_text())["trusted"] == []


@pytest.mark.slow  # several CLI processes: 3.3 s
def test_show_and_trust_refuse_bad_input(ranked_home):
    home, claims = ranked_home
    assert_error(cli("show", "f" * 64, home=home), "not found")
    assert_error(cli("show", "not-an-id", home=home), "is not an id", "6 to 64 lower-case hex")
    assert_error(cli("show", claims[0].id.upper(), home=home), "is not an id")
    assert_error(cli("trust", "add", "abc", home=home), "64 lower-case hex")
    assert_error(cli("trust", "remove", "Z" * 64, home=home), "64 lower-case hex")
    assert_error(cli("leaderboard", "--task", "no-such-task", home=home), "unknown task")
    assert out(cli("trust", "list", home=home)) == ""  # nothing was written by the refused commands
    config = json.loads((home / "config.json").read_text())
    assert config["trusted"] == []


COMMANDS_NEEDING_A_HOME = [
    ("id",), ("import", "FILE"), ("export",), ("export", "--format", "tsv"), ("leaderboard",),
    ("show", "a" * 64), ("trust", "add", "b" * 64), ("trust", "remove", "b" * 64), ("trust", "list"),
]


@pytest.mark.parametrize("args", COMMANDS_NEEDING_A_HOME, ids=" ".join)
def test_commands_on_a_missing_home_say_run_init(tmp_path, args):
    data = write_lines(tmp_path / "in.jsonl", [claim(AUTHOR).canonical()])
    home = tmp_path / "nowhere"
    proc = cli(*[str(data) if a == "FILE" else a for a in args], home=home)
    assert_error(proc, "ralphswarm init", str(home))
    assert not home.exists()  # refusing created nothing


def test_a_key_file_others_can_read_is_refused(tmp_path):
    home = tmp_path / "node"
    init(home)
    (home / "identity.key").chmod(0o640)
    assert_error(cli("id", home=home), "accessible by group or others", "chmod 600")
    assert_error(cli("leaderboard", home=home), "accessible by group or others")
    assert_error(cli("init", home=home), "accessible by group or others")  # init keeps, never replaces, a key
    assert stat.S_IMODE((home / "identity.key").stat().st_mode) == 0o640


@pytest.mark.slow  # several CLI processes: 3.5 s
def test_leaderboard_and_show_give_the_fresh_seed_estimate_p_and_state(tmp_path):
    """Luck is not progress: with fresh-seed votes from two trusted keys, the board ranks by mean ±
    se (n) with each claim's state, keeps the claimant's value apart, and `show` prints p and the
    reference (tests/dashboard_corpus.py, the luck task)."""
    from tests.dashboard_corpus import AUTHOR as LUCK_AUTHOR
    from tests.dashboard_corpus import LUCK, TRUSTED, TRUSTED2, make_luck

    AUTHOR_OF_LUCK = LUCK_AUTHOR.pubkey

    home = tmp_path / "node"
    init(home)
    luck = make_luck(1_700_000_000)
    raws = [m.canonical() for m in luck.messages]
    proc = cli("import", str(write_lines(tmp_path / "luck.jsonl", raws)), home=home)
    assert out(proc).splitlines() == [f"accepted {len(raws)}  duplicate 0  rejected 0"], out(proc)
    for voter in (TRUSTED, TRUSTED2):
        assert cli("trust", "add", voter.pubkey, home=home).returncode == 0

    proc = cli("leaderboard", "--task", LUCK, "--json", home=home)
    assert proc.returncode == 0, err(proc)
    lb = json.loads(out(proc))
    assert [(e["claim"], e["estimate"]["mean"], e["estimate"]["se"], e["estimate"]["n"], e["significance"]["state"],
             e["claimed_bpb"]) for e in lb["verified"]] == [
        (luck.significant.id, "1.478000", "0.002098", 2, "significant", "1.470000"),
        (luck.not_yet.id, "1.497000", "0.003000", 1, "not significant yet", "1.493000"),
        (luck.baseline.id, "1.502000", "0.002098", 2, "baseline", "1.501000"),
        (luck.no_gain.id, "1.504000", "0.002098", 2, "no gain", "1.497000"),
    ]
    top = lb["verified"][0]["significance"]
    assert top["p"] < 0.01 and top["z"] > 8 and top["reference"] == luck.baseline.id
    assert [(e["claim"], e["significance"]["state"]) for e in lb["disputed"]] == [(luck.hacked.id, "no gain")]

    # by the task's name, as a table wide enough for one line a row
    proc = cli("leaderboard", "--task", "luck", home=home, env={"COLUMNS": "200"})
    assert proc.returncode == 0, err(proc)
    # columns: # claim author mean Δ state reproduced claimed votes support note
    rows = {cells[1]: cells for line in out(proc).splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 11 and cells[0] in "1234-"}
    first = rows[luck.significant.id[:12]]
    assert first[:3] == ["1", luck.significant.id[:12], AUTHOR_OF_LUCK[:8]] and first[3] == "1.4780 ± 0.0021 (n 2)"
    assert first[4] == "-0.024000"  # from the baseline's estimate, 1.502000
    assert first[5].startswith("significant (p 1.5e-15") and first[7] == "1.470000"
    assert rows[luck.not_yet.id[:12]][3:6] == ["1.4970 ± 0.0030 (n 1)", "-0.005000", "not significant yet (p 0.43)"]
    assert rows[luck.baseline.id[:12]][4:6] == ["+0.000000", "baseline"]
    assert rows[luck.no_gain.id[:12]][5] == "no gain (p 1)"
    assert rows[luck.hacked.id[:12]][0] == "-"  # disputed: not ranked
    assert rows[luck.hacked.id[:12]][3:6] == ["1.5040 ± 0.0019 (n 2)", "+0.002000", "no gain (p 1)"]
    assert "baseline val_bpb 1.502000 (claim " + luck.baseline.id[:12] in out(proc)
    assert "support: trusted weight of reproducing votes, in runs" in " ".join(out(proc).split())
    narrow = out(cli("leaderboard", "--task", LUCK, home=home, env={"COLUMNS": "80"}))  # fewer columns, no p
    assert all(len(line) <= 80 for line in narrow.splitlines())
    assert re.search(rf"│ 1 +│ {luck.significant.id[:12]} │ {AUTHOR_OF_LUCK[:8]} │ 1\.4780 ± 0\.0021 \(n 2\) │ "
                     r"significant +│ 1\.470000 │", narrow), narrow

    text = out(cli("show", luck.significant.id, home=home))
    assert "estimate 1.4780 ± 0.0021 (n 2)" in text
    assert re.search(r"^state   significant  p 1\.5e-15  z 8\.09", text, re.M), text
    assert f"reference {luck.baseline.id}  1.5020 ± 0.0021 (n 2)" in text
    assert "claimed val_bpb 1.470000  (the claimant's own run)" in text
    assert text.count("fresh seed") >= 2
    shown = json.loads(out(cli("show", luck.significant.id, "--json", home=home)))
    st = shown["status"]
    assert st["estimate"] == {"mean": "1.478000", "se": "0.002098", "n": 2, "sigma": "0.002966"}
    assert st["significance"] == top and st["reference_estimate"]["mean"] == "1.502000"
    assert st["claimed_bpb"] == "1.470000" and [v["fresh"] for v in shown["votes"]] == [True, True]
    base = out(cli("show", luck.baseline.id, home=home))
    assert re.search(r"^state   baseline  p -$", base, re.M) and "reference " not in base
