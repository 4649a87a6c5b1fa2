"""Negentropy protocol v1 (node/net/negentropy.py): wire format, fingerprints, reconciliation, fuzzing.

Run: .venv/bin/python -m pytest tests/node/test_negentropy.py -q

Vectors marked "reference" come from the hoytech/negentropy repository (Kotlin port's tests and a
cross-language transcript); the rest are derived here from the spec's definitions.
"""
from __future__ import annotations

import hashlib
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.net.negentropy import (
    INFINITY,
    BoundDecoder,
    BoundEncoder,
    Negentropy,
    NegentropyError,
    Reader,
    Storage,
    bound_key,
    decode_varint,
    encode_varint,
    fingerprint,
    minimal_bound,
)

T0 = 1_700_000_000  # a plausible created_at


# ---------------------------------------------------------------- helpers


def spec_varint(n: int) -> bytes:
    """§Varint written independently: base-128 digits, most significant first."""
    digits = []
    while True:
        digits.insert(0, n % 128)
        n //= 128
        if n == 0:
            break
    return bytes([d + 128 for d in digits[:-1]] + [digits[-1]])


def spec_fingerprint(ids: list[bytes]) -> bytes:
    """§Fingerprint written independently from the spec text."""
    total = sum(int.from_bytes(i, "little") for i in ids) % 2**256
    return hashlib.sha256(total.to_bytes(32, "little") + spec_varint(len(ids))).digest()[:16]


def sync(a, b, client_limit=0, server_limit=0, max_rounds=2000):
    """Run a whole reconciliation; returns (have, need, rounds, bytes up, bytes down)."""
    client = Negentropy(Storage(a), client_limit)
    server = Negentropy(Storage(b), server_limit)
    msg = client.initiate()
    have, need, rounds, up, down = [], [], 0, 0, 0
    while msg is not None:
        assert not client_limit or len(msg) <= client_limit
        up += len(msg)
        answer = server.reconcile(msg)
        assert not server_limit or len(answer) <= server_limit
        down += len(answer)
        rounds += 1
        assert rounds <= max_rounds, "reconciliation does not terminate"
        msg, h, n = client.reconcile_client(answer)
        have += h
        need += n
    return have, need, rounds, up, down


def make_sets(seed, common, only_a, only_b, ts_span, shared_prefix=0):
    """Random item sets; ids share their first `shared_prefix` bytes to stress minimal bounds."""
    rng = random.Random(seed)
    prefix = rng.randbytes(shared_prefix)
    seen = set()

    def item():  # ids are unique across both sets, as envelope ids are
        while (item_id := prefix + rng.randbytes(32 - shared_prefix)) in seen:
            pass
        seen.add(item_id)
        return T0 + rng.randrange(ts_span), item_id

    base = [item() for _ in range(common)]
    a_extra = [item() for _ in range(only_a)]
    b_extra = [item() for _ in range(only_b)]
    return base + a_extra, base + b_extra


def id_set(items):
    return {i for _, i in items}


# ---------------------------------------------------------------- §Varint


VARINT_VECTORS = [  # reference: Kotlin port's VarIntTest
    (0, "00"), (1, "01"), (2, "02"), (127, "7f"), (128, "8100"), (255, "817f"),
    (256, "8200"), (65535, "83ff7f"), (65536, "848000"), (65537, "848001"),
]


