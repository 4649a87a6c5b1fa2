"""Entry point of the sandboxed harness processes: ``python -P -m trainer.harness.child CONFIG``.

A harness process starts before its job is known: CONFIG holds only its start-up settings (kind,
nice, how long to wait, the number of its channel to the runner). It imports torch and what a job
imports lazily (torch._dynamo: torch.optim's first step pulls it in, ~2 s) while it waits for the job,
which arrives over the channel (harness/channel.py). Started ahead by the runner's warm pool, its
imports overlap the previous run; each process still runs exactly one job and then exits.

Jobs (``mode``):
  train  import the train script, build the model, run train() on the budget loader over the token
         stream the runner drew (tokens.bin: never the split), send each curve point, save the
         weights as a tensor file (harness/tensorfile.py: data, never code).
  spot   the same, but stop at ``stop_tokens`` and save nothing (a spot check).
  model  the untrusted half of the evaluation: import the script, build the model, wait for the
         trained weights the runner checked and placed, then answer batches of input windows with
         logits through shared memory (a sealed memfd that came with the job), one batch at a time.
         It never holds a target, a later window or the validation split: scoring, and the probes
         that check the model reads no byte it predicts, are the trusted scorer's (trainer/scorer.py).
  abort  exit without running anything (a warm process nobody needs).
What this process reports is the script's word only (the curve is its own report); every number
that is published (val_bpb, tokens, seed, times, FLOPs) is measured by the runner.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import mmap
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from . import channel
from .priority import Background

HANDLED_ERROR = 3
VOCAB = 256
MAX_WEIGHTS = 8 << 30
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def load_script(path: Path):
    """Import the train script at ``path`` as module ``train``; it must define build_model() and train()."""
    spec = importlib.util.spec_from_file_location("train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    for name in ("build_model", "train"):
        if not callable(getattr(module, name, None)):
            raise ScriptError(f"train script defines no {name}()")
    return module


class ScriptError(Exception):
    pass


def keep_freed_memory(*, mmap_below: int = 32 << 20, trim_above: int = 64 << 20) -> bool:
    """Let the allocator keep the blocks a training step or a forward pass frees, for the next one.

    glibc gives each block of 128 KiB or more its own mapping and unmaps it when freed, so the same
    activations allocated again at the next step fault every page in afresh (zeroed by the kernel):
    ~150,000 page faults and ~0.3 s of system time over one tiny run, ~1,500 faults per evaluation
    batch. Blocks under ``mmap_below`` (glibc's ceiling, 32 MiB) come from the heap instead, which
    is trimmed only past ``trim_above`` bytes free. Numbers are untouched; False where the C
    library is not glibc (nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_below)) and bool(mallopt(M_TRIM_THRESHOLD, trim_above))


