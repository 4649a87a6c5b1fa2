"""Ed25519 identities: generate, save (mode 0600), load (refusing files others can read), sign, verify."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ProtocolError

HEX64 = frozenset("0123456789abcdef")


class KeyFileError(Exception):
    """A key file that cannot be used: missing, malformed, or readable by others."""


def is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and set(value) <= HEX64


@dataclass(frozen=True)
class Identity:
    """A node's signing key. ``pubkey`` is the 64-hex raw Ed25519 public key."""

    private: Ed25519PrivateKey
    pubkey: str

    @classmethod
    def generate(cls) -> "Identity":
        return cls.from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        """Deterministic identity from a 32-byte seed (test vectors, simulations)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
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
        """Write the 32-byte seed as hex, created with mode 0600 (never world- or group-readable)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (self.seed().hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Identity":
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyFileError(f"no key file at {path}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
            )
        text = path.read_text(encoding="ascii", errors="replace").strip()
        if not is_hex(text, 64):
            raise KeyFileError(f"key file {path} is not a 64-hex Ed25519 seed")
        return cls.from_seed(bytes.fromhex(text))


def verify(pubkey_hex: str, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``pubkey_hex``'s Ed25519 signature of ``message``."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pubkey_hex))
        key.verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def check_pubkey(value: object, field: str = "author") -> str:
    if not is_hex(value, 64):
        raise ProtocolError(f"invalid: schema: {field}")
    return value  # type: ignore[return-value]