@pytest.mark.parametrize("value,hex_", VARINT_VECTORS)
def test_varint_vectors(value, hex_):
    assert encode_varint(value).hex() == hex_
    assert decode_varint(bytes.fromhex(hex_)) == (value, len(hex_) // 2)


def test_varint_edge_values():
    assert encode_varint(2**64 - 1) == b"\x81" + b"\xff" * 8 + b"\x7f"
    assert decode_varint(encode_varint(2**64 - 1)) == (2**64 - 1, 10)
    assert decode_varint(b"\x05\x99", 0) == (5, 1)  # stops at the first byte without high bit
    with pytest.raises(ValueError):
        encode_varint(-1)


@given(st.integers(0, 2**64 - 1))
def test_varint_matches_spec_and_round_trips(n):
    enc = encode_varint(n)
    assert enc == spec_varint(n)
    assert decode_varint(enc + b"tail") == (n, len(enc))


@pytest.mark.parametrize("raw,reason", [
    (b"", "ends inside"), (b"\x80", "ends inside"), (b"\xff\xff", "ends inside"),
    (b"\x82" + b"\x80" * 8 + b"\x00", "exceeds 64 bits"),  # 2^64
    (b"\x80" * 10 + b"\x01", "longer than"),
])
def test_varint_malformed(raw, reason):
    with pytest.raises(NegentropyError, match=reason):
        decode_varint(raw)


# ---------------------------------------------------------------- §Bound


def test_bound_timestamp_vectors():
    # reference: Kotlin port's MessageBuilderTest (timestamps delta-coded, +1)
    enc = BoundEncoder()
    assert enc.encode((1678011277, b"")).hex() == "86a091d70e00"
    for ts in (1678011278, 1678011279, 1678011280):
        assert enc.encode((ts, b"")).hex() == "0200"
    full_id = bytes.fromhex("eb6b05c2e3b008592ac666594d78ed83e7b9ab30f825b9b08878128f7500008c")
    assert BoundEncoder().encode((1678011277, full_id)).hex() == "86a091d70e20" + full_id.hex()


def test_bound_infinity_and_same_timestamp():
    enc = BoundEncoder()
    assert enc.encode((5, b"\xab")) == b"\x06\x01\xab"  # 1 + (5 - 0), 1-byte prefix
    assert enc.encode((5, b"\xac\x00")) == b"\x01\x02\xac\x00"  # same timestamp: offset 0 -> 1
    assert enc.encode((INFINITY, b"")) == b"\x00\x00"
    dec = BoundDecoder()
    reader = Reader(b"\x06\x01\xab\x01\x02\xac\x00\x00\x00")
    assert [dec.decode(reader) for _ in range(3)] == [(5, b"\xab"), (5, b"\xac\x00"), (INFINITY, b"")]


def test_bound_decode_saturates_and_rejects_long_prefix():
    dec = BoundDecoder()
    big = encode_varint(2**64 - 1)  # offset that overflows 64 bits -> infinity
    assert dec.decode(Reader(encode_varint(10) + b"\x00"))[0] == 9
    assert dec.decode(Reader(big + b"\x00"))[0] == INFINITY
    with pytest.raises(NegentropyError, match="prefix of 33 bytes"):
        BoundDecoder().decode(Reader(b"\x01\x21" + bytes(33)))
    with pytest.raises(NegentropyError, match="ends inside bound id prefix"):
        BoundDecoder().decode(Reader(b"\x01\x05\x00"))


@given(st.lists(st.tuples(st.integers(0, 2**64 - 2), st.binary(max_size=32)), max_size=20))
def test_bounds_round_trip_within_one_message(bounds):
    bounds = sorted(bounds, key=bound_key) + [(INFINITY, b"")]
    enc = BoundEncoder()
    wire = b"".join(enc.encode(b) for b in bounds)
    dec, reader = BoundDecoder(), Reader(wire)
    assert [dec.decode(reader) for _ in bounds] == bounds
    assert reader.remaining() == 0


@given(st.integers(0, 100), st.integers(0, 100), st.binary(min_size=32, max_size=32),
       st.binary(min_size=32, max_size=32))
def test_minimal_bound_separates_neighbours(t1, t2, id1, id2):
    prev, curr = sorted([(t1, id1), (t2, id2)])
    if prev == curr:
        return
    bound = minimal_bound(prev, curr)
    assert prev < bound_key(bound) <= curr
    if prev[0] != curr[0]:
        assert bound == (curr[0], b"")
    else:  # §Bound: common prefix length + 1
        common = next(i for i in range(32) if prev[1][i] != curr[1][i])
        assert bound == (curr[0], curr[1][: common + 1])


# ---------------------------------------------------------------- §Fingerprint, Storage


FP_IDS = [bytes.fromhex(h) for h in (
    "eb6b05c2e3b008592ac666594d78ed83e7b9ab30f825b9b08878128f7500008c",
    "39b916432333e069a4386917609215cc688eb99f06fed01aadc29b1b4b92d6f0",
    "abc81d58ebe3b9a87100d47f58bf15e9b1cbf62d38623f11d0f0d17179f5f3ba",
)]


@pytest.mark.parametrize("count,expected", [  # reference: Kotlin port's FingerprintTest
    (1, "6d74e1212fcafc8a81d090f0ffbde8b0"),
    (2, "96b26d110825d4b1805fc56988a3e65d"),
    (3, "c15ce60f185fd24ae341076caa93daa5"),
])
def test_fingerprint_reference_vectors(count, expected):
    storage = Storage([(1678011277 + i, FP_IDS[i]) for i in range(3)])
    assert storage.fingerprint(0, count).hex() == expected
    assert spec_fingerprint(FP_IDS[:count]).hex() == expected


def test_fingerprint_wraps_mod_2_256_and_counts():
    ones = b"\xff" * 32  # 2^256 - 1; two of them wrap to 2^256 - 2
    assert fingerprint(2 * (2**256 - 1), 2) == hashlib.sha256(
        (2**256 - 2).to_bytes(32, "little") + b"\x02").digest()[:16]
    assert Storage([(1, ones), (2, ones)]).fingerprint(0, 2) == spec_fingerprint([ones, ones])
    assert fingerprint(0, 0) == hashlib.sha256(bytes(32) + b"\x00").digest()[:16]


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(0, 5), st.binary(min_size=32, max_size=32)), max_size=60),
       st.data())
