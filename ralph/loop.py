"""One Ralph loop: seed, context, propose, dedupe, run, keep or discard, publish, remember.

docs/design.md, "The loop". Everything with side effects is injected: the corpus view and
``publish`` (the node's), the proposer, and ``run_experiment`` (an async wrapper around
``trainer.experiment.run_experiment``, see ``threaded_runner``), so a step is testable without a
network, and without training when a test wants that.

The compute cap (protocol/SPEC.md 5.2, task.compute_cap): a candidate whose training took longer
than ``compute_cap`` x the task baseline's training time, measured by this loop on the same hardware
(result.device) at the same budget (result.tokens), is not published as ``improved``: other nodes
would vote it ``over budget``. It is published as ``worse``, its note tagged ``[over budget: ...]``.
The baseline's time comes from the loop's own baseline run (the "measuring seed" run, or one made
for the purpose), remembered in the loop's memory file.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from protocol.errors import ProtocolError
from protocol.limits import MAX_NOTE_BYTES, MAX_PATCH_BYTES, MAX_SOURCE_BYTES
from protocol.schemas import validate_claim
from trainer.patches import make_patch, source_sha256

from .context import Seed, baseline_seed, build_context, crash_tail, pick_seed
from .corpus import CorpusEntry, CorpusView, Observation
from .islands import archive, choose
from .hyperparams import diff_constants
from .memory import Memory, Record, summarize
from .proposers.base import ProposalError, Proposer, Usage
from .settings import RalphSettings
from .space import source_key

log = logging.getLogger("ralph.loop")

Publish = Callable[[dict], Awaitable[Any]]  # the node signs, stores and gossips; may return the claim id


class RunExperiment(Protocol):
    async def __call__(self, task: Any, source: str, *, seed: int, budget_scale: float) -> Any:
        """Returns an object with ``outcome_ok``, ``result`` (protocol result dict or None), ``reason``, ``val_bpb``."""


def threaded_runner(**options: Any) -> RunExperiment:
    """``trainer.experiment.run_experiment`` in a worker thread, so the node's event loop keeps serving."""
    from trainer.experiment import run_experiment

    async def run(task: Any, source: str, *, seed: int, budget_scale: float) -> Any:
        return await asyncio.to_thread(run_experiment, task, source, seed=seed, budget_scale=budget_scale, **options)

    return run


def memory_path(home: Path, task_id: str, agent: int = 0) -> Path:
    """One memory file per task and agent (``agent_count`` loops run side by side)."""
    return Path(home) / "ralph" / f"{task_id[:16]}-agent{agent}.json"


@dataclass(frozen=True)
class StepReport:
    status: str  # published | skipped | proposal_failed | baseline_failed | invalid
    seed: Seed | None
    note: str = ""
    outcome: str | None = None  # improved | worse | crashed, when published
    val_bpb: float | None = None
    claim_id: str | None = None
    reason: str = ""
    screened_out: bool = False
    usage: Usage = Usage()

    def line(self) -> str:
        seed = "baseline" if self.seed is None or self.seed.claim_id is None else self.seed.claim_id[:12]
        if self.status != "published":
            return f"ralph: {self.status} (seed {seed}): {self.reason}"
        bpb = "-" if self.val_bpb is None else f"{self.val_bpb:.6f}"
        return f"ralph: {self.outcome} val_bpb {bpb} (seed {seed}): {self.note}"


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= max_bytes else data[: max_bytes - 3].decode("utf-8", "ignore") + "..."


