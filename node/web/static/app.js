// ralphswarm dashboard: polls the node's /api/* JSON every 2 s and draws it.
// Everything that comes from the corpus (notes, diffs, reasons, addresses) is inserted as text
// (textContent / text nodes), never as HTML: claims are written by strangers.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const state = { task: null, last: {}, gen: 0 };

// -- small helpers -----------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
// One id rule (node/ids.py): ids are shown as their first 12 hex digits, as the CLI prints them.
const SHORT = 12;
const short = (id) => (id ? id.slice(0, SHORT) : "—");
const bpb = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(4));
const seconds = (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(1)} s`);
// A status or verdict may hold a space ("over budget"): one class name, "over-budget".
const badge = (status) => el("span", { class: `badge ${String(status).replace(/ /g, "-")}`, text: status });
const claimLink = (id, label) => el("a", { href: `#/claim/${id}`, class: "mono", text: label || short(id) });
// Luck is not progress (protocol/SPEC.md 5.9): an estimate from fresh-seed reproductions, shown as
// mean ± standard error with as many decimals as the error needs (4 to 6, the wire's 6 at most).
function estimateText(est) {
  if (!est) return "—";
  const se = Number(est.se);
  const d = se > 0 ? Math.min(6, Math.max(4, 1 - Math.floor(Math.log10(se)))) : 4;
  return `${Number(est.mean).toFixed(d)} ± ${se.toFixed(d)}`;
}
const samples = (est) => (est ? String(est.n) : "0");
function pText(p) {
  if (p === null || p === undefined) return "—";
  return p !== 0 && p < 0.001 ? Number(p).toExponential(1) : String(Number(Number(p).toPrecision(2)));
}
// The test's state (significant, not significant yet, no gain, baseline) as a badge; p in its title.
function stateBadge(sig) {
  if (!sig) return el("span", { class: "muted", text: "—" });
  return el("span", { class: `badge state ${String(sig.state).replace(/ /g, "-")}`, text: sig.state,
    title: sig.p === null || sig.p === undefined ? null : `p = ${pText(sig.p)}` });
}
function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
function clip(text, n) {
  const first = String(text || "").split("\n")[0];
  return first.length > n ? first.slice(0, n - 1) + "…" : first;
}
function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted empty", text: empty });
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}
async function api(path) {
  const resp = await fetch(path, { cache: "no-store" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw Object.assign(new Error(body.error || resp.statusText), { status: resp.status });
  return body;
}
// Re-draw a section only when its JSON changed, so polling does not reset scroll or selection.
function changed(key, data) {
  const json = JSON.stringify(data);
  if (state.last[key] === json) return false;
  state.last[key] = json;
  return true;
}
function fill(target, ...children) {
  target.replaceChildren(...children.flat(Infinity).filter((c) => c));
}

// -- the loss chart ----------------------------------------------------------------------------
function niceTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const step0 = span / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}
const PALETTE = ["#2f6fdf", "#1a9c6b", "#8a5cd0", "#d08a1a", "#0f8fa8", "#b0478c"];
function curveColor(curve, i) {
  if (curve.kind === "claim") return "#1d2b4f";
  if (curve.verdict === "mismatch") return "#d0453a";
  if (curve.verdict === "failed" || curve.verdict === "refused") return "#8b8f99";
  if (curve.verdict === "over budget") return "#c26a00";
  return PALETTE[i % PALETTE.length];
}
function lossChart(curves) {
  const W = 680, H = 300, m = { l: 52, r: 16, t: 16, b: 40 };
  const pts = curves.flatMap((c) => c.points);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "loss curves" });
  if (!pts.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no loss curves"));
    return root;
  }
  const xMax = Math.max(...pts.map((p) => p[0])) || 1;
  let yLo = Math.min(...pts.map((p) => p[1])), yHi = Math.max(...pts.map((p) => p[1]));
  const pad = (yHi - yLo) * 0.06 || 0.1;
  yLo -= pad; yHi += pad;
  const x = (v) => m.l + (v / xMax) * (W - m.l - m.r);
  const y = (v) => H - m.b - ((v - yLo) / (yHi - yLo)) * (H - m.t - m.b);
  for (const t of niceTicks(yLo, yHi, 5)) {
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), class: "grid" }));
    root.append(svg("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", class: "axis" }, t.toString()));
  }
  for (const t of niceTicks(0, xMax, 6)) {
    root.append(svg("text", { x: x(t), y: H - m.b + 16, "text-anchor": "middle", class: "axis" },
      t >= 1e6 ? `${t / 1e6}M` : t >= 1e3 ? `${t / 1e3}k` : String(t)));
  }
  root.append(svg("text", { x: (W + m.l) / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, "training tokens"));
  root.append(svg("text", { x: 12, y: (H - m.b) / 2, class: "axis", transform: `rotate(-90 12 ${(H - m.b) / 2})`,
    "text-anchor": "middle" }, "loss"));
  curves.forEach((c, i) => {
    if (!c.points.length) return;
    const d = c.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    const attrs = { d, class: `curve ${c.kind} ${(c.verdict || "").replace(/ /g, "-")}`.trim(), stroke: curveColor(c, i),
      "data-label": c.label };
    if (c.verdict === "mismatch") attrs["stroke-dasharray"] = "6 4";
    root.append(svg("path", attrs));
  });
  return root;
}
function legend(curves) {
  return el("ul", { class: "legend" }, curves.map((c, i) => el("li", {},
    (() => { const s = svg("svg", { width: 22, height: 10 }); s.append(svg("line", { x1: 0, x2: 22, y1: 5, y2: 5,
      stroke: curveColor(c, i), "stroke-width": 3, ...(c.verdict === "mismatch" ? { "stroke-dasharray": "5 3" } : {}) }));
      return s; })(),
    c.kind === "claim" ? "claimed run" : `${c.verdict} · ${short(c.author)}`)));
}

