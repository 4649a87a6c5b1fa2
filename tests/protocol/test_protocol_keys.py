"""Identities and key files (SPEC.md section 7).  Run: .venv/bin/python -m pytest tests/protocol/test_protocol_keys.py"""
from __future__ import annotations

import os
import stat

import pytest

from protocol import Identity, KeyFileError, verify


def test_save_creates_mode_0600_and_loads_back(tmp_path):
    old = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        ident = Identity.generate()
        path = tmp_path / "sub" / "identity.key"
        ident.save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == ident.seed().hex() + "\n"
    assert Identity.load(path).pubkey == ident.pubkey
    assert not (tmp_path / "sub" / "identity.key.tmp").exists()


def test_save_replaces_a_stale_tmp_file(tmp_path):
    (tmp_path / "k.tmp").write_text("junk")
    os.chmod(tmp_path / "k.tmp", 0o644)
    Identity.from_seed(b"\x05" * 32).save(tmp_path / "k")
    assert Identity.load(tmp_path / "k").seed() == b"\x05" * 32


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700 | 0o020, 0o601])
def test_load_refuses_group_or_other_bits(tmp_path, mode):
    path = tmp_path / "identity.key"
    Identity.generate().save(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as err:
        Identity.load(path)
    message = str(err.value)
    assert f"chmod 600 {path}" in message and oct(mode)[2:] in message


@pytest.mark.parametrize("content", [b"", b"abc\n", b"AB" * 32, b"zz" * 32, b"\xff" * 64, b"00" * 33,
                                     b"00" * 32 + b"\n" * 300])
def test_load_refuses_malformed(tmp_path, content):
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="malformed"):
        Identity.load(path)


def test_load_missing_and_unreadable(tmp_path):
    with pytest.raises(KeyFileError, match="no key file"):
        Identity.load(tmp_path / "nope")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        Identity.load(tmp_path / "dir")


def test_sign_verify_and_seed_determinism():
    a = Identity.from_seed(b"\x01" * 32)
    assert a.pubkey == Identity.from_seed(b"\x01" * 32).pubkey and len(a.pubkey) == 64
    sig = a.sign(b"msg")
    assert sig == a.sign(b"msg")  # Ed25519 is deterministic (RFC 8032)
    assert verify(a.pubkey, sig, b"msg")
    assert not verify(a.pubkey, sig, b"msh")
    assert not verify(Identity.generate().pubkey, sig, b"msg")
    assert not verify("zz" * 32, sig, b"msg") and not verify(a.pubkey, sig[:-1], b"msg")
    assert "private" not in repr(a) or "Ed25519PrivateKey" not in repr(a)
    with pytest.raises(ValueError):
        Identity.from_seed(b"short")
