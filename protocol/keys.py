"""Ed25519 identities: generate, save (mode 0600), load (refusing files others can read), sign, verify."""
from __future__ import annotations

import functools
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


# Ed25519 by libsodium's rules (SPEC.md 3.3). OpenSSL (through ``cryptography``) checks S < L and
# compares R's encoding with the one it computes, but takes a public key of small order (one such
# key has a signature that verifies for every message: A = R = the neutral element, S = 0) and an
# R of small order. libsodium's crypto_sign_verify_detached refuses both, and a public key whose
# y is not reduced mod p; so do we, before OpenSSL checks the equation.
_L = 2 ** 252 + 27742317777372353535851937790883648493  # order of the base point
_P = 2 ** 255 - 19
_Y_MASK = (1 << 255) - 1  # an encoding is y (255 bits, little-endian) and the sign of x in the top bit
# The y coordinates of the eight points of order dividing 8 (the torsion subgroup): 0 (order 4),
# 1 (the neutral element), p - 1 (order 2) and the two of order 8, plus p and p + 1, y = 0 and 1 not
# reduced. x's sign bit is ignored: with it set these are the same points or their negatives, all
# of small order. The list is libsodium's (ed25519_ref10.c, ge25519_has_small_order, <= 1.0.18);
# tests/protocol/test_protocol_signatures.py checks it against the curve.
_SMALL_ORDER_Y = frozenset((
    0, 1, _P - 1, _P, _P + 1,
    0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826,
    0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7,
))


def _canonical_point(encoding: bytes) -> bool:
    """y < p and the point not of small order (libsodium's ge25519_is_canonical, has_small_order)."""
    y = int.from_bytes(encoding, "little") & _Y_MASK
    return y < _P and y not in _SMALL_ORDER_Y


@functools.lru_cache(maxsize=4096)
def _public_key(pubkey_hex: str) -> Ed25519PublicKey:
    # A node hears from a bounded set of authors, each many times: load each key once (loading
    # costs about 2% of a verify; scripts/bench/ingest). lru_cache keeps no exceptions, so a bad
    # key is refused every time.
    return Ed25519PublicKey.from_public_bytes(_public_bytes(pubkey_hex))


@functools.lru_cache(maxsize=4096)
def _public_bytes(pubkey_hex: str) -> bytes:
    raw = bytes.fromhex(pubkey_hex)
    if len(raw) != 32 or not _canonical_point(raw):
        raise ValueError("not a usable Ed25519 public key: y not reduced, or a point of small order")
    return raw


# The equation itself by libsodium (PyNaCl's crypto_sign_open), where it answers as SPEC.md 3.3 says:
# on this machine's CPUs it checks a signature in about half OpenSSL's time (55 against 107 us,
# scripts/bench/ingest), and signature checks are most of what ingest costs. It is used only
# after it has answered a handful of known cases as released libsodium does (a good signature,
# the same with one bit flipped, a mixed-order key, and the two signatures that only libsodium's
# cofactored development branch takes): a PyNaCl built against another libsodium that answers
# otherwise leaves the check to OpenSSL. Either way the checks before the equation are ours.
_SELF_TEST = (  # (message, public key, signature, verdict): libsodium's test/default/sign2.c
    ("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
     "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
     "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f"
     "87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009", True),
    ("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
     "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
     "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f"
     "87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd008", False),
    ("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
     "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
     "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed512"
     "5ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09", False),
    ("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
     "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
     "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7"
     "e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405", False),
)


def _openssl_equation(pubkey_hex: str, signature: bytes, message: bytes) -> bool:
    try:
        _public_key(pubkey_hex).verify(signature, message)
        return True
    except InvalidSignature:
        return False


def _sodium_equation() -> "Callable[[str, bytes, bytes], bool] | None":
    """libsodium's check of the equation, or None where PyNaCl is missing or answers otherwise."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import CryptoError
    except ImportError:
        return None

    def equation(pubkey_hex: str, signature: bytes, message: bytes) -> bool:
        try:
            crypto_sign_open(signature + message, _public_bytes(pubkey_hex))
            return True
        except (CryptoError, ValueError, TypeError):  # BadSignatureError is a CryptoError
            return False

    try:
        for message, pubkey, sig, verdict in _SELF_TEST:
            if equation(pubkey, bytes.fromhex(sig), bytes.fromhex(message)) is not verdict:
                return None
    except Exception:  # noqa: BLE001 - a broken binding: OpenSSL does the work
        return None
    return equation


_EQUATION = _sodium_equation() or _openssl_equation


def verify(pubkey_hex: str, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``pubkey_hex``'s Ed25519 signature of ``message`` by SPEC.md 3.3.

    Refused first, here: a public key of small order or with y not reduced; a signature whose S is
    not below L, or whose R has small order or y not reduced. Then libsodium (or OpenSSL, see
    ``_sodium_equation``) checks [S]B = R + [k]A (cofactorless) with R's encoding compared byte for byte.
    """
    try:
        if len(signature) != 64 or int.from_bytes(signature[32:], "little") >= _L:
            return False
        if not _canonical_point(signature[:32]):
            return False
        _public_bytes(pubkey_hex)  # our refusals of the key, before either library sees it
        return _EQUATION(pubkey_hex, signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False


def verifier_name() -> str:
    """Which library checks the signature equation here: 'libsodium' or 'openssl'."""
    return "openssl" if _EQUATION is _openssl_equation else "libsodium"


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