// -- sections ----------------------------------------------------------------------------------
function renderHeader(node) {
  const c = node.counts || {};
  fill(document.getElementById("node-info"),
    el("span", {}, "node ", el("span", { class: "mono", title: node.pubkey, text: short(node.pubkey) })),
    el("span", {}, `swarm ${node.swarm}`),
    el("span", {}, `${node.peers} active peer${node.peers === 1 ? "" : "s"}`),
    el("span", {}, `${c.claim || 0} claims · ${c.vote || 0} votes`),
    el("span", {}, `v${node.software}`));
}

function renderTasks(data) {
  const select = document.getElementById("task");
  if (!state.task) state.task = (data.tasks.find((t) => t.claims > 0) || data.tasks[0] || {}).id || data.default;
  fill(select, data.tasks.map((t) => el("option", { value: t.id, selected: t.id === state.task,
    text: `${t.name || short(t.id)} (${t.claims} claims)` })));
}

function leaderboardSection(lb) {
  const note = (e) => el("span", { class: "note", text: clip(e.note, 60) });
  const author = (e) => el("span", { class: "mono muted", text: short(e.author) });
  // The board ranks by the estimated mean, or by the reproduced value while a claim has no estimate:
  // the rank value is the bold one. The claimant's own value is shown apart, never ranked.
  const mean = (e, rank) => el(rank && e.estimate ? "strong" : "span", { class: "estimate", text: estimateText(e.estimate) });
  // This node's own claims nobody else has voted on are listed apart, never ranked: every node's
  // board then agrees on #1 once votes have flowed.
  const delta = (e) => el("span", { class: "delta", text: e.delta === null || e.delta === undefined ? "—" : e.delta });
  const byAuthor = (e) => el("span", { class: "mono muted author", title: e.author, text: e.own ? "own" : e.author.slice(0, 8) });
  const ranked = lb.verified.filter((e) => !e.own_unverified).map((e, i) => [String(i + 1), claimLink(e.claim), note(e),
    stateBadge(e.significance), mean(e, true), samples(e.estimate), el(e.estimate ? "span" : "strong", { text: bpb(e.val_bpb) }),
    bpb(e.claimed_bpb), String(e.votes), e.support.toFixed(2), delta(e), byAuthor(e)]);
  const ownUnverified = lb.verified.filter((e) => e.own_unverified).map((e) => [claimLink(e.claim), note(e),
    bpb(e.claimed_bpb), delta(e), el("span", { class: "muted small", text: "own run only: no other node has voted yet" })]);
  const base = lb.baseline;
  const pending = lb.pending.map((e) => [claimLink(e.claim), note(e), stateBadge(e.significance), mean(e),
    samples(e.estimate), bpb(e.claimed_bpb), String(e.votes), author(e)]);
  const disputed = lb.disputed.map((e) => [claimLink(e.claim), note(e), stateBadge(e.significance), mean(e),
    samples(e.estimate), bpb(e.claimed_bpb), e.against.toFixed(2), author(e)]);
  // Trained longer than the task's compute cap allows: never ranked, whatever the val_bpb.
  const overBudget = (lb.over_budget || []).map((e) => [claimLink(e.claim), badge(e.status), note(e), mean(e),
    samples(e.estimate), bpb(e.claimed_bpb), (e.over || 0).toFixed(2), author(e)]);
  // Trusted runs disagree: charged to the claim, listed apart, never ranked.
  const nonDeterministic = (lb.non_deterministic || []).map((e) => [claimLink(e.claim), note(e), mean(e),
    samples(e.estimate), bpb(e.claimed_bpb), e.support.toFixed(2), e.against.toFixed(2), author(e)]);
  return el("section", { id: "leaderboard" },
    el("h2", {}, "Leaderboard ", el("span", { class: "muted small", text: `task ${short(lb.task)}` })),
    el("p", { class: "baseline-line" }, base
      ? ["baseline val_bpb ", el("strong", { class: "baseline-value", text: base.val_bpb }), " (claim ", claimLink(base.claim),
        `, ${base.status}); Δ: each entry's difference from it (negative is better)`]
      : "baseline val_bpb: not measured yet (no baseline run on the board)"),
    el("p", { class: "muted small legend-text", text: "Ranked by the mean val_bpb of trusted reproductions at fresh " +
      "seeds (± standard error, n runs). State: the test against the parent, or the task baseline; significant " +
      "at p < 0.01. The claimant's own run is shown apart: it may be the luckiest of many seeds. Support: " +
      (lb.support_unit || "") + "." }),
    el("div", { class: "verified" }, table(["#", "claim", "note", "state", "mean ± se", "n", "reproduced", "claimed",
      "votes", "support", "Δ", "author"], ranked,
      "No verified claims yet: claims enter the board once this node or keys it trusts reproduce them.")),
    el("h3", { title: "this node's own claims, measured by this node only: listed apart until another node votes" },
      "Own, unverified by others ", el("span", { class: "count", text: String(ownUnverified.length) })),
    el("div", { class: "own-unverified" }, table(["claim", "note", "own val_bpb", "Δ", ""], ownUnverified, "none")),
    el("h3", {}, "Pending ", el("span", { class: "count", text: String(pending.length) })),
    el("div", { class: "pending" }, table(["claim", "note", "state", "mean ± se", "n", "claimed", "votes", "author"],
      pending, "none")),
    el("h3", {}, "Disputed ", el("span", { class: "count", text: String(disputed.length) })),
    el("div", { class: "disputed" }, table(["claim", "note", "state", "mean ± se", "n", "claimed", "against", "author"],
      disputed, "none")),
    el("h3", { title: "trained longer than the task's compute cap allows: never ranked, whatever the val_bpb" },
      "Over budget ", el("span", { class: "count", text: String(overBudget.length) })),
    el("div", { class: "over-budget" }, table(["claim", "status", "note", "mean ± se", "n", "claimed", "over budget",
      "author"], overBudget, "none")),
    el("h3", { title: "trusted runs of it disagree (a machine-dependent script): never ranked, nobody distrusted for it" },
      "Non-deterministic ", el("span", { class: "count", text: String(nonDeterministic.length) })),
    el("div", { class: "non-deterministic" }, table(["claim", "note", "mean ± se", "n", "claimed", "support", "against",
      "author"], nonDeterministic, "none")));
}