def _read_stream(path: Path, row_len: int | None = None):
    """Bytes: the stream as 1-D uint8. Tokens (``row_len``): packed rows of uint16 little-endian
    ids, as (rows, row_len) int32."""
    import torch

    data = bytearray(path.read_bytes())
    if row_len is None:
        return torch.frombuffer(data, dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    if not data or len(data) % (2 * row_len):
        raise ScriptError("the token stream is not whole rows")
    if sys.byteorder != "little":
        data = bytearray(memoryview(data).cast("H").tobytes())  # pragma: no cover - big-endian hosts
    return (torch.frombuffer(data, dtype=torch.int16).to(torch.int32) & 0xFFFF).view(-1, row_len)


def _inputs(shared, n: int, t: int, token_size: int):
    """The batch's (n, t) input ids from shared memory, as int64."""
    import torch

    if token_size == 1:
        return torch.frombuffer(shared, dtype=torch.uint8, count=n * t).view(n, t).long()
    return (torch.frombuffer(shared, dtype=torch.int16, count=n * t).view(n, t).long() & 0xFFFF)


RANK_JOB = "rank-job.json"  # the job, for ranks 1.. of a data-parallel run (in the scratch directory)
RANK_TIMEOUT_S = 300  # a collective that waits this long for another rank fails the run


def _start_ranks(cfg: dict, world: int) -> list:
    """Ranks 1..world-1 of a data-parallel run: this module again, in this sandbox, under its limits,
    each told its rank (torchrun's RANK / WORLD_SIZE / LOCAL_RANK); they report nothing to the runner."""
    import subprocess

    Path(RANK_JOB).write_text(json.dumps(cfg), encoding="utf-8")
    procs = []
    for rank in range(1, world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        procs.append(subprocess.Popen([sys.executable, "-P", "-m", "trainer.harness.child", "--rank", str(rank)],
                                      env=env, stdin=subprocess.DEVNULL))
    return procs


def _join_group(rank: int, world: int, device) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the sandbox has loopback only
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            init_method=f"file://{Path('rendezvous').resolve()}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=RANK_TIMEOUT_S))


def _rank_device(name: str, rank: int, world: int):
    import torch

    from .runtime import choose_device

    device = choose_device(name)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", (device.index or 0) + rank)
        torch.cuda.set_device(device)
    return device


def run_train(sock: socket.socket | None, cfg: dict, background: Background | None, *, spot: bool,
              rank: int = 0) -> dict:
    world = int(cfg.get("world", 1))
    ranks = []
    if background is not None:
        background.foreground()  # the run has begun: the whole of it is urgent
        background.join()
    if rank == 0:
        # Sent before any of the script runs here: the runner's clock of the training starts now, so a
        # process whose imports were not done ahead of its job (no warm one waited) is not charged them.
        channel.send(sock, {"ready": {}})
        if world > 1:
            ranks = _start_ranks(cfg, world)
    import torch

    from . import tensorfile
    from .curve import CurveRecorder
    from .loader import BudgetLoader
    from .runtime import autocast_for, choose_device, configure, device_label

    device = _rank_device(cfg["device"], rank, world)
    configure(device, threads=cfg["threads"])
    if world > 1:
        _join_group(rank, world, device)
    script = load_script(Path(cfg["script"]))
    stream = _read_stream(Path(cfg["tokens"]), cfg.get("row_len"))
    torch.manual_seed(cfg["seed"])
    model = script.build_model(cfg.get("vocab", VOCAB), cfg["context"]).to(device)
    recorder = CurveRecorder(cfg["budget_tokens"], check_every=1 if device.type == "cpu" else 16)
    loader = BudgetLoader(stream, budget_tokens=cfg["budget_tokens"], stop_tokens=cfg.get("stop_tokens"),
                          device=device, rank=rank, world=world)

    def log(loss) -> None:
        if rank == 0 and recorder.log(loss, loader.tokens):  # one curve: rank 0's
            channel.send(sock, {"point": {"tokens": loader.tokens, "loss": recorder.last_loss}})

    autocast = autocast_for(device)
    with autocast():
        script.train(model, loader, log)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        if rank > 0:
            return {}
        for i, proc in enumerate(ranks, start=1):
            if proc.wait() != 0:
                raise ScriptError(f"rank {i} of {world} ended with status {proc.returncode}")
    if loader.tokens == 0:
        raise ScriptError("train() consumed no batches (is the batch larger than the budget?)")
    if not recorder.curve:
        raise ScriptError("train() never called log(loss)")
    if not spot:
        tensorfile.save(model.state_dict(), cfg["weights"])
    return {"curve": recorder.curve, "device": device_label(device), "torch": torch.__version__,
            "peak_mem_mb": _peak_mem_mb(torch, device)}


def _peak_mem_mb(torch, device) -> int:
    """The run's peak memory in MiB, as autoresearch reports it: on a GPU the device's peak allocation
    (torch.cuda.max_memory_allocated), elsewhere this process's peak resident set (getrusage
    ru_maxrss, KiB on Linux). Descriptive, like the device label: nothing is ranked on it."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)) >> 20
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) >> 10


def run_model(sock: socket.socket, cfg: dict, fds: list[int], background: Background) -> dict:
    """Serve logits for the runner's batches until it says ``end``. The job arrives while training
    still runs: the script's import and the model are built then, at the start-up's low priority;
    from the moment the runner places the weights, the process is urgent."""
    weights = Path(cfg["weights"])
    weights_in_place = background.foreground_when(weights.exists)
    background.join()
    import torch

    from . import tensorfile
    from .runtime import autocast_for, choose_device, configure

    if len(fds) != 1:
        raise ScriptError("model job came without its shared memory")
    rows, length = cfg["rows"], cfg["context"]
    vocab, token_size = cfg.get("vocab", VOCAB), cfg.get("token_size", 1)
    in_bytes = rows * length * token_size
    out_offset = -(-in_bytes // mmap.PAGESIZE) * mmap.PAGESIZE
    shared = mmap.mmap(fds[0], out_offset + rows * length * vocab * 4)
    device = choose_device(cfg["device"])
    configure(device, threads=cfg["threads"])
    autocast = autocast_for(device)
    script = load_script(Path(cfg["script"]))
    torch.manual_seed(cfg["seed"])
    model = script.build_model(vocab, cfg["context"])
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    message, _ = channel.recv(sock)
    weights_in_place.wait()
    if message is None or "weights" not in message:
        raise ScriptError("the runner sent no weights")
    state = tensorfile.load(weights.read_bytes(), max_bytes=MAX_WEIGHTS)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ScriptError("trained weights do not fit build_model(): "
                          + "; ".join(f"{what} {', '.join(names[:3])}" for what, names in
                                      (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if names))
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    if device.type == "cpu":
        torch.set_num_threads(cfg.get("eval_threads", cfg["threads"]))
    channel.send(sock, {"loaded": {}})
    out = torch.frombuffer(shared, dtype=torch.float32, offset=out_offset, count=rows * length * vocab)
    out = out.view(rows, length, vocab)
    with torch.inference_mode():
        while True:
            message, _ = channel.recv(sock)
            if message is None or "end" in message:
                return {}
            n, t = message["batch"]
            x = _inputs(shared, n, t, token_size).to(device)
            with autocast():
                logits = model(x)
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (n, t, vocab):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ScriptError(f"model returned logits of shape {shape}, expected {(n, t, vocab)}")
            if not logits.is_floating_point():
                raise ScriptError(f"model returned logits of dtype {str(logits.dtype).removeprefix('torch.')}, "
                                  "expected floating point")
            out[:n, :t].copy_(logits.detach().float().cpu())
            channel.send(sock, {"logits": [n, t]})


def _warm_up(kind: str) -> None:
    """Everything a job imports, before the job arrives; nothing here touches a device or an RNG.
    A model process runs no optimizer: it skips torch._dynamo (a second of CPU, twice per run)."""
    import torch  # noqa: F401

    from . import runtime, tensorfile  # noqa: F401
    if not kind.startswith("model"):
        import torch._dynamo  # noqa: F401  (imported lazily by torch.optim's first step: ~1 s)

        from . import curve, loader  # noqa: F401


def _wait_for_job(sock: socket.socket, idle_s: float) -> tuple[dict, list[int]]:
    """The runner sends the job once its files are in place. A warm process nobody claims gives up
    after ``idle_s``: it must not outlive a runner that died without asking."""
    sock.settimeout(idle_s)
    try:
        message, fds = channel.recv(sock)
    except (socket.timeout, OSError):
        return {"mode": "abort"}, []
    finally:
        sock.settimeout(None)
    if message is None or "job" not in message:
        return {"mode": "abort"}, []
    return message["job"], fds


def _reason(exc: BaseException) -> str:
    import torch

    from .curve import NanLoss
    from .runtime import DeviceError
    from .tensorfile import WeightsError

    if isinstance(exc, NanLoss):
        return "nan loss"
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "out of memory"
    if isinstance(exc, (ScriptError, DeviceError, WeightsError)):
        return str(exc)
    # Point at the line of the train script that failed, the line a proposer can fix.
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith("train.py"):
            where = f" (train.py line {frame.lineno})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] + where


def serve(start: dict) -> int:
    """Warm up, wait for the job, run it, report over the channel; returns the exit status."""
    sock = socket.socket(fileno=start["channel"])
    keep_freed_memory()
    try:
        # Started beside a training run, the start-up yields the CPU to it (see priority.py).
        background = Background(start.get("nice", 0), may_leave_session=start.get("pid_namespace", False))
        background.start(lambda: _warm_up(start["kind"]))
        job, fds = _wait_for_job(sock, start["idle_s"])
        if job.get("mode") == "abort":
            raise ScriptError("aborted: no job")
        if job["mode"] == "model":
            out = run_model(sock, job, fds, background)
        else:
            out = run_train(sock, job, background, spot=job["mode"] == "spot")
    except BaseException as exc:  # noqa: BLE001 - every failure of untrusted code is an outcome
        if isinstance(exc, KeyboardInterrupt):
            raise
        try:
            channel.send(sock, {"error": _reason(exc)})
        except OSError:
            pass
        traceback.print_exc()
        return HANDLED_ERROR
    channel.send(sock, {"done": out})
    return 0


def serve_rank(rank: int) -> int:
    """Rank ``rank`` (> 0) of a data-parallel training run: rank 0 started it and reports for all."""
    keep_freed_memory()
    try:
        cfg = json.loads(Path(RANK_JOB).read_text(encoding="utf-8"))
        run_train(None, cfg, None, spot=cfg["mode"] == "spot", rank=rank)
    except BaseException:  # noqa: BLE001 - rank 0 sees the exit status
        traceback.print_exc()
        return HANDLED_ERROR
    return 0


def main(argv: list[str]) -> None:
    if argv[:1] == ["--rank"]:
        status = serve_rank(int(argv[1]))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    status = serve(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    sys.stdout.flush()
    sys.stderr.flush()
    # The outcome has been sent. Skip the interpreter's teardown: with torch loaded it takes ~0.8 s
    # of the experiment's wall time, and it would also run whatever atexit hooks the script left.
    os._exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
