"""Body schemas of protocol v1 (protocol/SPEC.md section 5): small pure validators.

Each validator takes the decoded body and returns it unchanged or raises ProtocolError with
``invalid: schema: <field>``. Unknown fields are rejected so that every implementation
hashes and stores exactly the same bodies.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from .canon import _orjson
from .errors import ProtocolError, schema_error
from .keys import is_hex
from .limits import (
    MAX_ADDRESS_BYTES,
    MAX_ADDRESSES,
    MAX_CURVE_POINTS,
    MAX_NOTE_BYTES,
    MAX_PATCH_BYTES,
    MAX_SAFE_INT,
    MAX_SHORT_TEXT_BYTES,
    MAX_SOURCE_BYTES,
)
from .seeds import seed_from_proof

# SPEC.md 5.1. fullmatch, never ``$``: ``$`` also matches before a trailing newline.
DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,12})?")
DECIMAL_NONZERO_RE = re.compile(r"[1-9]")  # a valid decimal string with a non-zero digit is > 0
# SPEC.md 5.6: scheme, host (DNS name, IPv4, or bracketed IPv6), optional port; no path.
ADDRESS_RE = re.compile(r"https?://([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?")

OUTCOMES = ("improved", "worse", "crashed")
VERDICTS = ("reproduced", "mismatch", "failed", "refused", "over budget")
# Verdicts that report a finished run of the claim: their vote MUST carry the reproducer's result.
MEASURED_VERDICTS = ("reproduced", "over budget")
SANDBOXES = ("bwrap", "namespaces", "none")


def _obj(value: Any, field: str, required: frozenset[str], optional: frozenset[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise schema_error(field, "not an object")
    if value.keys() == required:  # the usual case, decided by one comparison
        return value
    missing = required - value.keys()
    if missing:
        raise schema_error(f"{field}.{sorted(missing)[0]}", "missing")
    extra = value.keys() - required - optional
    if extra:
        raise schema_error(f"{field}.{sorted(extra)[0]}", "unknown field")
    return value


def _text(value: Any, field: str, max_bytes: int, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise schema_error(field, "not a string")
    # A UTF-8 character takes 1..4 bytes: only encode when the length alone cannot decide.
    if len(value) > max_bytes or (4 * len(value) > max_bytes
                                  and len(value.encode("utf-8", "surrogatepass")) > max_bytes):
        raise ProtocolError("invalid: too large: " + field)
    if not allow_empty and not value:
        raise schema_error(field, "empty")
    return value


def _int(value: Any, field: str, lo: int = 0, hi: int = MAX_SAFE_INT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise schema_error(field, "not an integer in range")
    return value


def _hex64(value: Any, field: str) -> str:
    if not is_hex(value, 64):
        raise schema_error(field, "not 64 lower-case hex")
    return value


def decimal(value: Any, field: str, *, non_negative: bool = True) -> str:
    """A measurement: a decimal string like ``"1.234567"`` (no exponent, no float)."""
    if not isinstance(value, str) or not DECIMAL_RE.fullmatch(value):
        raise schema_error(field, "not a decimal string")
    if non_negative and value.startswith("-"):
        raise schema_error(field, "negative")
    return value


def _enum(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise schema_error(field, "one of " + "|".join(choices))
    return value


# The fast paths below accept only what the field-by-field checks accept; anything they do not
# accept goes through those checks, which name the first bad field. Same messages accepted, same
# reasons: decode runs once per ingested message, and a result's curve is most of its fields.
# DECIMAL_RE without the sign, possessive (a digit never follows a digit run): no backtracking.
_NON_NEGATIVE_DECIMAL = r"(?:0|[1-9][0-9]{0,15}+)(?:\.[0-9]{1,12}+)?+"
# Comma-joined non-negative decimals; a decimal holds no comma, so counting commas pins the count.
_DECIMALS_RE = re.compile(f"(?:{_NON_NEGATIVE_DECIMAL},)*+{_NON_NEGATIVE_DECIMAL}")
# A curve's orjson encoding: [[step,"loss"],...], steps non-negative integers (orjson's
# OPT_STRICT_INTEGER bounds them to 2^53 - 1), losses non-negative decimals (SPEC.md 5.6).
_CURVE_POINT = rf'\[(?:0|[1-9][0-9]*+),"{_NON_NEGATIVE_DECIMAL}"\]'.encode()
_CURVE_RE = re.compile(rb"\[" + _CURVE_POINT + rb"(?:," + _CURVE_POINT + rb")*+\]")
_RESULT_REQUIRED = frozenset({"val_bpb", "curve", "tokens", "seed", "wall_s", "device", "torch", "flops_per_token"})
_RESULT_OPTIONAL = frozenset({"entropy_bpb", "sandbox", "cpu_s", "peak_mem_mb"})
_RESULT_FIELDS = _RESULT_REQUIRED | _RESULT_OPTIONAL
_LIST_TYPE, _INT_TYPE, _PAIR_LENGTH = {list}, {int}, {2}
_SHORT_TEXT_CHARS = MAX_SHORT_TEXT_BYTES // 4  # this many characters fit the byte limit whatever they are


def _result_ok(value: Any) -> bool:
    """True only for a valid result; False sends it through ``_check_result`` for the reason."""
    if len(value) == len(_RESULT_REQUIRED):
        if value.keys() != _RESULT_REQUIRED:
            return False
        decimals = [value["val_bpb"], value["wall_s"]]
    else:
        keys = value.keys()
        if not (keys >= _RESULT_REQUIRED and keys <= _RESULT_FIELDS):
            return False
        decimals = [value["val_bpb"], value["wall_s"]]
        if "entropy_bpb" in value:
            decimals.append(value["entropy_bpb"])
        if "cpu_s" in value:
            decimals.append(value["cpu_s"])
        if "sandbox" in value and value["sandbox"] not in SANDBOXES:
            return False
        if "peak_mem_mb" in value:
            mem = value["peak_mem_mb"]
            if type(mem) is not int or not 0 <= mem <= MAX_SAFE_INT:
                return False
    tokens, seed, flops = value["tokens"], value["seed"], value["flops_per_token"]
    device, torch = value["device"], value["torch"]
    if (type(tokens) is not int or type(seed) is not int or type(flops) is not int
            or not (0 <= tokens <= MAX_SAFE_INT and 0 <= seed <= MAX_SAFE_INT and 0 <= flops <= MAX_SAFE_INT)
            or type(device) is not str or type(torch) is not str
            or len(device) > _SHORT_TEXT_CHARS or len(torch) > _SHORT_TEXT_CHARS):
        return False
    curve = value["curve"]
    if type(curve) is not list or len(curve) > MAX_CURVE_POINTS:
        return False
    if curve and _orjson is not None:
        # The curve's JSON matched at once (orjson writes a list of [int, "string"] pairs with
        # no whitespace; anything else in it, a float, a bool, an escape, a nested list, fails the
        # match; an integer past 2^53 - 1 fails to encode): a third of the Python loop below.
        try:
            if _CURVE_RE.fullmatch(_orjson.dumps(curve, option=_orjson.OPT_STRICT_INTEGER)) is None:
                return False
        except TypeError:  # orjson.JSONEncodeError: not JSON, or an integer out of range
            return False
    elif curve:
        # Whole-list builtins instead of a Python loop over up to 64 points.
        if set(map(type, curve)) != _LIST_TYPE or set(map(len, curve)) != _PAIR_LENGTH:
            return False
        steps, losses = zip(*curve)
        if set(map(type, steps)) != _INT_TYPE or min(steps) < 0 or max(steps) > MAX_SAFE_INT:
            return False
        decimals += losses
    try:
        joined = ",".join(decimals)
    except TypeError:  # a measurement that is not a string
        return False
    return joined.count(",") == len(decimals) - 1 and _DECIMALS_RE.fullmatch(joined) is not None


def validate_result(value: Any, field: str = "body.result") -> dict:
    if type(value) is dict and _result_ok(value):
        return value
    return _check_result(value, field)


def _check_result(value: Any, field: str) -> dict:
    """Field by field, in a fixed order, so a bad result is refused with its first bad field."""
    _obj(value, field, _RESULT_REQUIRED, _RESULT_OPTIONAL)
    decimal(value["val_bpb"], f"{field}.val_bpb")
    curve = value["curve"]
    if not isinstance(curve, list):
        raise schema_error(f"{field}.curve", "not a list")
    if len(curve) > MAX_CURVE_POINTS:
        raise ProtocolError(f"invalid: too large: {field}.curve")
    for i, point in enumerate(curve):
        if not isinstance(point, list) or len(point) != 2:
            raise schema_error(f"{field}.curve[{i}]", "not [tokens, loss]")
        _int(point[0], f"{field}.curve[{i}][0]")
        decimal(point[1], f"{field}.curve[{i}][1]")
    _int(value["tokens"], f"{field}.tokens")
    _int(value["seed"], f"{field}.seed")
    decimal(value["wall_s"], f"{field}.wall_s")
    _text(value["device"], f"{field}.device", MAX_SHORT_TEXT_BYTES)
    _text(value["torch"], f"{field}.torch", MAX_SHORT_TEXT_BYTES)
    _int(value["flops_per_token"], f"{field}.flops_per_token")
    if "entropy_bpb" in value:
        decimal(value["entropy_bpb"], f"{field}.entropy_bpb")
    if "sandbox" in value:
        _enum(value["sandbox"], f"{field}.sandbox", SANDBOXES)
    if "cpu_s" in value:
        decimal(value["cpu_s"], f"{field}.cpu_s")
    if "peak_mem_mb" in value:
        _int(value["peak_mem_mb"], f"{field}.peak_mem_mb")
    return value


_TASK_FIELDS = frozenset({"name", "description", "harness", "source", "data", "metric", "direction", "budget",
                          "tolerance", "compute_cap"})
_DATA_FIELDS = frozenset({"name", "sha256", "bytes"})
_BUDGET_FIELDS = frozenset({"tokens"})
_CLAIM_FIELDS = frozenset({"task", "parent", "patch", "source_sha256", "note", "outcome", "result"})
_VOTE_FIELDS = frozenset({"claim", "verdict", "result", "reason"})
# seed_proof: a fresh-seed full run (SPEC.md 5.4.1); claim_received_at: when the voter first received
# the claim, the receipt that credit between equal sources goes by (SPEC.md 5.10).
_VOTE_OPTIONAL = frozenset({"seed_proof", "claim_received_at"})
_PEER_FIELDS = frozenset({"addresses", "expires_at"})


def validate_task(body: Any) -> dict:
    _obj(body, "body", _TASK_FIELDS)
    _text(body["name"], "body.name", MAX_SHORT_TEXT_BYTES, allow_empty=False)
    _text(body["description"], "body.description", MAX_NOTE_BYTES)
    _text(body["harness"], "body.harness", MAX_SHORT_TEXT_BYTES, allow_empty=False)
    _text(body["source"], "body.source", MAX_SOURCE_BYTES, allow_empty=False)
    data = _obj(body["data"], "body.data", _DATA_FIELDS)
    _text(data["name"], "body.data.name", MAX_SHORT_TEXT_BYTES, allow_empty=False)
    _hex64(data["sha256"], "body.data.sha256")
    _int(data["bytes"], "body.data.bytes")
    _enum(body["metric"], "body.metric", ("val_bpb",))
    _enum(body["direction"], "body.direction", ("min",))
    budget = _obj(body["budget"], "body.budget", _BUDGET_FIELDS)
    _int(budget["tokens"], "body.budget.tokens", lo=1)
    decimal(body["tolerance"], "body.tolerance")
    decimal(body["compute_cap"], "body.compute_cap")
    if not DECIMAL_NONZERO_RE.search(body["compute_cap"]):
        raise schema_error("body.compute_cap", "not positive")
    return body


def validate_claim(body: Any) -> dict:
    _obj(body, "body", _CLAIM_FIELDS)
    _hex64(body["task"], "body.task")
    if body["parent"] is not None:
        _hex64(body["parent"], "body.parent")
    _text(body["patch"], "body.patch", MAX_PATCH_BYTES)
    _hex64(body["source_sha256"], "body.source_sha256")
    _text(body["note"], "body.note", MAX_NOTE_BYTES)
    _enum(body["outcome"], "body.outcome", OUTCOMES)
    if body["result"] is None:
        if body["outcome"] != "crashed":
            raise schema_error("body.result", "null only for a crashed claim")
    else:
        validate_result(body["result"])
    return body


def validate_vote(body: Any) -> dict:
    _obj(body, "body", _VOTE_FIELDS, _VOTE_OPTIONAL)
    _hex64(body["claim"], "body.claim")
    _enum(body["verdict"], "body.verdict", VERDICTS)
    if body["result"] is None:
        # A reproduction reports what it measured (protocol/SPEC.md 5.4); only a vote that did not
        # finish a run (mismatch at a spot check, failed, refused) may carry no result.
        if body["verdict"] in MEASURED_VERDICTS:
            raise schema_error("body.result", f"required for a vote {body['verdict']!r}")
    else:
        validate_result(body["result"])
    _text(body["reason"], "body.reason", MAX_NOTE_BYTES)
    if "claim_received_at" in body:
        _int(body["claim_received_at"], "body.claim_received_at")
    if "seed_proof" in body:
        # The run's seed is the proof's (SPEC.md 5.4.1); that the proof is the voter's signature is
        # checked with the signature (envelope.py), which knows the voter.
        if not is_hex(body["seed_proof"], 128):
            raise schema_error("body.seed_proof", "not 128 lower-case hex")
        if body["result"] is None:
            raise schema_error("body.result", "required with a seed_proof")
        if body["result"]["seed"] != seed_from_proof(body["seed_proof"]):
            raise schema_error("body.result.seed", "not the seed of seed_proof")
    return body


def validate_peer(body: Any) -> dict:
    _obj(body, "body", _PEER_FIELDS)
    addresses = body["addresses"]
    if not isinstance(addresses, list) or not addresses:
        raise schema_error("body.addresses", "not a non-empty list")
    if len(addresses) > MAX_ADDRESSES:
        raise ProtocolError("invalid: too large: body.addresses")
    for i, address in enumerate(addresses):
        _text(address, f"body.addresses[{i}]", MAX_ADDRESS_BYTES)
        match = ADDRESS_RE.fullmatch(address)
        if not match or (match.group(2) is not None and not 1 <= int(match.group(2)) <= 65535):
            raise schema_error(f"body.addresses[{i}]", "not http://host:port")
    _int(body["expires_at"], "body.expires_at")
    return body


VALIDATORS: dict[str, Callable[[Any], dict]] = {
    "task": validate_task,
    "claim": validate_claim,
    "vote": validate_vote,
    "peer": validate_peer,
}
KINDS = tuple(VALIDATORS)
