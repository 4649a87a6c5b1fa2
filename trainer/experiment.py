"""One experiment: train a script on a task inside a sandbox, then score it with the trusted scorer
(docs/design.md, "The inner loop" and "Evaluation").

Three sandboxed processes run the script's code, none of them holding anything it could cheat with:
- training gets the script and the token stream this run may train on (trainer/stream.py: budget
  tokens drawn by the runner from the seed), never the split;
- two model processes get the script and the trained weights (a checked tensor file: data, not
  code) and answer batches of validation inputs with logits, one batch at a time, through shared
  memory; the validation split, the targets and the score stay in this process (trainer/scorer.py).
Every number the result carries but the loss curve (val_bpb, tokens, seed, training wall and CPU
time, FLOPs per token) is measured here, by trusted code; the curve is the script's own report.
Every failure (exception, NaN, timeout, out of memory, a killed process, a probe that fails)
becomes an outcome ``crashed`` with a short reason, never a hang or an exception for the caller.

Each process serves one run, but it need not start with it: a process imports torch before it is
given its job (seconds of CPU), so the runner keeps the next run's processes started ahead (the
warm pool), and a loop of experiments pays neither process start nor import on its critical path.
"""
from __future__ import annotations

import fcntl
import math
import mmap
import os
import selectors
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .datasets import DataError
from .harness import tensorfile
from .harness.curve import MAX_POINTS
from .scorer import Batch, Scorer, ScoreError, bits_per_byte
from .settings import RunSettings
from .settings import device_kind as _device_kind
from .stream import draw_stream
from .tasks import Task, TaskError, load_data, load_tokens, split_data
from .tokens import draw_rows
from .warm import POLL_S, POOL, START_IDLE_S, Workspace
from .warm import Crash as _Crash

VOCAB = 256
WEIGHTS_FILE = "weights.safetensors"
MODEL_KINDS = ("model-a", "model-b")  # two model processes: a probe's pair never meets in one
ProgressFn = Callable[[int, int, "float | None"], None]  # (tokens, budget, loss or None)


@dataclass(frozen=True)
class ExperimentResult:
    outcome_ok: bool
    result: dict | None  # the protocol `result` object; None when crashed
    reason: str  # short text when crashed, "" otherwise
    sandbox: str
    wall_s: float  # whole experiment, every process
    timings: dict = field(default_factory=dict)  # where the time went (seconds): for benches and logs

    @property
    def val_bpb(self) -> float | None:
        return float(self.result["val_bpb"]) if self.result else None


@dataclass(frozen=True)
class SpotCheck:
    ok: bool
    reason: str
    curve: list
    wall_s: float | None = None  # training wall time, measured by the runner


