"""The task baseline's training time on this node's hardware (protocol/SPEC.md 5.2, task.compute_cap).

A claim may train for at most ``compute_cap`` times as long as the task's own baseline source at the
same token budget on the same hardware. A reproducer therefore needs the baseline's time on its own
device: it runs the baseline once per (task id, device, budget) and keeps the measured ``wall_s`` in
``<home>/baseline_times.json`` (written atomically), so later reproductions compare like with like
without running it again.

The cached time is the least of ``BASELINE_RUNS`` runs: what slows a run down (other work on the
machine, a harness process still starting when its job arrives) only ever adds time, and this one
figure is the reference for every later reproduction of the task here, so an unlucky first run must
not make the node lenient for good.

Each entry also keeps the device the harness reported (``result.device``, e.g. ``cuda:NVIDIA H200``):
a slot name such as ``cuda:0`` can stand for other hardware after a restart, so an entry whose
hardware differs from the claim's run is measured again.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from ralph.jsonfile import read_json, write_json_atomic
from trainer import experiment

log = logging.getLogger(__name__)
FILE_NAME = "baseline_times.json"
VERSION = 1
BASELINE_SEED = 0  # the baseline's time does not depend on the seed; one fixed seed keeps runs comparable
BASELINE_RUNS = 2  # runs whose least time is kept


@dataclass(frozen=True)
class BaselineTime:
    wall_s: str  # decimal string, as the harness wrote it in result.wall_s
    device: str  # result.device of the measuring run: the hardware
    cpu_s: str | None = None
    measured_at: int = 0


def _key(task_id: str, device: str, budget: int) -> str:
    return f"{task_id}|{device}|{budget}"


class BaselineTimes:
    """The cache file, and the measurement when it has no entry. Thread-safe: the measurement runs
    in a worker thread while the event loop may look entries up."""

    def __init__(self, home: Path, path: Path | None = None):
        self.path = Path(path) if path is not None else Path(home) / FILE_NAME
        self._lock = threading.Lock()
        self._entries: dict[str, BaselineTime] | None = None

    def _load(self) -> dict[str, BaselineTime]:
        if self._entries is None:
            try:
                data = read_json(self.path, {})
            except (ValueError, OSError) as exc:  # a cache: a damaged file is measured again, not fatal
                log.warning("baseline times: %s; measuring again", exc)
                data = {}
            entries = {}
            for key, raw in (data.get("entries") or {}).items() if isinstance(data, dict) else ():
                try:
                    entries[key] = BaselineTime(str(raw["wall_s"]), str(raw["device"]), raw.get("cpu_s"),
                                                int(raw.get("measured_at", 0)))
                except (KeyError, TypeError, ValueError):
                    continue
            self._entries = entries
        return self._entries

    def get(self, task_id: str, device: str, budget: int, hardware: str | None = None) -> BaselineTime | None:
        """The cached time for the task's baseline on ``device`` at ``budget`` tokens; None when
        there is none, or when ``hardware`` (a run's result.device) names other hardware."""
        with self._lock:
            entry = self._load().get(_key(task_id, device, budget))
        if entry is None or (hardware is not None and entry.device != hardware):
            return None
        return entry

    def put(self, task_id: str, device: str, budget: int, entry: BaselineTime) -> None:
        with self._lock:
            entries = self._load()
            entries[_key(task_id, device, budget)] = entry
            write_json_atomic(self.path, {"version": VERSION, "entries": {
                k: {"wall_s": e.wall_s, "device": e.device, "measured_at": e.measured_at,
                    **({"cpu_s": e.cpu_s} if e.cpu_s is not None else {})} for k, e in sorted(entries.items())}})

    def measure(self, task: Any, *, device: str, budget: int, hardware: str | None = None,
                run: Callable[..., Any] | None = None, runs: int = BASELINE_RUNS,
                **options: Any) -> BaselineTime | None:
        """The baseline's time, from the cache or from ``runs`` runs of ``task.source`` now (the
        least time; blocking: call it in a worker thread). ``run`` defaults to
        trainer.experiment.run_experiment; ``options`` go to it (cache_dir, timeout_s, on_progress, ...).
        None when every baseline run crashed (nothing is cached then)."""
        known = self.get(task.id, device, budget, hardware)
        if known is not None:
            return known
        if run is None:
            run = experiment.run_experiment  # looked up now: a test may have replaced it
        best: dict | None = None
        for _ in range(max(1, runs)):
            res = run(task, task.source, seed=BASELINE_SEED, budget_tokens=budget, device=device, **options)
            if not res.outcome_ok or not res.result:
                log.warning("baseline times: the baseline of task %s crashed at %d tokens on %s: %s",
                            task.id[:12], budget, device, res.reason)
                continue
            if best is None or Decimal(res.result["wall_s"]) < Decimal(best["wall_s"]):
                best = res.result
        if best is None:
            return None
        entry = BaselineTime(best["wall_s"], str(best.get("device", device)), best.get("cpu_s"), int(time.time()))
        self.put(task.id, device, budget, entry)
        return entry


__all__ = ["BaselineTime", "BaselineTimes", "FILE_NAME"]
