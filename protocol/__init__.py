"""ralphswarm wire protocol v1: pure, no I/O. See protocol/SPEC.md.

Bytes and dicts in; frozen dataclasses or a ProtocolError (with a machine-readable reason) out.
"""
from .canon import canon, parse
from .envelope import BAD_SIGNATURE, Envelope, build, compute_id, decode, task_id, verify_sig
from .errors import ProtocolError
from .keys import Identity, KeyFileError, is_hex, verify
from .limits import PROTOCOL_VERSION
from .schemas import KINDS, OUTCOMES, VERDICTS, validate_result
from .seeds import check_seed_proof, fresh_seed, seed_from_proof

__all__ = [
    "canon", "parse", "BAD_SIGNATURE", "Envelope", "build", "compute_id", "decode", "task_id", "verify_sig",
    "ProtocolError", "Identity", "KeyFileError", "is_hex", "verify", "PROTOCOL_VERSION",
    "KINDS", "OUTCOMES", "VERDICTS", "validate_result", "check_seed_proof", "fresh_seed", "seed_from_proof",
]
