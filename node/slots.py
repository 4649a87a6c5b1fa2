"""Device slots: one experiment per GPU, one for a CPU-only node (docs/design.md, "Reproduction and voting").

Both loops draw from the same slots. The account of busy seconds by purpose lets the scheduler keep
reproduction under ``verify_share`` of the node's compute while its own loop has work.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import AsyncIterator


def detect_devices() -> list[str]:
    try:
        import torch  # heavy: torch (seconds); only device detection needs it

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return ["mps"]
    except Exception:  # a broken torch install still leaves the CPU
        pass
    return ["cpu"]


@dataclass
class SlotUse:
    purpose: str  # "ralph" | "reproduce"
    device: str
    started: float
    label: str = ""


@dataclass
class DeviceSlots:
    devices: list[str] = field(default_factory=detect_devices)
    busy_s: dict[str, float] = field(default_factory=lambda: {"ralph": 0.0, "reproduce": 0.0})
    in_use: dict[str, SlotUse] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._free: asyncio.Queue[str] = asyncio.Queue()
        for device in self.devices:
            self._free.put_nowait(device)

    def add(self, devices: list[str]) -> None:
        """Devices detected after the slots were made (node/daemon.py detects them in the background)."""
        for device in devices:
            self.devices.append(device)
            self._free.put_nowait(device)

    @property
    def free(self) -> int:
        return self._free.qsize()

    def share(self, purpose: str) -> float:
        """Fraction of the busy time so far spent on ``purpose`` (0 when nothing ran yet)."""
        total = sum(self.busy_s.values()) + sum(time.monotonic() - u.started for u in self.in_use.values())
        mine = self.busy_s.get(purpose, 0.0) + sum(time.monotonic() - u.started for u in self.in_use.values()
                                                    if u.purpose == purpose)
        return mine / total if total > 0 else 0.0

    @contextlib.asynccontextmanager
    async def acquire(self, purpose: str, label: str = "") -> AsyncIterator[str]:
        device = await self._free.get()
        use = SlotUse(purpose, device, time.monotonic(), label)
        self.in_use[device] = use
        try:
            yield device
        finally:
            self.busy_s[purpose] = self.busy_s.get(purpose, 0.0) + time.monotonic() - use.started
            del self.in_use[device]
            self._free.put_nowait(device)
