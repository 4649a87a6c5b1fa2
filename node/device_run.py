"""An experiment on one of the node's device slots, shown in that device's activity entry.

Both extensions run training this way: ``on_device`` takes a slot (waiting for a free one), puts an
entry ``{"kind", "claim", "phase", "tokens", "budget", "loss", "started_at", "device"}`` into the
activity for that device, and clears it when the slot is given back; ``DeviceRun.run`` runs
``trainer.experiment.run_experiment``, ``spot_check`` (or anything taking ``device`` and
``on_progress``) in a daemon thread (node/threads.py), its progress written into the entry.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, TypeVar

from node.telemetry import Telemetry
from node.threads import run_in_daemon_thread

T = TypeVar("T")


@dataclass
class DeviceRun:
    device: str
    entry: dict[str, Any]  # this device's activity entry, updated in place

    def progress(self, tokens: int, total: int, loss: float | None) -> None:  # called from the run's thread
        self.entry.update(tokens=tokens, budget=total, loss=loss)

    async def run(self, fn: Callable[..., T], /, *args: Any, phase: str | None = None, **kwargs: Any) -> T:
        """``fn(*args, device=..., on_progress=..., **kwargs)`` in a daemon thread; ``phase`` names it
        in the entry (and restarts the entry's progress)."""
        if phase is not None:
            self.entry.update(phase=phase, tokens=0, loss=None)
        return await run_in_daemon_thread(fn, *args, device=self.device, on_progress=self.progress, **kwargs)


@contextlib.asynccontextmanager
async def on_device(slots: Any, telemetry: Telemetry, purpose: str, *, kind: str, budget: int,
                    claim: str | None = None, phase: str | None = None, label: str = "") -> AsyncIterator[DeviceRun]:
    """A device slot for ``purpose`` ("ralph" | "reproduce") and its activity entry, while inside."""
    async with slots.acquire(purpose, label=label or claim or "") as device:
        entry: dict[str, Any] = {"kind": kind, "claim": claim, "tokens": 0, "budget": budget, "loss": None,
                                 "started_at": int(time.time()), "device": device}
        if phase is not None:
            entry["phase"] = phase
        telemetry.set_experiment(device, entry)
        try:
            yield DeviceRun(device, entry)
        finally:
            telemetry.clear_experiment(device, entry)