class RalphLoop:
    def __init__(self, task: Any, corpus: CorpusView, proposer: Proposer, settings: RalphSettings, memory: Memory,
                 publish: Publish, run_experiment: RunExperiment, rng: random.Random | None = None) -> None:
        self.task, self.corpus, self.proposer, self.settings = task, corpus, proposer, settings
        self.memory, self.publish, self.run_experiment = memory, publish, run_experiment
        self.rng = rng or random.Random()
        self.threshold = settings.effective_keep_threshold(task.tolerance)
        self.busy = False  # a step is under way (run())
        self._keys: dict[str, str] = {}  # claim id -> space.source_key of its source

    async def _measure(self, source: str, scale: float) -> float | None:
        """This node's own val_bpb for a seed source at a budget scale, cached in memory."""
        sha = source_sha256(source)
        known = self.memory.measurement(sha, scale)
        if known is not None:
            return known
        res = await self.run_experiment(self.task, source, seed=self.settings.train_seed, budget_scale=scale)
        if not res.outcome_ok or res.val_bpb is None:
            log.warning("ralph: measuring seed %s at %g budget crashed: %s", sha[:12], scale, res.reason)
            return None
        if scale == 1.0:
            self._remember_tokens(res.result)
        if source == self.task.body["source"]:
            self._remember_baseline_time(res.result)
            if scale == 1.0:
                await self._publish_baseline(res.result)
        self.memory.remember_measurement(sha, scale, float(res.val_bpb))
        return float(res.val_bpb)

    async def _publish_baseline(self, result: dict | None) -> None:
        """Put the task's baseline claim at this node's budget in the corpus when it has none there:
        the reference every root claim at that budget is tested against (protocol/SPEC.md 5.9; one
        at another budget measures something else). Its value is one run at our seed; what counts is
        the swarm's fresh-seed reproductions of it."""
        sha = source_sha256(self.task.body["source"])
        if result is None or await self.corpus.has_source(self.task.id, sha, tokens=result.get("tokens")):
            return
        body = {"task": self.task.id, "parent": None, "patch": "", "source_sha256": sha,
                "note": "the task baseline: the reference root claims are tested against", "outcome": "improved",
                "result": result}
        try:
            validate_claim(body)
        except ProtocolError as e:  # a harness bug: do not publish garbage
            log.error("ralph: baseline claim invalid, not published: %s", e.reason)
            return
        await self.publish(body)

    def _remember_tokens(self, result: dict | None) -> None:
        """This loop's full training budget in tokens: the budget observations must share to count."""
        tokens = (result or {}).get("tokens")
        if isinstance(tokens, int) and self.memory.tokens != tokens:
            self.memory.tokens = tokens
            self.memory.save()

    async def _observations(self) -> list[Observation]:
        """The corpus' claims of the task with their sources (an old CorpusView without the method: none)."""
        get = getattr(self.corpus, "observations", None)
        if get is None:
            return []
        try:
            return list(await get(self.task.id))
        except Exception as e:  # noqa: BLE001 - the history is an aid: a failure costs it, not the step
            log.warning("ralph: reading the corpus' observations failed: %s", e)
            return []

    async def _island_seed(self, top: list[CorpusEntry], observations: list[Observation],
                           baseline_bpb: float | None) -> Seed:
        """The seed from the archive of islands (ralph/islands.py): trusted entries only, the
        verified top and this node's own measured claims at its budget."""
        tokens = self.memory.tokens
        candidates = [e for e in top if e.val_bpb is not None]
        for o in observations:
            if (o.own and o.outcome == "improved" and o.val_bpb is not None and not o.over_budget
                    and (tokens is None or o.tokens == tokens)):
                candidates.append(CorpusEntry(o.claim_id, source_sha256(o.source), o.val_bpb, o.note, "",
                                              o.outcome, o.parent))
        own = await self.corpus.own_best(self.task.id)
        if own is not None and own.val_bpb is not None:
            candidates.append(own)
        islands = archive(candidates, baseline_bpb, observations, self.memory.records, self.settings.islands)
        island = choose(islands, self.rng, self.settings.exploration, self.threshold)
        if island.best is None:
            return baseline_seed(self.task, baseline_bpb)
        entry = island.best
        source = await self.corpus.source_of(entry.claim_id)
        origin = "top" if any(e.claim_id == entry.claim_id for e in top) else "own"
        return Seed(entry.claim_id, source, source_sha256(source), entry.val_bpb, origin, entry.note)

    def _key(self, obs: Observation) -> str:
        key = self._keys.get(obs.claim_id)
        if key is None:
            key = self._keys[obs.claim_id] = source_key(obs.source)
        return key

    # -- the compute cap -----------------------------------------------------------------------

    def _baseline_time_key(self, result: dict) -> str:
        """Memory key of the baseline's training time on the hardware and at the budget of ``result``."""
        return f"wall_s {result.get('device')} {result.get('tokens')} {source_sha256(self.task.body['source'])}"

    def _remember_baseline_time(self, result: dict | None) -> None:
        if self.task.body.get("compute_cap") is None or not isinstance(result, dict) or "wall_s" not in result:
            return
        self.memory.remember_measurement(self._baseline_time_key(result), 1.0, float(result["wall_s"]))

    async def _baseline_time(self, result: dict) -> float | None:
        """The baseline's training time on the hardware and at the budget of a candidate's ``result``:
        remembered, else measured now by a full-budget baseline run (None when it crashes)."""
        known = self.memory.measurement(self._baseline_time_key(result), 1.0)
        if known is not None:
            return known
        baseline = self.task.body["source"]
        res = await self.run_experiment(self.task, baseline, seed=self.settings.train_seed, budget_scale=1.0)
        if not res.outcome_ok or res.result is None:
            log.warning("ralph: the baseline crashed while measuring its training time: %s", res.reason)
            return None
        self._remember_baseline_time(res.result)
        sha = source_sha256(baseline)
        if res.val_bpb is not None and self.memory.measurement(sha, 1.0) is None:
            self.memory.remember_measurement(sha, 1.0, float(res.val_bpb))
        here = self.memory.measurement(self._baseline_time_key(result), 1.0)
        # None: it ran on another device than the candidate (a node with several kinds): the best there is.
        return here if here is not None else float(res.result["wall_s"])

    async def _over_budget(self, source: str, result: dict) -> tuple[str, dict]:
        """(a note tag when the candidate trained longer than the task's compute cap allows, else "";
        the result to publish). A candidate over the cap runs once more first, as a reproducer would
        (node/reproduce.py): what slows a run only adds time, so the lesser of the two counts."""
        cap = self.task.body.get("compute_cap")
        if cap is None or "wall_s" not in result:
            return "", result
        base = await self._baseline_time(result)
        if base is None:
            return "", result
        limit = float(cap) * base
        if float(result["wall_s"]) <= limit:
            return "", result
        again = await self.run_experiment(self.task, source, seed=self.settings.train_seed, budget_scale=1.0)
        if again.outcome_ok and again.result is not None and float(again.result["wall_s"]) < float(result["wall_s"]):
            result = again.result
        wall = float(result["wall_s"])
        return ("" if wall <= limit else f"[over budget: {wall:.3f} s vs cap {limit:.3f} s]"), result

    async def step(self) -> StepReport:
        s = self.settings
        top = await self.corpus.top_entries(self.task.id, s.top_k)
        baseline = self.task.body["source"]
        baseline_bpb = self.memory.measurement(source_sha256(baseline), 1.0)
        observations = await self._observations()
        if s.islands > 0:
            seed = await self._island_seed(top, observations, baseline_bpb)
        else:
            seed = await pick_seed(self.task, self.corpus, top, self.rng, s.exploration, baseline_bpb)
        if seed.val_bpb is None:  # the baseline, never measured here: needed to judge improvement
            bpb = await self._measure(baseline, 1.0)
            if bpb is None:
                return StepReport("baseline_failed", seed, reason="the task baseline crashed; see the experiment log")
            seed = dataclasses.replace(seed, val_bpb=bpb)
        tried = {self._key(o) for o in observations} | self.memory.tried_keys()
        tried.add(source_key(baseline))
        tokens = self.memory.tokens
        seed_curve = next((o.curve for o in reversed(observations) if o.curve and o.val_bpb is not None
                           and source_sha256(o.source) == seed.source_sha256
                           and (tokens is None or o.tokens == tokens)), ())
        last = self.memory.last
        context = await build_context(
            self.task, seed, top, self.corpus, self.memory.render(), self.threshold, n_negatives=s.top_k,
            observations=tuple(observations), tokens=tokens, tried=frozenset(tried),
            last_crash=str(last.get("crash", "")), seed_curve=seed_curve, last_attempt=str(last.get("note", "")),
            last_curve=tuple(tuple(p) for p in last.get("curve", [])))
        try:
            proposal = await asyncio.to_thread(self.proposer.propose, context)
        except ProposalError as e:
            log.warning("ralph: proposal failed: %s", e)
            return StepReport("proposal_failed", seed, reason=str(e), usage=getattr(e, "usage", None) or Usage())
        sha = source_sha256(proposal.source)
        key = source_key(proposal.source)
        changes = [list(c) for c in diff_constants(seed.source, proposal.source)]
        reason = await self._duplicate(sha, seed)
        if not reason and key in tried:
            reason = f"source {sha[:12]} equals a tried script but for comments, spacing or number spelling"
        if reason:
            log.info("ralph: skipped: %s (%s)", reason, proposal.note)
            self._remember(seed, proposal.note, changes, None, "skipped", None, proposal.usage, key)
            return StepReport("skipped", seed, proposal.note, reason=reason, usage=proposal.usage)
        patch = make_patch(seed.source, proposal.source)
        if len(proposal.source.encode()) > MAX_SOURCE_BYTES or len(patch.encode()) > MAX_PATCH_BYTES:
            return StepReport("proposal_failed", seed, proposal.note, reason="proposal exceeds the 64 KiB source/patch limit",
                              usage=proposal.usage)
        outcome, result, reason, screened_out = await self._evaluate(seed, proposal.source)
        note = remembered = proposal.note
        if outcome == "improved":
            over, result = await self._over_budget(proposal.source, result)
            if over:  # not a recipe within the task's terms: a negative result, with why
                outcome = "worse"
                note = remembered = f"{note} {over}"
        if outcome == "crashed":
            first_line = (reason.strip().splitlines() or ["crashed"])[-1][:300]  # the exception line is last
            note += f" [crashed: {first_line}]"
        elif screened_out:
            note += f" [screened out at {s.experiment_budget:g} of the budget]"
        body = {"task": self.task.id, "parent": seed.claim_id, "patch": patch, "source_sha256": sha,
                "note": _truncate_utf8(note, MAX_NOTE_BYTES), "outcome": outcome, "result": result}
        try:
            validate_claim(body)
        except ProtocolError as e:  # a harness bug, not the proposal's fault: do not publish garbage
            log.error("ralph: claim body invalid, not published: %s", e.reason)
            return StepReport("invalid", seed, note, reason=e.reason, usage=proposal.usage)
        claim_id = await self.publish(body)
        claim_id = claim_id if isinstance(claim_id, str) else getattr(claim_id, "id", None)
        val_bpb = float(result["val_bpb"]) if result else None
        self._remember(seed, remembered, changes, val_bpb, outcome, claim_id, proposal.usage, key)
        self.memory.remember_run(remembered, result, crash_tail(reason) if outcome == "crashed" else "")
        usage = proposal.usage + await self._maybe_rewrite_strategy()
        report = StepReport("published", seed, body["note"], outcome, val_bpb, claim_id, reason, screened_out, usage)
        log.info("%s", report.line())
        return report

    async def _duplicate(self, sha: str, seed: Seed) -> str:
        """Why this source needs no run (someone measured it already), or "" when it is new."""
        if sha == seed.source_sha256:
            return f"source {sha[:12]} is the seed itself; not running it again"
        if sha == source_sha256(self.task.body["source"]):
            return f"source {sha[:12]} is the task baseline; not running it again"
        if await self.corpus.has_source(self.task.id, sha):
            return f"source {sha[:12]} is already in the corpus; not running it again"
        return ""

    async def _evaluate(self, seed: Seed, source: str) -> tuple[str, dict | None, str, bool]:
        """(outcome, result, crash reason, screened_out). With experiment_budget < 1 a screening run at
        that fraction comes first, compared with the seed at the same fraction; only a promising one
        gets the full-budget run that decides keep or discard."""
        s = self.settings
        if s.experiment_budget < 1.0:
            seed_screen = await self._measure(seed.source, s.experiment_budget)
            res = await self.run_experiment(self.task, source, seed=s.train_seed, budget_scale=s.experiment_budget)
            if not res.outcome_ok or res.result is None:
                return "crashed", None, res.reason or "crashed", False
            if seed_screen is not None and float(res.val_bpb) >= seed_screen:
                return "worse", res.result, "", True
        res = await self.run_experiment(self.task, source, seed=s.train_seed, budget_scale=1.0)
        if not res.outcome_ok or res.result is None:
            return "crashed", None, res.reason or "crashed", False
        self._remember_tokens(res.result)
        improved = float(res.val_bpb) < seed.val_bpb - self.threshold
        return ("improved" if improved else "worse"), res.result, "", False

    def _remember(self, seed: Seed, note: str, changes: list, val_bpb: float | None, outcome: str,
                  claim_id: str | None, usage: Usage, key: str = "") -> None:
        self.memory.add(Record(self.memory.next_step, seed.claim_id or "baseline", seed.val_bpb, note, changes,
                               val_bpb, outcome, outcome == "improved", claim_id, usage.cost_usd, key))

    async def _maybe_rewrite_strategy(self) -> Usage:
        """Every coordinator_frequency experiments, compress memory into a new strategy note."""
        m, s = self.memory, self.settings
        if not m.due_for_rewrite(s.coordinator_frequency):
            return Usage()
        summarizer = getattr(self.proposer, "summarize", None)
        if summarizer is not None:
            history = "\n".join(r.line() for r in m.recent())
            try:
                note, usage = await asyncio.to_thread(summarizer, m.strategy, history, s.memory_depth)
                m.set_strategy(note)
                return usage
            except ProposalError as e:
                log.warning("ralph: strategy rewrite by the proposer failed (%s); using the deterministic summary", e)
        m.set_strategy(summarize(m.records[-s.memory_depth * s.coordinator_frequency:], m.strategy, s.memory_depth))
        return Usage()

    async def run(self, stop: asyncio.Event, max_steps: int | None = None, pause_s: float = 5.0,
                  on_step: Callable[[StepReport], None] | None = None) -> list[StepReport]:
        """Step until ``stop`` is set (checked between steps) or ``max_steps`` are done; ``on_step`` sees
        each report (the node shows its line and counts its usage). After a step that ran nothing
        (skipped, failed proposal, spend cap) wait ``pause_s``, doubling up to 5 minutes, so an
        exhausted proposer or a reached cap does not spin. ``busy`` is true while a step runs."""
        reports: list[StepReport] = []
        wait = pause_s
        while not stop.is_set() and (max_steps is None or len(reports) < max_steps):
            self.busy = True
            try:
                report = await self.step()
            finally:
                self.busy = False
            reports.append(report)
            if on_step is not None:
                on_step(report)
            if report.status == "published":
                wait = pause_s
                await asyncio.sleep(0)  # let other work (the reproduction scheduler) take a turn at the slot
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            wait = min(300.0, wait * 2)
        return reports
