"""The node's own Ralph loops (docs/design.md, "The node's loops"), as a node extension.

``agent_count`` loops share the node's device slots with the reproduction scheduler; each has its
own memory file and proposer seed. Claims are signed, stored and gossiped by the node; negative
results and crashes too, so nobody burns compute twice.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from typing import Any, Mapping

from ralph.loop import RalphLoop, StepReport, memory_path
from ralph.memory import Memory
from ralph.proposers import select_proposer
from ralph.settings import RalphSettings
from trainer import experiment

from node.console import step_line
from node.device_run import on_device
from node.extension import NodeView
from node.telemetry import Counter

log = logging.getLogger(__name__)


class RalphRunner:
    def __init__(self, settings: RalphSettings, env: Mapping[str, str] | None = None,
                 max_steps: int | None = None, pause_s: float = 5.0):
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.max_steps = max_steps
        self.pause_s = pause_s
        self.node: NodeView | None = None
        self.loops: list[RalphLoop] = []
        self.proposer_line = ""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._steps = 0

    @property
    def busy(self) -> bool:
        """A step is in progress in one of the loops: the scheduler keeps to its share of the machine."""
        return any(loop.busy for loop in self.loops)

    def describe(self) -> str:
        return f"ralph: {self.settings.agent_count} loop(s); {self.proposer_line}"

    def on_accepted(self, envelopes: list) -> None:
        pass

    async def start(self, node: NodeView) -> None:
        self.node = node
        task = await node.own_task()
        home = node.settings.home
        for i in range(self.settings.agent_count):
            # Seeded by identity and agent: two nodes must not walk the same mutation sequence.
            seed = int.from_bytes(hashlib.sha256(f"{node.identity.pubkey}:{i}".encode()).digest()[:4], "big")
            proposer = select_proposer(self.settings, self.env, home=home, seed=seed,
                                       study_path=memory_path(home, task.id, i).with_suffix(".optuna.journal"))
            self.proposer_line = getattr(proposer, "description", type(proposer).__name__)
            memory = Memory.load(memory_path(home, task.id, i), self.settings.memory_type, self.settings.memory_depth)
            loop = RalphLoop(task, node.corpus, proposer, self.settings, memory, self._publish, self._run,
                             rng=random.Random(f"{node.identity.pubkey}:{i}"))
            self.loops.append(loop)
            run = loop.run(self._stop, self.max_steps, self.pause_s, on_step=self._stepped(i))
            self._tasks.append(node.spawn(run, f"ralph-{i}"))

    def _stepped(self, agent: int):
        def on_step(report: StepReport) -> None:
            self.node.telemetry.count_usage(report.usage)
            if report.status == "published":
                self._steps += 1
            self.node.telemetry.note(step_line(report, self._steps), kind="ralph", agent=agent)

        return on_step

    async def _publish(self, body: dict) -> str:
        env = await self.node.publish("claim", body)
        telemetry = self.node.telemetry
        telemetry.count(Counter.EXPERIMENTS_RUN)
        if body["outcome"] == "improved":
            telemetry.count(Counter.EXPERIMENTS_KEPT)
        elif body["outcome"] == "crashed":
            telemetry.count(Counter.EXPERIMENTS_CRASHED)
        return env.id

    async def _run(self, task: Any, source: str, *, seed: int, budget_scale: float) -> Any:
        node = self.node
        scale = budget_scale * node.settings.budget_scale
        budget = max(1, int(task.budget_tokens * scale))
        baseline = source == task.source  # the task's own script: the reference, announced as such
        async with on_device(node.slots, node.telemetry, "ralph", kind="ralph", budget=budget,
                             label="baseline" if baseline else "own experiment",
                             phase="baseline" if baseline else None) as slot:
            res = await slot.run(experiment.run_experiment, task, source, seed=seed, budget_scale=scale,
                                 cache_dir=node.settings.home / "cache")
        if baseline:
            if res.outcome_ok and res.val_bpb is not None:
                node.telemetry.note(f"baseline val_bpb {float(res.val_bpb):.6f} ({budget:,} tokens, "
                                    f"trained in {float(res.result['wall_s']):.0f} s)", kind="ralph")
            else:
                node.telemetry.note(f"baseline crashed: {res.reason}", kind="ralph")
        return res

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
