"""Resource limits of one sandboxed run (docs/design.md, "Limits per run")."""
from __future__ import annotations

from dataclasses import dataclass

GiB, MiB = 1 << 30, 1 << 20
# Seconds between the soft CPU limit (SIGXCPU, which names the reason) and the hard one (SIGKILL).
CPU_GRACE_S = 2


@dataclass(frozen=True)
class Limits:
    """Sized for a small training run; a GPU run passes bigger values.

    memory_bytes caps the address space (RLIMIT_AS): torch 2.x imports and trains a small model well
    under 4 GiB of address space on CPU (checked by tests/trainer/test_sandbox.py). CUDA maps far more virtual
    memory than it uses, so a GPU caller must raise it.

    Where the machine offers a writable cgroup (trainer/cgroups.py), memory_bytes and processes also
    bound the run as a whole, all its processes together (memory only where memory_bytes is below
    the machine's RAM: a GPU run's huge value means no cap). scratch_bytes bounds a scratch
    directory mounted as a capped tmpfs (root only; see trainer/sandbox.py cap_scratch): it must
    exceed the largest files a run's scratch holds (its script, data split, weights), so keep it well
    above file_bytes.
    """

    memory_bytes: int = 4 * GiB
    cpu_seconds: int = 600       # CPU time summed over threads, not wall time
    file_bytes: int = 256 * MiB  # largest single file the run may write
    processes: int = 64          # processes *and threads* of the run's uid (RLIMIT_NPROC counts both)
    scratch_bytes: int = 1 * GiB  # all files in scratch together, where a capped scratch is mounted

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "cpu_seconds", "file_bytes", "processes", "scratch_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """Name in the `resource` module -> (soft, hard), as the sandbox init applies them."""
        return {
            "RLIMIT_AS": (self.memory_bytes, self.memory_bytes),
            "RLIMIT_CPU": (self.cpu_seconds, self.cpu_seconds + CPU_GRACE_S),
            "RLIMIT_FSIZE": (self.file_bytes, self.file_bytes),
            "RLIMIT_NPROC": (self.processes, self.processes),
            "RLIMIT_CORE": (0, 0),
        }
