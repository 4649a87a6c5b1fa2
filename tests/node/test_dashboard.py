"""The dashboard, its JSON API and /metrics against a real node process holding a small corpus, and
the page itself in a real (Debian) Chromium driven by Playwright.

    .venv/bin/python -m pytest tests/node/test_dashboard.py -q

The screenshots land in artifacts/dashboard.png (overview) and artifacts/dashboard-claim.png.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol import Identity, build
from tests.dashboard_corpus import LUCK, STRANGER, TASK, TRUSTED, TRUSTED2, XSS, make_corpus
from tests.nodeproc import ROOT, NodeProcess, wait_until

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "artifacts"
FAST = ("--no-lan", "--no-ralph", "--no-reproduce", "--sync-interval", "1")


def fetch(node: NodeProcess, path: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(node.address + path, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def get_json(node: NodeProcess, path: str) -> tuple[int, dict]:
    status, body, _ = fetch(node, path)
    return status, json.loads(body)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, corpus):
    """The node under test (trusting TRUSTED) with the corpus pushed in, and one real peer."""
    base = tmp_path_factory.mktemp("dash")
    peer = NodeProcess(base / "peer", *FAST).start()
    node = None
    try:
        node = NodeProcess(base / "node", *FAST, "--trusted", TRUSTED.pubkey, "--trusted", TRUSTED2.pubkey, "--bootstrap",
                           peer.address.removeprefix("http://")).start()
        report = node.push([m.canonical() for m in corpus.messages])
        assert len(report["accepted"]) == len(corpus.messages), report
        wait_until(lambda: any(p["last_contact"] for p in node.get("/api/peers")["peers"]), 30, what="peer contact")
        yield node, peer
    finally:
        for proc in (node, peer):
            if proc is not None:
                assert proc.stop() == 0


@pytest.fixture(scope="module")
def node(cluster):
    return cluster[0]


# -- JSON API --------------------------------------------------------------------------------------

def test_tasks_lists_a_task_known_only_from_claims(node):
    status, data = get_json(node, "/api/tasks")
    assert status == 200
    by_id = {t["id"]: t for t in data["tasks"]}
    assert by_id[TASK]["claims"] == 6 and by_id[TASK]["default"] is False
    assert by_id[LUCK]["claims"] == 5 and by_id[LUCK]["name"] == "luck"
    assert by_id[data["default"]]["name"] == "tiny" and by_id[data["default"]]["default"] is True


def test_leaderboard_ranks_verified_apart_from_pending_disputed_and_over_budget(node, corpus):
    status, lb = get_json(node, f"/api/leaderboard?task={TASK}")
    assert status == 200 and lb["task"] == TASK
    assert [e["claim"] for e in lb["verified"]] == [corpus.best.id, corpus.verified.id]  # 1.392 before 1.415
    assert [e["val_bpb"] for e in lb["verified"]] == ["1.392000", "1.415000"]
    assert [e["claim"] for e in lb["pending"]] == [corpus.pending.id]
    assert [e["claim"] for e in lb["disputed"]] == [corpus.disputed.id]
    # the lowest val_bpb of all, but a trusted reproduction trained 3x as long as the baseline: not ranked
    [over] = lb["over_budget"]
    assert over["claim"] == corpus.over_budget.id and over["status"] == "over budget" and over["over"] == 1.0
    # no task message, so no seed noise and no estimate: ranked by the reproduced value, no test yet
    assert [(e["estimate"], e["significance"]["state"], e["significance"]["p"]) for e in lb["verified"]] == [
        (None, "not significant yet", None)] * 2


def test_leaderboard_ranks_by_the_fresh_seed_estimate_with_its_state(node, corpus):
    """Luck is not progress: each entry carries mean ± se and n of the trusted fresh-seed runs, its
    test against its reference, and the claimant's own value apart."""
    luck = corpus.luck
    status, lb = get_json(node, f"/api/leaderboard?task={LUCK}")
    assert status == 200
    got = [(e["claim"], e["estimate"]["mean"], e["estimate"]["se"], e["estimate"]["n"], e["significance"]["state"],
            e["claimed_bpb"]) for e in lb["verified"]]
    assert got == [  # by estimated mean: "beta2" claimed less than the baseline and ranks below it
        (luck.significant.id, "1.478000", "0.002098", 2, "significant", "1.470000"),
        (luck.not_yet.id, "1.497000", "0.003000", 1, "not significant yet", "1.493000"),
        (luck.baseline.id, "1.502000", "0.002098", 2, "baseline", "1.501000"),
        (luck.no_gain.id, "1.504000", "0.002098", 2, "no gain", "1.497000"),
    ]
    tests = {e["claim"]: e["significance"] for e in lb["verified"]}
    assert tests[luck.significant.id]["p"] < 0.01 and tests[luck.significant.id]["reference"] == luck.baseline.id
    assert tests[luck.not_yet.id]["p"] == 0.429929 and tests[luck.no_gain.id]["p"] == 1.0
    assert tests[luck.baseline.id] == {"state": "baseline", "p": None, "z": None, "reference": None}
    [hacked] = lb["disputed"]  # the best of 20 seeds: claimed 1.470, fresh seeds say 1.504
    assert hacked["claim"] == luck.hacked.id and hacked["claimed_bpb"] == "1.470000"
    assert hacked["estimate"]["mean"] == "1.504000" and hacked["significance"]["state"] == "no gain"
    assert set(hacked) >= {"val_bpb", "claimed_bpb", "estimate", "significance", "status", "votes"}


