"""Trained weights as data, never code: the safetensors layout (an 8-byte little-endian header
length, a JSON header naming each tensor's dtype, shape and byte range, then the raw bytes).

Written by the training process, checked by the trusted runner (``check``: size cap, well-formed
header, ranges that tile the data exactly) before any other process sees it, and loaded by the model
process, which then checks the names and shapes against the model the script builds. Nothing in it
can run on load (unlike a pickle). Stdlib only, except ``save``/``load``, which take torch tensors.
"""
from __future__ import annotations

import json
import math
import struct

# safetensors dtype name -> (bytes per element, torch dtype name)
DTYPES = {
    "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"), "I8": (1, "int8"), "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
}
MAX_HEADER = 16 << 20  # bytes of JSON header
MAX_TENSORS = 100_000
MAX_NAME = 1000
MAX_DIMS = 8


class WeightsError(ValueError):
    """The file is not a well-formed weights file within the limits."""


def check(data: bytes, *, max_bytes: int) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """The tensors of a weights file: name -> (dtype, shape, start, end) with start/end absolute
    offsets into ``data``; raises WeightsError for anything malformed or over ``max_bytes``."""
    if len(data) > max_bytes:
        raise WeightsError(f"weights of {len(data)} bytes exceed the limit of {max_bytes}")
    if len(data) < 8:
        raise WeightsError("weights file is shorter than its header length")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER or 8 + size > len(data):
        raise WeightsError("weights header length is out of range")
    try:
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: "[[[[..."
        raise WeightsError("weights header is not JSON") from None
    if not isinstance(header, dict):
        raise WeightsError("weights header is not an object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise WeightsError("weights __metadata__ is not a map of strings")
    if len(header) > MAX_TENSORS:
        raise WeightsError(f"weights hold more than {MAX_TENSORS} tensors")
    base, body = 8 + size, len(data) - 8 - size
    out, ranges = {}, []
    for name, entry in header.items():
        if not name or len(name) > MAX_NAME:
            raise WeightsError("a tensor name is empty or too long")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"tensor {name[:80]!r}: malformed entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:  # a list or object is unhashable
            raise WeightsError(f"tensor {name[:80]!r}: unknown dtype {str(dtype)[:20]!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
            raise WeightsError(f"tensor {name[:80]!r}: malformed shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= body):
            raise WeightsError(f"tensor {name[:80]!r}: byte range out of the file")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype][0]:
            raise WeightsError(f"tensor {name[:80]!r}: byte range does not match its shape")
        ranges.append((offsets[0], offsets[1]))
        out[name] = (dtype, tuple(shape), base + offsets[0], base + offsets[1])
    ranges.sort()
    at = 0
    for start, end in ranges:
        if start != at:
            raise WeightsError("tensor byte ranges overlap or leave gaps")
        at = end
    if at != body:
        raise WeightsError("weights file has bytes no tensor claims")
    return out


def parameter_count(tensors: dict) -> int:
    """Elements of the floating-point tensors: the trained parameters (and float buffers)."""
    return sum(math.prod(shape) for dtype, shape, _, _ in tensors.values() if dtype[0] in "FB" and dtype != "BOOL")


def save(state: dict, path) -> None:
    """Write a {name: tensor} dict (tensors moved to the CPU, made contiguous)."""
    import torch

    names = {torch_name: name for name, (_, torch_name) in DTYPES.items()}
    header, chunks, at = {}, [], 0
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        dtype = names.get(str(t.dtype).removeprefix("torch."))
        if dtype is None:
            raise WeightsError(f"tensor {name!r} has dtype {t.dtype}, which the weights file cannot hold")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [at, at + len(raw)]}
        chunks.append(raw)
        at += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def load(data: bytes, *, max_bytes: int) -> dict:
    """{name: tensor} from a weights file's bytes (checked first)."""
    import torch

    state = {}
    for name, (dtype, shape, start, end) in check(data, max_bytes=max_bytes).items():
        torch_dtype = getattr(torch, DTYPES[dtype][1])
        if end > start:
            state[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch_dtype).reshape(shape)
        else:
            state[name] = torch.zeros(shape, dtype=torch_dtype)
    return state
