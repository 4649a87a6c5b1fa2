"""The node's own Ralph loops (DESIGN.md, "The outer loop"), as a node extension.

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
import time
from typing import Any, Mapping

from ralph.loop import RalphLoop, memory_path
from ralph.memory import Memory
from ralph.proposers import select_proposer
from ralph.settings import RalphSettings

from node.threads import run_in_daemon_thread

log = logging.getLogger(__name__)


class RalphRunner:
    def __init__(self, settings: RalphSettings, env: Mapping[str, str] | None = None,
                 max_steps: int | None = None, pause_s: float = 5.0):
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.max_steps = max_steps
        self.pause_s = pause_s
        self.node: Any = None
        self.loops: list[RalphLoop] = []
        self.proposer_line = ""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.idle = True  # no step in progress: the scheduler may use the whole machine

    def describe(self) -> str:
        return f"ralph: {self.settings.agent_count} loop(s); {self.proposer_line}"

    async def start(self, node: Any) -> None:
        from trainer.tasks import resolve_task

        self.node = node
        task = resolve_task(node.settings.task)
        home = node.settings.home
        for i in range(self.settings.agent_count):
            # Seeded by identity and agent: two nodes must not walk the same mutation sequence.
            seed = int.from_bytes(hashlib.sha256(f"{node.identity.pubkey}:{i}".encode()).digest()[:4], "big")
            proposer = select_proposer(self.settings, self.env, home=home, seed=seed)
            self.proposer_line = getattr(proposer, "description", type(proposer).__name__)
            memory = Memory.load(memory_path(home, task.id, i), self.settings.memory_type, self.settings.memory_depth)
            loop = RalphLoop(task, node.corpus, proposer, self.settings, memory, self._publish, self._run,
                             rng=random.Random(f"{node.identity.pubkey}:{i}"))
            self.loops.append(loop)
            self._tasks.append(node.spawn(self._drive(loop, i), f"ralph-{i}"))

    async def _drive(self, loop: RalphLoop, index: int) -> None:
        steps = 0
        wait = self.pause_s
        while not self._stop.is_set() and (self.max_steps is None or steps < self.max_steps):
            self.idle = False
            try:
                report = await loop.step()
            finally:
                self.idle = True
            steps += 1
            self.node.note_activity(report.line(), kind="ralph", agent=index)
            if report.status == "published":
                wait = self.pause_s
                await asyncio.sleep(0)  # let the scheduler take a turn at the slot
                continue
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            wait = min(300.0, wait * 2)

    async def _publish(self, body: dict) -> str:
        env = await self.node.publish("claim", body)
        self.node.count("experiments_run")
        if body["outcome"] == "improved":
            self.node.count("experiments_kept")
        elif body["outcome"] == "crashed":
            self.node.count("experiments_crashed")
        return env.id

    async def _run(self, task: Any, source: str, *, seed: int, budget_scale: float) -> Any:
        from trainer.experiment import run_experiment

        node = self.node
        scale = budget_scale * node.settings.budget_scale
        async with node.slots.acquire("ralph", label="own experiment") as device:
            budget = max(1, int(task.budget_tokens * scale))
            started = time.time()
            node.activity["experiment"] = {"kind": "ralph", "claim": None, "tokens": 0, "budget": budget,
                                           "loss": None, "started_at": int(started), "device": device}

            def progress(tokens: int, total: int, loss: float | None) -> None:
                exp = node.activity.get("experiment")
                if exp is not None and exp.get("started_at") == int(started):
                    exp.update(tokens=tokens, budget=total, loss=loss)

            try:
                return await run_in_daemon_thread(
                    run_experiment, task, source, seed=seed, budget_scale=scale, device=device,
                    on_progress=progress, cache_dir=node.settings.home / "cache")
            finally:
                node.activity["experiment"] = None

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
