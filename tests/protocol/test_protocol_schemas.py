"""Body schemas, field by field (SPEC.md section 5).  Run: .venv/bin/python -m pytest tests/protocol/test_protocol_schemas.py"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tests import protocol_samples as S
from protocol import ProtocolError, validate_result
from protocol.schemas import VALIDATORS, decimal


def reason(kind: str, body) -> str:
    with pytest.raises(ProtocolError) as err:
        VALIDATORS[kind](body)
    return err.value.reason


@pytest.mark.parametrize("kind", sorted(S.BODIES))
def test_samples_valid_and_every_required_field_required(kind):
    body = S.BODIES[kind]()
    assert VALIDATORS[kind](body) is body
    for key in body:
        assert reason(kind, {k: v for k, v in body.items() if k != key}) == f"invalid: schema: body.{key} (missing)"
    assert reason(kind, {**body, "zz": 1}) == "invalid: schema: body.zz (unknown field)"
    assert reason(kind, [body]) == "invalid: schema: body (not an object)"


@pytest.mark.parametrize("kind,field,value", [
    ("task", "name", ""), ("task", "name", 5), ("task", "harness", ""), ("task", "source", ""),
    ("task", "metric", "loss"), ("task", "direction", "max"), ("task", "tolerance", "0.1.2"),
    ("task", "compute_cap", "0"), ("task", "compute_cap", "0.000"), ("task", "compute_cap", "-2.0"),
    ("task", "compute_cap", ""), ("task", "compute_cap", 2), ("task", "compute_cap", "2e0"),
    ("task", "budget", {"tokens": 0}), ("task", "budget", {"tokens": 1, "s": 2}),
    ("task", "data", {"name": "d", "sha256": "AB" * 32, "bytes": 1}), ("task", "data", {"name": "d", "sha256": "ab" * 32}),
    ("claim", "task", "ab" * 31), ("claim", "parent", ""), ("claim", "source_sha256", None),
    ("claim", "outcome", "better"), ("claim", "result", None), ("claim", "patch", None),
    ("vote", "claim", None), ("vote", "verdict", "ok"), ("vote", "result", None), ("vote", "reason", None),
    ("vote", "verdict", "over_budget"), ("vote", "verdict", "Over budget"),
    ("peer", "addresses", []), ("peer", "addresses", "http://a:1"), ("peer", "expires_at", -1),
    ("peer", "expires_at", "1"), ("peer", "addresses", ["ftp://a:1"]), ("peer", "addresses", ["http://a:1/x"]),
    ("peer", "addresses", ["http://a:0"]), ("peer", "addresses", ["http://a:65536"]),
    ("peer", "addresses", ["http://a:1\n"]), ("peer", "addresses", ["http://user@a:1"]),
])
def test_field_rejected(kind, field, value):
    body = S.BODIES[kind](**{field: value})
    assert reason(kind, body).startswith(f"invalid: schema: body.{field}")


@pytest.mark.parametrize("kind,over", [
    ("claim", {"parent": "12" * 32}), ("claim", {"outcome": "crashed", "result": None}),
    ("claim", {"outcome": "crashed"}), ("claim", {"outcome": "worse", "patch": "", "note": ""}),
    ("vote", {"verdict": "mismatch", "result": None}), ("vote", {"verdict": "failed", "result": None}),
    ("vote", {"verdict": "refused", "result": None}), ("vote", {"verdict": "mismatch"}),
    ("vote", {"verdict": "over budget"}), ("task", {"compute_cap": "0.5"}), ("task", {"compute_cap": "10"}),
    ("task", {"compute_cap": "0.000000000001"}),
    ("peer", {"addresses": ["https://example.org", "http://[::1]:7447", "http://10.0.0.2:1"] * 5}),
    ("peer", {"addresses": ["http://a:65535"]}),
])
def test_valid_variants(kind, over):
    VALIDATORS[kind](S.BODIES[kind](**over))


def test_peer_address_count_limit():
    VALIDATORS["peer"](S.peer(addresses=["http://a:1"] * 16))
    assert reason("peer", S.peer(addresses=["http://a:1"] * 17)) == "invalid: too large: body.addresses"


@pytest.mark.parametrize("over,field", [
    ({"val_bpb": 1.5}, "val_bpb"), ({"val_bpb": "-1.0"}, "val_bpb"), ({"wall_s": "1e3"}, "wall_s"),
    ({"tokens": -1}, "tokens"), ({"tokens": True}, "tokens"), ({"seed": "0"}, "seed"),
    ({"flops_per_token": None}, "flops_per_token"), ({"device": 3}, "device"), ({"torch": None}, "torch"),
    ({"curve": {}}, "curve"), ({"curve": [[1]]}, "curve[0]"), ({"curve": [[1, 2]]}, "curve[0][1]"),
    ({"curve": [["1", "2"]]}, "curve[0][0]"), ({"entropy_bpb": "x"}, "entropy_bpb"),
    ({"cpu_s": 1.5}, "cpu_s"), ({"cpu_s": "-1"}, "cpu_s"), ({"cpu_s": None}, "cpu_s"), ({"cpu_s": "1.5 "}, "cpu_s"),
    ({"sandbox": "docker"}, "sandbox"), ({"sandbox": None}, "sandbox"), ({"gpu": "h100"}, "gpu"),
    ({"peak_mem_mb": "512"}, "peak_mem_mb"), ({"peak_mem_mb": -1}, "peak_mem_mb"), ({"peak_mem_mb": 1.5}, "peak_mem_mb"),
    ({"peak_mem_mb": True}, "peak_mem_mb"), ({"peak_mem_mb": 2**53 + 1}, "peak_mem_mb"),
])
def test_result_fields(over, field):
    with pytest.raises(ProtocolError) as err:
        validate_result(S.result(**over))
    assert err.value.reason.startswith(f"invalid: schema: body.result.{field}")


def test_result_optional_fields():
    for sandbox in ("bwrap", "namespaces", "none"):
        validate_result(S.result(sandbox=sandbox, entropy_bpb="0.5"))
    validate_result(S.result(curve=[]))
    validate_result(S.result(cpu_s="3.125"))
    validate_result(S.result(cpu_s="0.000", sandbox="none", entropy_bpb="0.5"))
    validate_result(S.result(peak_mem_mb=0))
    validate_result(S.result(peak_mem_mb=81920, cpu_s="1.0", sandbox="bwrap"))


def test_over_budget_vote_needs_the_measured_result():
    assert reason("vote", S.vote(verdict="over budget", result=None)) == \
        "invalid: schema: body.result (required for a vote 'over budget')"
    VALIDATORS["vote"](S.vote(verdict="over budget", result=S.result(wall_s="9.5", cpu_s="9.1")))


@pytest.mark.parametrize("text", ["0", "1", "1.5", "0.000001", "10.250000", "1234567890123456.123456789012"])
def test_decimal_accepted(text):
    assert decimal(text, "f") == text


@pytest.mark.parametrize("text", ["", ".5", "1.", "01", "1e5", "1.5\n", " 1", "+1", "-1", "NaN", "inf", "1,5",
                                  "\u0661", "12345678901234567", "1.1234567890123", "0x10"])
def test_decimal_rejected(text):
    with pytest.raises(ProtocolError, match="schema: f"):
        decimal(text, "f")


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=0, max_value=10**15, places=6, allow_nan=False, allow_infinity=False))
def test_decimal_grammar_takes_fixed_point_formatting(value):
    text = format(value, "f")
    assert decimal(text, "f") == text


_POINT_PARTS = st.one_of(
    st.integers(min_value=-5, max_value=2**54), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.sampled_from(["0", "1.5", "4.000000", "-1.0", "1e3", "01", "1.", ".5", "1,5", "'1'", "1\n", "٣", "9" * 17]),
    st.text(max_size=6), st.lists(st.integers(0, 9), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.integers(0, 2**53 + 2), st.sampled_from(["4.000000", "0", "12.5"])).map(list),
                          st.lists(_POINT_PARTS, min_size=0, max_size=3)), max_size=70))
def test_the_fast_result_check_accepts_only_what_the_field_checks_accept(curve):
    """schemas._result_ok (the repr of the curve matched at once) never accepts a result that
    _check_result (field by field) refuses, and accepts every ordinary valid one."""
    from protocol.schemas import _check_result, _result_ok

    value = S.result(curve=curve)
    try:
        _check_result(value, "body.result")
        valid = True
    except ProtocolError:
        valid = False
    fast = _result_ok(value)
    assert not fast or valid, curve
    if valid and all(p[0] < 10**15 for p in curve):
        assert fast, curve  # only steps of 16 digits or more are left to the field checks