// The progress chart (autoresearch's progress.png): this node's experiments in order, each a dot
// (kept ones green), the running best of the kept ones as a step line, the baseline as a dashed line.
function progressChart(pr) {
  const W = 680, H = 260, m = { l: 60, r: 16, t: 16, b: 40 };
  const root = svg("svg", { class: "chart progress", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "progress" });
  const pts = pr.points || [];
  if (!pts.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" },
      "no experiment of this node on this task yet"));
    return root;
  }
  const vals = pts.map((p) => p.val_bpb);
  let yLo = Math.min(...vals), yHi = Math.max(...vals);
  const pad = (yHi - yLo) * 0.08 || 0.01;
  yLo -= pad; yHi += pad;
  const xMax = Math.max(1, pts.length - 1);
  const x = (v) => m.l + (v / xMax) * (W - m.l - m.r);
  const y = (v) => H - m.b - ((v - yLo) / (yHi - yLo)) * (H - m.t - m.b);
  for (const t of niceTicks(yLo, yHi, 5)) {
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), class: "grid" }));
    root.append(svg("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", class: "axis" }, t.toString()));
  }
  for (const t of niceTicks(0, xMax, Math.min(8, xMax))) {
    if (Number.isInteger(t)) root.append(svg("text", { x: x(t), y: H - m.b + 16, "text-anchor": "middle", class: "axis" }, String(t)));
  }
  root.append(svg("text", { x: (W + m.l) / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, "experiment #"));
  if (pr.baseline !== null && pr.baseline !== undefined) {
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(pr.baseline), y2: y(pr.baseline), class: "baseline-line",
      stroke: "#555", "stroke-dasharray": "5 4" }));
  }
  const fr = pr.frontier || [];
  if (fr.length) {
    const steps = [];
    fr.forEach((f, i) => {
      const next = i + 1 < fr.length ? fr[i + 1].x : xMax;
      steps.push(`${i ? "L" : "M"}${x(f.x).toFixed(1)},${y(f.val_bpb).toFixed(1)}`, `L${x(next).toFixed(1)},${y(f.val_bpb).toFixed(1)}`);
    });
    root.append(svg("path", { d: steps.join(" "), class: "frontier", stroke: "#27ae60", fill: "none", "stroke-width": 2 }));
  }
  for (const p of pts) {
    const dot = svg("circle", { cx: x(p.x).toFixed(1), cy: y(p.val_bpb).toFixed(1), r: p.kept ? 5 : 3.5,
      class: p.kept ? "point kept" : "point discarded", fill: p.kept ? "#2ecc71" : "#bbbbbb",
      stroke: p.kept ? "#1d2b4f" : "none" });
    dot.append(svg("title", {}, `${p.short} ${p.val_bpb.toFixed(6)} ${p.kept ? "kept" : "discarded"}: ${p.description}`));
    root.append(dot);
  }
  return root;
}