def test_storage_sorts_dedups_and_fingerprints_any_range(items, data):
    storage = Storage(items + items[:3])
    expected = sorted(set(items))
    assert [storage.item(i) for i in range(len(storage))] == expected
    lo = data.draw(st.integers(0, len(expected)))
    hi = data.draw(st.integers(lo, len(expected)))
    assert storage.fingerprint(lo, hi) == spec_fingerprint([i for _, i in expected[lo:hi]])


@pytest.mark.parametrize("bad", [[(-1, bytes(32))], [(INFINITY, bytes(32))], [(1, bytes(31))], [(1.5, bytes(32))]])
def test_storage_rejects_bad_items(bad):
    with pytest.raises(ValueError):
        Storage(bad)


def test_frame_size_limit_minimum():
    with pytest.raises(ValueError):
        Negentropy(Storage([]), 4095)
    Negentropy(Storage([]), 4096)


# ---------------------------------------------------------------- §Message: reference transcript


LANG1_ITEMS = """\
1677970552 8406d9844fb8f5a5baf3a5cd7478afa6e43d7088b4416dc2013a53fa3447ee95
1677970555 93246d67348837e094593d01e9c734c0965f278b9c7594d2be9586568e391dd4
1677970553 91235f37e2f90794f989ed15bae2c1f733fe402f022ba54c4e3fd370aa1c0aff
1677970543 c7e469248b8451c3970a0cbb72c0b233688759720c3e5ca111e7e37bf11722cd
1677970552 f971e429278b863127ef97354cc47a1f394fbb2aaa58d2c8ed3d2427b71cefe3
1677970542 72527ebd1c5c95354693c3b0d6fc187ba8d02538ce9570ba0d174d67a1e659f1
1677970540 fff4462dcdaaba80cc085c529263c2b1a1435d07c06b8ee5f4adbfd459818540
1677970553 b902a1aebb9d1ddb777d1446f8dd6a6f1116d0c3c9836edbc69eb0d3aeebe4c0
1677970548 4d1eff6693caef73f3f32eb142f77eee297d29d3b3180d913106d9f53c3c030a
1677970536 ca047f2a40edb443bab8dc31929f8e5457d9deac5415c287a090a28a2efdf63b
1677970536 9a92950a4498c11158d8b084be8048b38b78b18351dda2f41c278338d39204d2
1677970543 71365dfcf3378bb07164560675874f08db063eb4714dee05c77fa5f8d6ed05e3
1677970557 451fc9214992bd951527eecd9ad2b01647c0ceeae55dda7ca234bf573c6d5e2d
1677970538 ef3e606c1b9291b7ba1eaa119b431763ae8a41c0da9f60c8df81e6cb85f8fc75
1677970540 df146798366d0f399fedc8aaec88c9c80ce935ebf6dc19321ca4d48c9f0bc16e
1677970544 6796ba8d1a9207251d6652ee56a66a92ad680d5a3f118fdff3eb7710ab45f18a
1677970537 f8c2e717ae854234abcd89b852002d52c52101edd690ae305f61d6215ccfd114
1677970557 6f8d146c74f5574840e8d82897a757da4b67774eafdd4bc5fdfb3ec6febfccf5
1677970537 b3489cf0594b805a4a45c25327b12ac7c932a02027d36e5f37f8cb53c37d47e7
1677970537 774ee3ba38031494956d5a68822151693f61f2be3c81c376ee162e8dc447bea0
1677970555 d966df16c619a5349d5b2d0125486f7d25e231ea1d546dd453513e8fab3be610
1677970540 3ada797b897747c1f6a389025bc03aba5c706f22f7bd60e4a2d9dabcfe21c324
1677970553 ed3784f35f4029450f498d8c3f6acc61d90c7706f77ca1f4f75240f49aafe919
1677970553 6a05af1884967975a30a83c96915abe34b8b24a0b2cc91791f4207e526be75ea
1677970539 bb5c51baa893adb59c4928cc3fa21a568f3e806de3e51647a21a5ea46c4edb38"""


