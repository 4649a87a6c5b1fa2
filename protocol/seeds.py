"""The fresh seed of a reproduction (protocol/SPEC.md 5.4.1): chosen by neither the claimant nor the voter.

A voter's full run of a claim trains with a seed derived from the voter's Ed25519 signature over the
claim id. Ed25519 signatures are deterministic (RFC 8032 5.1.6: the nonce is a hash of the secret
key and the message), so the voter cannot re-roll its seed; the claimant cannot compute it without
the voter's secret key, so grinding claim ids for known voters' lucky seeds is hopeless; and the
vote carries the signature (``seed_proof``), so anyone checks the seed afterwards with the voter's
public key.
"""
from __future__ import annotations

import hashlib

from .keys import Identity, is_hex, verify

SEED_DOMAIN = b"ralphswarm/v1/fresh-seed\x00"  # never a valid envelope id (32 bytes): no cross-use of signatures
SEED_BITS = 31  # fits every framework's seed argument (torch, numpy, random) and a JSON integer


def seed_message(claim_id: str) -> bytes:
    """The bytes a voter signs to draw its seed for ``claim_id`` (64 lower-case hex)."""
    if not is_hex(claim_id, 64):
        raise ValueError("a claim id is 64 lower-case hex")
    return SEED_DOMAIN + bytes.fromhex(claim_id)


def seed_from_proof(proof_hex: str) -> int:
    """The seed a proof stands for: the first 8 bytes of SHA-256(signature), big-endian, mod 2**31."""
    return int.from_bytes(hashlib.sha256(bytes.fromhex(proof_hex)).digest()[:8], "big") % (1 << SEED_BITS)


def fresh_seed(identity: Identity, claim_id: str) -> tuple[int, str]:
    """(seed, seed_proof) of ``identity``'s reproduction of ``claim_id``."""
    proof = identity.sign(seed_message(claim_id)).hex()
    return seed_from_proof(proof), proof


def check_seed_proof(voter: str, claim_id: str, proof_hex: str) -> bool:
    """True when ``proof_hex`` is ``voter``'s signature over the seed message of ``claim_id``."""
    return is_hex(proof_hex, 128) and verify(voter, bytes.fromhex(proof_hex), seed_message(claim_id))
