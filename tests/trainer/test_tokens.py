"""Tokenized tasks, the trusted side (trainer/tokens.py, trainer/shards.py, trainer/scorer.py with a
vocabulary): the tokenizer file and its pin, bytes per token from raw bytes, BOS-aligned packing,
the seed's row order, shards that are wrong in every way the issue names, and the scorer's bits per
byte with special tokens masked. Everything is made here: small parquet shards, a small tokenizer."""
from __future__ import annotations

import errno
import hashlib
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("rustbpe")
pytest.importorskip("tiktoken")

from trainer import shards, tokens  # noqa: E402
from trainer.datasets import DataError  # noqa: E402
from trainer.scorer import Scorer, ScoreError  # noqa: E402
from trainer.tasks import (HarnessSpec, Task, TaskError, builtin_tasks, climbmix_manifest, climbmix_task,  # noqa: E402
                           load_tokens, resolve_task, task_id)

WORDS = ("the quick brown fox jumps over a lazy dog while naïve café owners sing über déjà vu "
         "中文字符 日本語 emoji 🙂🙃 numbers 12 345 6789 and punctuation!? ...").split()


def _docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 60))) for _ in range(n)]


def _shard(path: Path, docs: list[str], *, column: str = "text") -> Path:
    pq.write_table(pa.table({column: pa.array(docs, type=pa.string())}), path, row_group_size=64)
    return path


@pytest.fixture(scope="module")
def bpe() -> tokens.BPE:
    data = tokens.train_tokenizer(iter(_docs(400, 1)), 256 + 4 + 120)
    return tokens.parse_tokenizer(data)


# --- the tokenizer ------------------------------------------------------------------------------

def test_tokenizer_file_is_canonical_and_deterministic(bpe):
    again = tokens.train_tokenizer(iter(_docs(400, 1)), 256 + 4 + 120)
    assert hashlib.sha256(again).hexdigest() == bpe.sha256  # the same text trains the same file
    assert bpe.vocab == 380 and bpe.bos_id == 376 and bpe.specials == tokens.SPECIAL_TOKENS
    assert bpe.pattern == tokens.SPLIT_PATTERN


def test_token_bytes_come_from_raw_bytes_never_a_string(bpe):
    tb = bpe.token_bytes()
    assert list(tb[-4:]) == [0, 0, 0, 0]  # special tokens count zero bytes
    partial = [i for i, piece in enumerate(bpe.tokens) if _partial_utf8(piece)]
    assert partial, "the tokenizer holds tokens that are part of a UTF-8 character"
    for i in partial:
        # Through a str the token is U+FFFD (three bytes) whatever its length: the bug this avoids.
        via_str = len(bpe.tokens[i].decode("utf-8", errors="replace").encode("utf-8"))
        assert tb[i] == len(bpe.tokens[i])
        if len(bpe.tokens[i]) != via_str:
            break
    else:
        pytest.fail("no partial token whose str length differs")
    text = "naïve café 🙂 中文字符 déjà"
    ids = bpe.encode_docs([text])[0]
    assert ids[0] == bpe.bos_id
    assert bpe.decode_bytes(ids.tolist()) == text.encode("utf-8")
    assert int(tb[ids[1:]].sum()) == len(text.encode("utf-8"))  # bytes per token sum to the text's bytes


def _partial_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_tokenizer_refusals(bpe, tmp_path):
    good = tokens.train_tokenizer(iter(_docs(50, 2)), 270)
    with pytest.raises(tokens.TokenizerError, match="refusing a mismatched tokenizer"):
        tokens.parse_tokenizer(good, sha256="0" * 64)
    body = json.loads(good)
    for broken, reason in [
        (b"not json", "not JSON"),
        (json.dumps({**body, "format": "x"}).encode(), "not of format"),
        (json.dumps({**body, "tokens": body["tokens"][1:]}).encode(), "256 single bytes"),
        (json.dumps({**body, "tokens": body["tokens"] + body["tokens"][-1:]}).encode(), "repeats a token"),
        (json.dumps({**body, "bos": "<|nope|>"}).encode(), "special tokens are malformed"),
        (json.dumps({**body, "tokens": body["tokens"][:-1] + ["***"]}).encode(), "not base64"),
    ]:
        with pytest.raises(tokens.TokenizerError, match=reason):
            tokens.parse_tokenizer(broken)
    # The cache re-hashes: a file changed on disk is dropped, not used.
    written = tokens.write_tokenizer(tmp_path, good)
    path = tokens.tokenizer_path(tmp_path, written.sha256)
    path.write_bytes(good.replace(b"reserved_1", b"reserved_9"))
    assert tokens.read_tokenizer(tmp_path, written.sha256) is None and not path.exists()


