"""The HTTP API under bad input, against a real node process: every request gets its status code,
nothing gets a 500, and the node keeps serving its honest peers.

    .venv/bin/python -m pytest tests/node/test_node_api.py -q
"""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

import pytest

from protocol import Identity, build
from tests.messages import claim, claims
from tests.nodeproc import NodeProcess, cli, wait_until

pytestmark = pytest.mark.slow
FAST = ("--no-lan", "--no-ralph", "--no-reproduce", "--sync-interval", "1")


def request(node, method, path, body=None, headers=None):
    req = urllib.request.Request(node.address + path, data=body, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return exc.code, payload, dict(exc.headers)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = NodeProcess(tmp_path_factory.mktemp("api") / "node", *FAST).start()
    yield n
    assert n.stop() == 0


def test_status_shape(node):
    code, st, _ = request(node, "GET", "/v1/status")
    assert code == 200
    assert set(st) >= {"pubkey", "swarm", "version", "software", "peers", "counts"}
    assert set(st["counts"]) == {"task", "claim", "vote", "peer"} and st["swarm"] == "public"
    assert st["version"] == 1 and isinstance(st["software"], str)  # protocol integer; software text (SPEC 10.2.1)


def test_push_fetch_get_round_trip(node):
    envs = claims(3, seed=11)
    code, report, _ = request(node, "POST", "/v1/messages",
                              b'{"messages":[' + b",".join(e.canonical() for e in envs) + b"]}")
    assert code == 200 and sorted(report["accepted"]) == sorted(e.id for e in envs)
    code, again, _ = request(node, "POST", "/v1/messages", json.dumps({"messages": [envs[0].to_dict()]}).encode())
    assert again["duplicate"] == [envs[0].id] and again["accepted"] == []
    code, one, _ = request(node, "GET", f"/v1/messages/{envs[1].id}")
    assert code == 200 and one == envs[1].to_dict()
    code, got, _ = request(node, "POST", "/v1/fetch", json.dumps({"ids": [e.id for e in envs]}).encode())
    assert sorted(m["id"] for m in got["messages"]) == sorted(e.id for e in envs)


@pytest.mark.parametrize("method,path,body,status", [
    ("POST", "/v1/messages", b"not json", 400),
    ("POST", "/v1/messages", b"", 400),
    ("POST", "/v1/messages", b'{"messages": 5}', 400),
    ("POST", "/v1/messages", b'{"messages": [], "messages": []}', 400),  # duplicate keys
    ("POST", "/v1/messages", b'{"messages": [1.5]}', 400),  # floats are not protocol JSON
    ("POST", "/v1/messages", b"[" * 100000, 400),  # nesting bomb
    ("POST", "/v1/fetch", b'{"ids": ["xyz"]}', 400),
    ("POST", "/v1/fetch", json.dumps({"ids": ["a" * 64] * 5000}).encode(), 413),
    ("POST", "/v1/announce", b'{"ids": "nope"}', 400),
    ("POST", "/v1/sync", b'{"msg": "zz"}', 400),
    ("POST", "/v1/sync", b'{"msg": "62ffff"}', 400),  # wrong protocol version byte... answered or refused, never 500
    ("POST", "/v1/sync", b'{"msg": "61ff"}', 400),  # truncated negentropy message
    ("GET", "/v1/messages/nothex", None, 400),
    ("GET", "/v1/messages/" + "0" * 64, None, 404),
    ("GET", "/v1/leaderboard?task=bad", None, 400),
    ("GET", "/v1/nope", None, 404),
])
def test_malformed_requests_get_4xx(node, method, path, body, status):
    code, payload, _ = request(node, method, path, body)
    if path == "/v1/sync" and body == b'{"msg": "62ffff"}':
        assert code in (200, 400)  # NIP-77: a server may answer an unknown version with its own
        return
    assert code == status, payload


def test_elements_that_are_not_envelopes_are_refused_per_item(node):
    # never a 500: each element that is not an object is refused by SPEC 4.3, the batch answered 200
    code, report, _ = request(node, "POST", "/v1/messages", b'{"messages": [null, 5, [1000], ["a"], true, -1]}')
    assert code == 200, report
    assert report["accepted"] == [] and report["duplicate"] == []
    assert report["rejected"] == [{"id": None, "reason": "invalid: schema: envelope (not an object)"}] * 6


def test_oversized_body_is_413(node):
    code, _, _ = request(node, "POST", "/v1/messages", b'{"messages":["' + b"x" * (9 * 1024 * 1024) + b'"]}')
    assert code == 413


def test_forged_and_foreign_messages_are_rejected_with_reasons(node):
    author = Identity.from_seed(bytes([7]) * 32)
    good = claim(author, n=901)
    forged = good.to_dict() | {"sig": "00" * 64}
    tampered = json.loads(good.canonical())
    tampered["body"]["note"] = "changed"
    foreign = claim(author, "other-swarm", n=902).to_dict()
    future = claim(author, n=903, created_at=4_000_000_000).to_dict()
    code, report, _ = request(node, "POST", "/v1/messages",
                              json.dumps({"messages": [forged, tampered, foreign, future, good.to_dict()]}).encode())
    assert code == 200
    reasons = {r["reason"] for r in report["rejected"]}
    assert reasons == {"invalid: bad signature", "invalid: bad id", "invalid: wrong swarm", "invalid: from the future"}
    assert report["accepted"] == [good.id]
    code, _, _ = request(node, "GET", f"/v1/messages/{json.loads(json.dumps(foreign))['id']}")
    assert code == 404


def test_flooding_client_gets_429_and_honest_peer_is_served(node):
    statuses = []
    for _ in range(400):
        code, _, headers = request(node, "GET", "/v1/status")
        statuses.append(code)
        if code == 429:
            assert int(headers["Retry-After"]) >= 1
            break
    assert 429 in statuses
    # an honest peer (another source address) is still served while the flooder is limited
    host, port = node.address.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=("127.0.0.2", 0))
    conn.request("GET", "/v1/status")
    assert conn.getresponse().status == 200
    conn.close()


def test_node_survives_all_of_it(node):
    code, st, _ = request(node, "GET", "/v1/status".replace("status", "peers"))
    assert code in (200, 429)
    wait_until(lambda: request(node, "GET", "/v1/status")[0] == 200, timeout=10, what="rate limit to recover")