def lang1_items():
    return [(int(t), bytes.fromhex(h)) for t, h in (line.split() for line in LANG1_ITEMS.splitlines())]


def test_initiate_matches_reference_transcript():
    """reference: lang1 transcript (JS/Kotlin): 25 items -> one IdList over the whole space."""
    items = lang1_items()
    msg = Negentropy(Storage(items)).initiate()
    ordered = sorted(items)
    # version, bound (infinity, no prefix), mode IdList, count 25, ids in (timestamp, id) order
    assert msg == b"\x61\x00\x00\x02\x19" + b"".join(i for _, i in ordered)
    assert msg.hex().startswith("61000002199a92950a4498c11158d8b084be8048b38b78b18351dda2f41c278338d39204d2ca047f2a")


def test_initiate_splits_large_sets_into_16_fingerprints():
    items = [(T0 + i, i.to_bytes(32, "big")) for i in range(320)]
    msg = Negentropy(Storage(items)).initiate()
    reader, dec, bounds = Reader(msg[1:]), BoundDecoder(), []
    for _ in range(16):
        bounds.append(dec.decode(reader))
        assert reader.varint("mode") == 1
        reader.take(16, "fp")
    assert reader.remaining() == 0 and msg[0] == 0x61
    # buckets of 20: minimal bounds are the 21st, 41st, ... timestamps with no id prefix
    assert bounds == [(T0 + 20 * k, b"") for k in range(1, 16)] + [(INFINITY, b"")]


def test_in_sync_small_sets_answer_then_done():
    items = lang1_items()
    server = Negentropy(Storage(items))
    client = Negentropy(Storage(items))
    answer = server.reconcile(client.initiate())
    assert answer[:5] == b"\x61\x00\x00\x02\x19"  # the server answers an IdList with its own
    assert client.reconcile_client(answer) == (None, [], [])


# ---------------------------------------------------------------- reconciliation properties


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    common=st.integers(0, 400),
    only_a=st.integers(0, 80),
    only_b=st.integers(0, 80),
    ts_span=st.sampled_from([1, 3, 50, 10**6]),  # 1: every item shares one timestamp
    shared_prefix=st.sampled_from([0, 0, 2, 29]),
    client_limit=st.sampled_from([0, 4096]),
    server_limit=st.sampled_from([0, 4096]),
)
def test_reconcile_finds_exact_symmetric_difference(seed, common, only_a, only_b, ts_span, shared_prefix,
                                                   client_limit, server_limit):
    a, b = make_sets(seed, common, only_a, only_b, ts_span, shared_prefix)
    have, need, *_ = sync(a, b, client_limit, server_limit)
    assert len(have) == len(set(have)) and len(need) == len(set(need))  # each id reported once
    assert set(have) == id_set(a) - id_set(b)
    assert set(need) == id_set(b) - id_set(a)