# --- packing --------------------------------------------------------------------------------------

def test_packing_is_bos_aligned_best_fit():
    bos = 9
    docs = [np.asarray([bos] + [i] * (n - 1), dtype=np.uint16) for i, n in enumerate([5, 3, 8, 2, 4, 7], start=1)]
    rows = tokens.pack_rows(iter(docs), 8, buffer=4)
    # Row 0: the buffer holds docs of 5, 3, 8, 2: the 8 fits whole. Row 1: 5 (largest that fits 8),
    # then 3. Row 2: buffer 2, 4, 7 -> 7, then the 2 is cropped to the one token left.
    assert rows.tolist() == [
        [9, 3, 3, 3, 3, 3, 3, 3],
        [9, 1, 1, 1, 1, 9, 2, 2],
        [9, 6, 6, 6, 6, 6, 6, 9],
    ]
    assert (rows[:, 0] == bos).all()  # every row starts at a document's start


def test_packing_real_documents_keeps_every_row_starting_with_bos(bpe):
    docs = bpe.encode_docs(_docs(300, 3))
    rows = tokens.pack_rows(iter(docs), 65)
    again = tokens.pack_rows(iter(bpe.encode_docs(_docs(300, 3))), 65)
    assert rows.shape[1] == 65 and rows.shape[0] > 10 and np.array_equal(rows, again)
    assert (rows[:, 0] == bpe.bos_id).all()
    # Nothing invented: each row is whole documents, the last maybe cropped.
    starts = {bytes(d.tobytes()) for d in docs}
    for row in rows[:20]:
        cut = [i for i in range(len(row)) if row[i] == bpe.bos_id] + [len(row)]
        pieces = [row[a:b] for a, b in zip(cut, cut[1:])]
        for piece in pieces[:-1]:
            assert piece.tobytes() in starts
        assert any(d.tobytes().startswith(pieces[-1].tobytes()) for d in docs)


def test_row_stream_follows_the_seed():
    rows = np.arange(50 * 9, dtype=np.uint16).reshape(50, 9)
    a = tokens.draw_rows(rows, budget_tokens=1000, seed=3, context=8)
    assert a == tokens.draw_rows(rows, budget_tokens=1000, seed=3, context=8)
    assert a != tokens.draw_rows(rows, budget_tokens=1000, seed=4, context=8)
    got = np.frombuffer(a, dtype="<u2").reshape(-1, 9)
    assert got.shape[0] == 125  # ceil(1000 / 8) rows
    first_epoch = sorted(got[:50, 0].tolist())
    assert first_epoch == rows[:, 0].tolist()  # an epoch is a permutation: every row once


# --- the harness text and the task body -----------------------------------------------------------

def test_harness_text_round_trip_and_byte_task_ids_unchanged():
    spec = HarnessSpec(2048, val_windows=2048, vocab=8192, tokenizer="ab" * 32)
    assert HarnessSpec.parse(spec.text()) == spec and spec.tokenized and spec.token_size == 2
    assert HarnessSpec.parse("ralphswarm-bytes-v2 context=64 val_bytes=65536") == HarnessSpec(64, 65536)
    for bad in (spec.text().replace("vocab=8192", "vocab=70000"), spec.text() + " ", spec.text()[:-1]):
        with pytest.raises(TaskError):
            HarnessSpec.parse(bad)
    # Task ids are sha256 of the body: the byte tasks' bodies are as they were.
    tasks = builtin_tasks()
    assert tasks["tiny"].id == "90eca7403b6c66e54f6784cb2c51aa542ba050b7aa2c98ac697e9b399e750764"
    assert tasks["shakespeare"].id == "954e94a38dcee655a46566b5387a68458c2d181e8f3323831a5c81d84d2a4f8a"