function progressSection(pr) {
  const best = pr.best === null || pr.best === undefined ? "—" : pr.best.toFixed(6);
  const base = pr.baseline === null || pr.baseline === undefined ? "—" : pr.baseline.toFixed(6);
  return el("section", { id: "progress" }, el("h2", {}, "This node's progress"),
    el("p", { class: "muted small", text: `${pr.experiments} experiments · ${pr.kept} kept · ${pr.crashed} crashed · ` +
      `baseline ${base} · best kept ${best} (dots: experiments, green: kept; line: running best; dashed: baseline)` }),
    el("div", { class: "chart-box" }, progressChart(pr)));
}

function lineageSection(lin) {
  const children = new Map();
  for (const n of lin.nodes) {
    const key = n.parent || "";
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(n);
  }
  const item = (n, depth) => el("li", {},
    el("div", { class: "lnode" }, claimLink(n.claim), badge(n.status),
      n.state ? stateBadge({ state: n.state }) : null,
      n.rank ? el("span", { class: "rank", text: `#${n.rank}` }) : null,
      el("span", { class: "bpb", text: bpb(n.val_bpb) }),
      el("span", { class: "note", text: clip(n.note, 60) }),
      n.parent_missing ? el("span", { class: "muted small", text: "(parent not held)" }) : null),
    depth < 200 && children.has(n.claim) ? el("ul", {}, children.get(n.claim).map((c) => item(c, depth + 1))) : null);
  const roots = children.get("") || [];
  return el("section", { id: "lineage" }, el("h2", {}, "Lineage"),
    roots.length ? el("ul", { class: "tree" }, el("li", {}, el("div", { class: "lnode" },
      el("span", { class: "badge baseline", text: "baseline" }), el("span", { class: "note", text: "task baseline" })),
      el("ul", {}, roots.map((n) => item(n, 0))))) : el("p", { class: "muted empty", text: "No claims for this task yet." }));
}

