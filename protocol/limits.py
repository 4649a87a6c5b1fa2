"""Protocol v1 limits (protocol/SPEC.md section 6). Receivers enforce all of them before storing."""
from __future__ import annotations

MAX_ENVELOPE_BYTES = 256 * 1024  # canonical bytes of the whole envelope
MAX_PATCH_BYTES = 64 * 1024  # claim.patch, task.source (UTF-8 bytes)
MAX_SOURCE_BYTES = 64 * 1024
MAX_NOTE_BYTES = 4 * 1024  # claim.note, vote.reason, task.description
MAX_CURVE_POINTS = 64  # result.curve
MAX_FUTURE_SECONDS = 10 * 60  # created_at may be at most this far ahead of the receiver's clock
MAX_SAFE_INT = 2**53  # canon() integers lie in [-2^53, 2^53]
MAX_SWARM_BYTES = 64
MAX_ADDRESSES = 16  # peer.addresses
MAX_ADDRESS_BYTES = 256
MAX_SHORT_TEXT_BYTES = 256  # names, device, torch version, data names
PROTOCOL_VERSION = 1