def _decimal(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def _default_cache() -> Path:
    return Path(os.environ.get("RALPHSWARM_HOME", Path.home() / ".ralphswarm")).expanduser() / "cache"


def _hidden(cache_dir: Path | None) -> tuple[Path, ...]:
    """What the run's processes must not see, where the sandbox would otherwise show it (namespaces
    mode shows the whole machine read-only): the data cache (it holds the validation split) and the
    node's home."""
    home = _default_cache().parent
    return tuple(dict.fromkeys(p for p in (cache_dir or _default_cache(), home) if p is not None))


def _budget(task: Task, budget_scale: float, budget_tokens: int | None = None) -> int:
    """The run's token budget: ``budget_tokens`` when given (a reproduction uses the claim's), else
    the task's budget times ``budget_scale``."""
    if budget_tokens is not None:
        if not isinstance(budget_tokens, int) or budget_tokens < 1:
            raise _Crash(f"budget must be a positive number of tokens, got {budget_tokens!r}")
        return budget_tokens
    if not (budget_scale > 0 and math.isfinite(budget_scale)):
        raise _Crash(f"budget scale must be a positive number, got {budget_scale}")
    return max(1, int(task.budget_tokens * budget_scale))


@dataclass(frozen=True)
class _Data:
    """What the runner holds of a task's data. Bytes tasks: the two splits as bytes. Tokenized tasks
    (trainer/tokens.py): the packed training rows, the validation windows and each id's byte length."""
    train: bytes | np.ndarray  # bytes, or (rows, context + 1) uint16 packed rows
    val: bytes | np.ndarray  # bytes, or (windows, context + 1) uint16
    token_bytes: np.ndarray | None = None

    @property
    def tokenized(self) -> bool:
        return self.token_bytes is not None


def _splits(task: Task, cache_dir: Path | None) -> _Data:
    try:
        if task.harness.tokenized:
            tokens = load_tokens(task, cache_dir or _default_cache())
            return _Data(tokens.train_rows, tokens.val_windows, tokens.bpe.token_bytes())
        train, val = split_data(task, load_data(task, cache_dir or _default_cache()))
        return _Data(train, val)
    except (DataError, TaskError) as exc:
        raise _Crash(f"data: {exc}") from None


def _stream(task: Task, data: _Data, *, budget: int, seed: int) -> bytes:
    try:
        if data.tokenized:
            return draw_rows(data.train, budget_tokens=budget, seed=seed, context=task.harness.context)
        return draw_stream(data.train, budget_tokens=budget, seed=seed, chunk=task.harness.context)
    except ValueError as exc:
        raise _Crash(f"data: {exc}") from None


LOGITS_MAX_BYTES = 512 << 20  # a model process's logits per batch (shared memory): 8 rows of 2,048 x 8,192


def eval_rows(task: Task, settings: RunSettings) -> int:
    """Windows per evaluation batch: the settings' batch size, fewer where a batch's float32 logits
    would pass LOGITS_MAX_BYTES (a large vocabulary at a long context)."""
    spec = task.harness
    return max(1, min(settings.eval_batch_size, LOGITS_MAX_BYTES // (spec.context * spec.vocab * 4)))


def _point(p: dict, budget: int) -> dict | None:
    """A progress point from the training process, as plain numbers; None when malformed."""
    tokens, loss = p.get("tokens"), p.get("loss")
    if type(tokens) is not int or not 0 < tokens <= budget:
        return None
    if loss is not None and (not isinstance(loss, (int, float)) or not math.isfinite(loss)):
        return None
    return {"tokens": tokens, "loss": None if loss is None else float(loss)}


def _curve(curve, budget: int) -> list:
    """The script's loss curve (its own report), checked for shape: at most MAX_POINTS points of
    increasing token counts within the budget, each loss a finite non-negative number."""
    if not isinstance(curve, list) or not curve or len(curve) > MAX_POINTS:
        raise _Crash("training reported a malformed loss curve")
    out, last = [], 0
    for item in curve:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and isinstance(item[1], str)):
            raise _Crash("training reported a malformed loss curve")
        try:
            loss = float(item[1])
        except ValueError:
            raise _Crash("training reported a malformed loss curve") from None
        if not (last < item[0] <= budget and math.isfinite(loss) and loss >= 0):
            raise _Crash("training reported a malformed loss curve")
        last = item[0]
        out.append([item[0], f"{loss:.6f}"])
    return out


def _label(value, fallback: str) -> str:
    text = value if isinstance(value, str) else fallback
    return "".join(ch for ch in text if ch.isprintable())[:200] or fallback


@dataclass(frozen=True)
class _Trained:
    curve: list
    wall_s: float  # from job hand-over to the outcome, measured here
    cpu_s: float | None  # CPU time of the training sandbox over the same span, where measurable
    device: str
    torch: str
    sandbox: str
    weights: bytes | None
    params: int = 0  # floating elements of the checked weights (flops_per_token = 6 x params)
    peak_mem_mb: int | None = None  # the training process's report of its peak memory (descriptive)


def _train(task: Task, source: str, ws: Workspace, stream: bytes, *, seed: int, budget: int, device: str,
           limit: float, settings: RunSettings, on_progress: ProgressFn | None, stop_tokens: int | None,
           mode: str, on_point: Callable[[dict], None] | None = None) -> _Trained:
    # Where no warm process waits, this one's start-up is the run's critical path: not niced.
    harness = ws.harness("train", settings=settings, device=device, limit_s=limit, idle_s=START_IDLE_S,
                         beside=False)
    scratch = harness.scratch
    try:
        (scratch / "train.py").write_text(source, encoding="utf-8")
        (scratch / "tokens.bin").write_bytes(stream)  # this run's tokens: never the split
    except BaseException:
        ws.release(harness)
        raise
    job = {"mode": mode, "script": "train.py", "tokens": "tokens.bin", "weights": WEIGHTS_FILE,
           "budget_tokens": budget, "stop_tokens": stop_tokens, "seed": seed, "device": device,
           "threads": settings.cpu_threads, "context": task.harness.context}
    if task.harness.tokenized:
        job.update(vocab=task.harness.vocab, row_len=task.harness.context + 1)
        if task.harness.gpus > 1:
            job.update(world=task.harness.gpus)
    ws.go(harness, job, limit)
    refilled = False

    def point(raw: dict) -> None:
        nonlocal refilled
        p = _point(raw, budget)
        if p is None:
            return
        if not refilled:
            # Training is under way (past its own start-up): start the next run's process beside it.
            refilled = True
            ws.refill("train", settings=settings, device=device, limit_s=limit)
        if on_point is not None:
            on_point(p)
        if on_progress is not None:
            on_progress(p["tokens"], budget, p["loss"])

    # Read the weights while the process still exists (it has said "done"): its scratch descriptor
    # is closed once the sandbox has gone; the reads below happen after the process has ended.
    try:
        out, sandbox = harness.wait(point)
    finally:
        ws.refill("train", settings=settings, device=device, limit_s=limit)  # also after a crash
    weights, params = (None, 0) if mode == "spot" else _read_weights(harness, settings.weights_max_bytes, sandbox)
    return _Trained(_curve(out.get("curve"), budget), harness.wall_s or 0.0, harness.cpu_s,
                    _label(out.get("device"), device), _label(out.get("torch"), "?"), sandbox, weights, params,
                    _peak_mem(out.get("peak_mem_mb")))


def _peak_mem(value) -> int | None:
    """The process's peak-memory report when it is a plausible MiB count (below 16 TiB), else none."""
    return value if type(value) is int and 0 <= value < 1 << 24 else None


def _read_weights(harness, max_bytes: int, sandbox: str) -> tuple[bytes, int]:
    """The trained weights from the training scratch, read as the run could not abuse: never through
    a symlink or a FIFO (O_NOFOLLOW | O_NONBLOCK, then a regular file only), at most ``max_bytes``,
    and checked as a tensor file before any other process sees them; with their parameter count."""
    try:
        fd = os.open(WEIGHTS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=harness.scratch_fd)
    except OSError as exc:
        raise _Crash(f"weights: cannot open the trained weights: {exc.strerror}", sandbox) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Crash("weights: the trained weights are not a regular file", sandbox)
        if info.st_size > max_bytes:
            raise _Crash(f"weights: {info.st_size} bytes exceed the limit of {max_bytes}", sandbox)
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    try:
        tensors = tensorfile.check(data, max_bytes=max_bytes)
    except tensorfile.WeightsError as exc:
        raise _Crash(f"weights: {exc}", sandbox) from None
    return data, tensorfile.parameter_count(tensors)


class _ModelProcess:
    """One sandboxed model process: the script's model, answering batches through a sealed memfd."""

    def __init__(self, name: str, task: Task, source: str, ws: Workspace, *, seed: int, device: str,
                 settings: RunSettings, serve_s: float, beside: bool):
        self.name, self.ws, self.settings, self.device, self.serve_s = name, ws, settings, device, serve_s
        self.rows, self.context, self.vocab = eval_rows(task, settings), task.harness.context, task.harness.vocab
        self.token_size = task.harness.token_size
        in_bytes = self.rows * self.context * self.token_size
        self.out_offset = -(-in_bytes // mmap.PAGESIZE) * mmap.PAGESIZE
        self.out_count = self.rows * self.context * self.vocab
        size = self.out_offset + self.out_count * 4
        self.harness = ws.harness(name, settings=settings, device=device, limit_s=settings.eval_timeout_s,
                                  idle_s=START_IDLE_S, beside=beside, serve_s=serve_s)
        self.fd = os.memfd_create(f"ralphswarm-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, size)
            # The process may write into it but never resize it (a shrunk map would fault the runner).
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self.shared = mmap.mmap(self.fd, size)
            (self.harness.scratch / "train.py").write_text(source, encoding="utf-8")
        except BaseException:
            self.close()
            raise
        job = {"mode": "model", "script": "train.py", "weights": WEIGHTS_FILE, "seed": seed, "device": device,
               "threads": settings.cpu_threads, "eval_threads": settings.eval_threads,
               "context": self.context, "rows": self.rows}
        if task.harness.tokenized:
            job.update(vocab=self.vocab, token_size=self.token_size)
        ws.go(self.harness, job, serve_s, fds=(self.fd,))

    def load(self, weights: bytes) -> None:
        """Place the checked weights (readable, not writable, by the run) and tell the process."""
        dir_fd, tmp = self.harness.scratch_fd, f".{WEIGHTS_FILE}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as f:
                f.write(weights)
            os.replace(tmp, WEIGHTS_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:  # e.g. the script, imported there already, put something in the way
            raise _Crash(f"evaluation: cannot hand over the weights: {exc.strerror}", self.harness.sandbox) from None
        self.harness.send({"weights": WEIGHTS_FILE})

    def ask(self, inputs: np.ndarray) -> None:
        n, t = inputs.shape
        data = np.ascontiguousarray(inputs, dtype="<u2" if self.token_size == 2 else np.uint8).tobytes()
        self.shared[:len(data)] = data
        self.harness.send({"batch": [n, t]})

    def answer(self) -> np.ndarray:
        """A private copy of the logits the process wrote (it may keep writing: the copy counts)."""
        return np.frombuffer(self.shared, dtype=np.float32, count=self.out_count,
                             offset=self.out_offset).reshape(self.rows, self.context, self.vocab).copy()

    def close(self) -> None:
        shared = getattr(self, "shared", None)
        if shared is not None:
            shared.close()
            self.shared = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Evaluation:
    """The two model processes (warm ones from the pool, else started now) and the scorer. They get
    their job at training's first curve point, so that imports and the model overlap training; the
    weights follow when training ends. With ``overlap_eval`` off, all of it starts after training."""

    def __init__(self, task: Task, source: str, ws: Workspace, *, seed: int, device: str,
                 settings: RunSettings, train_limit: float):
        self.task, self.source, self.ws = task, source, ws
        self.seed, self.device, self.settings = seed, device, settings
        self.models: list[_ModelProcess] = []
        self.refilled = False
        self.timings: dict = {}
        self.started = 0.0
        # Their clock covers the wait for training, as the limit of training does.
        self.serve_s = train_limit + settings.eval_timeout_s

    def start(self, *, beside: bool = True) -> None:
        if self.models:
            return
        for name in MODEL_KINDS:
            self.models.append(_ModelProcess(name, self.task, self.source, self.ws, seed=self.seed,
                                             device=self.device, settings=self.settings, serve_s=self.serve_s,
                                             beside=beside))
        if beside:
            # Training is under way: the next run's model processes import beside it, not beside
            # this evaluation, which wants every core.
            self._refill()

    def _refill(self) -> None:
        if not self.refilled:
            self.refilled = True
            for name in MODEL_KINDS:
                self.ws.refill(name, settings=self.settings, device=self.device,
                               limit_s=self.settings.eval_timeout_s, serve_s=self.serve_s)

    def abort(self) -> None:
        for model in self.models:
            self.ws.release(model.harness)
            model.close()

    def finish(self, weights: bytes, data: _Data) -> tuple[float, int]:
        """(summed cross-entropy in nats, predicted bytes) of the trained model on the split."""
        self.started = time.perf_counter()
        self.start(beside=False)
        try:
            spec = self.task.harness
            scorer = Scorer(data.val, data.train, context=spec.context, rows=eval_rows(self.task, self.settings),
                            processes=len(self.models), probe_share=self.settings.probe_share,
                            tolerance=self.settings.probe_tolerance(self.device), vocab=spec.vocab,
                            token_bytes=data.token_bytes)
            for model in self.models:
                model.load(weights)
            for model in self.models:
                while (message := model.harness.receive()) is None or "loaded" not in message:
                    if message is not None:
                        raise _Crash("evaluation: the model process answered out of turn", model.harness.sandbox)
            loaded = time.perf_counter()
            self.timings["load_s"] = loaded - self.started
            out = _drive(scorer, self.models, self.timings)
            self.timings["score_s"] = time.perf_counter() - loaded
            return out
        except ScoreError as exc:
            raise _Crash(str(exc), self.models[0].harness.sandbox) from None
        finally:
            self.abort()
            self._refill()  # where they did not start beside training


def _drive(scorer: Scorer, models: list[_ModelProcess], timings: dict) -> tuple[float, int]:
    """Ask each process its batches, one at a time, both processes at once; score the answers.
    ``timings["scorer_s"]``: the scorer's own time (copying the logits out, cross-entropy, probes)."""
    own = 0.0
    queues = scorer.plan()
    timings["batches"] = sum(len(q) for q in queues)
    asked: dict[int, Batch] = {}
    selector = selectors.DefaultSelector()
    for i, model in enumerate(models):
        selector.register(model.harness.sock, selectors.EVENT_READ, i)
        if queues[i]:
            asked[i] = queues[i].pop()
            model.ask(asked[i].inputs)
    try:
        while asked:
            ready = {key.data for key, _ in selector.select(timeout=POLL_S)}
            for i in list(asked):
                model = models[i]
                if i not in ready and not model.harness.expired():
                    continue
                message = model.harness.receive()
                if message is None:
                    continue
                if "logits" not in message:
                    raise _Crash("evaluation: the model process answered out of turn", model.harness.sandbox)
                t0 = time.perf_counter()
                scorer.take(asked.pop(i), model.answer())
                own += time.perf_counter() - t0
                if queues[i]:
                    asked[i] = queues[i].pop()
                    model.ask(asked[i].inputs)
    finally:
        selector.close()
    t0 = time.perf_counter()
    out = scorer.result()
    timings["scorer_s"] = own + time.perf_counter() - t0
    return out


def _result(task: Task, trained: _Trained, nats: float, count: int, *, seed: int, budget: int) -> dict:
    """The protocol ``result`` object: measurements as decimal strings.

    ``tokens`` is the run's token budget (the denominator of every schedule), not the tokens the
    loader happened to deliver (whole batches, up to one batch fewer; the curve shows those): a
    reproduction must run the very same budget to repeat the run (protocol/SPEC.md, result)."""
    sandbox = trained.sandbox
    bpb = bits_per_byte(nats, count)
    if not math.isfinite(bpb):
        raise _Crash("nan loss", sandbox)
    if task.floor_bpb is not None and bpb < task.floor_bpb:
        # No honest model beats the best score under the window structure by more than the split's noise.
        raise _Crash(f"val_bpb {bpb:.4f} is below the floor {task.floor_bpb:.4f} an honest model can reach: "
                     "the script reads what it predicts", sandbox)
    result = {
        "val_bpb": _decimal(bpb, 6),
        "curve": trained.curve,
        "tokens": int(budget),
        "seed": seed,
        "wall_s": _decimal(trained.wall_s, 3),
        "device": trained.device,
        "torch": trained.torch,
        "flops_per_token": int(6 * trained.params),
        "sandbox": sandbox,
    }
    if trained.cpu_s is not None:
        result["cpu_s"] = _decimal(trained.cpu_s, 3)
    if trained.peak_mem_mb is not None:
        result["peak_mem_mb"] = trained.peak_mem_mb
    if task.entropy_bpb is not None:
        result["entropy_bpb"] = _decimal(task.entropy_bpb, 6)
    return result


def run_experiment(task: Task, source: str, *, seed: int = 0, budget_scale: float = 1.0, budget_tokens: int | None = None,
                   device: str = "auto",
                   timeout_s: float | None = None, on_progress: ProgressFn | None = None,
                   work_dir: Path | None = None, cache_dir: Path | None = None,
                   settings: RunSettings = RunSettings()) -> ExperimentResult:
    """Train ``source`` on ``task`` for budget x budget_scale tokens and measure val_bpb."""
    start = time.perf_counter()
    ws = Workspace(work_dir, settings, hidden=_hidden(cache_dir))
    sandbox = "none"
    try:
        budget = _budget(task, budget_scale, budget_tokens)
        data = _splits(task, cache_dir)
        stream = _stream(task, data, budget=budget, seed=seed)
        limit = timeout_s or settings.train_timeout(budget, _device_kind(device))
        evaluation = _Evaluation(task, source, ws, seed=seed, device=device, settings=settings, train_limit=limit)

        def point(_p: dict) -> None:
            if settings.overlap_eval:
                evaluation.start()

        try:
            trained = _train(task, source, ws, stream, seed=seed, budget=budget, device=device, limit=limit,
                             settings=settings, on_progress=on_progress, stop_tokens=None, mode="train",
                             on_point=point)
        except BaseException:
            evaluation.abort()
            raise
        sandbox = trained.sandbox
        nats, count = evaluation.finish(trained.weights, data)
        result = _result(task, trained, nats, count, seed=seed, budget=budget)
        timings = {"train_s": trained.wall_s, **evaluation.timings}
        return ExperimentResult(True, result, "", sandbox, time.perf_counter() - start, timings)
    except _Crash as crash:
        return ExperimentResult(False, None, crash.reason, crash.sandbox if crash.sandbox != "none" else sandbox,
                                time.perf_counter() - start)
    finally:
        ws.close()


def compare_curves(curve: list, reference: list, tolerance: float) -> tuple[bool, str]:
    """Point by point at the token positions both curves hold; the first divergence is the reason."""
    ref = {int(t): float(loss) for t, loss in reference}
    shared = [(int(t), float(loss)) for t, loss in curve if int(t) in ref]
    if not shared:
        return False, "no curve points in common with the reference"
    for tokens, loss in shared:
        if abs(loss - ref[tokens]) > tolerance:
            return False, f"curve diverges at {tokens} tokens: {loss:.6f} vs {ref[tokens]:.6f} (tolerance {tolerance:g})"
    return True, f"{len(shared)} curve points within {tolerance:g}"


def spot_check(task: Task, source: str, *, seed: int, fraction: float, reference_curve: list,
               device: str = "auto", tolerance: float | None = None, budget_scale: float = 1.0,
               budget_tokens: int | None = None,
               timeout_s: float | None = None, on_progress: ProgressFn | None = None,
               work_dir: Path | None = None, cache_dir: Path | None = None,
               settings: RunSettings = RunSettings()) -> SpotCheck:
    """Train the first ``fraction`` of the budget under the full budget's schedule and compare curves.

    ``tolerance`` (nats) defaults to the task's tolerance: a single batch's loss is noisier than
    val_bpb, but a faithful re-run with the same seed draws the very same batches.
    """
    ws = Workspace(work_dir, settings, hidden=_hidden(cache_dir))
    try:
        if not 0 < fraction <= 1:
            raise _Crash(f"spot check fraction must be in (0, 1], got {fraction}")
        budget = _budget(task, budget_scale, budget_tokens)
        stream = _stream(task, _splits(task, cache_dir), budget=budget, seed=seed)
        limit = timeout_s or settings.train_timeout(budget, _device_kind(device))
        out = _train(task, source, ws, stream, seed=seed, budget=budget, device=device, limit=limit,
                     settings=settings, on_progress=on_progress, stop_tokens=max(1, int(budget * fraction)),
                     mode="spot")
        ok, reason = compare_curves(out.curve, reference_curve, task.tolerance if tolerance is None else tolerance)
        return SpotCheck(ok, reason, out.curve, out.wall_s)
    except _Crash as crash:
        return SpotCheck(False, crash.reason, [])
    finally:
        ws.close()


def close_warm_pool() -> None:
    """End the warm processes waiting for a next run (a later run starts the pool anew)."""
    POOL.close()
