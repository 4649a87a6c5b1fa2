"""What the node counts and shows while it works: one typed sink for the extensions.

``Counter`` names every counter the node keeps (``/metrics`` and ``/api/activity`` read them, and
nothing else writes a counter by a string of its own); ``Telemetry`` holds the counters, the HTTP
events, and the live activity: one experiment entry per device (two devices run two experiments at
once), the reproduction queue and the recent lines.
"""
from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Callable

from protocol import VERDICTS

RECENT_LINES = 50


class Counter(StrEnum):
    """A counter's name is its metric-name part (a ``str``: ``counters["experiments_run"]`` reads it)."""

    EXPERIMENTS_RUN = "experiments_run"  # own claims published
    EXPERIMENTS_KEPT = "experiments_kept"
    EXPERIMENTS_CRASHED = "experiments_crashed"
    REPRODUCTIONS_RUN = "reproductions_run"  # claims of others reproduced (spot check started)
    REPRODUCE_SPOT_CHECKS = "reproduce_spot_checks"
    REPRODUCE_FULL_RUNS = "reproduce_full_runs"
    REPRODUCE_CONFIRM_RUNS = "reproduce_confirm_runs"
    BASELINE_RUNS = "baseline_runs"  # task baselines timed for the compute cap
    PROPOSER_INPUT_TOKENS = "proposer_input_tokens"
    PROPOSER_OUTPUT_TOKENS = "proposer_output_tokens"
    PROPOSER_CACHE_READ_TOKENS = "proposer_cache_read_tokens"
    PROPOSER_CACHE_WRITE_TOKENS = "proposer_cache_write_tokens"
    PROPOSER_COST_USD = "proposer_cost_usd"
    VOTES_REPRODUCED = "votes_reproduced"  # votes this node cast, by verdict (vote_counter)
    VOTES_MISMATCH = "votes_mismatch"
    VOTES_FAILED = "votes_failed"
    VOTES_REFUSED = "votes_refused"
    VOTES_OVER_BUDGET = "votes_over_budget"


def vote_counter(verdict: str) -> Counter:
    """The counter of votes cast with ``verdict`` (a verdict may hold a space: ``votes_over_budget``)."""
    return Counter("votes_" + verdict.replace(" ", "_"))


assert {vote_counter(v) for v in VERDICTS} <= set(Counter)  # a new verdict needs its counter here


class Telemetry:
    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo or (lambda line: None)
        self.counters: dict[str, float] = {}  # Counter -> amount; absent reads as 0
        self.events: dict[str, int] = {}  # HTTP events (rate limited, ...)
        # "experiments": device -> entry; "experiment": the most recently started of them (or None)
        self.activity: dict[str, Any] = {"experiments": {}, "experiment": None, "queue": [], "recent": []}

    # -- counters ------------------------------------------------------------------------------
    def count(self, counter: Counter, amount: float = 1.0) -> None:
        counter = Counter(counter)  # a name that is no counter fails here, not silently in /metrics
        self.counters[counter] = self.counters.get(counter, 0.0) + amount

    def count_usage(self, usage: Any) -> None:
        """A proposer's ``ralph.proposers.base.Usage``: tokens and spend (nothing for a zero usage)."""
        for counter, amount in ((Counter.PROPOSER_INPUT_TOKENS, usage.input_tokens),
                                (Counter.PROPOSER_OUTPUT_TOKENS, usage.output_tokens),
                                (Counter.PROPOSER_CACHE_READ_TOKENS, usage.cache_read_tokens),
                                (Counter.PROPOSER_CACHE_WRITE_TOKENS, usage.cache_write_tokens),
                                (Counter.PROPOSER_COST_USD, usage.cost_usd)):
            if amount:
                self.count(counter, amount)

    def event(self, name: str) -> None:
        self.events[name] = self.events.get(name, 0) + 1

    # -- activity ------------------------------------------------------------------------------
    def set_experiment(self, device: str, entry: dict[str, Any]) -> None:
        """``entry`` is this device's experiment until cleared (its owner updates it in place)."""
        self.activity["experiments"][device] = entry
        self.activity["experiment"] = entry

    def clear_experiment(self, device: str, entry: dict[str, Any] | None = None) -> None:
        """Clear ``device``'s entry (only when it is still ``entry``, when given)."""
        running = self.activity["experiments"]
        if device in running and (entry is None or running[device] is entry):
            del running[device]
        latest = max(running.values(), key=lambda e: e.get("started_at") or 0, default=None)
        self.activity["experiment"] = latest

    def set_queue(self, items: list[dict[str, Any]]) -> None:
        self.activity["queue"] = items

    def note(self, text: str, **fields: Any) -> None:
        """A line of live activity for the dashboard (the last RECENT_LINES), echoed to the console."""
        recent = self.activity["recent"]
        recent.insert(0, {"at": int(time.time()), "text": text, **fields})
        del recent[RECENT_LINES:]
        self.echo(f"{time.strftime('%H:%M:%S')} {text}")
