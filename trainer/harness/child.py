"""Entry point of the sandboxed harness processes: ``python -P -m trainer.harness.child CONFIG``.

Modes (DESIGN.md, "Running other people's code"):
  train  import the train script, build the model, run train() on the budget loader, record the
         curve, save the weights (a plain state_dict, loaded back with weights_only).
  spot   the same, but stop at ``stop_tokens`` and save nothing (a spot check).
  eval   a separate process, started beside training: read (and delete) the validation split,
         import torch, wait for ``go`` (weights in place), then import the script, rebuild the
         model, load the weights, compute the summed cross-entropy, and count FLOPs per token
         on one fwd+bwd step of the training batch shape.
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

HANDLED_ERROR = 3


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


def _load_script(path: Path):
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


def run_train(cfg: dict, *, spot: bool) -> dict:
    import torch

    from .curve import CurveRecorder
    from .loader import BudgetLoader
    from .runtime import autocast_for, choose_device, configure, device_label

    device = choose_device(cfg["device"])
    configure(device, threads=cfg["threads"])
    script = _load_script(Path(cfg["script"]))
    data = _read_bytes(Path(cfg["data"]))
    torch.manual_seed(cfg["seed"])
    model = script.build_model(256, cfg["context"]).to(device)
    recorder = CurveRecorder(cfg["budget_tokens"], check_every=1 if device.type == "cpu" else 16)
    progress_path = Path(cfg["progress"])

    loader = BudgetLoader(data, budget_tokens=cfg["budget_tokens"], stop_tokens=cfg.get("stop_tokens"),
                          seed=cfg["seed"], device=device)

    def log(loss) -> None:
        if recorder.log(loss, loader.tokens):
            _write_json(progress_path, {"tokens": loader.tokens, "loss": recorder.last_loss})

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


def _wait_for_go(path: Path) -> dict:
    """The parent writes go.json once the weights are in place (or to abort)."""
    while True:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.02)


def run_eval(cfg: dict) -> dict:
    import torch

    from .curve import NanLoss
    from .evaluate import evaluate_nats
    from .flops import measure_flops_per_token, warm_up_flop_counter
    from .runtime import autocast_for, choose_device, configure

    # Started while training runs: yield the CPU to it rather than slow it down.
    os.nice(cfg.get("nice", 0))
    # The validation bytes leave the disk before the script is imported: its import-time code
    # (or a thread it starts) finds no file to read.
    val_path = Path(cfg["data"])
    val = _read_bytes(val_path)
    val_path.unlink()
    device = choose_device(cfg["device"])
    configure(device, threads=cfg["threads"])
    warm_up_flop_counter()  # its imports take seconds: pay them while training still runs
    go = _wait_for_go(Path(cfg["go"]))
    if go.get("abort"):
        raise ScriptError("aborted: training did not finish")
    script = _load_script(Path(cfg["script"]))
    torch.manual_seed(cfg["seed"])
    model = script.build_model(256, cfg["context"])
    state = torch.load(cfg["weights"], map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    autocast = autocast_for(device)
    nats, count = evaluate_nats(model, val, context=cfg["context"], batch_size=cfg["eval_batch_size"],
                                device=device, autocast=autocast)
    if nats != nats or nats in (float("inf"), float("-inf")):
        raise NanLoss("nan loss")
    batch_size, seq_len = go["batch_shape"]
    model.train()
    flops = measure_flops_per_token(model, batch_size=batch_size, seq_len=seq_len, device=device,
                                    autocast=autocast)
    return {"nats": nats, "bytes": count, "flops_per_token": flops}


def _reason(exc: BaseException) -> str:
    import torch

    from .curve import NanLoss
    from .runtime import DeviceError

    if isinstance(exc, NanLoss):
        return "nan loss"
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "out of memory"
    if isinstance(exc, (ScriptError, DeviceError)):
        return str(exc)
    # Point at the line of the train script that failed, the line a proposer can fix.
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith("train.py"):
            where = f" (train.py line {frame.lineno})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] + where


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result_path = Path(cfg["result"])
    try:
        if cfg["mode"] == "eval":
            out = run_eval(cfg)
        else:
            out = run_train(cfg, spot=cfg["mode"] == "spot")
    except BaseException as exc:  # noqa: BLE001 - every failure of untrusted code is an outcome
        if isinstance(exc, KeyboardInterrupt):
            raise
        _write_json(result_path, {"error": _reason(exc)})
        traceback.print_exc()
        return HANDLED_ERROR
    _write_json(result_path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