@pytest.mark.parametrize("limit", [0, 4096])
@pytest.mark.parametrize("shape", ["disjoint", "client_empty", "server_empty", "equal", "both_empty"])
def test_reconcile_edge_shapes(shape, limit):
    rng = random.Random(7)
    x = [(T0 + rng.randrange(1000), rng.randbytes(32)) for _ in range(3000)]
    y = [(T0 + rng.randrange(1000), rng.randbytes(32)) for _ in range(3000)]
    a, b = {"disjoint": (x, y), "client_empty": ([], y), "server_empty": (x, []),
            "equal": (x, list(reversed(x))), "both_empty": ([], [])}[shape]
    have, need, rounds, up, down = sync(a, b, limit, limit)
    assert sorted(have) == sorted(id_set(a) - id_set(b))
    assert sorted(need) == sorted(id_set(b) - id_set(a))
    if shape in ("equal", "both_empty"):
        assert rounds == 1


@pytest.mark.parametrize("limit", [0, 4096])
def test_reconcile_5k_sets_with_identical_timestamps(limit):
    a, b = make_sets(11, common=5000, only_a=150, only_b=120, ts_span=4, shared_prefix=1)
    have, need, *_ = sync(a, b, limit, limit)
    assert set(have) == id_set(a) - id_set(b) and len(have) == 150
    assert set(need) == id_set(b) - id_set(a) and len(need) == 120


def test_client_limit_only_and_server_limit_only():
    a, b = make_sets(3, common=6000, only_a=60, only_b=60, ts_span=10**5)
    for client_limit, server_limit in ((4096, 0), (0, 4096)):
        have, need, *_ = sync(a, b, client_limit, server_limit)
        assert set(have) == id_set(a) - id_set(b) and set(need) == id_set(b) - id_set(a)


# ---------------------------------------------------------------- 20k-item figures


@pytest.fixture(scope="module")
def corpus_20k():
    rng = random.Random(2024)
    base = [(T0 + rng.randrange(20000 * 30), rng.randbytes(32)) for _ in range(20000)]
    extra_a = [(T0 + rng.randrange(20000 * 30), rng.randbytes(32)) for _ in range(100)]
    extra_b = [(T0 + rng.randrange(20000 * 30), rng.randbytes(32)) for _ in range(100)]
    return base, extra_a, extra_b


def test_in_sync_20k_is_one_round_trip_of_a_few_hundred_bytes(corpus_20k):
    base, _, _ = corpus_20k
    have, need, rounds, up, down = sync(base, list(reversed(base)))
    print(f"in_sync_20k: rounds={rounds} up={up} down={down}")
    assert (have, need, rounds) == ([], [], 1)
    assert up + down < 500 and down == 1


@pytest.mark.parametrize("limit", [0, 4096])
def test_20k_with_1_percent_difference(corpus_20k, limit):
    base, extra_a, extra_b = corpus_20k
    start = time.perf_counter()
    have, need, rounds, up, down = sync(base + extra_a, base + extra_b, limit, limit)
    elapsed = time.perf_counter() - start
    print(f"diff_20k limit={limit}: rounds={rounds} up={up} down={down} seconds={elapsed:.3f}")
    assert set(have) == id_set(extra_a) and set(need) == id_set(extra_b)
    assert rounds <= (3 if limit == 0 else 40)
    assert up + down < (150_000 if limit == 0 else 400_000)  # O(difference), not O(corpus)=640 kB
    # No wall-clock bound here: on a loaded machine it measures the machine (scripts/bench/gossip
    # measures speed); the rounds and bytes above are what the algorithm promises.


# ---------------------------------------------------------------- versions and malformed input


def test_server_answers_unsupported_version_with_its_own():
    server = Negentropy(Storage(lang1_items()))
    assert server.reconcile(b"\x62\xaa\xbb\xcc") == b"\x61"
    assert server.reconcile(b"\x60") == b"\x61"
    assert server.reconcile(b"\x61") == b"\x61"  # no ranges: nothing to say


def test_client_rejects_downgrade_reply():
    client = Negentropy(Storage(lang1_items()))
    client.initiate()
    with pytest.raises(NegentropyError, match="version 0"):
        client.reconcile_client(b"\x60")


