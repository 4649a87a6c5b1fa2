"""Device choice and determinism for the harness processes."""
from __future__ import annotations

import os
from contextlib import nullcontext
from functools import partial

import torch


class DeviceError(Exception):
    pass


def choose_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("device cuda requested but CUDA is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device mps requested but MPS is not available")
    if name != "cpu" and not name.startswith("cuda") and name != "mps":
        raise DeviceError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)")
    return torch.device(name)


def configure(device: torch.device, *, threads: int) -> None:
    """Same seed, same stack -> same bits: fixed thread count and deterministic kernels.

    On CPU the thread count is fixed (not the machine's core count) because it decides how
    reductions are split, and so the last bits of every sum.
    """
    torch.set_num_threads(threads)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # Some fused GPU kernels have no deterministic variant; warn rather than refuse them.
        _deterministic(torch, warn_only=True)
    else:
        _deterministic(torch, warn_only=False)


def _deterministic(torch, *, warn_only: bool) -> None:
    # torch.use_deterministic_algorithms also imports torch._inductor (2+ s per process, twice per
    # experiment) only to mirror the flag for torch.compile; the harness sets the kernel flag itself.
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        return
    setter(True, warn_only=warn_only)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (docs/design.md, "GPU"); full precision elsewhere."""
    if device.type == "cuda":
        return partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return nullcontext


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"[:200]
    return device.type
