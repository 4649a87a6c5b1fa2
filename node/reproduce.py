"""The reproduction scheduler as a node extension: re-run other nodes' claims and vote on them
(docs/design.md, "Reproduction and voting" and "Running other people's code").

Two tasks owned by the extension: the planner rebuilds the queue (debounced) whenever claims or
votes arrive and shows it in the node's activity (``telemetry.set_queue``); the worker takes the top claim when the
compute share allows, applies the ``--run-untrusted`` policy, rebuilds the claim's source, runs
the spot check (same seed, first part of the budget, curves compared) and only then the full run,
and publishes one vote. Nothing here may crash the node: a failing claim is logged and skipped.

The compute cap (protocol/SPEC.md 5.2, task.compute_cap): after the full run the claim's training
time is compared with the task baseline's on this node's hardware at the claim's budget (measured
once and cached, node/baseline_time.py); a run over ``compute_cap`` x the baseline's time is run
once more (timing noise only adds time: the lesser of the two counts) and, still over, voted
``over budget`` with the measured result, whatever its val_bpb. The spot check gives no early vote:
an ``over budget`` vote carries a full run's result, which a spot check does not produce, and a
spot check's time includes the run's fixed costs, which a fraction of the baseline's would not.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from node.baseline_time import BaselineTime, BaselineTimes
from node.corpus import MissingAncestor, SourceError
from node.device_run import DeviceRun, on_device
from node.extension import NodeView
from node.scheduler import (Candidate, QueueItem, Scheduler, SchedulerSettings, may_reproduce, verdict_from_budget,
                            verdict_from_fresh, verdict_from_spot)
from protocol import fresh_seed
from store.stats import mismatch_threshold
from trainer import experiment
from trainer.policy import may_run
from trainer.sandbox import detect_sandbox
from node.telemetry import Counter, vote_counter
from node.threads import run_in_daemon_thread

log = logging.getLogger(__name__)
MAX_WAITING = 10_000  # missing ancestors with claims waiting for them (the oldest forgotten first)
MAX_REASON_CHARS = 1000  # vote.reason is capped at 4 KiB of UTF-8 (protocol/limits.py)


@dataclass(frozen=True)
class WorkerSettings:
    debounce_s: float = 1.0  # gather a burst of gossip into one queue rebuild
    poll_s: float = 5.0  # re-check the compute share / an empty queue at least this often
    run_timeout_s: float | None = None  # per experiment process; None: the trainer's default for the budget
    stop_timeout_s: float = 3.0  # stop() waits at most this long; a running experiment thread is abandoned
    # The spot check's time limit is its share of the budget (issue 17: a script that sleeps held the
    # slot for the full budget's limit): the baseline's time here x spot_fraction x the task's
    # compute cap x spot_slack, plus spot_fixed_s for what any run costs (harness, data, compile);
    # without a known baseline time, spot_fraction of the trainer's limit for the budget, plus that.
    spot_fixed_s: float = 60.0
    spot_slack: float = 2.0


class Reproducer:
    def __init__(self, settings: SchedulerSettings | None = None, worker: WorkerSettings = WorkerSettings(),
                 rng: random.Random | None = None, cache_dir: Path | None = None,
                 baseline_times: BaselineTimes | None = None):
        self.settings = settings  # None: SchedulerSettings with the node's verify_share
        self.worker = worker
        self.rng = rng
        self.cache_dir = cache_dir
        self.baseline_times = baseline_times  # None: <home>/baseline_times.json
        self.node: NodeView | None = None
        self.scheduler: Scheduler | None = None
        self.queue: list[QueueItem] = []
        self._voted: set[str] = set()  # claims this node voted on (cached: a vote never goes away)
        self._checked: set[str] = set()  # claims whose votes were looked up for one of ours
        self._attempted: set[str] = set()  # claims the worker took, voted or not: never retried this run
        self._waiting: OrderedDict[str, set[str]] = OrderedDict()  # missing ancestor -> claims waiting for it
        self._dirty = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._running = 0  # reproductions under way

    # -- extension protocol (node/extension.py) ------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._running > 0

    async def start(self, node: NodeView) -> None:
        self.node = node
        if self.settings is None:
            self.settings = SchedulerSettings(verify_share=node.settings.verify_share)
        self.scheduler = Scheduler(node.identity.pubkey, self.settings, self.rng)
        if self.baseline_times is None:
            self.baseline_times = BaselineTimes(node.settings.home)
        self._dirty.set()
        self._tasks = [asyncio.create_task(self._plan_loop(), name="reproduce-plan"),
                       asyncio.create_task(self._work_loop(), name="reproduce-work")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # a training thread is not awaited: it ends by its own timeout, abandoned
            await asyncio.wait(self._tasks, timeout=self.worker.stop_timeout_s)
        self._tasks = []

    def _wait_for(self, ancestor: str, claim: str) -> None:
        """``claim`` waits for ``ancestor`` (bounded: the oldest waits are forgotten first)."""
        self._waiting.setdefault(ancestor, set()).add(claim)
        self._waiting.move_to_end(ancestor)
        while len(self._waiting) > MAX_WAITING:
            self._waiting.popitem(last=False)

    def on_accepted(self, envelopes: list) -> None:
        own = self.node.identity.pubkey if self.node is not None else None
        for env in envelopes:
            for claim in self._waiting.pop(env.id, ()):  # its ancestor arrived: try it again
                self._attempted.discard(claim)
                self._dirty.set()
            if env.kind == "vote" and env.author == own:
                self._voted.add(env.body["claim"])
            if env.kind in ("claim", "vote", "task"):
                self._dirty.set()

    def describe(self) -> str:
        s = self.settings or SchedulerSettings()
        return (f"reproduce: top-{s.top_k} claims, spot check {s.spot_fraction:g} of the budget first, "
                f"at most {s.verify_share:g} of compute while the own loop works; over the task's compute cap "
                f"(x the baseline's training time here) is over budget; "
                f"--run-untrusted={self.node.settings.run_untrusted if self.node else '?'}")

    # -- the queue ---------------------------------------------------------------------------
    async def _plan_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.worker.debounce_s)
            self._dirty.clear()
            try:
                await self.rebuild()
            except Exception:
                log.exception("reproduce: rebuilding the queue failed")
            replica = self.node.replica
            if not replica.trust_current:  # planned with a trust view older than the messages: again soon
                asyncio.get_running_loop().call_later(replica.settings.trust_min_interval_s, self._dirty.set)

    async def rebuild(self) -> list[QueueItem]:
        candidates, budgets = await self._candidates()
        trust = await self.node.replica.trust()
        await self._lookup_own_votes(candidates)
        self.queue = self.scheduler.build(candidates, trust, voted=self._voted | self._attempted,
                                          task_budgets=budgets)
        self.node.telemetry.set_queue([item.to_json() for item in self.queue])
        self._ready.set()
        return self.queue

    async def _candidates(self) -> tuple[list[Candidate], dict[str, int]]:
        replica, rows, budgets = self.node.replica, [], {}
        for tid in sorted(await self.node.tasks.ids()):
            task = await self.node.tasks.get(tid)
            if task is None:
                continue
            board = await replica.leaderboard(tid)
            ranked = board.verified + board.pending + board.disputed + board.over_budget
            if not ranked:
                continue
            budgets[tid] = task.budget_tokens
            for entry, duplicate in [(e, False) for e in ranked] + [(e, True) for e in board.duplicates]:
                env, result = entry.claim, entry.claim.body.get("result") or {}
                sig = entry.significance
                rows.append(Candidate(
                    claim=env.id, task=tid, author=env.author, created_at=env.created_at,
                    outcome=env.body["outcome"], status=entry.status,
                    value=entry.rank_value if entry.val_bpb is not None or entry.estimate else None,
                    tokens=result.get("tokens"), has_curve=bool(result.get("curve")), duplicate=duplicate,
                    significance=sig.state if sig else None,
                    samples=entry.estimate.n if entry.estimate else 0,
                    reference=sig.reference if sig else None))
        return rows, budgets

    async def _lookup_own_votes(self, candidates: list[Candidate]) -> None:
        own = self.node.identity.pubkey
        for c in candidates:
            if c.claim in self._checked or c.author == own or c.outcome not in ("improved", "worse"):
                continue
            self._checked.add(c.claim)
            if any(v.author == own for v in await self.node.replica.votes(c.claim)):
                self._voted.add(c.claim)

    # -- the worker --------------------------------------------------------------------------
    def _own_loop_busy(self) -> bool:
        node = self.node
        if not node.settings.ralph:
            return False
        if any(use.purpose == "ralph" for use in node.slots.in_use.values()):
            return True
        return any(ext.busy for ext in node.extensions if ext is not self)

    def _next(self) -> QueueItem | None:
        return next((item for item in self.queue if item.claim not in self._attempted
                     and item.claim not in self._voted), None)

    async def _work_loop(self) -> None:
        while True:
            self._ready.clear()
            item = self._next()
            allowed = item is not None and may_reproduce(
                self.node.slots.share("reproduce"), self.settings.verify_share, self._own_loop_busy())
            if not allowed:
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout=self.worker.poll_s)
                except asyncio.TimeoutError:
                    pass
                continue
            self._attempted.add(item.claim)
            self._running += 1
            try:
                await self.reproduce(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reproduce: claim %s skipped", item.claim[:12])
            finally:
                self._running -= 1
            self._dirty.set()

    async def reproduce(self, item: QueueItem) -> dict | None:
        """Reproduce one claim and publish the vote; returns the vote body (None: nothing to vote)."""
        node = self.node
        env = await node.replica.get(item.claim)
        if env is None or env.kind != "claim":
            return None
        task = await node.tasks.get(env.body["task"])
        if task is None:
            return await self._vote(item.claim, "failed", None, f"unknown task {env.body['task'][:12]}")
        trusted = env.author in node.replica.trusted_set()
        allowed, why = may_run(trusted, node.settings.run_untrusted, await run_in_daemon_thread(detect_sandbox))
        if not allowed:
            return await self._vote(item.claim, "refused", None, why)
        try:
            source = await node.corpus.source_of(item.claim)
        except MissingAncestor as exc:  # not the author's fault, perhaps: wait for the ancestor, vote nothing
            self._wait_for(exc.ancestor, item.claim)
            return None
        except SourceError as exc:
            return await self._vote(item.claim, "failed", None, f"source: {exc}")
        claimed = env.body["result"]
        budget = int(claimed["tokens"])  # the claim's token budget (protocol/SPEC.md, result.tokens)
        verdict, result, reason = await self._run(item.claim, task, source, claimed, budget)
        proof = None
        if result is not None:  # a full run: at this node's fresh seed for the claim (protocol/SPEC.md 5.4.1)
            seed, proof = fresh_seed(node.identity, item.claim)
            if result.get("seed") != seed:  # pragma: no cover - _run ran it at that seed
                raise RuntimeError("the full run's seed is not this node's fresh seed for the claim")
        return await self._vote(item.claim, verdict, result, reason, seed_proof=proof)

    def _threshold(self, task: Any, claimed: dict, device: str | None) -> float:
        """Largest |fresh - claimed| voted ``reproduced`` (store/stats.py mismatch_threshold): the seed
        noise of the claim's device class and of ours, never below the task's tolerance."""
        noise, tolerance, tokens = self.node.replica.settings.noise, float(task.body["tolerance"]), claimed.get("tokens")
        budget = task.budget_tokens
        return mismatch_threshold(noise.sigma(task.id, claimed.get("device"), tolerance, tokens, budget),
                                  noise.sigma(task.id, device, tolerance, tokens, budget), tolerance)

    async def _run(self, claim_id: str, task: Any, source: str, claimed: dict,
                   budget: int) -> tuple[str, dict | None, str]:
        """Spot check at the claim's own seed (bit for bit: it catches a fabricated curve), then the
        full run at this node's fresh seed for the claim, which neither side chose (protocol/SPEC.md 5.4.1)."""
        run_experiment, spot_check = experiment.run_experiment, experiment.spot_check  # looked up per call: tests swap them
        node = self.node
        fresh, _ = fresh_seed(node.identity, claim_id)
        common = dict(seed=int(claimed["seed"]), timeout_s=self.worker.run_timeout_s,
                      cache_dir=self.cache_dir or node.settings.home / "cache")
        full = dict(common, seed=fresh)
        telemetry = node.telemetry
        async with on_device(node.slots, telemetry, "reproduce", kind="reproduce", claim=claim_id,
                             phase="spot", budget=budget) as slot:
            telemetry.count(Counter.REPRODUCTIONS_RUN)
            telemetry.count(Counter.REPRODUCE_SPOT_CHECKS)
            spot_common = dict(common, timeout_s=self._spot_timeout(task, slot.device, budget))
            spot = await slot.run(spot_check, task, source, fraction=self.settings.spot_fraction,
                                  reference_curve=claimed["curve"], budget_tokens=budget, **spot_common)
            verdict, reason = verdict_from_spot(spot.ok, spot.reason, spot.curve, claimed["curve"])
            if verdict is not None:
                return verdict, None, reason
            telemetry.count(Counter.REPRODUCE_FULL_RUNS)
            run = await slot.run(run_experiment, task, source, phase="full", budget_tokens=budget, **full)
            cap = task.body.get("compute_cap")
            baseline = over = None
            if run.outcome_ok and cap is not None:
                baseline = await self._baseline_time(task, slot, budget, run.result, common)
            if baseline is not None:
                over, _ = verdict_from_budget(run.result["wall_s"], baseline.wall_s, cap)
            if over is not None:
                # Confirm before a negative verdict: what slows a run (other work here, a harness
                # process still starting) only adds time, so the claim's time is the lesser of two.
                telemetry.count(Counter.REPRODUCE_CONFIRM_RUNS)
                again = await slot.run(run_experiment, task, source, phase="confirm", budget_tokens=budget, **full)
                if again.outcome_ok and Decimal(again.result["wall_s"]) < Decimal(run.result["wall_s"]):
                    run = again
        if not run.outcome_ok:
            return "failed", None, f"full run crashed: {run.reason}"
        verdict, why = verdict_from_fresh(claimed["val_bpb"], run.result["val_bpb"],
                                          self._threshold(task, claimed, run.result.get("device")))
        if cap is None:
            return verdict, run.result, f"{reason}; {why}"
        if baseline is None:
            return verdict, run.result, (f"{reason}; {why}; compute cap not checked: the task baseline's time "
                                         "on this hardware could not be measured")
        first_over = over
        over, budget_why = verdict_from_budget(run.result["wall_s"], baseline.wall_s, cap)
        if first_over is not None:
            budget_why += " (the lesser of two runs)"
        if over is not None:  # whatever its val_bpb: over the cap, the claim is not a recipe within the task
            return over, run.result, f"{reason}; {budget_why}; {why}"
        return verdict, run.result, f"{reason}; {why}; {budget_why}"

    def _spot_timeout(self, task: Any, device: str, budget: int) -> float:
        """The spot check's time limit: its share of the budget (WorkerSettings), never more than the
        trainer's limit for the whole budget."""
        w, share = self.worker, self.settings.spot_fraction
        if w.run_timeout_s is not None:
            return w.run_timeout_s
        whole = experiment.RunSettings().train_timeout(budget, "cpu" if device == "cpu" else "gpu")
        known = self.baseline_times.get(task.id, device, budget)
        cap = task.body.get("compute_cap")
        if known is not None and cap is not None:
            limit = w.spot_fixed_s + float(known.wall_s) * share * float(cap) * w.spot_slack
        else:
            limit = w.spot_fixed_s + whole * share
        return min(whole, limit)

    async def _baseline_time(self, task: Any, slot: DeviceRun, budget: int, result: dict,
                             common: dict) -> BaselineTime | None:
        """The task baseline's training time on this device at ``budget``: cached, else measured now
        (in the slot the claim ran in, so on the same hardware)."""
        run_experiment = experiment.run_experiment
        hardware = result.get("device")
        known = self.baseline_times.get(task.id, slot.device, budget, hardware)
        if known is not None:
            return known
        self.node.telemetry.count(Counter.BASELINE_RUNS)
        options = {k: v for k, v in common.items() if k != "seed"}  # the baseline runs with its own seed
        try:
            return await slot.run(self.baseline_times.measure, task, phase="baseline", budget=budget,
                                  hardware=hardware, run=run_experiment, **options)
        except Exception:  # e.g. the cache file cannot be written: vote without the cap check
            log.exception("reproduce: measuring the baseline of task %s failed", task.id[:12])
            return None

    async def _vote(self, claim_id: str, verdict: str, result: dict | None, reason: str,
                    seed_proof: str | None = None) -> dict:
        body = {"claim": claim_id, "verdict": verdict, "result": result, "reason": reason[:MAX_REASON_CHARS]}
        if seed_proof is not None:
            body["seed_proof"] = seed_proof
        received = await self.node.replica.received_at(claim_id)
        if received is not None:  # credit by receipt (protocol/SPEC.md 5.10): when we first had the claim
            body["claim_received_at"] = received
        await self.node.publish("vote", body)
        self._voted.add(claim_id)
        self.node.telemetry.count(vote_counter(verdict))
        self.node.telemetry.note(f"vote {verdict} on {claim_id[:12]}: {body['reason']}", kind="vote",
                                claim=claim_id, verdict=verdict)
        return body