@pytest.mark.parametrize("msg,reason", [
    (b"", "empty message"),
    (b"\x00", "invalid protocol version"),
    (b"\x70\x00\x00\x00", "invalid protocol version"),
    (b"\x61\x00\x00\x03", "unknown range mode 3"),
    (b"\x61\x00\x00\x01" + bytes(15), "ends inside fingerprint"),
    (b"\x61\x00\x00\x02\x02" + bytes(63), "IdList of 2 ids"),
    (b"\x61\x00\x00\x02\x8f\xff\xff\xff\x7f", "IdList of"),
    (b"\x61\x00\x21" + bytes(33) + b"\x00", "prefix of 33 bytes"),
    (b"\x61\x05\x01\x09\x00\x01\x01\x05\x00", "out of order"),  # (4, 09..) then (4, 05..)
    (b"\x61\x05\x00", "ends inside mode"),
    (b"\x61\x82\x80\x80\x80\x80\x80\x80\x80\x80\x00\x00\x00", "exceeds 64 bits"),
])
def test_malformed_messages_raise_with_reason(msg, reason):
    server = Negentropy(Storage(lang1_items()))
    with pytest.raises(NegentropyError, match=reason):
        server.reconcile(msg)
    client = Negentropy(Storage(lang1_items()))
    client.initiate()
    with pytest.raises(NegentropyError, match=reason):
        client.reconcile_client(msg)


def _check_only_negentropy_error(call, msg):
    try:
        out = call(msg)
    except NegentropyError as err:
        assert str(err)
    else:
        assert out is None or isinstance(out, (bytes, tuple))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.binary(max_size=60).map(lambda b: b"\x61" + b))
def test_fuzz_random_bytes_raise_only_negentropy_error(msg):
    storage = Storage(make_sets(1, 100, 0, 0, 50)[0])
    _check_only_negentropy_error(Negentropy(storage).reconcile, msg)
    _check_only_negentropy_error(Negentropy(storage, 4096).reconcile, msg)
    client = Negentropy(storage)
    client.initiate()
    _check_only_negentropy_error(client.reconcile_client, msg)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_fuzz_truncated_and_mutated_valid_messages(data):
    a, b = make_sets(data.draw(st.integers(0, 1000)), 300, 20, 20, 40, data.draw(st.sampled_from([0, 29])))
    client, server = Negentropy(Storage(a)), Negentropy(Storage(b))
    first = client.initiate()
    answer = server.reconcile(first)
    for msg, target in ((first, Negentropy(Storage(b)).reconcile), (answer, client.reconcile_client)):
        cut = data.draw(st.integers(0, len(msg) - 1))
        _check_only_negentropy_error(target, msg[:cut])
        pos = data.draw(st.integers(0, len(msg) - 1))
        mutated = msg[:pos] + bytes([data.draw(st.integers(0, 255))]) + msg[pos + 1 :]
        _check_only_negentropy_error(target, mutated)


def test_truncation_inside_a_range_is_an_error():
    msg = Negentropy(Storage(lang1_items())).initiate()  # one IdList range of 25 ids
    for cut in (2, 3, 4, 5, 6, len(msg) - 1):
        with pytest.raises(NegentropyError):
            Negentropy(Storage([])).reconcile(msg[:cut])


# ---------------------------------------------------------------- conformance harness adapter


def test_harness_script_speaks_the_reference_line_protocol():
    """Drive two scripts/negentropy_harness.py processes as hoytech's test/fuzz.pl does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "negentropy_harness.py"
    a, b = make_sets(5, common=500, only_a=7, only_b=9, ts_span=100)

    def start(items, limit):
        env = dict(os.environ, FRAMESIZELIMIT=str(limit))
        proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        proc.stdin.write("".join(f"item,{t},{i.hex()}\n" for t, i in items) + "seal\n")
        return proc

    def send(proc, line):
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    client, server = start(a, 4096), start(b, 0)
    try:
        send(client, "initiate")
        have, need = set(), set()
        for _ in range(100):
            line = client.stdout.readline().strip()
            kind, _, value = line.partition(",")
            if kind in ("have", "need"):
                (have if kind == "have" else need).add(bytes.fromhex(value))
                continue
            if kind == "done":
                break
            assert kind == "msg" and len(value) // 2 <= 4096
            send(server, line)
            send(client, server.stdout.readline().strip())
        else:
            raise AssertionError("harness session did not finish")
    finally:
        for proc in (client, server):
            proc.stdin.close()
            proc.wait(timeout=10)
    assert have == id_set(a) - id_set(b) and len(have) == 7
    assert need == id_set(b) - id_set(a) and len(need) == 9