def test_unpinned_climbmix_says_how_to_pin_it():
    if "climbmix" in builtin_tasks():
        pytest.skip("climbmix is pinned in this build")
    with pytest.raises(TaskError, match="scripts/climbmix-pin"):
        resolve_task("climbmix")


# --- shards: fetched, checked, refused ------------------------------------------------------------

def _pins(paths: list[Path]) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in paths}


def _served(directory: Path, calls: list | None = None):
    """A downloader over a local directory (what hf_hub_download does, minus the network)."""
    def download(repo, name, revision, dest):
        if calls is not None:
            calls.append((repo, name, revision))
        target = Path(dest) / name
        shutil.copyfile(directory / name, target)
        return target
    return download


@pytest.fixture()
def served(tmp_path):
    src = tmp_path / "hub"
    src.mkdir()
    train = [_shard(src / f"shard_{i:05d}.parquet", _docs(120, 10 + i)) for i in range(2)]
    val = [_shard(src / "shard_06542.parquet", _docs(80, 99))]
    return src, train, val


def _left_behind(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def test_shard_download_checks_then_renames(served, tmp_path):
    src, train, val = served
    cache = tmp_path / "cache"
    calls = []
    manifest = climbmix_manifest(_pins(train + val), "c0ffee" * 6 + "abcd",
                                 train=[p.name for p in train], val=[p.name for p in val])
    path = shards.ensure_shard(cache, manifest.train[0], manifest, download=_served(src, calls))
    assert path == shards.shard_path(cache, manifest.train[0]) and path.read_bytes() == train[0].read_bytes()
    assert calls == [("karpathy/climbmix-400b-shuffle", "shard_00000.parquet", manifest.revision)]
    assert _left_behind(cache) == [f"shards/{manifest.train[0].sha256}.parquet"]  # no temporary left
    shards.ensure_shard(cache, manifest.train[0], manifest, download=_served(src, calls))
    assert len(calls) == 1  # cached: re-hashed, not fetched again


@pytest.mark.parametrize("damage, reason", [
    ("other bytes", "refusing mismatched data"),
    ("truncated", "not a readable parquet file"),
    ("no text column", "has no text column"),
    ("disk full", "no disk space left while downloading"),
    ("http error", "could not download shard"),
])
def test_bad_shards_are_one_line_and_leave_nothing(served, tmp_path, damage, reason):
    src, train, val = served
    cache = tmp_path / "cache"
    bad = tmp_path / "bad.parquet"
    if damage == "truncated":
        data = train[0].read_bytes()
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "no text column":
        _shard(bad, _docs(20, 5), column="content")
    else:
        shutil.copyfile(train[0], bad)
    pins = _pins(train + val)
    if damage in ("truncated", "no text column"):
        pins[train[0].name] = _pins([bad])[bad.name]  # pinned as it is: the hash passes, the file is bad
    manifest = climbmix_manifest(pins, "r" * 40, train=[p.name for p in train], val=[p.name for p in val])

    def download(repo, name, revision, dest):
        target = Path(dest) / name
        if damage == "other bytes":
            shutil.copyfile(train[1], target)
        elif damage == "disk full":
            target.write_bytes(b"PAR1" + b"\0" * 1000)  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        elif damage == "http error":
            raise RuntimeError("404 Client Error: Not Found for url: https://huggingface.co/...\nmore lines")
        else:
            shutil.copyfile(bad, target)
        return target

    with pytest.raises(DataError, match=reason) as info:
        shards.ensure_shard(cache, manifest.train[0], manifest, download=download)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
    assert _left_behind(cache) == []  # nothing half-written in the cache


def test_disk_space_is_checked_before_a_download(served, tmp_path):
    src, train, val = served
    free = shutil.disk_usage(tmp_path).free
    pins = _pins(train + val)
    pins[train[0].name] = (pins[train[0].name][0], free + 1)  # a shard bigger than the disk
    manifest = climbmix_manifest(pins, "r" * 40, train=[p.name for p in train], val=[p.name for p in val])
    with pytest.raises(DataError, match="no disk space for shard"):
        shards.ensure_shard(tmp_path / "cache", manifest.train[0], manifest, download=_served(src))


# --- a tokenized task end to end on the trusted side ----------------------------------------------

def _task(served, tmp_path, *, val_windows=6, context=32, tokenizer_sha=None):
    src, train, val = served
    cache = tmp_path / "cache"
    manifest = climbmix_manifest(_pins(train + val), "r" * 40, train=[p.name for p in train],
                                 val=[p.name for p in val], vocab=256 + 4 + 60)
    if tokenizer_sha is None:
        docs = (d for p in train for d in pq.read_table(p).column("text").to_pylist())
        tokenizer_sha = hashlib.sha256(tokens.train_tokenizer(docs, 320)).hexdigest()
    task = climbmix_task(manifest, tokenizer_sha, context=context, val_windows=val_windows, budget_tokens=2000,
                         download=_served(src))
    return task, cache


def test_climbmix_task_builds_its_splits_from_fetched_shards(served, tmp_path):
    task, cache = _task(served, tmp_path)
    assert task.harness.tokenized and task.harness.vocab == 320 and task.name == "climbmix"
    assert task.id == task_id(task.body)
    data = load_tokens(task, cache, threads=1)
    assert data.bpe.sha256 == task.harness.tokenizer
    assert data.val_windows.shape == (6, 33) and (data.val_windows[:, 0] == data.bpe.bos_id).all()
    assert data.train_rows.shape[1] == 33 and (data.train_rows[:, 0] == data.bpe.bos_id).all()
    # Second load: from the packed cache alone (the shards may go).
    shutil.rmtree(cache / "shards")
    again = load_tokens(task, cache, threads=1)
    assert np.array_equal(again.train_rows, data.train_rows) and np.array_equal(again.val_windows, data.val_windows)
    # A corrupted packed file is dropped and rebuilt (shards fetched again).
    packed = sorted((cache / "tokens").glob("*-val.*.u16"))[0]
    packed.write_bytes(b"\0" * packed.stat().st_size)
    rebuilt = load_tokens(task, cache, threads=1)
    assert np.array_equal(rebuilt.val_windows, data.val_windows)


def test_tokenizer_hash_mismatch_is_refused(served, tmp_path):
    task, cache = _task(served, tmp_path, tokenizer_sha="1" * 64)
    with pytest.raises(tokens.TokenizerError, match="is not the one task climbmix pins") as info:
        load_tokens(task, cache, threads=1)
    assert "\n" not in str(info.value)
    assert not (cache / "tokenizer").exists() and not (cache / "tokens").exists()


def test_too_few_validation_windows_is_one_line(served, tmp_path):
    task, cache = _task(served, tmp_path, val_windows=100_000)
    with pytest.raises(DataError, match="validation shards pack into"):
        load_tokens(task, cache, threads=1)


def test_from_parquet_tokens_pins_a_task_a_peer_can_load(served, tmp_path):
    _, train, val = served
    cache = tmp_path / "cache"
    task = Task.from_parquet_tokens(train, val, name="mine", vocab=300, context=16, val_windows=4,
                                    budget_tokens=1000, tolerance="0.01", cache_dir=cache)
    peer = Task.from_body(task.body)  # no fetcher, no downloader: everything from the cache by sha256
    data = load_tokens(peer, cache, threads=1)
    assert data.val_windows.shape == (4, 17) and data.bpe.vocab == 300


# --- the scorer with a vocabulary ------------------------------------------------------------------

def _uniform_answers(scorer: Scorer, cheat=None):
    for queue in scorer.plan():
        for batch in queue:
            logits = np.zeros((scorer.rows, scorer.context, scorer.vocab), dtype=np.float32)
            if cheat is not None:
                cheat(batch.inputs, logits)
            scorer.take(batch, logits)
    return scorer.result()


def test_scorer_bits_per_byte_masks_special_tokens():
    vocab, context = 300, 16
    rng = np.random.default_rng(0)
    token_bytes = rng.integers(1, 5, size=vocab)
    token_bytes[-4:] = 0
    windows = rng.integers(0, vocab, size=(20, context + 1)).astype(np.uint16)
    windows[:, 0] = vocab - 4  # BOS
    windows[3, 5] = windows[7, 9] = vocab - 3  # specials inside windows: masked
    train = rng.integers(0, vocab, size=5000).astype(np.uint16)
    scorer = Scorer(windows, train, context=context, rows=4, vocab=vocab, token_bytes=token_bytes,
                    rng=random.Random(1))
    nats, count = _uniform_answers(scorer)
    targets = windows[:, 1:]
    scored = int((token_bytes[targets] > 0).sum())
    assert count == int(token_bytes[targets].sum())
    assert nats == pytest.approx(scored * math.log(vocab), rel=1e-6)  # float32 log-sum-exp; masked positions count no nats


def test_scorer_catches_a_lookahead_with_a_large_vocabulary():
    vocab, context = 600, 16  # > 256: probes compare summaries, not whole logits
    rng = np.random.default_rng(1)
    token_bytes = np.ones(vocab, dtype=np.int64)
    windows = rng.integers(0, vocab, size=(40, context + 1)).astype(np.uint16)
    train = rng.integers(0, vocab, size=5000).astype(np.uint16)

    def peek(inputs, logits):  # raise the logit of the next input token: reads what it predicts
        n = inputs.shape[0]
        for t in range(context - 1):
            logits[np.arange(n), t, inputs[:, t + 1].astype(np.int64)] = 8.0

    scorer = Scorer(windows, train, context=context, rows=4, vocab=vocab, token_bytes=token_bytes,
                    rng=random.Random(2))
    with pytest.raises(ScoreError, match="sees the future"):
        _uniform_answers(scorer, peek)
    honest = Scorer(windows, train, context=context, rows=4, vocab=vocab, token_bytes=token_bytes,
                    rng=random.Random(2))
    nats, count = _uniform_answers(honest)
    assert count == 40 * context and nats == pytest.approx(count * math.log(vocab), rel=1e-6)


def test_scorer_refuses_ids_outside_the_vocabulary():
    windows = np.full((3, 9), 700, dtype=np.uint16)
    with pytest.raises(ScoreError, match="outside the vocabulary"):
        Scorer(windows, np.zeros(100, dtype=np.uint16), context=8, rows=2, vocab=600,
               token_bytes=np.ones(600, dtype=np.int64))


def test_ranks_split_each_global_batch_and_count_global_tokens():
    import torch

    from trainer.harness.loader import BudgetLoader

    rows = torch.arange(40 * 9, dtype=torch.int32).view(40, 9)
    cpu = torch.device("cpu")
    single = [x for x, _ in BudgetLoader(rows, budget_tokens=160, device=cpu).batches(2, 8)]
    ranks = [BudgetLoader(rows, budget_tokens=160, device=cpu, rank=r, world=2) for r in (0, 1)]
    split = [[x for x, _ in loader.batches(2, 8)] for loader in ranks]
    assert len(single) == 10 and len(split[0]) == len(split[1]) == 5
    for step in range(5):  # global batch k of two ranks = batches 2k and 2k+1 of one rank
        assert torch.equal(split[0][step], single[2 * step]) and torch.equal(split[1][step], single[2 * step + 1])
    assert ranks[0].tokens == ranks[1].tokens == 160 and ranks[0].progress == 1.0
    with pytest.raises(ValueError, match="packed rows"):
        BudgetLoader(torch.zeros(100, dtype=torch.uint8), budget_tokens=10, device=cpu, world=2)


def test_ids_above_32767_cross_the_shared_memory_and_the_stream_unsigned(tmp_path):
    """Token ids travel as uint16: the harness reads them through int16 views, so ids past 32,767
    (a vocabulary up to 65,536) must come back unsigned."""
    import mmap

    from trainer.harness.child import _inputs, _read_stream

    ids = np.asarray([[0, 1, 32767, 32768], [40000, 65534, 65535, 7]], dtype="<u2")
    shared = mmap.mmap(-1, mmap.PAGESIZE)
    shared[:ids.nbytes] = ids.tobytes()
    assert _inputs(shared, 2, 4, 2).tolist() == ids.astype(np.int64).tolist()
    path = tmp_path / "tokens.bin"
    path.write_bytes(ids.tobytes())
    assert _read_stream(path, 4).tolist() == ids.astype(np.int64).tolist()
    path.write_bytes(ids.tobytes()[:-2])
    with pytest.raises(Exception, match="not whole rows"):
        _read_stream(path, 4)
