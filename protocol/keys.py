"""Ed25519 identities: generate, save (mode 0600), load (refusing files others can read), sign, verify."""
from __future__ import annotations

import functools
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ProtocolError
from .fileio import write_atomic

_MAX_KEY_FILE_BYTES = 256  # 64 hex + newline; anything far bigger is not our key file


class KeyFileError(Exception):
    """A key file that cannot be used: missing, malformed, or readable by others."""


_LOWER_HEX = re.compile("[0-9a-f]*")


def is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and _LOWER_HEX.fullmatch(value) is not None


@dataclass(frozen=True)
class Identity:
    """A node's signing key. ``pubkey`` is the 64-hex raw Ed25519 public key."""

    private: Ed25519PrivateKey = field(repr=False)  # never print key material
    pubkey: str

    @classmethod
    def generate(cls) -> "Identity":
        return cls.from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        """Deterministic identity from a 32-byte seed (test vectors, simulations)."""
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        seed = bytes(seed)
        return cls.from_private(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> "Identity":
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private=private, pubkey=raw.hex())

    def seed(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def save(self, path: str | os.PathLike) -> None:
        """Write the 32-byte seed as hex, created with mode 0600 (never group- or world-readable).

        Written to a temporary file first and renamed (``write_atomic``), so a crash never leaves half a key.
        """
        write_atomic(path, (self.seed().hex() + "\n").encode("ascii"), mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Identity":
        """Read a key written by ``save``. Raises KeyFileError with a message a user can act on."""
        path = Path(path)
        raw = read_private_file(path, what="key file", max_bytes=_MAX_KEY_FILE_BYTES, error=KeyFileError)
        text = raw.decode("ascii", errors="replace").strip()
        if len(raw) > _MAX_KEY_FILE_BYTES or not is_hex(text, 64):
            raise KeyFileError(
                f"key file {path} is malformed: expected 64 lower-case hex characters (an Ed25519 seed); "
                f"move it away and run: ralphswarm init"
            )
        return cls.from_seed(bytes.fromhex(text))


@functools.lru_cache(maxsize=4096)
def _public_key(pubkey_hex: str) -> Ed25519PublicKey:
    # A node hears from a bounded set of authors, each many times: load each key once (loading
    # costs about 2% of a verify; scripts/bench/ingest). lru_cache keeps no exceptions, so a bad
    # key is refused every time.
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(pubkey_hex))


def verify(pubkey_hex: str, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``pubkey_hex``'s Ed25519 signature of ``message``."""
    try:
        key = _public_key(pubkey_hex)
        key.verify(signature, message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def check_pubkey(value: object, field: str = "author") -> str:
    if not is_hex(value, 64):
        raise ProtocolError(f"invalid: schema: {field}")
    return value  # type: ignore[return-value]


def read_private_file(path: Path, *, what: str, max_bytes: int, error: type[Exception],
                      missing: str = "") -> bytes:
    """Up to ``max_bytes`` + 1 bytes of a secret file only its owner may read or write.

    Raises ``error`` with a message a user can act on: no such file (``missing`` is appended as a
    hint), not a regular file (a FIFO must not hang us: opened non-blocking), or a mode that lets
    group or others in (checked on the open file, not on a path swapped meanwhile).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"no {what} at {path}{missing}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise error(f"{what} {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                        f"run: chmod 600 {path}")
        return os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)
