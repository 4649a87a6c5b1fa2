"""Tokenized tasks, the trusted side: the BPE tokenizer file a task pins by sha256, the byte length of
each token (from its raw bytes), and the BOS-aligned packing of documents into rows (docs/design.md,
"Tokenized tasks").

The tokenizer is trained as karpathy/autoresearch's prepare.py trains it (rustbpe, its split pattern,
four reserved special tokens of which the first is BOS) and stored as one canonical JSON file:

    {"format": "ralphswarm-bpe-v1", "pattern": P, "tokens": [base64 of token i's bytes, ...],
     "specials": ["<|reserved_0|>", ...], "bos": "<|reserved_0|>"}

Token ``i`` < len(tokens) is the byte string ``tokens[i]`` (its rank); the specials follow. Its
sha256 is what a task's harness text pins; the file is cached under ``<cache>/tokenizer/<sha>.json``
and re-hashed on every read. Encoding goes through tiktoken (the same merges, in Rust).

Bits per byte need each target token's length in bytes. It is the length of the token's raw byte
string, never of a decoded str: a token holding part of a UTF-8 character decodes to U+FFFD, three
bytes, whatever its real length (autoresearch's token_bytes goes through str). Special tokens count
zero bytes and are masked out of the sum of nats.
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .canon import canon
from .datasets import DataError, read_pinned
from .fileio import write_atomic

FORMAT = "ralphswarm-bpe-v1"
# autoresearch's prepare.py: GPT-4's pattern with \p{N}{1,2} instead of {1,3}.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                 r"""\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = tuple(f"<|reserved_{i}|>" for i in range(4))
BOS_TOKEN = "<|reserved_0|>"
DOC_CAP = 10_000  # characters of a document the tokenizer trains on (autoresearch's doc_cap)
MAX_VOCAB = 1 << 16  # token ids travel as uint16
PACK_BUFFER = 1000  # documents the best-fit packer chooses from (autoresearch's buffer_size)


class TokenizerError(DataError):
    """A tokenizer file is malformed, or does not match its pin; the message says which."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, pattern: str = SPLIT_PATTERN,
                    specials: tuple[str, ...] = SPECIAL_TOKENS, bos: str = BOS_TOKEN,
                    doc_cap: int = DOC_CAP, max_chars: int | None = None) -> bytes:
    """The canonical tokenizer file, trained with rustbpe on ``texts`` (each cut to ``doc_cap``
    characters, at most ``max_chars`` in all): ``vocab_size`` tokens including the specials."""
    try:
        import rustbpe
    except ImportError:
        raise TokenizerError("training a tokenizer needs rustbpe: pip install rustbpe") from None
    if not 256 + len(specials) <= vocab_size <= MAX_VOCAB:
        raise TokenizerError(f"vocab size {vocab_size} is outside {256 + len(specials)}..{MAX_VOCAB}")

    def capped() -> Iterator[str]:
        total = 0
        for text in texts:
            doc = text[:doc_cap]
            total += len(doc)
            yield doc
            if max_chars is not None and total >= max_chars:
                return

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(capped(), vocab_size - len(specials), pattern=pattern)
    ranks = sorted((int(rank), bytes(piece)) for piece, rank in tok.get_mergeable_ranks())
    if [r for r, _ in ranks] != list(range(len(ranks))):
        raise TokenizerError("rustbpe returned ranks that are not 0..n-1")
    if len(ranks) != vocab_size - len(specials):
        raise TokenizerError(f"the training text yields {len(ranks) + len(specials)} tokens, fewer than the vocab "
                             f"size {vocab_size}: give more text")
    return canon({
        "format": FORMAT, "pattern": tok.get_pattern(), "specials": list(specials), "bos": bos,
        "tokens": [base64.b64encode(piece).decode("ascii") for _, piece in ranks],
    })


@dataclass(frozen=True)
class BPE:
    """A parsed, checked tokenizer file."""
    sha256: str
    pattern: str
    tokens: tuple[bytes, ...]
    specials: tuple[str, ...]
    bos: str
    _enc: list = field(default_factory=list, compare=False, repr=False)

    @property
    def vocab(self) -> int:
        return len(self.tokens) + len(self.specials)

    @property
    def bos_id(self) -> int:
        return len(self.tokens) + self.specials.index(self.bos)

    def token_bytes(self) -> np.ndarray:
        """int64 (vocab,): each token's length in bytes, from its raw bytes; 0 for the specials."""
        out = np.zeros(self.vocab, dtype=np.int64)
        out[:len(self.tokens)] = [len(piece) for piece in self.tokens]
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ``ids`` (specials contribute nothing): no str on the way."""
        n = len(self.tokens)
        return b"".join(self.tokens[i] for i in ids if i < n)

    def encoding(self):
        if not self._enc:
            try:
                import tiktoken
            except ImportError:
                raise TokenizerError("tokenized tasks need tiktoken: pip install tiktoken") from None
            self._enc.append(tiktoken.Encoding(
                name=f"ralphswarm-{self.sha256[:16]}", pat_str=self.pattern,
                mergeable_ranks={piece: i for i, piece in enumerate(self.tokens)},
                special_tokens={name: len(self.tokens) + i for i, name in enumerate(self.specials)}))
        return self._enc[0]

    def encode_docs(self, texts: list[str], *, threads: int = 8) -> list[np.ndarray]:
        """Each document's ids (uint16), BOS first; special-token text in a document is plain text."""
        ids = self.encoding().encode_ordinary_batch(texts, num_threads=threads)
        bos = self.bos_id
        return [np.asarray([bos, *row], dtype=np.uint16) for row in ids]