function renderPeers(data) {
  const rows = data.peers.map((p) => [
    el("div", {}, el("div", { class: "mono", text: p.address }),
      el("div", { class: "muted small" }, el("span", { class: "mono", title: p.pubkey || "", text: short(p.pubkey) }),
        ` · ${p.source}`, p.last_error ? el("span", { class: "bad", text: ` · ${p.last_error}` }) : null)),
    el("span", { class: p.score < 0 ? "bad" : "good", text: p.score.toFixed(1) }),
    ago(p.last_contact), p.cooling ? badge("cooling") : badge("active")]);
  fill(document.querySelector("#peers .body"), table(["peer", "score", "last contact", "state"], rows, "No peers yet."));
}

function renderActivity(a) {
  renderHeader(a.node);
  const running = Object.values(a.experiments || {}).sort((x, y) => (x.device < y.device ? -1 : 1));
  const now = running.length
    ? el("div", {}, running.map((exp) => el("div", { class: "experiment" },
      el("div", {}, el("strong", { text: exp.kind === "reproduce" ? "Reproducing" : "Own experiment" }), " ",
        exp.claim ? claimLink(exp.claim) : null,
        el("span", { class: "muted", text: ` on ${exp.device}` + (exp.phase ? ` (${exp.phase})` : "") + ` started ${ago(exp.started_at)}` })),
      el("progress", { max: exp.budget || 1, value: exp.tokens || 0 }),
      el("div", { class: "muted small", text: `${exp.tokens || 0} / ${exp.budget || "?"} tokens` +
        (exp.loss !== null && exp.loss !== undefined ? ` · loss ${Number(exp.loss).toFixed(4)}` : "") }))))
    : el("p", { class: "muted empty", text: "Idle: no experiment running." });
  const s = a.slots;
  const loops = `own loop ${a.settings.ralph ? "on" : "off"} · reproduction ${a.settings.reproduce ? "on" : "off"}`;
  const facts = el("div", { class: "facts" },
    el("span", { text: loops }),
    s ? el("span", { text: `devices ${s.devices.join(", ")} (${s.free} free) · reproduction share ${(100 * s.reproduce_share).toFixed(0)}%` }) : null,
    el("span", { text: `experiments ${a.counters.experiments_run || 0} run / ${a.counters.experiments_kept || 0} kept · ` +
      `reproductions ${a.counters.reproductions_run || 0}` }),
    el("span", { class: "proposer-usage", text: `proposer ${(a.counters.proposer_input_tokens || 0) + (a.counters.proposer_cache_read_tokens || 0) +
      (a.counters.proposer_cache_write_tokens || 0)} tokens in / ${a.counters.proposer_output_tokens || 0} out · ` +
      `$${(a.counters.proposer_cost_usd || 0).toFixed(4)}` }));
  const queue = a.queue.map((q) => [claimLink(q.claim), String(q.priority ?? ""), el("span", { class: "muted small", text: q.reason || "" })]);
  const recent = a.recent.map((r) => el("li", {}, el("span", { class: "muted small", text: ago(r.at) }), " ", r.text));
  fill(document.querySelector("#activity .body"), now, facts,
    el("h3", {}, "Reproduction queue ", el("span", { class: "count", text: String(queue.length) })),
    table(["claim", "priority", "why"], queue, "Queue empty."),
    el("h3", {}, "Recent"),
    recent.length ? el("ul", { class: "recent" }, recent) : el("p", { class: "muted empty", text: "Nothing yet." }));
}

