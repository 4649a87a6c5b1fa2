"""Trained weights as a checked tensor file (trainer/harness/tensorfile.py): the safetensors layout,
written by training, checked by the runner, loaded by the model processes. Data, never code.

Run: .venv/bin/python -m pytest tests/trainer/test_tensorfile.py -q
"""
from __future__ import annotations

import io
import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.harness import tensorfile
from trainer.harness.tensorfile import MAX_HEADER, WeightsError, check, load, parameter_count, save

BIG = 1 << 30


def _state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(16, 8, generator=g),
        "blocks.0.attn.qkv.weight": torch.randn(24, 8, generator=g).to(torch.bfloat16),
        "blocks.0.scale": torch.randn(8, generator=g).to(torch.float16),
        "blocks.0.lambda": torch.tensor(0.5, dtype=torch.float64),  # a 0-dim tensor
        "steps": torch.tensor([3, -1, 1 << 40], dtype=torch.int64),
        "mask": torch.tensor([[True, False], [False, True]]),
        "empty": torch.zeros(0, 4),  # a 0-element tensor
        "codes": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
        "small": torch.tensor([-3, 2], dtype=torch.int8),
    }


def _bytes(state: dict, tmp_path) -> bytes:
    path = tmp_path / "w.safetensors"
    save(state, path)
    return path.read_bytes()


