"""Parquet shards for tokenized tasks: pinned one by one by sha256, fetched at first use, tokenized
and packed once (docs/design.md, "Tokenized tasks").

A tokenized task's ``data`` pin is a *manifest* (canonical JSON, cached like any dataset by its
sha256) naming its shards, each by file name, sha256 and size, split into training and validation
shards, where they come from (a Hugging Face dataset repository at a pinned revision, or nowhere:
local files a node must already hold), and how its tokenizer is trained:

    {"format": "ralphswarm-shards-v1", "origin": {"repo": R, "revision": REV} | null,
     "train": [{"name": N, "sha256": S, "bytes": B}, ...], "val": [...],
     "tokenizer": {"vocab": V, "doc_cap": D, "max_chars": M}}

Shards live in ``<cache>/shards/<sha256>.parquet``. A download goes to a temporary directory beside
them, is hashed and opened as parquet (a ``text`` column of strings), and only then renamed into
place: a wrong hash, a truncated file, a missing column or a full disk is one line of error and
leaves nothing behind. The packed token rows (trainer/tokens.py) are cached under
``<cache>/tokens/`` with their own sha256 in their name and re-hashed on every read.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .canon import canon, sha256_hex
from .datasets import DataError, read_pinned
from .fileio import write_atomic

FORMAT = "ralphswarm-shards-v1"
PACKING = "best-fit-v1"  # trainer/tokens.py pack_rows; part of the packed cache's key
DISK_MARGIN = 64 << 20  # free bytes kept beyond a shard's size before a download starts
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")

# (repo, file name, revision, directory) -> path of the downloaded file inside the directory
Downloader = Callable[[str, str, str, Path], Path]


@dataclass(frozen=True)
class Shard:
    name: str
    sha256: str
    bytes: int

    def entry(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Manifest:
    train: tuple[Shard, ...]
    val: tuple[Shard, ...]
    vocab: int
    doc_cap: int
    max_chars: int
    repo: str | None = None
    revision: str | None = None

    def to_bytes(self) -> bytes:
        origin = {"repo": self.repo, "revision": self.revision} if self.repo else None
        return canon({"format": FORMAT, "origin": origin,
                      "train": [s.entry() for s in self.train], "val": [s.entry() for s in self.val],
                      "tokenizer": {"vocab": self.vocab, "doc_cap": self.doc_cap, "max_chars": self.max_chars}})

    @property
    def sha256(self) -> str:
        return sha256_hex(self.to_bytes())

    @classmethod
    def parse(cls, data: bytes) -> "Manifest":
        try:
            body = json.loads(data.decode("utf-8"))
            if body["format"] != FORMAT:
                raise ValueError
            origin, tok = body["origin"], body["tokenizer"]
            shards = {k: tuple(_shard(e) for e in body[k]) for k in ("train", "val")}
            repo = revision = None
            if origin is not None:
                repo, revision = str(origin["repo"]), str(origin["revision"])
            out = cls(shards["train"], shards["val"], int(tok["vocab"]), int(tok["doc_cap"]), int(tok["max_chars"]),
                      repo, revision)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise DataError(f"the task's shard manifest is not a {FORMAT} manifest") from None
        if not out.train or not out.val:
            raise DataError("the task's shard manifest names no training or no validation shard")
        return out


def _shard(entry) -> Shard:
    name, sha, size = entry["name"], entry["sha256"], entry["bytes"]
    if (not isinstance(name, str) or not _NAME_RE.match(name) or not isinstance(sha, str)
            or not _HEX_RE.match(sha) or type(size) is not int or size < 1):
        raise ValueError
    return Shard(name, sha, size)


# --- the shard store ------------------------------------------------------------------------------

def shard_path(cache_dir: Path, shard: Shard) -> Path:
    return Path(cache_dir) / "shards" / f"{shard.sha256}.parquet"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def check_parquet(path: Path, name: str) -> int:
    """Open ``path`` as parquet with a ``text`` column of strings and read it through; the number of
    documents. DataError (one line) for a truncated or corrupt file or a missing column."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("parquet shards need pyarrow: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
        field = pf.schema_arrow.field("text") if "text" in pf.schema_arrow.names else None
        if field is None:
            raise DataError(f"shard {name} has no text column (columns: {', '.join(pf.schema_arrow.names)[:200]})")
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            raise DataError(f"shard {name}: its text column holds {field.type}, not strings")
        rows = 0
        for i in range(pf.num_row_groups):
            rows += pf.read_row_group(i, columns=["text"]).num_rows
        return rows
    except DataError:
        raise
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise DataError(f"shard {name} is not a readable parquet file: {str(exc).splitlines()[0][:200]}") from None