function diffView(patch) {
  return el("pre", { class: "diff" }, patch.replace(/\n$/, "").split("\n").map((line) => el("span", {
    class: line.startsWith("@@") ? "hunk" : line.startsWith("+++") || line.startsWith("---") ? "meta"
      : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "ctx", text: line || " " })));
}

function claimView(c) {
  const env = c.envelope, b = env.body, st = c.status;
  const votes = c.votes.map((v) => [el("span", { class: "mono", title: v.voter, text: short(v.voter) }),
    badge(v.verdict), bpb(v.val_bpb),
    v.fresh ? el("span", { class: "fresh", title: "the voter's fresh seed, drawn from its signature over the claim id",
      text: `fresh ${v.result ? v.result.seed : ""}`.trim() }) : el("span", { class: "muted", text: v.result ? String(v.result.seed) : "—" }),
    seconds(v.result && v.result.wall_s), el("span", {}, v.trust.toFixed(2), v.operator_trusted ? el("span", { class: "muted small", text: " (trusted)" }) : null),
    el("span", { class: "small", text: v.reason || "" }), ago(v.created_at)]);
  const lin = c.lineage;
  const sig = st.significance, est = st.estimate;
  const pLine = !sig ? "" : sig.p === null || sig.p === undefined
    ? (sig.state === "baseline" ? "the reference its children are tested against" : "no test yet: a side has no fresh-seed run")
    : `p = ${pText(sig.p)} · z = ${sig.z === null || sig.z === undefined ? "—" : Number(sig.z).toFixed(2)} (one-sided, corrected; significant below 0.01)`;
  const ref = !sig ? "—" : sig.reference ? claimLink(sig.reference)
    : sig.state === "baseline" ? "this is the task baseline" : "none (no baseline claim)";
  const luck = el("div", { class: "results luck" },
    el("div", { class: "stat" }, el("div", { class: "label", text: "estimate from fresh seeds (mean ± se)" }),
      el("div", { class: "value estimate", text: estimateText(est) }),
      el("div", { class: "muted small samples", text: est ? `n = ${est.n} · sigma ${Number(est.sigma).toFixed(4)}`
        : "n = 0: no trusted fresh-seed reproduction yet" })),
    el("div", { class: "stat" }, el("div", { class: "label", text: "test" }), el("div", { class: "value state" }, stateBadge(sig)),
      el("div", { class: "muted small p-value", text: pLine })),
    el("div", { class: "stat" }, el("div", { class: "label", text: "reference" }), el("div", { class: "value small reference" }, ref),
      el("div", { class: "muted small", text: sig && sig.reference ? `${estimateText(st.reference_estimate)} (n = ${samples(st.reference_estimate)})` : "" })));
  return el("article", { id: "claim", "data-claim": env.id },
    el("p", {}, el("a", { href: "#/", text: "← leaderboard" })),
    el("h2", {}, "Claim ", el("span", { class: "mono", text: short(env.id) }), " ", badge(st.status), " ", stateBadge(sig)),
    el("p", { class: "note full", text: b.note }),
    el("dl", { class: "meta" },
      el("dt", { text: "author" }), el("dd", { class: "mono", text: env.author }),
      el("dt", { text: "parent" }), el("dd", {}, b.parent ? claimLink(b.parent) : "task baseline"),
      el("dt", { text: "task" }), el("dd", { class: "mono", text: b.task }),
      el("dt", { text: "outcome" }), el("dd", { text: b.outcome }),
      el("dt", { text: "published" }), el("dd", { text: new Date(env.created_at * 1000).toLocaleString() }),
      el("dt", { text: "source sha256" }), el("dd", { class: "mono small", text: b.source_sha256 })),
    el("div", { class: "results" },
      el("div", { class: "stat" }, el("div", { class: "label", text: "claimed val_bpb" }), el("div", { class: "value claimed", text: bpb(b.result && b.result.val_bpb) })),
      el("div", { class: "stat" }, el("div", { class: "label", text: "reproduced val_bpb" }), el("div", { class: "value reproduced", text: bpb(st.reproduced_bpb) })),
      st.over ? el("div", { class: "stat" }, el("div", { class: "label", text: "trusted support / against / over budget" }),
        el("div", { class: "value", text: `${st.support.toFixed(2)} / ${st.against.toFixed(2)} / ${st.over.toFixed(2)}` }))
        : el("div", { class: "stat" }, el("div", { class: "label", text: "trusted support / against" }), el("div", { class: "value", text: `${st.support.toFixed(2)} / ${st.against.toFixed(2)}` })),
      el("div", { class: "stat" }, el("div", { class: "label", text: "run" }), el("div", { class: "value small",
        text: c.claimed ? `${c.claimed.tokens} tokens · seed ${c.claimed.seed} · ${c.claimed.device} · ` +
          `trained ${seconds(c.claimed.wall_s)}` + (c.claimed.cpu_s ? ` (${seconds(c.claimed.cpu_s)} CPU)` : "") : "crashed" }))),
    luck,
    el("h3", {}, "Loss curves"), el("div", { class: "chart-box" }, lossChart(c.curves), legend(c.curves)),
    el("h3", {}, "Votes ", el("span", { class: "count", text: String(votes.length) })),
    el("div", { class: "votes" }, table(["voter", "verdict", "val_bpb", "seed", "training time", "trust", "reason", "when"], votes, "No votes yet.")),
    el("h3", {}, "Lineage"),
    el("p", { class: "chain" }, "baseline", lin.ancestors.map((a) => [" → ", claimLink(a.claim)]), " → ",
      el("strong", { class: "mono", text: short(env.id) }),
      lin.children.length ? [" → children: ", lin.children.map((ch, i) => [i ? ", " : "", claimLink(ch.claim)])] : null),
    el("h3", {}, "Patch"), diffView(b.patch));
}