def parse_tokenizer(data: bytes, *, sha256: str | None = None) -> BPE:
    got = hashlib.sha256(data).hexdigest()
    if sha256 is not None and got != sha256:
        raise TokenizerError(f"tokenizer: got sha256 {got[:16]}..., pinned {sha256[:16]}...; refusing a "
                             "mismatched tokenizer")
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise TokenizerError("tokenizer file is not JSON") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise TokenizerError(f"tokenizer file is not of format {FORMAT}")
    pattern, specials, bos, encoded = body.get("pattern"), body.get("specials"), body.get("bos"), body.get("tokens")
    if not isinstance(pattern, str) or not pattern:
        raise TokenizerError("tokenizer file has no split pattern")
    if (not isinstance(specials, list) or not all(isinstance(s, str) and s for s in specials)
            or len(set(specials)) != len(specials) or bos not in specials):
        raise TokenizerError("tokenizer file's special tokens are malformed (or BOS is not one of them)")
    if not isinstance(encoded, list) or not all(isinstance(t, str) for t in encoded):
        raise TokenizerError("tokenizer file's tokens are not a list of base64 strings")
    try:
        tokens = tuple(base64.b64decode(t, validate=True) for t in encoded)
    except ValueError:
        raise TokenizerError("tokenizer file holds a token that is not base64") from None
    if len(tokens) < 256 or any(tokens[i] != bytes([i]) for i in range(256)):
        raise TokenizerError("tokenizer file does not start with the 256 single bytes")
    if len(set(tokens)) != len(tokens) or not all(tokens):
        raise TokenizerError("tokenizer file repeats a token or holds an empty one")
    if len(tokens) + len(specials) > MAX_VOCAB:
        raise TokenizerError(f"tokenizer vocabulary exceeds {MAX_VOCAB}")
    return BPE(got, pattern, tokens, tuple(specials), bos)


def tokenizer_path(cache_dir: Path, sha256: str) -> Path:
    return Path(cache_dir) / "tokenizer" / f"{sha256}.json"


def read_tokenizer(cache_dir: Path, sha256: str) -> BPE | None:
    """The cached tokenizer of this sha256, re-hashed; None when absent (a corrupt file is dropped)."""
    data = read_pinned(tokenizer_path(cache_dir, sha256), sha256)
    return None if data is None else parse_tokenizer(data, sha256=sha256)


def write_tokenizer(cache_dir: Path, data: bytes) -> BPE:
    bpe = parse_tokenizer(data)
    write_atomic(tokenizer_path(cache_dir, bpe.sha256), data, fsync=False)
    return bpe


# --- BOS-aligned packing ------------------------------------------------------------------------

def pack_rows(docs: Iterable[np.ndarray], row_len: int, *, buffer: int = PACK_BUFFER,
              max_rows: int | None = None) -> np.ndarray:
    """(rows, row_len) uint16: documents (each BOS first) packed as autoresearch's dataloader packs
    them: every row starts at a document's start; the largest buffered document that fits the room
    left goes next (the earliest of equal length); when none fits, the shortest is cropped to fill
    the row (its rest is dropped). ``buffer`` documents are held to choose from. Deterministic in the
    documents' order. Ends at ``max_rows`` or when the documents run out (a partial last row is dropped).
    """
    docs = iter(docs)
    keys: list[tuple[int, int]] = []  # (length, arrival) sorted
    held: dict[int, np.ndarray] = {}
    arrival = 0
    exhausted = False
    rows: list[np.ndarray] = []

    def refill() -> None:
        nonlocal arrival, exhausted
        while not exhausted and len(keys) < buffer:
            doc = next(docs, None)
            if doc is None:
                exhausted = True
                return
            if len(doc) == 0:
                continue
            bisect.insort(keys, (len(doc), arrival))
            held[arrival] = doc
            arrival += 1

    while max_rows is None or len(rows) < max_rows:
        row = np.empty(row_len, dtype=np.uint16)
        pos = 0
        while pos < row_len:
            refill()
            if not keys:
                return _stack(rows, row_len)
            room = row_len - pos
            i = bisect.bisect_right(keys, (room, float("inf"))) - 1
            if i >= 0:
                length = keys[i][0]
                i = bisect.bisect_left(keys, (length, -1))  # the earliest of that length
                _, key = keys.pop(i)
                doc = held.pop(key)
                row[pos:pos + length] = doc
                pos += length
            else:
                _, key = keys.pop(0)
                row[pos:] = held.pop(key)[:room]
                pos = row_len
        rows.append(row)
    return _stack(rows, row_len)


def _stack(rows: list[np.ndarray], row_len: int) -> np.ndarray:
    return np.stack(rows) if rows else np.empty((0, row_len), dtype=np.uint16)


def draw_rows(rows: np.ndarray, *, budget_tokens: int, seed: int, context: int) -> bytes:
    """A run's training stream over packed rows: ``ceil(budget / context)`` rows of ``context + 1``
    tokens (uint16 little-endian), in the order of numpy PCG64 permutations of all rows from
    ``seed``, one after another (an epoch each)."""
    count = rows.shape[0]
    if count < 1:
        raise ValueError("the training split holds no packed row")
    need = -(-budget_tokens // context)
    rng = np.random.Generator(np.random.PCG64(seed))
    order = np.concatenate([rng.permutation(count) for _ in range(-(-need // count))])[:need]
    return np.ascontiguousarray(rows[order], dtype="<u2").tobytes()
