"""Entry point of the sandboxed harness processes: ``python -P -m trainer.harness.child CONFIG``.

A harness process starts before its job is known: CONFIG holds only its start-up settings (kind,
nice, how long to wait). It imports torch and everything a run will import lazily (torch._dynamo:
torch.optim's first step and FlopCounterMode pull it in, ~2 s) while it waits for the job in ``go``.
Started ahead of time by the runner's warm pool, a process's imports overlap the previous run; each
process still runs exactly one job and then exits (DESIGN.md, "Running other people's code").

Jobs (the ``mode`` of the go file):
  train  import the train script, build the model, run train() on the budget loader, record the
         curve, save the weights (a plain state_dict, loaded back with weights_only).
  spot   the same, but stop at ``stop_tokens`` and save nothing (a spot check).
  eval   a separate process, given its job while training runs: read (and delete) the validation
         split, then import the script, rebuild the model, wait for the trained weights, load
         them, compute the summed cross-entropy, and count FLOPs per token on one fwd+bwd step of
         the training batch shape (on a CPU before the weights arrive).
  abort  exit without running anything (a warm process nobody needs).
The outcome goes to ``result`` as JSON: measurements, or ``{"error": short reason}`` with exit 3.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

from .priority import Background

HANDLED_ERROR = 3


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


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


def _read_bytes(path: Path):
    import torch

    data = bytearray(path.read_bytes())
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def run_train(cfg: dict, background: Background, *, spot: bool) -> dict:
    background.foreground()  # the run has begun: the whole of it is urgent
    background.join()
    import torch

    from .curve import CurveRecorder
    from .loader import BudgetLoader
    from .runtime import autocast_for, choose_device, configure, device_label

    device = choose_device(cfg["device"])
    configure(device, threads=cfg["threads"])
    script = load_script(Path(cfg["script"]))
    data = _read_bytes(Path(cfg["data"]))
    torch.manual_seed(cfg["seed"])
    model = script.build_model(256, cfg["context"]).to(device)
    recorder = CurveRecorder(cfg["budget_tokens"], check_every=1 if device.type == "cpu" else 16)
    progress_path = Path(cfg["progress"])

    loader = BudgetLoader(data, budget_tokens=cfg["budget_tokens"], stop_tokens=cfg.get("stop_tokens"),
                          seed=cfg["seed"], device=device)

    def log(loss) -> None:
        if recorder.log(loss, loader.tokens):
            # The first batch's shape lets the evaluation process count FLOPs while training runs.
            _write_json(progress_path, {"tokens": loader.tokens, "loss": recorder.last_loss,
                                        "batch_shape": loader.batch_shape and list(loader.batch_shape)})

    autocast = autocast_for(device)
    start = time.perf_counter()
    with autocast():
        script.train(model, loader, log)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    if loader.tokens == 0:
        raise ScriptError("train() consumed no batches (is the batch larger than the budget?)")
    if not recorder.curve:
        raise ScriptError("train() never called log(loss)")
    out = {"curve": recorder.curve, "tokens": loader.tokens, "wall_s": wall, "device": device_label(device),
           "torch": torch.__version__, "batch_shape": list(loader.batch_shape)}
    if not spot:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        torch.save(state, cfg["weights"])
    return out


def _warm_up(kind: str) -> None:
    """Everything a job imports, before the job arrives; nothing here touches a device or an RNG."""
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported lazily by torch.optim's first step: ~2 s)

    from . import curve, loader, runtime  # noqa: F401
    if kind == "eval":
        from . import evaluate, flops  # noqa: F401


def _wait_for_go(path: Path, idle_s: float) -> dict:
    """The parent writes the job to go.json (atomically) once its files are in place. A warm process
    nobody claims gives up after ``idle_s``: it must not outlive a parent that died without asking."""
    deadline = time.monotonic() + idle_s
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.01)
    return {"mode": "abort"}


def run_eval(cfg: dict, background: Background) -> dict:
    """Its job arrives while training still runs: what does not need the trained weights (the
    script's import, the model, on a CPU the FLOP count) is done before they appear, at the low
    priority of the start-up; the rest is urgent."""
    weights = Path(cfg["weights"])
    # Urgent from the moment the weights are in place (the parent moves them in atomically once
    # training has ended, and kills this process if training fails), even if this start-up is
    # unfinished then.
    weights_in_place = background.foreground_when(weights.exists)
    background.join()
    import torch

    from .curve import NanLoss
    from .evaluate import check_no_leak, evaluate_nats
    from .flops import measure_flops_per_token
    from .runtime import autocast_for, choose_device, configure

    # The validation bytes leave the disk before the script is imported: its import-time code
    # (or a thread it starts) finds no file to read.
    val_path = Path(cfg["data"])
    val = _read_bytes(val_path)
    val_path.unlink()
    device = choose_device(cfg["device"])
    configure(device, threads=cfg["threads"])
    autocast = autocast_for(device)
    script = load_script(Path(cfg["script"]))
    batch_size, seq_len = cfg["batch_shape"]

    def fresh_model():
        torch.manual_seed(cfg["seed"])
        return script.build_model(256, cfg["context"])

    def count_flops(model) -> int:
        return measure_flops_per_token(model.train(), batch_size=batch_size, seq_len=seq_len, device=device,
                                       autocast=autocast)

    # FLOPs follow from the shapes, not the weights: on a CPU they are counted on a model of their
    # own while training still runs. A GPU is left to training until it ends (it may need all of
    # its memory): there the count follows the evaluation, on the trained model.
    flops = None
    if device.type == "cpu":
        spare = fresh_model()
        flops = count_flops(spare)
        # One batch of the evaluation's shape on the spare model: first-use costs (allocations,
        # kernel set-up) are paid now rather than after training.
        batch = cfg["eval_batch_size"]
        evaluate_nats(spare.eval(), val[:batch * cfg["context"] + 1], context=cfg["context"], batch_size=batch,
                      device=device, autocast=autocast)
        del spare
    model = fresh_model()  # seeded and built exactly as if no count had run
    weights_in_place.wait()
    if device.type == "cpu":
        # Training has ended and left its core free: the evaluation runs on a fixed number of threads
        # (fixed, not the machine's core count, which must not decide the bits).
        torch.set_num_threads(cfg.get("eval_threads", cfg["threads"]))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    check_no_leak(model, val, context=cfg["context"], device=device, autocast=autocast)
    nats, count = evaluate_nats(model, val, context=cfg["context"], batch_size=cfg["eval_batch_size"],
                                device=device, autocast=autocast)
    if nats != nats or nats in (float("inf"), float("-inf")):
        raise NanLoss("nan loss")
    if flops is None:
        flops = count_flops(model)
    return {"nats": nats, "bytes": count, "flops_per_token": flops}


def _reason(exc: BaseException) -> str:
    import torch

    from .curve import NanLoss
    from .evaluate import LeakError
    from .runtime import DeviceError

    if isinstance(exc, NanLoss):
        return "nan loss"
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "out of memory"
    if isinstance(exc, (ScriptError, DeviceError, LeakError)):
        return str(exc)
    # Point at the line of the train script that failed, the line a proposer can fix.
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith("train.py"):
            where = f" (train.py line {frame.lineno})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] + where


def serve(start: dict) -> int:
    """Warm up, wait for the job, run it; returns the exit status."""
    result_path = Path(start["result"])
    try:
        # Started beside a training run, the start-up yields the CPU to it (see priority.py).
        background = Background(start.get("nice", 0), may_leave_session=start.get("pid_namespace", False))
        background.start(lambda: _warm_up(start["kind"]))
        job = _wait_for_go(Path(start["go"]), start["idle_s"])
        if job.get("mode") == "abort":
            raise ScriptError("aborted: no job")
        if job["mode"] == "eval":
            out = run_eval(job, background)
        else:
            out = run_train(job, background, spot=job["mode"] == "spot")
    except BaseException as exc:  # noqa: BLE001 - every failure of untrusted code is an outcome
        if isinstance(exc, KeyboardInterrupt):
            raise
        _write_json(result_path, {"error": _reason(exc)})
        traceback.print_exc()
        return HANDLED_ERROR
    _write_json(result_path, out)
    return 0


def main(argv: list[str]) -> None:
    status = serve(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    sys.stdout.flush()
    sys.stderr.flush()
    # The result is on disk. Skip the interpreter's teardown: with torch loaded it takes ~0.8 s of
    # the experiment's wall time, and it would also run whatever atexit hooks the script left.
    os._exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