def test_claim_carries_votes_and_one_curve_per_measurement(node, corpus):
    status, c = get_json(node, f"/api/claim/{corpus.verified.id}")
    assert status == 200
    assert c["envelope"]["id"] == corpus.verified.id and c["status"]["status"] == "verified"
    assert c["status"]["reproduced_bpb"] == "1.415000" and c["claimed"]["val_bpb"] == "1.412000"
    verdicts = {v["voter"]: (v["verdict"], v["operator_trusted"]) for v in c["votes"]}
    assert verdicts == {TRUSTED.pubkey: ("reproduced", True), STRANGER.pubkey: ("failed", False)}
    # the claim's curve and the trusted reproduction's; the failed vote measured nothing
    assert [(k["kind"], k["verdict"]) for k in c["curves"]] == [("claim", None), ("vote", "reproduced")]
    assert all(len(k["points"]) == 24 and isinstance(k["points"][0][1], float) for k in c["curves"])
    assert [ch["claim"] for ch in c["lineage"]["children"]] == [corpus.best.id, corpus.disputed.id]
    status, child = get_json(node, f"/api/claim/{corpus.pending.id}")
    assert [a["claim"] for a in child["lineage"]["ancestors"]] == [corpus.verified.id, corpus.best.id]
    assert c["status"]["estimate"] is None and c["status"]["significance"]["state"] == "not significant yet"
    assert [v["fresh"] for v in c["votes"]] == [False, False]


def test_claim_shows_its_estimate_p_value_and_reference(node, corpus):
    luck = corpus.luck
    status, c = get_json(node, f"/api/claim/{luck.significant.id}")
    assert status == 200
    st = c["status"]
    assert st["claimed_bpb"] == "1.470000" and st["estimate"] == {"mean": "1.478000", "se": "0.002098", "n": 2,
                                                                    "sigma": "0.002966"}
    assert st["significance"]["state"] == "significant" and 0 < st["significance"]["p"] < 0.01
    assert st["significance"]["reference"] == luck.baseline.id and st["significance"]["z"] > 8
    assert st["reference_estimate"]["mean"] == "1.502000" and st["reference_estimate"]["n"] == 2
    assert [v["fresh"] for v in c["votes"]] == [True, True]
    status, base = get_json(node, f"/api/claim/{luck.baseline.id}")
    assert base["status"]["significance"]["state"] == "baseline" and base["status"]["reference_estimate"] is None