def read_docs(path: Path, name: str) -> Iterator[list[str]]:
    """The shard's documents, one row group at a time (null documents skipped)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            yield [d for d in pf.read_row_group(i, columns=["text"]).column("text").to_pylist() if d is not None]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"shard {name} is not a readable parquet file: {str(exc).splitlines()[0][:200]}") from None


def hf_downloader(repo: str, name: str, revision: str, directory: Path) -> Path:
    """One file of a Hugging Face dataset repository at ``revision``, into ``directory``."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DataError("fetching shards needs huggingface_hub: pip install huggingface_hub") from None
    return Path(hf_hub_download(repo_id=repo, repo_type="dataset", filename=name, revision=revision,
                                local_dir=directory))


def ensure_shard(cache_dir: Path, shard: Shard, manifest: Manifest, *, download: Downloader | None = None) -> Path:
    """The path of ``shard`` in the store (re-hashed), downloading it first where it is missing."""
    path = shard_path(cache_dir, shard)
    if path.exists():
        if path.stat().st_size == shard.bytes and _file_sha256(path) == shard.sha256:
            return path
        path.unlink(missing_ok=True)  # a corrupt entry: drop it and fetch again
    if manifest.repo is None:
        raise DataError(f"shard {shard.name} (sha256 {shard.sha256[:16]}...) is not in {path.parent} and the task "
                        "names nowhere to fetch it from")
    download = download or hf_downloader
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < shard.bytes + DISK_MARGIN:
        raise DataError(f"no disk space for shard {shard.name}: it needs {_mb(shard.bytes + DISK_MARGIN)} free in "
                        f"{path.parent}, {_mb(free)} are")
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{shard.name}-", dir=path.parent))
    try:
        try:
            got = Path(download(manifest.repo, shard.name, manifest.revision, tmp))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DataError(f"no disk space left while downloading shard {shard.name} into {path.parent}") from None
            raise DataError(f"could not download shard {shard.name}: {_line(exc)}") from None
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - huggingface_hub's HTTP and repository errors
            raise DataError(f"could not download shard {shard.name} from {manifest.repo}@{manifest.revision}: "
                            f"{_line(exc)}") from None
        size = got.stat().st_size
        digest = _file_sha256(got)
        if digest != shard.sha256 or size != shard.bytes:
            raise DataError(f"shard {shard.name}: got sha256 {digest[:16]}... ({size} bytes), pinned "
                            f"{shard.sha256[:16]}... ({shard.bytes} bytes); refusing mismatched data")
        check_parquet(got, shard.name)
        os.replace(got, path)
        return path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_shard(cache_dir: Path, source: Path) -> Shard:
    """Copy a local parquet file into the store (checked as parquet first); its pin."""
    source = Path(source)
    check_parquet(source, source.name)
    data = source.read_bytes()
    shard = Shard(source.name, sha256_hex(data), len(data))
    write_atomic(shard_path(cache_dir, shard), data, fsync=False)
    return shard


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# --- packed rows, cached --------------------------------------------------------------------------

def packed_key(manifest_sha: str, tokenizer_sha: str, context: int, val_windows: int) -> str:
    return sha256_hex(canon({"manifest": manifest_sha, "tokenizer": tokenizer_sha, "context": context,
                             "val_windows": val_windows, "packing": PACKING}))


def read_packed(cache_dir: Path, key: str, split: str, row_len: int) -> np.ndarray | None:
    """The cached rows of ``split`` under ``key``, re-hashed (a corrupt file is dropped); None when absent."""
    directory = Path(cache_dir) / "tokens"
    for path in sorted(directory.glob(f"{key}-{split}.*.u16")):
        data = read_pinned(path, path.name.split(".")[1])
        if data is None:
            continue
        if len(data) % (2 * row_len):
            path.unlink(missing_ok=True)
            continue
        return np.frombuffer(data, dtype="<u2").reshape(-1, row_len)
    return None


def write_packed(cache_dir: Path, key: str, split: str, rows: np.ndarray) -> None:
    data = np.ascontiguousarray(rows, dtype="<u2").tobytes()
    write_atomic(Path(cache_dir) / "tokens" / f"{key}-{split}.{sha256_hex(data)}.u16", data, fsync=False)
