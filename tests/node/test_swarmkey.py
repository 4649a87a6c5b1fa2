"""Private swarm sealing: key files, pure seal/open, and a real aiohttp server on a loopback port.

Run: .venv/bin/python -m pytest tests/node/test_swarmkey.py -q
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import stat
import time

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.errors import UserError
from node.net.swarmkey import (
    AUTH_HEADER, SKEW_S, ReplayCache, SwarmAuthError, SwarmKey, SwarmKeyError, generate_swarm_key,
    install_swarm_key, open_request, open_response, read_json, seal_request, seal_response, swarm_key_middleware,
    swarm_request,
)

SECRET = bytes(range(32))
KEY = SwarmKey.from_secret(SECRET, "lab")
NOW = 1_700_000_000.0


# -- key file ---------------------------------------------------------------------------------

def test_generate_writes_0600_hex_and_loads(tmp_path):
    path = generate_swarm_key(tmp_path / "sub" / "swarm.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert len(text.strip()) == 64 and int(text, 16) >= 0
    a, b = SwarmKey.load(path, "lab"), SwarmKey.load(path, "lab")
    assert a == b and a.swarm == "lab"
    assert SwarmKey.from_secret(bytes.fromhex(text.strip()), "lab") == a
    # two generated keys differ: the bytes come from the OS RNG, not a constant
    assert generate_swarm_key(tmp_path / "other.key").read_text() != text


def test_generate_refuses_to_overwrite(tmp_path):
    path = generate_swarm_key(tmp_path / "k")
    before = path.read_text()
    with pytest.raises(SwarmKeyError, match="already exists"):
        generate_swarm_key(path)
    assert path.read_text() == before
    generate_swarm_key(path, overwrite=True)
    assert path.read_text() != before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_load_refuses_files_others_can_access(tmp_path, mode):
    path = generate_swarm_key(tmp_path / "k")
    os.chmod(path, mode)
    with pytest.raises(SwarmKeyError, match=f"chmod 600 {path}") as info:
        SwarmKey.load(path, "lab")
    assert isinstance(info.value, UserError)  # the CLI edge prints it as one line


@pytest.mark.parametrize(
    "content, match",
    [
        ("not hex at all\n", "not one line of hex"),
        ("abc\n", "not one line of hex"),  # odd length
        ("", "not one line of hex"),
        ("00" * 32 + "\n" + "00" * 32, "not one line of hex"),  # two lines
        ("ab" * 16 + "\n", "too short: 16 bytes"),
        ("ab" * 31, "too short: 31 bytes"),
        ("a" * 5000, "not one line of hex"),  # far too big to be a key
    ],
)
def test_load_refuses_malformed_or_short(tmp_path, content, match):
    path = tmp_path / "k"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(SwarmKeyError, match=match):
        SwarmKey.load(path, "lab")


def test_load_missing_or_not_a_file(tmp_path):
    with pytest.raises(SwarmKeyError, match="no swarm key file"):
        SwarmKey.load(tmp_path / "absent", "lab")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(SwarmKeyError, match="not a regular file"):
        SwarmKey.load(d, "lab")


def test_load_accepts_longer_and_uppercase_keys(tmp_path):
    path = tmp_path / "k"
    path.write_text(("AB" * 48) + "\n")
    os.chmod(path, 0o600)
    assert SwarmKey.load(path, "lab") == SwarmKey.from_secret(b"\xab" * 48, "lab")


def _hkdf_rfc5869(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 written out from RFC 5869 with hmac, independent of the module's implementation."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()  # 32 bytes = one block


def test_keys_are_hkdf_bound_to_direction_and_swarm_name():
    salt = b"ralphswarm swarm key v1"
    assert KEY.request_key == _hkdf_rfc5869(SECRET, salt, b"ralphswarm v1 request|lab")
    assert KEY.response_key == _hkdf_rfc5869(SECRET, salt, b"ralphswarm v1 response|lab")
    other = SwarmKey.from_secret(SECRET, "lab2")
    assert len({KEY.request_key, KEY.response_key, other.request_key, other.response_key}) == 4
    assert SECRET.hex() not in repr(KEY) and "request_key" not in repr(KEY)


# -- pure seal / open -------------------------------------------------------------------------

def _open(key=KEY, method="POST", path="/v1/messages", headers=None, body=None, now=NOW, cache=None):
    return open_request(key, method, path, headers, body, now, cache if cache is not None else ReplayCache())


def test_associated_data_is_canonical_json():
    # SPEC.md 10.3: canon (no spaces, raw UTF-8), not json.dumps' default spacing and ASCII escapes
    from node.net.swarmkey import _request_ad, _response_ad

    key = SwarmKey.from_secret(SECRET, "caf\u00e9")
    request_ad = '["ralphswarm-request","v1","caf\u00e9","POST","/v1/x?a=1",17]'.encode()
    assert _request_ad(key, "post", "/v1/x?a=1", 17) == request_ad
    response_ad = '["ralphswarm-response","v1","caf\u00e9","' + "00" * 12 + '",404]'
    assert _response_ad(key, bytes(12), 404) == response_ad.encode()


def test_a_target_that_cannot_be_encoded_is_refused_not_a_crash():
    headers, sealed = seal_request(KEY, "GET", "/ok", b"", NOW)
    with pytest.raises(SwarmAuthError, match="cannot be encoded"):
        _open(method="GET", path="/\udcff", headers=headers, body=sealed)


def test_fixed_nonces_are_for_vectors_and_must_be_12_bytes():
    a = seal_request(KEY, "GET", "/p", b"", NOW, nonce=bytes(12))
    assert a == seal_request(KEY, "GET", "/p", b"", NOW, nonce=bytes(12)) and a[0][AUTH_HEADER].endswith("00" * 12)
    with pytest.raises(ValueError):
        seal_request(KEY, "GET", "/p", b"", NOW, nonce=bytes(11))
    with pytest.raises(ValueError):
        seal_response(KEY, bytes(12), 200, b"", nonce=bytes(13))


def test_request_round_trip_hides_plaintext():
    headers, sealed = seal_request(KEY, "post", "/v1/messages?x=1", b'{"secret": "corpus"}', NOW)
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers[AUTH_HEADER].startswith(f"v1 {int(NOW)} ")
    assert b"corpus" not in sealed
    assert _open(method="POST", path="/v1/messages?x=1", headers=headers, body=sealed) == b'{"secret": "corpus"}'
    # same plaintext twice gives different ciphertexts: fresh random nonces
    assert seal_request(KEY, "POST", "/p", b"x", NOW)[1] != seal_request(KEY, "POST", "/p", b"x", NOW)[1]


@pytest.mark.parametrize(
    "change",
    [
        dict(key=SwarmKey.from_secret(b"\x01" * 32, "lab")),
        dict(key=SwarmKey.from_secret(SECRET, "other-swarm")),
        dict(method="PUT"),
        dict(path="/v1/peers"),
        dict(path="/v1/messages?x=2"),
    ],
)
def test_request_bound_to_key_swarm_method_and_path(change):
    headers, sealed = seal_request(KEY, "POST", "/v1/messages", b"{}", NOW)
    assert _open(headers=headers, body=sealed) == b"{}"
    with pytest.raises(SwarmAuthError, match="bad request tag"):
        _open(headers=headers, body=sealed, **change)


def test_request_tampered_body_or_timestamp():
    headers, sealed = seal_request(KEY, "POST", "/v1/messages", b"hello", NOW)
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(SwarmAuthError, match="bad request tag"):
        _open(headers=headers, body=flipped)
    _, ts, nonce = headers[AUTH_HEADER].split()
    moved = {AUTH_HEADER: f"v1 {int(ts) + 1} {nonce}"}
    with pytest.raises(SwarmAuthError, match="bad request tag"):
        _open(headers=moved, body=sealed)


def test_request_stale_or_future():
    headers, sealed = seal_request(KEY, "POST", "/v1/messages", b"x", NOW)
    assert _open(headers=headers, body=sealed, now=NOW + SKEW_S) == b"x"
    assert _open(headers=headers, body=sealed, now=NOW - SKEW_S) == b"x"
    with pytest.raises(SwarmAuthError, match="stale"):
        _open(headers=headers, body=sealed, now=NOW + SKEW_S + 1)
    with pytest.raises(SwarmAuthError, match="future"):
        _open(headers=headers, body=sealed, now=NOW - SKEW_S - 1)


@pytest.mark.parametrize(
    "headers, match",
    [
        ({}, "missing"),
        ({AUTH_HEADER: ""}, "garbled"),
        ({AUTH_HEADER: "v2 1700000000 " + "00" * 12}, "garbled"),
        ({AUTH_HEADER: "v1 1700000000 " + "00" * 11}, "garbled"),
        ({AUTH_HEADER: "v1 -5 " + "00" * 12}, "garbled"),
        ({AUTH_HEADER: "v1 1700000000 " + "zz" * 12}, "garbled"),
        ({AUTH_HEADER: "v1  1700000000 " + "00" * 12}, "garbled"),
    ],
)
def test_request_missing_or_garbled_header(headers, match):
    with pytest.raises(SwarmAuthError, match=match):
        _open(headers=headers, body=b"\x00" * 16)


def test_replay_rejected_then_forgotten_only_once_stale():
    cache = ReplayCache()
    headers, sealed = seal_request(KEY, "POST", "/v1/messages", b"x", NOW)
    assert _open(headers=headers, body=sealed, cache=cache) == b"x"
    with pytest.raises(SwarmAuthError, match="replayed"):
        _open(headers=headers, body=sealed, cache=cache, now=NOW + SKEW_S)
    # once the timestamp is stale the timestamp check rejects it, so the cache may drop it
    other_headers, other = seal_request(KEY, "POST", "/v1/messages", b"y", NOW + SKEW_S + 1)
    _open(headers=other_headers, body=other, cache=cache, now=NOW + SKEW_S + 1)
    assert len(cache) == 1
    with pytest.raises(SwarmAuthError, match="stale"):
        _open(headers=headers, body=sealed, cache=cache, now=NOW + SKEW_S + 1)


def test_unauthentic_requests_do_not_fill_the_replay_cache():
    cache = ReplayCache()
    headers, sealed = seal_request(SwarmKey.from_secret(b"\x07" * 32, "lab"), "POST", "/v1/messages", b"x", NOW)
    with pytest.raises(SwarmAuthError):
        _open(headers=headers, body=sealed, cache=cache)
    assert len(cache) == 0


def test_full_replay_cache_raises_floor_instead_of_forgetting():
    cache = ReplayCache(max_entries=2)
    sealed = [seal_request(KEY, "GET", "/p", b"", NOW + i) for i in range(3)]
    for i, (h, b) in enumerate(sealed):
        _open(method="GET", path="/p", headers=h, body=b, cache=cache, now=NOW + i)
    assert len(cache) == 2 and cache.floor == int(NOW)
    # the evicted first request is still refused: its timestamp is at the floor
    with pytest.raises(SwarmAuthError, match="replay window full"):
        _open(method="GET", path="/p", headers=sealed[0][0], body=sealed[0][1], cache=cache, now=NOW + 2)
    with pytest.raises(SwarmAuthError, match="replayed"):
        _open(method="GET", path="/p", headers=sealed[2][0], body=sealed[2][1], cache=cache, now=NOW + 2)


def test_response_bound_to_request_status_and_direction():
    n1, n2 = os.urandom(12), os.urandom(12)
    sealed = seal_response(KEY, n1, 200, b'{"ok": true}')
    assert b"ok" not in sealed
    assert open_response(KEY, n1, 200, sealed) == b'{"ok": true}'
    with pytest.raises(SwarmAuthError, match="does not open"):
        open_response(KEY, n2, 200, sealed)  # another request's answer
    with pytest.raises(SwarmAuthError, match="does not open"):
        open_response(KEY, n1, 404, sealed)  # status rewritten in transit
    with pytest.raises(SwarmAuthError, match="does not open"):
        open_response(SwarmKey.from_secret(SECRET, "lab2"), n1, 200, sealed)
    with pytest.raises(SwarmAuthError, match="not sealed"):
        open_response(KEY, n1, 200, b'{"ok": true}')
    # a sealed request reflected back as an answer does not open: separate direction keys
    headers, req = seal_request(KEY, "POST", "/p", b"reflect me", NOW)
    nonce = bytes.fromhex(headers[AUTH_HEADER].split()[2])
    with pytest.raises(SwarmAuthError):
        open_response(KEY, nonce, 200, nonce + req)


_HEADERS, _SEALED = seal_request(KEY, "POST", "/v1/messages?since=5", b'{"envelope": "abc"}', NOW)
_HEADER = _HEADERS[AUTH_HEADER].encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(_HEADER) + len(_SEALED) - 1), xor=st.integers(1, 255))
def test_any_single_byte_change_of_a_sealed_request_is_rejected(index, xor):
    wire = bytearray(_HEADER + _SEALED)  # what an attacker on the path can alter: auth header and body
    wire[index] ^= xor
    headers = {AUTH_HEADER: bytes(wire[: len(_HEADER)]).decode("latin-1")}
    with pytest.raises(SwarmAuthError):
        _open(path="/v1/messages?since=5", headers=headers, body=bytes(wire[len(_HEADER):]))


def test_unchanged_wire_opens():  # the property above would pass vacuously if this failed
    assert _open(path="/v1/messages?since=5", headers=_HEADERS, body=_SEALED) == b'{"envelope": "abc"}'


# -- a real server --------------------------------------------------------------------------

HITS = web.AppKey("hits", list)


async def _echo(request: web.Request) -> web.Response:
    request.app[HITS].append(request.path)
    return web.json_response({"got": await read_json(request), "qs": request.query_string})


async def _secret(request: web.Request) -> web.Response:
    request.app[HITS].append(request.path)
    return web.json_response({"secret": "the corpus"})


async def _stream(request: web.Request) -> web.StreamResponse:
    request.app[HITS].append(request.path)
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"the corpus")
    return resp


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("handler bug")


@contextlib.asynccontextmanager
async def serve(key: SwarmKey | None, client_max_size: int = 1024**2):
    app = web.Application(client_max_size=client_max_size)
    if key is not None:
        install_swarm_key(app, key)
    app[HITS] = []
    app.router.add_post("/echo", _echo)
    app.router.add_get("/secret", _secret)
    app.router.add_get("/stream", _stream)
    app.router.add_get("/boom", _boom)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{port}", app[HITS], session
    finally:
        await runner.cleanup()


async def test_http_round_trip_with_query_and_non_ascii():
    async with serve(KEY) as (base, hits, session):
        status, data = await swarm_request(session, "POST", base + "/echo?a=1&b=é v", key=KEY, json_body={"x": "ü"})
        assert status == 200 and data == {"got": {"x": "ü"}, "qs": "a=1&b=é v"}
        status, data = await swarm_request(session, "GET", base + "/secret", key=KEY)
        assert (status, data) == (200, {"secret": "the corpus"})
        assert hits == ["/echo", "/secret"]


async def test_http_errors_are_sealed_too():
    async with serve(KEY) as (base, hits, session):
        assert (await swarm_request(session, "GET", base + "/nope", key=KEY))[0] == 404
        status, data = await swarm_request(session, "POST", base + "/echo", key=KEY)  # empty body: not JSON
        assert status == 400 and "invalid JSON" in data
        assert await swarm_request(session, "GET", base + "/boom", key=KEY) == (500, {"error": "internal error"})
        # a streamed answer cannot be sealed: the connection drops before a single header goes out
        port = int(base.rsplit(":", 1)[1])
        headers, sealed = seal_request(KEY, "GET", "/stream", b"", time.time())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET /stream HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(sealed)}\r\n\r\n".encode() + sealed)
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert raw == b"" and hits[-1] == "/stream"


async def test_plain_middleware_seals_non_streamed_answers():
    app = web.Application(middlewares=[swarm_key_middleware(KEY)])
    app[HITS] = []
    app.router.add_get("/secret", _secret)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/secret"
            assert await swarm_request(session, "GET", url, key=KEY) == (200, {"secret": "the corpus"})
            assert (await swarm_request(session, "GET", url, key=None))[0] == 401
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("client_key", [SwarmKey.from_secret(b"\x09" * 32, "lab"), SwarmKey.from_secret(SECRET, "lab2")])
async def test_http_wrong_key_or_other_swarm_gets_401(client_key):
    async with serve(KEY) as (base, hits, session):
        for method, path in (("GET", "/secret"), ("POST", "/echo"), ("GET", "/nope")):
            with pytest.raises(SwarmAuthError, match="refused.*bad request tag"):
                await swarm_request(session, method, base + path, key=client_key, json_body={"x": 1})
        assert hits == []


async def test_http_plain_client_can_neither_read_nor_inject():
    async with serve(KEY) as (base, hits, session):
        status, data = await swarm_request(session, "GET", base + "/secret", key=None)
        assert status == 401 and "the corpus" not in str(data) and "missing swarm auth header" in data["error"]
        status, _ = await swarm_request(session, "POST", base + "/echo", key=None, json_body={"inject": True})
        assert status == 401
        status, _ = await swarm_request(session, "GET", base + "/nope", key=None)
        assert status == 401  # unknown paths look the same: the API cannot be mapped without the key
        assert hits == []


async def _raw(session, method, url, headers, body):
    async with session.request(method, url, headers=headers, data=body) as resp:
        return resp.status, await resp.read()


async def test_http_tampered_and_replayed_requests_get_401():
    async with serve(KEY) as (base, hits, session):
        headers, sealed = seal_request(KEY, "POST", "/echo", b'{"n": 1}', time.time())
        flipped = sealed[:-1] + bytes([sealed[-1] ^ 0x80])
        assert (await _raw(session, "POST", base + "/echo", headers, flipped))[0] == 401
        assert (await _raw(session, "POST", base + "/echo?extra=1", headers, sealed))[0] == 401
        assert (await _raw(session, "PUT", base + "/echo", headers, sealed))[0] == 401
        _, ts, nonce = headers[AUTH_HEADER].split()
        moved = dict(headers, **{AUTH_HEADER: f"v1 {int(ts) - 1} {nonce}"})
        assert (await _raw(session, "POST", base + "/echo", moved, sealed))[0] == 401
        stale_h, stale = seal_request(KEY, "POST", "/echo", b"{}", time.time() - SKEW_S - 5)
        assert (await _raw(session, "POST", base + "/echo", stale_h, stale))[0] == 401
        assert hits == []
        status, answer = await _raw(session, "POST", base + "/echo", headers, sealed)
        assert status == 200 and b"got" not in answer
        nonce_b = bytes.fromhex(nonce)
        assert open_response(KEY, nonce_b, 200, answer) == b'{"got": {"n": 1}, "qs": ""}'
        status, again = await _raw(session, "POST", base + "/echo", headers, sealed)  # captured and replayed
        assert status == 401 and b"replayed" in again
        assert hits == ["/echo"]
        # an answer captured for one request does not open as the answer to another
        h2, s2 = seal_request(KEY, "POST", "/echo", b'{"n": 2}', time.time())
        status, answer2 = await _raw(session, "POST", base + "/echo", h2, s2)
        nonce2 = bytes.fromhex(h2[AUTH_HEADER].split()[2])
        assert open_response(KEY, nonce2, 200, answer2) == b'{"got": {"n": 2}, "qs": ""}'
        with pytest.raises(SwarmAuthError):
            open_response(KEY, nonce2, 200, answer)


async def test_http_body_limit_applies_to_sealed_body():
    async with serve(KEY, client_max_size=1024) as (base, hits, session):
        assert (await swarm_request(session, "POST", base + "/echo", key=KEY, json_body="a" * 900))[0] == 200
        # 1100 bytes of plaintext + 16-byte tag is over the limit: refused before opening,
        # and the unsealed 413 is not trusted as an answer
        with pytest.raises(SwarmAuthError, match="413"):
            await swarm_request(session, "POST", base + "/echo", key=KEY, json_body="a" * 1100)
        assert hits == ["/echo"]


async def test_client_with_key_refuses_unsealed_answers():
    # a server without the key (an impostor, or a man in the middle) answers in clear: never trusted
    async with serve(None) as (base, hits, session):
        with pytest.raises(SwarmAuthError, match="answer 200"):
            await swarm_request(session, "GET", base + "/secret", key=KEY)
        assert await swarm_request(session, "GET", base + "/secret", key=None) == (200, {"secret": "the corpus"})
        assert await swarm_request(session, "POST", base + "/echo", key=None, json_body=[1]) == (200, {"got": [1], "qs": ""})