def test_lineage_is_a_flat_parent_linked_list(node, corpus):
    status, lin = get_json(node, f"/api/lineage?task={TASK}")
    assert status == 200
    parents = {n["claim"]: n["parent"] for n in lin["nodes"]}
    assert parents == {corpus.verified.id: None, corpus.best.id: corpus.verified.id,
                       corpus.disputed.id: corpus.verified.id, corpus.pending.id: corpus.best.id,
                       corpus.crashed.id: corpus.best.id, corpus.over_budget.id: corpus.best.id}
    status_of = {n["claim"]: (n["status"], n["rank"]) for n in lin["nodes"]}
    assert status_of[corpus.best.id] == ("verified", 1) and status_of[corpus.crashed.id] == ("crashed", None)
    assert status_of[corpus.over_budget.id] == ("over budget", None)
    status, lin = get_json(node, f"/api/lineage?task={LUCK}")
    state_of = {n["claim"]: (n["state"], n["rank"]) for n in lin["nodes"]}
    assert state_of[corpus.luck.significant.id] == ("significant", 1)
    assert state_of[corpus.luck.baseline.id] == ("baseline", 3) and state_of[corpus.luck.hacked.id] == ("no gain", None)


def test_activity_and_peers_shapes(node, cluster):
    status, a = get_json(node, "/api/activity")
    assert status == 200
    assert set(a) >= {"node", "experiment", "queue", "recent", "counters", "slots", "settings"}
    assert a["experiment"] is None and a["queue"] == [] and a["settings"]["ralph"] is False
    assert a["node"]["counts"]["claim"] == 11 and a["slots"]["devices"]
    status, p = get_json(node, "/api/peers")
    assert [x["address"] for x in p["peers"]] == [cluster[1].address]


@pytest.mark.parametrize("path,code", [
    ("/api/claim/nothex", 400),
    ("/api/claim/" + "0" * 64, 404),
    ("/api/claim/" + "A" * 64, 400),  # ids are lower-case hex
    ("/api/leaderboard?task=bad", 400),
    ("/api/lineage?task=" + "z" * 64, 400),
    ("/static/../daemon.py", 404),
    ("/static/missing.js", 404),
])
def test_bad_ids_are_4xx(node, path, code):
    status, body, _ = fetch(node, path)
    assert status == code, body


def test_claim_id_of_a_vote_is_404(node, corpus):
    status, body = get_json(node, f"/api/claim/{corpus.votes[0].id}")
    assert status == 404 and body["error"] == "unknown claim"