// -- routing and polling -----------------------------------------------------------------------
function route() {
  const m = location.hash.match(/^#\/claim\/([0-9a-f]{6,64})$/);
  return m ? { page: "claim", id: m[1] } : { page: "home" };
}

async function refresh() {
  const r = route();
  const view = document.getElementById("view");
  // A refresh started before a navigation may finish after it: only the latest one may draw.
  const gen = ++state.gen;
  const current = () => gen === state.gen;
  try {
    const [tasks, activity, peers] = await Promise.all([api("/api/tasks"), api("/api/activity"), api("/api/peers")]);
    document.getElementById("offline").hidden = true;
    if (changed("tasks", tasks)) renderTasks(tasks);
    if (changed("activity", activity)) renderActivity(activity);
    if (changed("peers", peers)) renderPeers(peers);
    if (r.page === "claim") {
      let c;
      try {
        c = await api(`/api/claim/${r.id}`);
      } catch (err) {
        if (!err.status) throw err;
        if (current() && changed("view", { missing: r.id })) fill(view, el("p", {}, el("a", { href: "#/", text: "← leaderboard" })),
          el("p", { class: "empty", text: `This node holds no claim ${short(r.id)} (${err.message}).` }));
        return;
      }
      if (current() && changed("view", c)) fill(view, claimView(c));
    } else {
      const q = `?task=${state.task}`;
      const [lb, lin, pr] = await Promise.all([api(`/api/leaderboard${q}`), api(`/api/lineage${q}`), api(`/api/progress${q}`)]);
      if (current() && changed("view", [lb, lin, pr])) fill(view, leaderboardSection(lb), progressSection(pr), lineageSection(lin));
    }
  } catch (err) {
    document.getElementById("offline").hidden = false;
  }
}

let timer = null;
function schedule(now) {
  clearTimeout(timer);
  const run = () => refresh().finally(() => { timer = setTimeout(run, POLL_MS); });
  if (now) run(); else timer = setTimeout(run, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("task").addEventListener("change", (e) => { state.task = e.target.value; schedule(true); });
  window.addEventListener("hashchange", () => {
    // never show the previous page's claim under the new address while the new one loads
    delete state.last.view;
    fill(document.getElementById("view"), el("p", { class: "muted", text: "loading…" }));
    window.scrollTo(0, 0);
    schedule(true);
  });
  schedule(true);
});
