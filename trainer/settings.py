"""How an experiment runs: thread counts, timeouts, limits, the evaluation's shape (docs/design.md,
"The inner loop"). Shared by the runner (trainer/experiment.py) and its processes (trainer/warm.py)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .rlimits import GiB, Limits


def device_kind(device: str) -> str:
    """"cpu" or "gpu", deciding limits and timeouts. Decided without importing torch here (seconds
    per CLI call): "auto" counts as a GPU where an NVIDIA device node exists or on macOS (MPS)."""
    if device == "auto":
        return "gpu" if Path("/dev/nvidiactl").exists() or sys.platform == "darwin" else "cpu"
    return "cpu" if device == "cpu" else "gpu"



@dataclass(frozen=True)
class RunSettings:
    cpu_threads: int = 1  # fixed, not the core count: the thread count decides the bits of every sum
    eval_batch_size: int = 64  # validation windows per forward pass
    eval_threads: int = 1  # CPU threads of each of the two model processes, which run side by side
    weights_max_bytes: int = 4 * GiB  # largest trained weights file the runner accepts
    probe_share: float = 0.5  # share of the validation windows also asked as probes (trainer/scorer.py)
    scratch_bytes: int = 1 * GiB  # everything a CPU run keeps in its scratch: script, token stream, weights
    gpu_scratch_bytes: int = 32 * GiB  # a GPU run's stream and weights are bigger (a cap, not an allocation)
    cpu_tokens_per_s_floor: float = 1000.0  # default timeout assumes at least this throughput on CPU
    gpu_timeout_s: float = 3600.0  # default timeout of a GPU training run
    eval_timeout_s: float = 600.0
    memory_bytes: int = 4 * GiB  # address-space cap on CPU; CUDA maps far more than it uses
    sandbox_mode: str = "auto"
    overlap_eval: bool = True  # start the evaluation process during training (hides its start-up)
    warm_up_nice: int = 19  # niceness of a process started beside training, until its job is urgent (priority.py)
    warm_pool: bool = True  # start the next run's processes ahead (trainer.warm.WarmPool); never with a work_dir
    warm_idle_s: float = 600.0  # a warm process nobody claims exits after this long

    def train_timeout(self, budget_tokens: int, device: str) -> float:
        if device == "cpu":
            return 60.0 + budget_tokens / self.cpu_tokens_per_s_floor
        return self.gpu_timeout_s

    def probe_tolerance(self, device: str) -> float:
        """How far a probe's logits may move (a leak moves them by O(1)): bf16 kernels on a GPU may tile
        a row differently in another batch; on a CPU the rows are computed alike."""
        return 1e-4 if device_kind(device) == "cpu" else 1e-2

    def limits(self, device: str, timeout_s: float) -> Limits:
        gpu = device not in ("cpu",)
        return Limits(
            memory_bytes=(1 << 46) if gpu else self.memory_bytes,
            cpu_seconds=int(max(600, 2 * timeout_s * max(1, self.cpu_threads))),
            scratch_bytes=self.gpu_scratch_bytes if gpu else self.scratch_bytes,
        )