def test_page_and_assets_are_served_locally_with_a_strict_csp(node):
    status, html, headers = fetch(node, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    text = html.decode()
    assert "/static/app.js" in text and "/static/style.css" in text
    assert "http://" not in text and "https://" not in text  # no CDN, no external font
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, body, headers = fetch(node, f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert b"https://" not in body and b"@import" not in body and b"url(" not in body


# -- /metrics --------------------------------------------------------------------------------------

def scrape(node: NodeProcess) -> dict[str, dict[tuple, float]]:
    status, body, headers = fetch(node, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_report_the_corpus_ingest_and_peers(node):
    bad = build(Identity.from_seed(b"\x31" * 32), "public", "vote",
                {"claim": "b" * 64, "verdict": "refused", "reason": "no", "result": None}).to_dict()
    bad["sig"] = "0" * 128
    assert node.push([json.dumps(bad).encode()])["rejected"][0]["reason"] == "invalid: bad signature"
    m = scrape(node)
    assert m["ralphswarm_messages"][(("kind", "claim"),)] == 11
    assert m["ralphswarm_messages"][(("kind", "vote"),)] == 15
    assert m["ralphswarm_votes"] == {(("verdict", "reproduced"),): 10, (("verdict", "mismatch"),): 3,
                                     (("verdict", "failed"),): 1, (("verdict", "refused"),): 0,
                                     (("verdict", "over budget"),): 1}
    assert m["ralphswarm_ingest_rejected_total"][(("reason", "invalid: bad signature"),)] == 1
    assert m["ralphswarm_ingest_messages_total"][(("result", "accepted"),)] >= 10
    assert m["ralphswarm_peers"] == {(("state", "active"),): 1, (("state", "cooling"),): 0}
    assert m["ralphswarm_experiments_total"][(("result", "run"),)] == 0
    assert m["ralphswarm_reproduction_share"][()] == 0
    assert m["ralphswarm_gossip_received_bytes_total"][()] > 0 and m["ralphswarm_gossip_sent_bytes_total"][()] > 0
    assert set(m) >= {"ralphswarm_proposer_tokens_total", "ralphswarm_proposer_cost_usd_total",
                      "ralphswarm_votes_cast_total", "ralphswarm_node_info"}


# -- the page in a real browser --------------------------------------------------------------------

@pytest.fixture  # per test: sync Playwright holds an event loop, which async tests must not meet
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: the dashboard test needs Debian's chromium "
                    "(scripts/test installs it; or: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_dashboard_in_a_browser(node, corpus, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("request", lambda req: None if req.url.startswith(node.address) else problems.append(req.url))
        page.goto(node.address + "/")

        board = page.locator("#leaderboard .verified tbody tr")
        board.first.wait_for()
        assert board.count() == 2
        assert corpus.best.id[:12] in board.nth(0).inner_text() and "1.3920" in board.nth(0).inner_text()
        assert page.locator("#leaderboard .pending tbody tr").count() == 1
        assert page.locator("#leaderboard .disputed tbody tr").count() == 1
        over = page.locator("#leaderboard .over-budget tbody tr")
        assert over.count() == 1 and corpus.over_budget.id[:12] in over.inner_text()
        assert over.locator(".badge.over-budget").inner_text() == "over budget"
        assert page.locator("#lineage .lnode").count() == 7  # the baseline and six claims
        assert page.locator("#peers tbody tr").count() == 1
        assert "Idle" in page.locator("#activity").inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        board.nth(1).locator("a").click()  # the claim reproduced at 1.415
        page.wait_for_url(f"**#/claim/{corpus.verified.id}")
        page.locator(f'#claim[data-claim="{corpus.verified.id}"] svg.chart path.curve').first.wait_for()
        assert page.locator("#claim svg.chart path.curve").count() == 2
        assert page.locator("#claim svg.chart path.curve.claim").count() == 1
        assert page.locator("#claim svg.chart path.curve.reproduced").count() == 1
        votes = page.locator("#claim .votes tbody tr")
        assert votes.count() == 2
        assert {votes.nth(i).locator(".badge").inner_text() for i in range(2)} == {"reproduced", "failed"}
        assert TRUSTED.pubkey[:12] in page.locator("#claim .votes").inner_text()
        assert page.locator("#claim .value.reproduced").inner_text() == "1.4150"
        assert page.locator("#claim pre.diff .add").count() == 1 == page.locator("#claim pre.diff .del").count()
        page.screenshot(path=str(ARTIFACTS / "dashboard-claim.png"), full_page=True)

        # A stranger's HTML in a note and a patch is shown as text, never run or parsed.
        page.goto(f"{node.address}/#/claim/{corpus.disputed.id}")
        page.locator(f'#claim[data-claim="{corpus.disputed.id}"]').wait_for()
        assert XSS in page.locator("#claim .note.full").inner_text()
        assert XSS in page.locator("#claim pre.diff").inner_text()
        assert page.locator("#claim img, #claim script").count() == 0 and page.title() == "ralphswarm"
        assert page.locator("#claim svg.chart path.curve.mismatch").count() == 1

        page.goto(f"{node.address}/#/claim/{corpus.over_budget.id}")
        page.locator(f'#claim[data-claim="{corpus.over_budget.id}"]').wait_for()
        assert page.locator("#claim h2 .badge.over-budget").inner_text() == "over budget"
        assert page.locator("#claim svg.chart path.curve.over-budget").count() == 1
        assert "37.5 s" in page.locator("#claim .votes").inner_text()  # the reproducer's training time

        # Luck is not progress: the luck task's board shows mean ± se, n and the state; the claim, p and reference.
        page.goto(f"{node.address}/#/")
        page.select_option("#task", LUCK)
        luck = corpus.luck
        rows = page.locator("#leaderboard .verified tbody tr")
        page.locator(f'#leaderboard .verified a[href="#/claim/{luck.significant.id}"]').wait_for()
        assert rows.count() == 4
        first = rows.nth(0)
        assert first.locator(".badge.state.significant").inner_text() == "significant"
        assert first.locator("strong.estimate").inner_text() == "1.4780 ± 0.0021"
        cells = [first.locator("td").nth(i).inner_text() for i in range(10)]
        assert cells[5] == "2" and cells[7] == "1.4700"  # n, and the claimant's own value apart
        assert [rows.nth(i).locator(".badge.state").inner_text() for i in range(4)] == [
            "significant", "not significant yet", "baseline", "no gain"]
        assert rows.nth(1).locator("td").nth(5).inner_text() == "1"
        disputed = page.locator("#leaderboard .disputed tbody tr")
        assert disputed.count() == 1 and "1.5040 ± 0.0019" in disputed.inner_text()
        assert disputed.locator(".badge.state.no-gain").inner_text() == "no gain"
        assert page.locator("#lineage .badge.state.significant").count() == 1
        page.screenshot(path=str(ARTIFACTS / "dashboard-luck.png"), full_page=True)

        page.locator(f'#leaderboard .verified a[href="#/claim/{luck.significant.id}"]').click()
        page.locator(f'#claim[data-claim="{luck.significant.id}"] .luck').wait_for()
        assert page.locator("#claim h2 .badge.state.significant").inner_text() == "significant"
        assert page.locator("#claim .value.estimate").inner_text() == "1.4780 ± 0.0021"
        assert "n = 2" in page.locator("#claim .samples").inner_text()
        p_line = page.locator("#claim .p-value").inner_text()
        assert p_line.startswith("p = 1.5e-15") and "z = 8.09" in p_line, p_line
        assert page.locator("#claim .reference a").inner_text() == luck.baseline.id[:12]
        assert "1.5020 ± 0.0021 (n = 2)" in page.locator("#claim .luck").inner_text()
        assert page.locator("#claim .votes .fresh").count() == 2
        page.screenshot(path=str(ARTIFACTS / "dashboard-luck-claim.png"), full_page=True)

        page.goto(f"{node.address}/#/claim/{'0' * 64}")
        page.get_by_text("holds no claim").wait_for()
        assert problems == [] or all("404" in p for p in problems), problems
    finally:
        context.close()


# -- private swarms: the operator's browser on loopback reads the dashboard, nobody else ----------

def test_private_swarm_dashboard_is_clear_on_loopback_only(tmp_path):
    from node.net.swarmkey import generate_swarm_key

    key = generate_swarm_key(tmp_path / "swarm.key")
    node = NodeProcess(tmp_path / "node", *FAST, "--swarm", "lab", "--swarm-key-file", str(key)).start()
    try:
        for path in ("/", "/static/app.js", "/api/tasks", "/api/activity", "/metrics"):
            assert fetch(node, path)[0] == 200, path
        assert fetch(node, "/v1/status")[0] == 401  # the peer API still needs the swarm key
        req = urllib.request.Request(node.address + "/api/tasks", method="POST", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401  # only reads go through in clear
    finally:
        assert node.stop() == 0


# -- this node's own experiments: the progress chart, and own claims nobody else has checked --------

def test_progress_chart_and_own_unverified_claims_in_a_browser(tmp_path, browser):
    """A node whose home holds its own experiments (signed with its own key, as its loop publishes
    them): /api/progress gives autoresearch's points, running best and baseline; the page draws
    them; its own claims, verified by its own run only, are listed apart as "own, unverified by
    others", never ranked, and the lineage gives them no rank either."""
    from tests.node.test_cli_views import TINY, Experiments
    from tests.nodeproc import cli

    from protocol import Identity

    home = tmp_path / "node"
    assert cli("init", home=home).returncode == 0
    exp = Experiments(Identity.load(home / "identity.key"))
    node = NodeProcess(home, *FAST).start()
    try:
        report = node.push([c.canonical() for c in exp.all])
        assert len(report["accepted"]) == len(exp.all), report
        status, pr = get_json(node, f"/api/progress?task={TINY.id}")
        assert status == 200 and (pr["experiments"], pr["kept"], pr["crashed"]) == (6, 3, 2)
        assert [(p["short"], p["val_bpb"], p["kept"]) for p in pr["points"]] == [
            (exp.baseline.id[:12], 1.95, True), (exp.kept.id[:12], 1.94, True),
            (exp.discarded.id[:12], 1.99, False), (exp.kept2.id[:12], 1.93, True)]
        assert pr["frontier"] == [{"x": 0, "val_bpb": 1.95}, {"x": 1, "val_bpb": 1.94}, {"x": 3, "val_bpb": 1.93}]
        assert pr["baseline"] == 1.95 and pr["best"] == 1.93
        status, lb = get_json(node, f"/api/leaderboard?task={TINY.id}")
        own = {e["claim"] for e in lb["verified"] if e["own_unverified"]}
        assert own == {exp.baseline.id, exp.kept.id, exp.kept2.id} and lb["ranked"] == []
        assert lb["baseline"]["claim"] == exp.baseline.id and lb["baseline"]["val_bpb"] == "1.950000"
        assert {e["claim"]: e["delta"] for e in lb["verified"]}[exp.kept2.id] == "-0.020000"
        assert "1.0 = one run by this node" in lb["support_unit"]
        status, lin = get_json(node, f"/api/lineage?task={TINY.id}")
        assert all(n["rank"] is None for n in lin["nodes"])
        status, c = get_json(node, f"/api/claim/{exp.kept2.id[:8]}")  # any unique prefix, as the CLI takes
        assert status == 200 and c["envelope"]["id"] == exp.kept2.id

        ARTIFACTS.mkdir(exist_ok=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.goto(node.address + "/")
            page.select_option("#task", TINY.id)
            page.locator("#progress svg circle.point").first.wait_for()
            assert page.locator("#progress svg circle.point").count() == 4
            assert page.locator("#progress svg circle.point.kept").count() == 3
            assert page.locator("#progress svg path.frontier").count() == 1
            assert page.locator("#progress svg line.baseline-line").count() == 1
            assert "6 experiments · 3 kept · 2 crashed" in page.locator("#progress").inner_text()
            own_rows = page.locator("#leaderboard .own-unverified tbody tr")
            assert own_rows.count() == 3
            assert page.locator("#leaderboard .verified tbody tr").count() == 0
            assert "baseline val_bpb 1.950000" in page.locator("#leaderboard .baseline-line").inner_text()
            page.locator("#progress").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "dashboard-progress.png"), full_page=True)
            page.goto(f"{node.address}/#/claim/{exp.kept2.id[:8]}")
            page.locator(f'#claim[data-claim="{exp.kept2.id}"]').wait_for()
            assert problems == [], problems
        finally:
            context.close()
    finally:
        assert node.stop() == 0
