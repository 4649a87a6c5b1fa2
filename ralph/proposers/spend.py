"""Token prices and the daily spend ledger for the Anthropic proposer.

Prices are USD per million tokens from Anthropic's pricing page (5-minute cache writes). The
ledger is a JSON file per UTC day in the node home, shared by every agent of the node, so the cap
holds across restarts and across concurrent loops.
"""
from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..jsonfile import read_json, write_json_atomic
from .base import ProposalError, Usage


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float


# Most specific prefix first. Where a cache-read price was lowered during a model's life we keep the
# higher one: the cap should err on the side of spending less.
PRICES: tuple[tuple[str, Price], ...] = (
    ("claude-fable-5-1", Price(10.0, 50.0, 12.5, 0.25)),
    ("claude-mythos-5-1", Price(10.0, 50.0, 12.5, 0.25)),
    ("claude-fable", Price(10.0, 50.0, 12.5, 1.0)),
    ("claude-mythos", Price(10.0, 50.0, 12.5, 1.0)),
    ("claude-opus-5-5", Price(4.0, 20.0, 5.0, 0.2)),
    ("claude-opus-4-0", Price(15.0, 75.0, 18.75, 1.5)),
    ("claude-opus-4-1", Price(15.0, 75.0, 18.75, 1.5)),
    ("claude-opus-4-2", Price(15.0, 75.0, 18.75, 1.5)),  # claude-opus-4-2025xxxx dated ids
    ("claude-opus", Price(5.0, 25.0, 6.25, 0.5)),
    ("claude-sonnet-5", Price(2.0, 10.0, 2.5, 0.2)),
    ("claude-sonnet", Price(3.0, 15.0, 3.75, 0.3)),
    ("claude-haiku-5", Price(0.1, 0.5, 0.125, 0.01)),
    ("claude-haiku-4", Price(1.0, 5.0, 1.25, 0.1)),
    ("claude-3-5-haiku", Price(0.8, 4.0, 1.0, 0.08)),
    ("claude-3-haiku", Price(0.25, 1.25, 0.3, 0.03)),
)
UNKNOWN = Price(10.0, 50.0, 12.5, 1.0)  # an unknown model is priced like the dearest: never overspend


def price_of(model: str) -> Price:
    for prefix, price in PRICES:
        if model.startswith(prefix):
            return price
    return UNKNOWN


def cost_usd(model: str, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> float:
    """``input_tokens`` is the uncached input, as the API reports it (cached tokens are counted apart)."""
    p = price_of(model)
    return (input_tokens * p.input + output_tokens * p.output
            + cache_write * p.cache_write + cache_read * p.cache_read) / 1e6


def utc_today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


class SpendLedger:
    """Per-day totals in ``<dir>/<YYYY-MM-DD>.json``; ``check`` refuses once the cap is reached."""

    _lock = threading.Lock()  # agents of one node run proposals in threads; one writer at a time

    def __init__(self, directory: Path, daily_cap_usd: float, today: Callable[[], str] = utc_today) -> None:
        self.directory = Path(directory)
        self.daily_cap_usd = daily_cap_usd
        self.today = today

    def _path(self, day: str) -> Path:
        return self.directory / f"{day}.json"

    def spent(self, day: str | None = None) -> dict:
        return read_json(self._path(day or self.today()), {"cost_usd": 0.0, "calls": 0, "input_tokens": 0,
                                                             "output_tokens": 0, "cache_read_tokens": 0,
                                                             "cache_write_tokens": 0})

    def check(self) -> None:
        spent = float(self.spent()["cost_usd"])
        if spent >= self.daily_cap_usd:
            raise ProposalError(
                f"daily spend cap reached: ${spent:.2f} of ${self.daily_cap_usd:.2f} spent today (UTC); "
                "raise ralph.daily_spend_usd or wait for tomorrow")

    def record(self, usage: Usage) -> None:
        with self._lock:
            day = self.today()
            totals = self.spent(day)
            totals["cost_usd"] = float(totals["cost_usd"]) + usage.cost_usd
            totals["calls"] = int(totals["calls"]) + 1
            for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
                totals[name] = int(totals.get(name, 0)) + getattr(usage, name)
            write_json_atomic(self._path(day), totals)