def _file(header, body: bytes = b"") -> bytes:
    """A weights file from a header (a dict, or raw bytes) and the data that follows it."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    return struct.pack("<Q", len(text)) + text + body


def _entry(dtype: str, shape: list, start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


# --- round trip ---------------------------------------------------------------------------------

def test_a_state_dict_round_trips_with_every_dtype(tmp_path):
    state = _state()
    data = _bytes(state, tmp_path)
    back = load(data, max_bytes=len(data))
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype, name
        assert back[name].shape == tensor.shape, name
        assert torch.equal(back[name], tensor), name


def test_a_model_round_trips_into_load_state_dict(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(32, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 32))
    data = _bytes(model.state_dict(), tmp_path)
    other = torch.nn.Sequential(torch.nn.Embedding(32, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 32))
    other.load_state_dict(load(data, max_bytes=BIG), strict=True)
    x = torch.arange(32)[None]
    assert torch.equal(model(x), other(x))


def test_save_writes_the_safetensors_layout(tmp_path):
    data = _bytes(_state(), tmp_path)
    (size,) = struct.unpack("<Q", data[:8])
    assert size % 8 == 0  # the header is padded so the data is aligned
    header = json.loads(data[8:8 + size])
    assert set(header) == set(_state())
    qkv = header["blocks.0.attn.qkv.weight"]
    assert qkv == _entry("BF16", [24, 8], *qkv["data_offsets"])
    assert header["empty"]["shape"] == [0, 4]
    assert header["empty"]["data_offsets"][0] == header["empty"]["data_offsets"][1]
    tensors = check(data, max_bytes=len(data))
    dtype, shape, start, end = tensors["embed.weight"]
    assert (dtype, shape) == ("F32", (16, 8)) and end - start == 16 * 8 * 4
    assert data[start:end] == _state()["embed.weight"].numpy().tobytes()


def test_save_takes_non_contiguous_tensors(tmp_path):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).T
    data = _bytes({"t": t}, tmp_path)
    assert torch.equal(load(data, max_bytes=BIG)["t"], t)


def test_save_refuses_a_dtype_the_file_cannot_hold(tmp_path):
    with pytest.raises(WeightsError, match="cannot hold"):
        save({"z": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "w")


def test_an_empty_state_is_a_valid_file(tmp_path):
    data = _bytes({}, tmp_path)
    assert check(data, max_bytes=BIG) == {}
    assert load(data, max_bytes=BIG) == {}


def test_metadata_of_strings_is_allowed():
    data = _file({"__metadata__": {"format": "pt"}, "a": _entry("F32", [1], 0, 4)}, b"\0" * 4)
    assert list(check(data, max_bytes=BIG)) == ["a"]


# --- what check() rejects -----------------------------------------------------------------------

def test_check_rejects_a_file_over_max_bytes(tmp_path):
    data = _bytes(_state(), tmp_path)
    check(data, max_bytes=len(data))
    with pytest.raises(WeightsError, match="exceed the limit"):
        check(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize("cut", [0, 3, 7])
def test_check_rejects_a_file_shorter_than_its_header_length(cut):
    with pytest.raises(WeightsError, match="shorter than its header length"):
        check(b"\x10\0\0\0\0\0\0\0"[:cut], max_bytes=BIG)


def test_check_rejects_a_truncated_file(tmp_path):
    data = _bytes(_state(), tmp_path)
    (size,) = struct.unpack("<Q", data[:8])
    for cut in (len(data) - 1, len(data) - 100, 8 + size + 1, 8 + size, 8 + size - 1, 9):
        with pytest.raises(WeightsError):
            check(data[:cut], max_bytes=BIG)


def test_check_rejects_a_header_length_beyond_the_file():
    text = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    data = struct.pack("<Q", len(text) + 5) + text + b"\0" * 4
    with pytest.raises(WeightsError, match="header length is out of range"):
        check(data, max_bytes=BIG)
    with pytest.raises(WeightsError, match="header length is out of range"):
        check(struct.pack("<Q", MAX_HEADER + 1) + b" " * (MAX_HEADER + 1), max_bytes=BIG)
    with pytest.raises(WeightsError, match="header length is out of range"):
        check(b"\xff" * 8 + text, max_bytes=BIG)


@pytest.mark.parametrize("header", [b"not json", b"\xff\xfe", b'{"a":', b"", b"[" * 100_000, b"{" * 100_000])
def test_check_rejects_a_header_that_is_not_json(header):
    with pytest.raises(WeightsError, match="not JSON"):
        check(_file(header), max_bytes=BIG)


@pytest.mark.parametrize("header", [b"[]", b"3", b'"x"', b"null"])
def test_check_rejects_a_header_that_is_not_an_object(header):
    with pytest.raises(WeightsError, match="not an object"):
        check(_file(header), max_bytes=BIG)


@pytest.mark.parametrize("meta", [[], "x", {"a": 1}, {"a": None}])
def test_check_rejects_metadata_that_is_not_a_map_of_strings(meta):
    with pytest.raises(WeightsError, match="__metadata__"):
        check(_file({"__metadata__": meta}), max_bytes=BIG)


@pytest.mark.parametrize("dtype", ["F8", "f32", "C64", "", "U16", None, 4, [], ["F32"], {"F32": 1}])
def test_check_rejects_an_unknown_dtype(dtype):
    with pytest.raises(WeightsError, match="unknown dtype"):
        check(_file({"a": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), max_bytes=BIG)


@pytest.mark.parametrize("entry", [
    [], "F32", None,
    {"dtype": "F32", "shape": [1]},
    {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1},
])
def test_check_rejects_a_malformed_entry(entry):
    with pytest.raises(WeightsError, match="malformed entry"):
        check(_file({"a": entry}, b"\0" * 4), max_bytes=BIG)


@pytest.mark.parametrize("shape", [None, 4, "4", [-1], [1.0], [True], [None], [1 << 40], [1] * 9])
def test_check_rejects_a_malformed_shape(shape):
    with pytest.raises(WeightsError, match="malformed shape"):
        check(_file({"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}}, b"\0" * 4), max_bytes=BIG)


@pytest.mark.parametrize("offsets", [None, [0], [0, 4, 8], [0.0, 4], [4, 0], [-4, 0], [0, 8], [True, 4], ["0", "4"]])
def test_check_rejects_a_byte_range_out_of_the_file(offsets):
    with pytest.raises(WeightsError, match="byte range out of the file"):
        check(_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": offsets}}, b"\0" * 4), max_bytes=BIG)


@pytest.mark.parametrize("dtype, shape, end", [
    ("F32", [2], 4), ("F32", [1], 8), ("F16", [2], 8), ("I64", [1], 4), ("F32", [0], 4), ("BOOL", [2, 2], 8),
])
def test_check_rejects_a_byte_range_that_does_not_match_the_shape(dtype, shape, end):
    with pytest.raises(WeightsError, match="does not match its shape"):
        check(_file({"a": _entry(dtype, shape, 0, end)}, b"\0" * end), max_bytes=BIG)


def test_check_rejects_overlapping_ranges():
    header = {"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 4, 12)}
    with pytest.raises(WeightsError, match="overlap"):
        check(_file(header, b"\0" * 12), max_bytes=BIG)
    aliased = {"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 0, 8)}  # one range, two tensors
    with pytest.raises(WeightsError, match="overlap"):
        check(_file(aliased, b"\0" * 8), max_bytes=BIG)


def test_check_rejects_gaps():
    header = {"a": _entry("F32", [1], 0, 4), "b": _entry("F32", [1], 8, 12)}
    with pytest.raises(WeightsError, match="gaps"):
        check(_file(header, b"\0" * 12), max_bytes=BIG)
    late = {"a": _entry("F32", [1], 4, 8)}  # the data does not start at the header's end
    with pytest.raises(WeightsError, match="gaps"):
        check(_file(late, b"\0" * 8), max_bytes=BIG)


def test_check_rejects_trailing_bytes(tmp_path):
    data = _bytes(_state(), tmp_path)
    with pytest.raises(WeightsError, match="bytes no tensor claims"):
        check(data + b"\0", max_bytes=BIG)
    with pytest.raises(WeightsError, match="bytes no tensor claims"):
        check(_file({}, b"\0" * 4), max_bytes=BIG)


def test_check_rejects_a_name_that_is_empty_or_too_long():
    with pytest.raises(WeightsError, match="name"):
        check(_file({"": _entry("F32", [1], 0, 4)}, b"\0" * 4), max_bytes=BIG)
    with pytest.raises(WeightsError, match="name"):
        check(_file({"x" * (tensorfile.MAX_NAME + 1): _entry("F32", [1], 0, 4)}, b"\0" * 4), max_bytes=BIG)


def test_a_pickle_is_rejected(tmp_path):
    state = _state()
    path = tmp_path / "weights.pt"
    torch.save(state, path)  # a zip of pickles: code that runs on load
    with pytest.raises(WeightsError):
        check(path.read_bytes(), max_bytes=BIG)
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)  # the legacy bare pickle
    with pytest.raises(WeightsError):
        check(buf.getvalue(), max_bytes=BIG)
    import pickle

    with pytest.raises(WeightsError):
        load(pickle.dumps({"a": [1.0, 2.0]}, protocol=2), max_bytes=BIG)


def test_load_checks_first():
    with pytest.raises(WeightsError):
        load(_file({"a": _entry("F32", [2], 0, 4)}, b"\0" * 4), max_bytes=BIG)


# --- parameter count ----------------------------------------------------------------------------

def test_parameter_count_counts_floating_elements_only(tmp_path):
    data = _bytes(_state(), tmp_path)
    # floats: 16*8 + 24*8 + 8 + 1 (0-dim) + 0 (empty); not the int64, bool, uint8 or int8 tensors
    assert parameter_count(check(data, max_bytes=BIG)) == 16 * 8 + 24 * 8 + 8 + 1
    assert parameter_count({}) == 0


def test_parameter_count_of_a_model_is_its_parameters_and_float_buffers(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    data = _bytes(model.state_dict(), tmp_path)
    # BatchNorm: weight, bias, running mean, running var (floats) and num_batches_tracked (int64)
    assert parameter_count(check(data, max_bytes=BIG)) == 8 * 4 + 4 + 4 * 4


# --- nothing but WeightsError -------------------------------------------------------------------

def _check_only_weights_error(data: bytes) -> None:
    try:
        tensors = check(data, max_bytes=1 << 20)
    except WeightsError:
        return
    # What passes is consistent: ranges inside the file, tiling its data exactly.
    body = sorted((start, end) for _, _, start, end in tensors.values())
    for start, end in body:
        assert 8 <= start <= end <= len(data)
    load(data, max_bytes=1 << 20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_check_raises_only_weights_error_on_random_bytes(data):
    _check_only_weights_error(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_check_raises_only_weights_error_on_a_random_header(text):
    _check_only_weights_error(struct.pack("<Q", len(text)) + text + b"\0" * 16)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 1 << 41) | st.floats(allow_nan=True) | st.text(max_size=6)
    | st.sampled_from(list(tensorfile.DTYPES)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["dtype", "shape", "data_offsets", "a", "__metadata__"]), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=4), _JSON, max_size=3), st.integers(0, 32))
def test_check_raises_only_weights_error_on_random_json_headers(header, body):
    try:
        text = json.dumps(header).encode("utf-8")
    except ValueError:
        return
    _check_only_weights_error(_file(text, b"\0" * body))


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    return _bytes(_state(), tmp_path_factory.mktemp("w"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_check_raises_only_weights_error_on_mutations_of_a_valid_file(valid, data):
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]), label="kind")
        at = data.draw(st.integers(0, max(0, len(raw) - 1)), label="at")
        if kind == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del raw[at:at + data.draw(st.integers(1, 8))]
    _check_only_weights_error(bytes(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_check_raises_only_weights_error_on_mutations_of_the_header(valid, data):
    (size,) = struct.unpack("<Q", valid[:8])
    header = bytearray(valid[8:8 + size])
    at = data.draw(st.integers(0, len(header) - 1))
    header[at:at + data.draw(st.integers(0, 4))] = data.draw(
        st.binary(max_size=4) | st.sampled_from([b"[", b"{", b"]", b"}", b",", b'"', b":", b"-1", b"1e400", b"null"]))
    _check_only_weights_error(_file(bytes(header), valid[8 + size:]))
