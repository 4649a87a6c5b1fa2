"""The fresh seed of a reproduction (protocol/SPEC.md 5.4.1), with real keys and real signed envelopes:
one seed per voter and claim, and a receiver that refuses every proof but the voter's own for that
claim, with the signature's reason. The vectors are tests/vectors/fresh_seeds.json (tests/protocol/test_vectors.py).

Run: .venv/bin/python -m pytest tests/protocol/test_seeds.py
"""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, given, settings, strategies as st

from protocol import BAD_SIGNATURE, Identity, ProtocolError, build, decode, verify_sig
from protocol.seeds import SEED_BITS, check_seed_proof, fresh_seed, seed_from_proof, seed_message
from tests.protocol_samples import NOW, SWARM, result, vote

BYTES32 = st.binary(min_size=32, max_size=32)


def fresh_vote(voter: Identity, claim_id: str, proof: str, **over):
    """A vote carrying ``proof`` and the seed it stands for, signed by ``voter`` (build checks the schema only)."""
    body = vote(**{"claim": claim_id, "result": result(seed=seed_from_proof(proof)), "seed_proof": proof, **over})
    return build(voter, SWARM, "vote", body, created_at=NOW - 10)


@settings(max_examples=40, deadline=None)
@given(BYTES32, BYTES32, BYTES32)
def test_the_fresh_seed_is_deterministic_and_bound_to_voter_and_claim(key_seed, claim_bytes, other_bytes):
    assume(claim_bytes != other_bytes)
    voter = Identity.from_seed(key_seed)
    claim_id, other = claim_bytes.hex(), other_bytes.hex()
    seed, proof = fresh_seed(voter, claim_id)
    assert fresh_seed(Identity.from_seed(key_seed), claim_id) == (seed, proof)  # no second draw
    assert 0 <= seed < 2**SEED_BITS == 2**31 and seed == seed_from_proof(proof)
    assert seed_message(claim_id) == b"ralphswarm/v1/fresh-seed\x00" + claim_bytes
    assert seed == int.from_bytes(hashlib.sha256(bytes.fromhex(proof)).digest()[:8], "big") % 2**31
    assert check_seed_proof(voter.pubkey, claim_id, proof)
    assert not check_seed_proof(voter.pubkey, other, proof)
    assert not check_seed_proof(Identity.from_seed(hashlib.sha256(key_seed).digest()).pubkey, claim_id, proof)


@pytest.mark.parametrize("claim_id", ["", "ab" * 31, "AB" * 32, "ab" * 32 + "\n"])
def test_a_seed_message_needs_a_claim_id(claim_id):
    with pytest.raises(ValueError):
        seed_message(claim_id)


@settings(max_examples=20, deadline=None)
@given(BYTES32, BYTES32, BYTES32)
def test_decode_refuses_a_forged_or_borrowed_seed_proof(key_seed, claim_bytes, other_bytes):
    assume(claim_bytes != other_bytes)
    voter, mallory = Identity.from_seed(key_seed), Identity.from_seed(hashlib.sha256(key_seed).digest())
    claim_id, other = claim_bytes.hex(), other_bytes.hex()
    good = fresh_vote(voter, claim_id, fresh_seed(voter, claim_id)[1])
    assert decode(good.canonical(), swarm=SWARM, now=NOW) == good and verify_sig(good)
    forged = [
        fresh_vote(voter, claim_id, fresh_seed(mallory, claim_id)[1]),  # another key's proof for this claim
        fresh_vote(voter, claim_id, fresh_seed(voter, other)[1]),  # the voter's own proof for another claim
        fresh_vote(voter, claim_id, voter.sign(claim_bytes).hex()),  # a signature of the bare id, no domain
        fresh_vote(voter, claim_id, voter.sign(b"\x00" * 32).hex()),  # a signature of something else
    ]
    for env in forged:  # well-formed and signed: only the proof is wrong
        with pytest.raises(ProtocolError) as err:
            decode(env.canonical(), swarm=SWARM, now=NOW)
        assert err.value.reason == BAD_SIGNATURE == "invalid: bad signature"
        assert not verify_sig(env)
        # the same with an already-parsed envelope (an item of an HTTP body)
        with pytest.raises(ProtocolError, match="^invalid: bad signature$"):
            decode(env.to_dict(), swarm=SWARM, now=NOW)


def test_a_seed_proof_is_checked_with_the_signature_only():
    """check_sig=False (a caller that verifies in bulk) skips the proof as it skips the signature."""
    voter, mallory = Identity.from_seed(b"\x07" * 32), Identity.from_seed(b"\x08" * 32)
    env = fresh_vote(voter, "cd" * 32, fresh_seed(mallory, "cd" * 32)[1])
    assert decode(env.canonical(), swarm=SWARM, now=NOW, check_sig=False) == env
    assert not verify_sig(env)


def test_a_seed_proof_needs_its_result_and_its_seed():
    voter = Identity.from_seed(b"\x07" * 32)
    claim_id = "cd" * 32
    seed, proof = fresh_seed(voter, claim_id)
    with pytest.raises(ProtocolError, match=r"^invalid: schema: body\.result\.seed"):
        fresh_vote(voter, claim_id, proof, result=result(seed=(seed + 1) % 2**31))
    with pytest.raises(ProtocolError, match=r"^invalid: schema: body\.result \("):
        fresh_vote(voter, claim_id, proof, verdict="mismatch", result=None)
    for bad in (proof.upper(), proof[:-2], proof + "00", 7, None):
        with pytest.raises(ProtocolError, match=r"^invalid: schema: body\.seed_proof"):
            build(voter, SWARM, "vote", vote(claim=claim_id, result=result(seed=seed), seed_proof=bad),
                  created_at=NOW - 10)


@pytest.mark.parametrize("verdict", ["reproduced", "mismatch", "over budget", "failed", "refused"])
def test_any_verdict_with_a_result_may_carry_a_proof(verdict):
    """The receiver does not tie seed_proof to a verdict (SPEC.md 5.4.1); only reproduced and
    mismatch votes are samples (SPEC.md 5.9)."""
    voter = Identity.from_seed(b"\x07" * 32)
    env = fresh_vote(voter, "cd" * 32, fresh_seed(voter, "cd" * 32)[1], verdict=verdict)
    assert decode(env.canonical(), swarm=SWARM, now=NOW) == env
