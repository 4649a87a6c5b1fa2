#!/usr/bin/env python3
"""Write protocol v1 test vectors to tests/vectors/*.json (SPEC.md sections 9 and 10.7).

    .venv/bin/python scripts/gen_vectors.py            # (re)write the files
    .venv/bin/python scripts/gen_vectors.py --check    # exit 1 if the files differ from a fresh run

Deterministic: fixed seeds, fixed created_at, and Ed25519 signatures are deterministic (RFC 8032),
so a second run writes the same bytes; the private-swarm sealing vectors take a fixed key, nonces
and time; the estimates and the receipts take fixed corpora of plain data. tests/protocol/test_vectors.py
checks the files with our code and independently (hashlib, hmac, cryptography, a hand-written canonical
encoder, the estimates of SPEC.md 5.8 and 5.9 and the credit by receipt of SPEC.md 5.10 written out);
tests/node/test_spec_http.py replays the recorded HTTP exchange against a real node.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import PROTOCOL_VERSION, Envelope, Identity, ProtocolError, build, canon, decode, task_id  # noqa: E402
from protocol.seeds import fresh_seed, seed_from_proof, seed_message  # noqa: E402
from store import ranking  # noqa: E402
from store.stats import (  # noqa: E402
    ALPHA, MAX_SAMPLES, MIN_NO_GAIN, PRIOR_DF, Z_MISMATCH, NoiseTable, mismatch_threshold,
)
from store.trust import TrustView, VoteFact  # noqa: E402
from protocol.limits import MAX_ENVELOPE_BYTES  # noqa: E402
from node import VERSION as SOFTWARE  # noqa: E402
from node.net.swarmkey import (  # noqa: E402
    AUTH_HEADER, SALT, ReplayCache, SwarmAuthError, SwarmKey, open_request, open_response, seal_request,
    seal_response,
)

OUT = ROOT / "tests" / "vectors"
CREATED_AT = 1700000000  # 2023-11-14T22:13:20Z
NOW = CREATED_AT + 60  # the receiver's clock for every envelope vector
SWARM = "public"

# Seeds: simple patterns plus RFC 8032 section 7.1 TEST 1, whose public key is published there.
SEEDS = [
    ("zero", "00" * 32),
    ("ones", "01" * 32),
    ("counting", bytes(range(32)).hex()),
    ("rfc8032-test1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
]

CANON_CASES = [
    ("null", None),
    ("true", True),
    ("false", False),
    ("zero", 0),
    ("max int", 2**53),
    ("min int", -(2**53)),
    ("empty string", ""),
    ("empty object", {}),
    ("empty list", []),
    ("escapes", "quote\" backslash\\ slash/ nl\n cr\r tab\t bs\b ff\f"),
    ("control characters", "".join(chr(c) for c in range(0x20)) + "\x7f"),
    ("unicode raw utf-8", "caf\u00e9 \u4e2d\u6587 \U0001f600 \u2028 \ufeff"),
    ("key order by code point", {"b": 1, "a": 2, "B": 3, "aa": 4, "": 5, "\u00e9": 6, "z": 7}),
    # U+FF61 sorts before U+1F600 by code point but after it by UTF-16 unit (RFC 8785 / JCS): we use code points.
    ("astral key order", {"\U0001f600": 1, "\uff61": 2, "\ue000": 3}),
    ("nested key ordering", {"z": {"y": [3, {"b": None, "a": True}], "x": "1.50"}, "a": [[], {}]}),
    ("measurement strings", {"val_bpb": "1.234567", "curve": [[0, "5.545"], [1024, "2.100"]]}),
]

# Raw JSON texts that parse() must refuse, with the reason prefix.
PARSE_REJECTS = [
    ("float", '{"a":1.5}', "invalid: float"),
    ("exponent", '[1e3]', "invalid: float"),
    ("negative zero float", '-0.0', "invalid: float"),
    ("NaN", '[NaN]', "invalid: NaN"),
    ("Infinity", '{"a":Infinity}', "invalid: Infinity"),
    ("duplicate key", '{"a":1,"a":1}', "invalid: duplicate key"),
    ("nested duplicate key", '{"x":{"k":1,"j":2,"k":3}}', "invalid: duplicate key"),
    ("int above 2^53", '9007199254740993', "invalid: integer out of range"),
    ("int below -2^53", '[-9007199254740993]', "invalid: integer out of range"),
    ("lone surrogate", '"\\ud800"', "invalid: lone surrogate"),
    ("trailing garbage", '{} x', "invalid: not JSON"),
    ("single quotes", "{'a':1}", "invalid: not JSON"),
]

RESULT = {
    "val_bpb": "1.234567",
    "curve": [[0, "5.545177"], [16384, "2.301000"], [32768, "1.900000"]],
    "tokens": 32768,
    "seed": 0,
    "wall_s": "12.5",
    "device": "cpu",
    "torch": "2.13.0",
    "flops_per_token": 1048576,
    "entropy_bpb": "1.000000",
    "sandbox": "bwrap",
    "cpu_s": "11.875",
}

TASK_BODY = {
    "name": "tiny",
    "description": "A synthetic source with a known entropy rate.\nBest possible val_bpb is known.",
    "harness": "ralphswarm-harness/1",
    "source": "# train.py\nLR = 3e-3  # learning rate\nprint(\"caf\u00e9\")\n",
    "data": {"name": "tiny-v1", "sha256": hashlib.sha256(b"tiny").hexdigest(), "bytes": 4096},
    "metric": "val_bpb",
    "direction": "min",
    "budget": {"tokens": 32768},
    "tolerance": "0.01",
    "compute_cap": "2.0",
}


L_ED25519 = 2 ** 252 + 27742317777372353535851937790883648493  # SPEC.md 3.3


def raw_sign(identity: Identity, swarm: str, kind: str, body, created_at: int) -> dict:
    """Sign an envelope by the definition, bypassing build()'s checks (for invalid vectors)."""
    env_id = hashlib.sha256(canon([1, swarm, identity.pubkey, created_at, kind, body])).hexdigest()
    return {"id": env_id, "author": identity.pubkey, "created_at": created_at, "swarm": swarm,
            "kind": kind, "body": body, "sig": identity.sign(bytes.fromhex(env_id)).hex()}


def text(raw: bytes) -> str:
    return raw.decode("utf-8")


def keys_vectors() -> dict:
    return {"description": "Ed25519: 32-byte seed (hex) -> raw public key (hex); sig_empty = signature of b''.",
            "keys": [{"name": name, "seed": seed, "pubkey": Identity.from_seed(bytes.fromhex(seed)).pubkey,
                      "sig_empty": Identity.from_seed(bytes.fromhex(seed)).sign(b"").hex()}
                     for name, seed in SEEDS]}


def canon_vectors() -> dict:
    return {
        "description": "canon(value) -> canonical UTF-8 text and its hex; reject: raw JSON parse() refuses.",
        "cases": [{"name": name, "value": value, "canonical": text(canon(value)), "hex": canon(value).hex()}
                  for name, value in CANON_CASES],
        "reject": [{"name": name, "json": raw, "reason_prefix": prefix} for name, raw, prefix in PARSE_REJECTS],
    }


def envelope_vectors() -> dict:
    alice = Identity.from_seed(bytes.fromhex(SEEDS[1][1]))
    task = build(alice, SWARM, "task", TASK_BODY, created_at=CREATED_AT)
    tid = task_id(TASK_BODY)
    claim_body = {"task": tid, "parent": None, "patch": "--- a/train.py\n+++ b/train.py\n@@ -2 +2 @@\n"
                  "-LR = 3e-3  # learning rate\n+LR = 6e-3  # learning rate\n",
                  "source_sha256": hashlib.sha256(b"patched").hexdigest(), "note": "doubled LR \u2192 faster",
                  "outcome": "improved", "result": RESULT}
    claim = build(alice, SWARM, "claim", claim_body, created_at=CREATED_AT + 1)
    bob = Identity.from_seed(bytes.fromhex(SEEDS[2][1]))
    vote = build(bob, SWARM, "vote", {"claim": claim.id, "verdict": "reproduced",
                                       "result": {k: v for k, v in RESULT.items() if k != "entropy_bpb"},
                                       "reason": ""}, created_at=CREATED_AT + 2)
    vote_null = build(bob, SWARM, "vote", {"claim": claim.id, "verdict": "refused", "result": None,
                                            "reason": "sandbox unavailable"}, created_at=CREATED_AT + 3)
    vote_over = build(bob, SWARM, "vote", {"claim": claim.id, "verdict": "over budget",
                                            "result": {**RESULT, "wall_s": "31.25", "cpu_s": "30.5"},
                                            "reason": "training took 31.25 s > cap 2.0 x baseline 12.5 s = 25 s"},
                      created_at=CREATED_AT + 5)
    peer = build(alice, SWARM, "peer", {"addresses": ["http://192.0.2.7:7447", "https://[2001:db8::1]:443"],
                                         "expires_at": CREATED_AT + 3600}, created_at=CREATED_AT + 4)
    out = []
    for env in (task, claim, vote, vote_null, peer, vote_over):
        preimage = canon([1, env.swarm, env.author, env.created_at, env.kind, env.body])
        out.append({"kind": env.kind, "swarm": env.swarm, "now": NOW, "envelope": env.to_dict(),
                    "id_preimage": text(preimage), "canonical": text(env.canonical()),
                    "canonical_sha256": hashlib.sha256(env.canonical()).hexdigest()})
        decode(env.canonical(), swarm=SWARM, now=NOW)  # every valid vector must pass our receiver
    return {"description": "Valid signed envelopes; author seeds in keys.json (ones, counting); "
                           "decode with the given swarm and now.",
            "task_id": tid, "envelopes": out}


def invalid_vectors() -> list[dict]:
    alice = Identity.from_seed(bytes.fromhex(SEEDS[1][1]))
    mallory = Identity.from_seed(bytes.fromhex(SEEDS[0][1]))
    good = build(alice, SWARM, "vote", {"claim": "ab" * 32, "verdict": "failed", "result": None,
                                         "reason": "crashed at step 3"}, created_at=CREATED_AT)
    good_raw = good.canonical()
    d = good.to_dict()
    cases: list[tuple[str, bytes, str, int, str]] = []

    def add(name: str, raw: bytes | dict, reason: str, swarm: str = SWARM, now: int = NOW) -> None:
        cases.append((name, raw if isinstance(raw, bytes) else canon(raw), reason, swarm, now))

    add("signed by another key", {**d, "sig": mallory.sign(bytes.fromhex(d["id"])).hex()},
        "invalid: bad signature")
    add("signature of a different message", {**d, "sig": alice.sign(b"\x00" * 32).hex()}, "invalid: bad signature")
    # SPEC.md 3.3: the neutral element as key and R, S = 0 satisfies [S]B = R + [k]A for every
    # message (OpenSSL takes it); a key of small order is refused. And S + L, the malleated twin.
    neutral = (1).to_bytes(32, "little").hex()
    forged_id = hashlib.sha256(canon([1, SWARM, neutral, CREATED_AT, "vote", d["body"]])).hexdigest()
    add("author a small-order key (its signature fits every message)",
        {**d, "id": forged_id, "author": neutral, "sig": neutral + "00" * 32}, "invalid: bad signature")
    s_plus_l = int.from_bytes(bytes.fromhex(d["sig"])[32:], "little") + L_ED25519
    add("S + L (the malleated twin of a good signature)",
        {**d, "sig": d["sig"][:64] + s_plus_l.to_bytes(32, "little").hex()}, "invalid: bad signature")
    add("author swapped", {**d, "author": mallory.pubkey}, "invalid: bad id")
    add("body changed", {**d, "body": {**d["body"], "reason": "crashed at step 4"}}, "invalid: bad id")
    add("created_at changed", {**d, "created_at": CREATED_AT - 1}, "invalid: bad id")
    add("id of another message", {**d, "id": hashlib.sha256(b"x").hexdigest()}, "invalid: bad id")
    add("receiver in another swarm", good_raw, "invalid: wrong swarm", swarm="lab")
    add("replayed into another swarm", {**d, "swarm": "lab"}, "invalid: bad id", swarm="lab")
    add("created_at 601 s ahead", raw_sign(alice, SWARM, "vote", d["body"], NOW + 601),
        "invalid: from the future")
    add("unknown kind", raw_sign(alice, SWARM, "poll", {"q": "?"}, CREATED_AT), "invalid: unknown kind")
    add("whitespace", good_raw.replace(b'","body":', b'", "body":'), "invalid: not canonical")
    add("trailing newline", good_raw + b"\n", "invalid: not canonical")
    reordered = {"body": d["body"], **{k: v for k, v in d.items() if k != "body"}}  # body before author
    add("keys out of order", json.dumps(reordered, separators=(",", ":"), ensure_ascii=False).encode(),
        "invalid: not canonical")
    add("ascii-escaped character",
        canon(raw_sign(alice, SWARM, "vote", {**d["body"], "reason": "caf\u00e9"}, CREATED_AT)).replace(
            "\u00e9".encode(), b"\\u00e9"), "invalid: not canonical")
    add("escaped slash", canon(raw_sign(alice, SWARM, "vote", {**d["body"], "reason": "a/b"}, CREATED_AT)).replace(
        b"a/b", b"a\\/b"), "invalid: not canonical")
    add("upper-case hex sig", {**d, "sig": d["sig"].upper()}, "invalid: schema: sig")
    add("missing field", {k: v for k, v in d.items() if k != "sig"}, "invalid: schema: sig")
    add("extra field", {**d, "tags": []}, "invalid: schema: tags")
    add("float in body", good_raw.replace(b'"result":null', b'"result":1.5'), "invalid: float")
    add("duplicate key", good_raw.replace(b'{"author":', b'{"kind":"vote","author":'), "invalid: duplicate key")
    add("bad verdict", raw_sign(alice, SWARM, "vote", {**d["body"], "verdict": "maybe"}, CREATED_AT),
        "invalid: schema: body.verdict")
    add("reproduced vote without result",
        raw_sign(alice, SWARM, "vote", {**d["body"], "verdict": "reproduced"}, CREATED_AT),
        "invalid: schema: body.result")
    add("over budget vote without result",
        raw_sign(alice, SWARM, "vote", {**d["body"], "verdict": "over budget"}, CREATED_AT),
        "invalid: schema: body.result")
    add("task without compute_cap (written before the field)",
        raw_sign(alice, SWARM, "task", {k: v for k, v in TASK_BODY.items() if k != "compute_cap"}, CREATED_AT),
        "invalid: schema: body.compute_cap")
    add("task with a zero compute_cap", raw_sign(alice, SWARM, "task", {**TASK_BODY, "compute_cap": "0.0"}, CREATED_AT),
        "invalid: schema: body.compute_cap")
    add("note over 4 KiB", raw_sign(alice, SWARM, "vote", {**d["body"], "reason": "x" * 4097}, CREATED_AT),
        "invalid: too large: body.reason")
    add("float-like decimal", raw_sign(alice, SWARM, "claim", {
        "task": "ab" * 32, "parent": None, "patch": "", "source_sha256": "cd" * 32, "note": "",
        "outcome": "worse", "result": {**RESULT, "val_bpb": "1.5e0"}}, CREATED_AT),
        "invalid: schema: body.result.val_bpb")
    # Every field within its limit, but the escapes push the envelope one byte over 256 KiB.
    body = {"task": "ab" * 32, "parent": None, "patch": "", "source_sha256": "cd" * 32, "note": "",
            "outcome": "crashed", "result": None}
    base = len(canon(raw_sign(alice, SWARM, "claim", body, CREATED_AT)))
    extra = MAX_ENVELOPE_BYTES + 1 - base
    body["patch"] = "\x01" * (extra // 6) + "a" * (extra % 6)  # "\x01" encodes as the 6 bytes \u0001
    big = canon(raw_sign(alice, SWARM, "claim", body, CREATED_AT))
    assert len(big) == MAX_ENVELOPE_BYTES + 1
    add("envelope one byte over 256 KiB", big, "invalid: too large")
    return [{"name": name, "swarm": swarm, "now": now, "raw": text(raw), "reason_prefix": reason}
            for name, raw, reason, swarm, now in cases]


# -- SPEC.md 10.3: private-swarm sealing ---------------------------------------------------------

SWARM_SECRET = bytes(range(32))  # the key file holds its hex and a newline
SEAL_TS = CREATED_AT + 100  # the sender's clock for every sealed request


def _hexes(raw: bytes) -> dict:
    return {"text": text(raw), "hex": raw.hex()}


def _ad_request(swarm: str, method: str, target: str, ts: int) -> bytes:
    return canon(["ralphswarm-request", "v1", swarm, method, target, ts])


def _ad_response(swarm: str, request_nonce: bytes, status: int) -> bytes:
    return canon(["ralphswarm-response", "v1", swarm, request_nonce.hex(), status])


def _seal_case(name: str, swarm: str, method: str, target: str, body: bytes, status: int, answer: bytes,
               request_nonce: bytes, answer_nonce: bytes) -> dict:
    key = SwarmKey.from_secret(SWARM_SECRET, swarm)
    headers, sealed = seal_request(key, method, target, body, SEAL_TS, nonce=request_nonce)
    assert open_request(key, method, target, headers, sealed, SEAL_TS, ReplayCache()) == body
    sealed_answer = seal_response(key, request_nonce, status, answer, nonce=answer_nonce)
    assert open_response(key, request_nonce, status, sealed_answer) == answer
    return {
        "name": name,
        "swarm": swarm,
        "keys": {"info_request": _hexes(b"ralphswarm v1 request|" + swarm.encode()),
                 "info_response": _hexes(b"ralphswarm v1 response|" + swarm.encode()),
                 "request_key": key.request_key.hex(), "response_key": key.response_key.hex()},
        "request": {"method": method, "target": target, "ts": SEAL_TS, "nonce": request_nonce.hex(),
                    "header": {"name": AUTH_HEADER, "value": headers[AUTH_HEADER]},
                    "plaintext": _hexes(body), "ad": _hexes(_ad_request(swarm, method, target, SEAL_TS)),
                    "sealed": sealed.hex()},
        "answer": {"status": status, "nonce": answer_nonce.hex(), "plaintext": _hexes(answer),
                   "ad": _hexes(_ad_response(swarm, request_nonce, status)), "sealed": sealed_answer.hex()},
    }


def sealing_vectors() -> dict:
    claim = next(e for e in envelope_vectors()["envelopes"] if e["kind"] == "claim")
    claim_raw = claim["canonical"].encode()
    tid = task_id(TASK_BODY)
    cases = [
        _seal_case("push one envelope", "lab", "POST", "/v1/messages", b'{"messages":[' + claim_raw + b"]}", 200,
                   json.dumps({"accepted": [claim["envelope"]["id"]], "duplicate": [], "rejected": []}).encode(),
                   bytes(range(12)), bytes(range(12, 24))),
        _seal_case("GET with a query, empty body", "lab", "GET", f"/v1/leaderboard?task={tid}", b"", 200,
                   json.dumps({"task": tid, "verified": [], "pending": [], "disputed": [], "over_budget": [],
                               "duplicates": []}).encode(),
                   bytes.fromhex("a0" * 12), bytes.fromhex("b0" * 12)),
        _seal_case("non-ASCII swarm name, an error answer", "caf\u00e9-lab", "POST", "/v1/sync", b'{"msg": "61"}', 429,
                   b'{"error": "rate limited"}', bytes.fromhex("ff" * 12), bytes(12)),
    ]
    first = cases[0]
    req = first["request"]
    sealed = bytes.fromhex(req["sealed"])
    header = req["header"]["value"]
    ts, nonce = req["ts"], req["nonce"]
    refusals: list[dict] = []

    def refuse(name: str, reason: str, *, now: int = SEAL_TS, method: str = "POST", target: str = "/v1/messages",
               value: str | None = header, body: bytes = sealed, swarm: str = "lab", replayed: bool = False) -> None:
        refusals.append({"name": name, "swarm": swarm, "now": now, "method": method, "target": target,
                         "header": value, "sealed": body.hex(), "opened_before": replayed, "reason_prefix": reason})

    # every refusal is of case 0's request with one thing changed; the boundaries are accepted
    refuse("no auth header", "missing swarm auth header", value=None)
    refuse("upper-case nonce", "garbled swarm auth header", value=f"v1 {ts} {nonce.upper()}")
    refuse("version v2", "garbled swarm auth header", value=f"v2 {ts} {nonce}")
    refuse("two spaces", "garbled swarm auth header", value=f"v1  {ts} {nonce}")
    refuse("13-digit timestamp", "garbled swarm auth header", value=f"v1 0{ts:012d} {nonce}")
    refuse("121 s stale", "stale request timestamp", now=ts + 121)
    refuse("121 s in the future", "request timestamp in the future", now=ts - 121)
    refuse("timestamp moved by one second", "bad request tag", value=f"v1 {ts + 1} {nonce}", now=ts + 1)
    refuse("other method", "bad request tag", method="PUT")
    refuse("other target", "bad request tag", target="/v1/messages?x=1")
    refuse("other swarm name, same key file", "bad request tag", swarm="lab2")
    refuse("one ciphertext bit flipped", "bad request tag", body=bytes([sealed[0] ^ 1]) + sealed[1:])
    refuse("tag cut off", "bad request tag", body=sealed[:-16])
    refuse("replayed", "replayed request", replayed=True)
    accepted = [{"name": "stale by exactly 120 s", "now": ts + 120}, {"name": "120 s in the future", "now": ts - 120}]
    key = SwarmKey.from_secret(SWARM_SECRET, "lab")
    for case in accepted:
        open_request(key, "POST", "/v1/messages", {AUTH_HEADER: header}, sealed, case["now"], ReplayCache())
    for case in refusals:
        cache = ReplayCache()
        k = SwarmKey.from_secret(SWARM_SECRET, case["swarm"])
        headers = {} if case["header"] is None else {AUTH_HEADER: case["header"]}
        if case["opened_before"]:
            open_request(k, case["method"], case["target"], headers, bytes.fromhex(case["sealed"]), case["now"], cache)
        try:
            open_request(k, case["method"], case["target"], headers, bytes.fromhex(case["sealed"]), case["now"], cache)
        except SwarmAuthError as exc:
            assert exc.reason.startswith(case["reason_prefix"]), (case["name"], exc.reason)
        else:
            raise AssertionError(f"sealing refusal {case['name']!r} opened")
    answer = first["answer"]
    sealed_answer = bytes.fromhex(answer["sealed"])
    answer_refusals = [
        {"name": "status changed to 404", "request_nonce": nonce, "status": 404, "sealed": answer["sealed"]},
        {"name": "answer to another request", "request_nonce": cases[1]["request"]["nonce"], "status": 200,
         "sealed": answer["sealed"]},
        {"name": "shorter than nonce and tag (not sealed)", "request_nonce": nonce, "status": 200,
         "sealed": sealed_answer[:27].hex()},
        {"name": "an unsealed JSON answer", "request_nonce": nonce, "status": 200,
         "sealed": b'{"accepted": [], "duplicate": [], "rejected": []}'.hex()},
    ]
    for case in answer_refusals:
        try:
            open_response(key, bytes.fromhex(case["request_nonce"]), case["status"], bytes.fromhex(case["sealed"]))
        except SwarmAuthError:
            pass
        else:
            raise AssertionError(f"answer refusal {case['name']!r} opened")
    return {
        "description": "Private-swarm sealing (SPEC.md 10.3): the key file's secret and a swarm name -> HKDF "
                       "keys; a request (method, target, ts, nonce, plaintext) -> auth header, associated data "
                       "and sealed body; its answer (status, nonce, plaintext) -> associated data and sealed "
                       "body (nonce || ciphertext || tag). refusals: case 0's request with one change, opened "
                       "at `now` with a fresh replay cache (after one successful opening when opened_before), "
                       "and the reason the 401 names; accepted: case 0's request opened at these clocks.",
        "key_file": SWARM_SECRET.hex() + "\n",
        "secret": SWARM_SECRET.hex(),
        "salt": _hexes(SALT),
        "cases": cases,
        "accepted": accepted,
        "refusals": refusals,
        "answer_refusals": answer_refusals,
    }


# -- SPEC.md 10: one recorded HTTP exchange ---------------------------------------------------------

NODE_SEED = "02" * 32
NODE_ADDRESS = "http://192.0.2.1:7447"  # what the node advertises (its peer record, its status)
CLIENT_ADDRESS = "http://127.0.0.1:9"  # the X-Ralphswarm-Peer the requests carry (nothing listens there)
JSON_UTF8 = "application/json; charset=utf-8"  # JSON answers (Python json.dumps with default arguments)
JSON_RAW = "application/json"  # answers spliced from canonical envelope bytes
TEXT = "text/plain; charset=utf-8"  # the HTTP layer's own 404/405


def http_exchange_vectors() -> dict:
    envelopes = envelope_vectors()["envelopes"]
    claim = next(e for e in envelopes if e["kind"] == "claim")
    cid, craw = claim["envelope"]["id"], claim["canonical"]
    bad = invalid_vectors()[0]  # signed by another key
    assert bad["name"] == "signed by another key"
    bad_id = json.loads(bad["raw"])["id"]
    unknown = "ff" * 32
    node = Identity.from_seed(bytes.fromhex(NODE_SEED))
    exchanges: list[dict] = []

    def add(name: str, method: str, target: str, body: str | None, status: int, content_type: str, answer: str,
            **answer_headers: str) -> None:
        headers = {"X-Ralphswarm-Peer": CLIENT_ADDRESS}
        if body is not None:
            headers["Content-Type"] = "application/json"
        exchanges.append({"name": name,
                          "request": {"method": method, "target": target, "headers": headers, "body": body},
                          "answer": {"status": status, "headers": {"Content-Type": content_type, **answer_headers},
                                     "body": answer}})

    status = {"pubkey": node.pubkey, "swarm": SWARM, "version": PROTOCOL_VERSION, "software": SOFTWARE,
              "address": NODE_ADDRESS, "peers": 0, "counts": {"task": 1, "claim": 0, "vote": 0, "peer": 1}}
    add("status of a fresh node (its task and its peer record stored)", "GET", "/v1/status", None, 200,
        JSON_UTF8, json.dumps(status))
    add("push one envelope", "POST", "/v1/messages", '{"messages":[' + craw + "]}", 200, JSON_UTF8,
        json.dumps({"accepted": [cid], "duplicate": [], "rejected": []}))
    add("push it again, a forged envelope and a null", "POST", "/v1/messages",
        '{"messages":[' + craw + "," + bad["raw"] + ",null]}", 200, JSON_UTF8,
        json.dumps({"accepted": [], "duplicate": [cid], "rejected": [
            {"id": bad_id, "reason": "invalid: bad signature"},
            {"id": None, "reason": "invalid: schema: envelope (not an object)"}]}))
    add("announce: the node wants only what it lacks", "POST", "/v1/announce", json.dumps({"ids": [cid, unknown]}),
        200, JSON_UTF8, json.dumps({"want": [unknown]}))
    add("fetch: the stored ones, canonical bytes spliced", "POST", "/v1/fetch", json.dumps({"ids": [unknown, cid]}),
        200, JSON_RAW, '{"messages":[' + craw + "]}")
    add("one message", "GET", f"/v1/messages/{cid}", None, 200, JSON_RAW, craw)
    add("unknown message", "GET", f"/v1/messages/{unknown}", None, 404, JSON_UTF8,
        json.dumps({"error": "unknown message"}))
    add("sync in Negentropy version 2: answered with version 1 (0x61)", "POST", "/v1/sync", '{"msg": "62"}', 200,
        JSON_UTF8, json.dumps({"msg": "61"}))
    add("malformed request", "POST", "/v1/fetch", '{"ids": "nope"}', 400, JSON_UTF8,
        json.dumps({"error": "invalid: schema: ids"}))
    add("unknown path", "GET", "/v1/nope", None, 404, TEXT, "404: Not Found")
    add("known path, wrong method", "PUT", "/v1/status", None, 405, TEXT, "405: Method Not Allowed", Allow="GET,HEAD")
    return {
        "description": "One conversation with a fresh node (SPEC.md 10): start it with the identity seed, swarm, "
                       "advertised address and task below, no peers, then send the requests in order. "
                       "Bodies are text (UTF-8). Answers of Content-Type application/json; charset=utf-8 are "
                       "this implementation's JSON (Python json.dumps spacing): another implementation must "
                       "match their parsed value; every other answer body byte for byte. Each answer also "
                       "carries Content-Length, Date and Server, not recorded.",
        "node": {"identity_seed": NODE_SEED, "pubkey": node.pubkey, "swarm": SWARM, "advertise": NODE_ADDRESS,
                 "task": "tiny", "software": SOFTWARE},
        "exchanges": exchanges,
    }


# -- SPEC.md 5.4.1: fresh seeds ---------------------------------------------------------------------

FRESH_CLAIMS = [("zeros", "00" * 32), ("ones", "ff" * 32), ("counting", bytes(range(32)).hex())]


def fresh_seed_vectors() -> dict:
    cases = []
    for key_name, key_seed in SEEDS[1:]:
        identity = Identity.from_seed(bytes.fromhex(key_seed))
        for claim_name, claim_id in FRESH_CLAIMS:
            seed, proof = fresh_seed(identity, claim_id)
            cases.append({"name": f"{key_name} / {claim_name}", "key_seed": key_seed, "pubkey": identity.pubkey,
                          "claim": claim_id, "message_hex": seed_message(claim_id).hex(), "seed_proof": proof,
                          "seed": seed})
    bob = Identity.from_seed(bytes.fromhex(SEEDS[2][1]))
    mallory = Identity.from_seed(bytes.fromhex(SEEDS[0][1]))
    claim_id, other_claim = FRESH_CLAIMS[2][1], FRESH_CLAIMS[0][1]
    seed, proof = fresh_seed(bob, claim_id)
    body = {"claim": claim_id, "verdict": "reproduced", "result": {**RESULT, "seed": seed}, "reason": "",
            "seed_proof": proof}
    vote = build(bob, SWARM, "vote", body, created_at=CREATED_AT + 6)
    decode(vote.canonical(), swarm=SWARM, now=NOW)

    def forged(name: str, proof_hex: str, reason: str, **changes) -> dict:
        seed_of = seed_from_proof(proof_hex) if len(proof_hex) == 128 else seed
        bad = {**body, "seed_proof": proof_hex, "result": {**RESULT, "seed": seed_of}, **changes}
        return {"name": name, "swarm": SWARM, "now": NOW,
                "raw": text(canon(raw_sign(bob, SWARM, "vote", bad, CREATED_AT + 6))), "reason_prefix": reason}

    invalid = [
        forged("seed proof signed by another key", mallory.sign(seed_message(claim_id)).hex(),
               "invalid: bad signature"),
        forged("seed proof for another claim", fresh_seed(bob, other_claim)[1], "invalid: bad signature"),
        forged("signature of the bare claim id (no domain)", bob.sign(bytes.fromhex(claim_id)).hex(),
               "invalid: bad signature"),
        forged("result.seed not the proof's seed", proof, "invalid: schema: body.result.seed",
               result={**RESULT, "seed": (seed + 1) % (1 << 31)}),
        forged("upper-case seed proof", proof.upper(), "invalid: schema: body.seed_proof"),
        forged("seed proof without a result", proof, "invalid: schema: body.result", verdict="mismatch", result=None),
    ]
    for case in invalid:
        try:
            decode(case["raw"].encode(), swarm=case["swarm"], now=case["now"])
        except ProtocolError as exc:
            assert exc.reason.startswith(case["reason_prefix"]), (case["name"], exc.reason)
        else:  # pragma: no cover - a vector that our receiver accepts is a bug in the generator or the receiver
            raise AssertionError(case["name"])
    return {"description": "SPEC.md 5.4.1: a voter's fresh seed for a claim. message = 'ralphswarm/v1/fresh-seed' "
                           "0x00 || claim id bytes; seed_proof = Ed25519 signature of message by the key of "
                           "key_seed; seed = first 8 bytes of SHA-256(signature bytes), big-endian, mod 2^31. "
                           "vote: a valid fresh-seed vote (author seed 'counting'); invalid: votes a receiver "
                           "refuses, with the reason its error must start with.",
            "cases": cases,
            "vote": {"swarm": SWARM, "now": NOW, "envelope": vote.to_dict(), "canonical": text(vote.canonical())},
            "invalid": invalid}


# -- SPEC.md 5.8, 5.9: estimates, the test, the states, the board -----------------------------------

def _hex(kind: str, name: str) -> str:
    return hashlib.sha256(f"estimates/{kind}/{name}".encode()).hexdigest()


EST_TASK = task_id(TASK_BODY)  # tolerance "0.01": sigma 0.01 / 3 for a device class the table lacks
EST_NOISE = {EST_TASK: {"cpu": {"sigma": "0.003", "seeds": 8}, "cuda": {"sigma": "0.0015", "seeds": 8}},
             "ee" * 32: {"mps": {"sigma": "0.5", "seeds": 8}}}  # another task's noise: not ours
EST_SELF = "me"
EST_PRETRUSTED = ("me", "op")  # the node and an operator-trusted key
EST_TRUST = {"me": "1", "op": "1", "v1": "0.6", "v2": "0.25", "a1": "0.5", "sybil": "0"}  # others: 0
EST_BASE_SOURCE = hashlib.sha256(TASK_BODY["source"].encode()).hexdigest()
EST_HALF = RESULT["tokens"] // 2
# name, author, created_at, parent (a name, "absent" for an id nobody holds, or None), patch, outcome, source, claimed
# [, result.tokens: RESULT's unless given]
EST_CLAIMS = [
    ("base-crashed", "a2", 50, None, "", "crashed", "base", None),
    ("base-fake", "sybil", 10, None, "", "worse", "fake", "1.000000"),  # empty patch, not the task's source
    ("base", "a2", 100, None, "", "worse", "base", "1.396000"),
    ("base-2", "a1", 100, None, "", "worse", "base", "1.401000"),
    ("c1", "a1", 200, "base", "+a\n", "improved", "c1", "1.375000"),
    ("c2", "a2", 210, "base", "+b\n", "improved", "c2", "1.390000"),
    ("c3", "a1", 220, "c1", "+c\n", "improved", "c3", "1.370000"),
    ("c4", "a2", 230, None, "+d\n", "improved", "c4", "1.392000"),
    ("c5", "a1", 240, "c2", "+e\n", "improved", "c5", "1.385000"),
    ("c6", "a2", 250, "absent", "+f\n", "improved", "c6", "1.360000"),
    ("c7", "a2", 260, None, "+g\n", "improved", "c7", "1.290000"),
    ("c8", "a2", 270, "c1", "+h\n", "improved", "c8", "1.368000"),
    ("c9", "a1", 280, "c1", "+i\n", "crashed", "c9", None),
    ("c10", "a2", 290, "base", "+a\n", "improved", "c1", "1.374000"),  # a copy of c1's source
    # At half the budget (EST_HALF tokens): a baseline run of its own, not a copy of "base"; a root
    # claim and a child of c1 (a parent at another budget), both tested against base-half.
    ("base-half", "a1", 120, None, "", "worse", "base", "1.452000", EST_HALF),
    ("c11", "a2", 300, None, "+j\n", "improved", "c11", "1.430000", EST_HALF),
    ("c12", "a1", 310, "c1", "+k\n", "improved", "c12", "1.440000", EST_HALF),
]
# voter, claim, created_at, verdict, val_bpb, device, fresh
EST_VOTES = [
    *[(v, "base", 300, "reproduced", x, "cpu", True) for v, x in
      (("me", "1.401000"), ("op", "1.399000"), ("v1", "1.403000"), ("v2", "1.397000"), ("a1", "1.400000"))],
    ("me", "base-2", 300, "reproduced", "1.402000", "cpu", True),
    *[(v, "c1", 300, "reproduced", x, d, True) for v, x, d in
      (("me", "1.380000", "cpu"), ("op", "1.382000", "cpu"), ("v1", "1.379000", "cuda"), ("v2", "1.381000", "cpu"),
       ("a1", "1.200000", "cpu"),  # the claim's author: never a sample
       ("sybil", "1.100000", "cpu"))],  # trust 0: not heard
    ("me", "c2", 300, "reproduced", "1.395000", "cpu", True),
    ("v1", "c2", 300, "mismatch", "1.393000", "cpu", True),  # a mismatch at a fresh seed is a sample too
    ("me", "c3", 300, "reproduced", "1.385000", "cpu", True),
    ("op", "c3", 300, "reproduced", "1.383000", "cpu", True),
    *[(v, "c4", 300, "reproduced", x, d, True) for v, x, d in
      (("me", "1.396000", "cpu"), ("op", "1.399000", "cpu"), ("v1", "1.394000", "cuda"), ("v2", "1.395000", "mps"),
       ("a1", "1.396000", "cpu"))],
    ("me", "c5", 300, "reproduced", "1.390000", "cpu", False),  # the claim's seed: not a sample
    ("me", "c6", 300, "reproduced", "1.370000", "cpu", True),
    ("me", "c7", 300, "reproduced", "1.360000", "cpu", False),
    ("sybil", "c7", 300, "reproduced", "1.300000", "cpu", True),
    ("v2", "c7", 300, "reproduced", "1.310000", "cpu", False),
    ("a2", "c7", 300, "reproduced", "1.290000", "cpu", True),
    ("op", "c7", 300, "over budget", "1.305000", "cpu", True),  # fresh, but its verdict is about time
    ("op", "c7", 290, "failed", None, None, False),
    ("v1", "c7", 200, "reproduced", "1.300000", "cpu", True),
    ("v1", "c7", 310, "mismatch", None, None, False),  # the spot check of a rerun: hides the fresh vote
    ("v1", "c8", 200, "reproduced", "1.390000", "cpu", True),
    ("v1", "c8", 300, "reproduced", "1.370000", "cpu", True),  # the latest of v1's votes
    ("v2", "c8", 300, "reproduced", "1.372000", "cuda", True),
    ("v2", "c8", 300, "reproduced", "1.360000", "cuda", True),  # same created_at: the greater id counts
    ("me", "c8", 300, "reproduced", "1.371000", "cpu", True),
    ("op", "c8", 300, "reproduced", "1.369000", "mps", True),
    ("me", "c10", 300, "reproduced", "1.379000", "cpu", True),
    *[(v, "base-half", 300, "reproduced", x, "cpu", True) for v, x in
      (("me", "1.451000"), ("op", "1.449000"), ("v1", "1.453000"))],
    *[(v, "c11", 320, "reproduced", x, "cpu", True) for v, x in
      (("me", "1.431000"), ("op", "1.429000"), ("v1", "1.432000"))],
    *[(v, "c12", 320, "reproduced", x, "cpu", True) for v, x in (("me", "1.450000"), ("op", "1.454000"))],
]
EST_THRESHOLDS = [("cpu", "cpu"), ("cpu", "cuda"), ("cuda", "cuda"), ("mps", "mps"), ("cpu", "mps")]


def estimate_vectors() -> dict:
    keys = {name: _hex("key", name) for name in ("me", "op", "v1", "v2", "a1", "a2", "sybil")}
    ids = {c[0]: _hex("claim", c[0]) for c in EST_CLAIMS} | {"absent": _hex("claim", "absent")}
    sources = {c[6]: EST_BASE_SOURCE if c[6] == "base" else _hex("source", c[6]) for c in EST_CLAIMS}
    claims = [{"name": name, "id": ids[name], "author": keys[author], "created_at": at,
               "parent": None if parent is None else ids[parent], "patch": patch, "outcome": outcome,
               "source_sha256": sources[source], "claimed_bpb": claimed, "tokens": (rest or [RESULT["tokens"]])[0]}
              for name, author, at, parent, patch, outcome, source, claimed, *rest in EST_CLAIMS]
    votes = [{"id": _hex("vote", f"{n}"), "voter": keys[voter], "claim": ids[claim], "created_at": at,
              "verdict": verdict, "val_bpb": value, "device": device, "fresh": fresh}
             for n, (voter, claim, at, verdict, value, device, fresh) in enumerate(EST_VOTES)]
    tolerance = TASK_BODY["tolerance"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "noise.json"
        path.write_text(json.dumps(EST_NOISE))
        noise = NoiseTable.load(path)

    def sigma_of(device: str | None) -> float:
        return noise.sigma(EST_TASK, device, float(tolerance))

    envs = [Envelope(c["id"], c["author"], c["created_at"], SWARM, "claim",
                     {"task": EST_TASK, "parent": c["parent"], "patch": c["patch"], "source_sha256": c["source_sha256"],
                      "note": "", "outcome": c["outcome"],
                      "result": None if c["claimed_bpb"] is None else {**RESULT, "val_bpb": c["claimed_bpb"],
                                                                       "tokens": c["tokens"]}},
                     "00" * 64) for c in claims]
    facts = [VoteFact(v["id"], v["voter"], v["claim"], v["verdict"], v["val_bpb"], v["created_at"], v["fresh"],
                      v["device"]) for v in votes]
    view = TrustView({keys[k]: float(w) for k, w in EST_TRUST.items()}, frozenset(),
                     frozenset(keys[k] for k in EST_PRETRUSTED))
    grouped = ranking.group_votes(facts)
    statuses = {e.id: ranking.claim_status(e, grouped.get(e.id, []), view, keys[EST_SELF],
                                           ranking.RankingSettings(), sigma_of) for e in envs}
    tests = ranking.significances(envs, statuses, EST_BASE_SOURCE)
    board = ranking.leaderboard(envs, statuses, EST_BASE_SOURCE)
    assert not board.pending and not board.disputed and not board.over_budget  # the node reproduced every one
    names = {c["id"]: c["name"] for c in claims}
    expected = {}
    for c in claims:
        est, sig = statuses[c["id"]].estimate, tests[c["id"]]
        expected[c["name"]] = {"estimate": None if est is None else est.to_json(), "state": sig.state,
                               "reference": sig.reference, "p": None if sig.p is None else f"{sig.p:.6g}",
                               "z": None if sig.z is None else f"{sig.z:.6g}"}
    states = {e["state"] for e in expected.values()}
    assert states == {"baseline", "significant", "not significant yet", "no gain"}, states
    thresholds = [{"claim_device": dc, "voter_device": dv,
                   "threshold": f"{mismatch_threshold(sigma_of(dc), sigma_of(dv), float(tolerance)):.6f}"}
                  for dc, dv in EST_THRESHOLDS]
    return {
        "description": "SPEC.md 5.8 and 5.9: one task's claims and votes as plain data (ids are only ids here; "
                       "nothing is signed; tokens: the claim's result.tokens, its budget), the voters' trust in the node's "
                       "view (absent: 0; pretrusted: the node and the keys its operator trusts, the rest have earned "
                       "power), the node's noise "
                       "table (file format of 5.8) and the task's tolerance. fresh: the vote carries a seed_proof. "
                       "expected: per claim, its estimate (mean, se, sigma: 6 decimals; n), its reference, z and p "
                       "(6 significant digits; null without a test) and state; board: the verified list, best first "
                       "(the node voted on every listed claim; val_bpb of an entry without an estimate: the node's "
                       "own reproduced value); duplicates; the mismatch threshold (6 decimals) of a few pairs of "
                       "device classes.",
        "constants": {"ALPHA": repr(ALPHA), "MAX_SAMPLES": MAX_SAMPLES, "MIN_NO_GAIN": MIN_NO_GAIN,
                      "PRIOR_DF": repr(PRIOR_DF), "Z_MISMATCH": repr(Z_MISMATCH)},
        "task": {"id": EST_TASK, "tolerance": tolerance, "source_sha256": EST_BASE_SOURCE},
        "noise": EST_NOISE,
        "self": keys[EST_SELF],
        "pretrusted": [keys[k] for k in EST_PRETRUSTED],
        "trust": {keys[k]: w for k, w in EST_TRUST.items()},
        "keys": keys,
        "claims": claims,
        "votes": votes,
        "expected": {"claims": expected,
                     "board": [names[e.claim.id] for e in board.verified],
                     "duplicates": [names[e.claim.id] for e in board.duplicates],
                     "mismatch_thresholds": thresholds},
    }


# -- SPEC.md 5.10: credit by receipt ----------------------------------------------------------------

def _rhex(kind: str, name: str) -> str:
    return hashlib.sha256(f"receipt/{kind}/{name}".encode()).hexdigest()


RC_T0 = CREATED_AT
RC_YEAR = 365 * 86400
RC_LATE = RC_T0 + 30 * 86400  # a node catching up stores both claims of a pair in one batch, a month later
RC_SELF = "me"
RC_PRETRUSTED = ("me", "op")  # this node and an operator-trusted key: voting power 1
RC_POWER = {"v1": "0.3"}  # a key that earned agreement with a pre-trusted evaluator; absent: no power
# name, task ("t" or "u"), author, created_at, source group, outcome, this node's own receipt (None: unknown,
# a row stored before receipt times were kept)
RC_CLAIMS = [
    # the backdated copy on a node that received both: its own receipts decide
    ("a-orig", "t", "x", RC_T0, "a", "improved", RC_T0 + 10),
    ("a-copy", "t", "thief", RC_T0 - RC_YEAR, "a", "improved", RC_T0 + 3600),
    ("a-other-task", "u", "y", RC_T0 - 50, "a", "improved", RC_T0 + 5),  # same source, another task
    # a node catching up: one batch, the copy first; a pre-trusted vote carries the original's receipt
    ("b-copy", "t", "thief", RC_T0 - RC_YEAR, "b", "improved", RC_LATE),
    ("b-orig", "t", "y", RC_T0 + 100, "b", "improved", RC_LATE),
    # the documented limit: no trusted receipt but the node's own (equal), so created_at decides
    ("c-copy", "t", "thief", RC_T0 - RC_YEAR, "c", "improved", RC_LATE),
    ("c-orig", "t", "z", RC_T0 + 200, "c", "improved", RC_LATE),
    # earned power alone does not make a receipt trusted; the least of several pre-trusted receipts counts
    ("d-1", "t", "x", RC_T0 + 300, "d", "improved", RC_T0 + 400),
    ("d-2", "t", "y", RC_T0 + 250, "d", "improved", RC_T0 + 500),
    # no receipt at all sorts last
    ("e-unknown", "t", "x", RC_T0 + 600, "e", "improved", None),
    ("e-known", "t", "y", RC_T0 + 700, "e", "improved", RC_T0 + 800),
    # equal receipts and created_at: the id decides
    ("f-1", "t", "x", RC_T0 + 900, "f", "improved", RC_T0 + 900),
    ("f-2", "t", "y", RC_T0 + 900, "f", "improved", RC_T0 + 900),
    ("f-3", "t", "z", RC_T0 + 900, "f", "improved", RC_T0 + 900),
    # a crashed claim never counts; a negative result does
    ("g-crashed", "t", "x", RC_T0 + 1000, "g", "crashed", RC_T0 + 1001),
    ("g-worse", "t", "y", RC_T0 + 1000, "g", "worse", RC_T0 + 1002),
    ("g-improved", "t", "z", RC_T0 + 990, "g", "improved", RC_T0 + 1003),
]
# voter, claim, created_at, claim_received_at (None: the vote carries none)
RC_VOTES = [
    ("op", "a-orig", RC_T0 + 50, RC_T0 + 20),  # later than this node's own receipt: the least counts
    ("thief", "a-copy", RC_T0 + 60, RC_T0 - RC_YEAR),  # no power: not a trusted receipt
    ("op", "b-orig", RC_T0 + 140, RC_T0 + 115),  # superseded by op's later vote (the least anyway)
    ("op", "b-orig", RC_T0 + 150, RC_T0 + 110),
    ("me", "b-copy", RC_LATE + 10, None),  # a vote without claim_received_at: no receipt
    ("s", "c-orig", RC_T0 + 260, RC_T0 + 210),  # no power
    ("v1", "d-2", RC_T0 + 600, RC_T0 + 350),  # earned power only: not a trusted receipt
    ("op", "d-2", RC_T0 + 610, RC_T0 + 380),
    ("me", "e-known", RC_T0 + 900, RC_T0 + 800),
]


def receipt_vectors() -> dict:
    keys = {name: _rhex("key", name) for name in ("me", "op", "v1", "s", "x", "y", "z", "thief")}
    tasks = {"t": _rhex("task", "t"), "u": _rhex("task", "u")}
    ids = {c[0]: _rhex("claim", c[0]) for c in RC_CLAIMS}
    claims = [{"name": name, "id": ids[name], "task": tasks[t], "author": keys[author], "created_at": at,
               "source_sha256": _rhex("source", group), "outcome": outcome, "own_receipt": own}
              for name, t, author, at, group, outcome, own in RC_CLAIMS]
    votes = [{"id": _rhex("vote", str(n)), "voter": keys[voter], "claim": ids[claim], "created_at": at,
              "verdict": "reproduced", "claim_received_at": received}
             for n, (voter, claim, at, received) in enumerate(RC_VOTES)]
    pretrusted = frozenset(keys[k] for k in RC_PRETRUSTED)
    view = TrustView({k: 1.0 for k in pretrusted}, frozenset(), pretrusted,
                     power={keys[k]: float(p) for k, p in RC_POWER.items()})
    envs = [Envelope(c["id"], c["author"], c["created_at"], SWARM, "claim",
                     {"task": c["task"], "parent": None, "patch": "+x\n", "source_sha256": c["source_sha256"],
                      "note": "", "outcome": c["outcome"],
                      "result": None if c["outcome"] == "crashed" else RESULT}, "00" * 64) for c in claims]
    facts = [VoteFact(v["id"], v["voter"], v["claim"], v["verdict"], RESULT["val_bpb"], v["created_at"],
                      claim_received_at=v["claim_received_at"]) for v in votes]
    names = {c["id"]: c["name"] for c in claims}
    received = ranking.receipt_times(envs, {c["id"]: c["own_receipt"] for c in claims}, facts, view)
    grouped = ranking.group_votes(facts)
    originals, duplicates = [], []
    for task in tasks.values():
        mine = [e for e in envs if e.body["task"] == task]
        statuses = {e.id: ranking.claim_status(e, grouped.get(e.id, []), view, keys[RC_SELF],
                                               ranking.RankingSettings()) for e in mine}
        board = ranking.leaderboard(mine, statuses, None, received)
        dups = [(names[e.claim.id], names[e.duplicate_of]) for e in board.duplicates]
        duplicates += dups
        originals += [names[e.id] for e in mine if e.body["outcome"] != "crashed"
                      and names[e.id] not in {d for d, _ in dups}]
    # What the corpus is for (protocol/SPEC.md 5.10): a copy backdated a year earns nothing where a
    # trusted receipt says so; without one, created_at decides (the documented limit).
    assert {"a-orig", "a-other-task", "b-orig", "c-copy", "d-2", "e-known", "g-worse"} <= set(originals), originals
    assert {"a-copy", "b-copy", "c-orig", "d-1", "e-unknown", "g-improved"} <= {d for d, _ in duplicates}
    return {
        "description": "SPEC.md 5.10: claims of two tasks as plain data (ids are only ids; nothing is signed), "
                       "with this node's own receipt time of each (null: unknown), votes with their "
                       "claim_received_at (null: none), and each key's voting power in this node's view "
                       "(pre-trusted: 1; power: the others that have any; absent: 0). expected: each "
                       "claim's trusted receipt (null: none), the originals (the first non-crashed claim "
                       "of each task and source_sha256 in the order (trusted receipt, created_at, id), "
                       "a claim without a trusted receipt last), sorted by name, and the duplicates with "
                       "the original they repeat, task t then task u, each in that order.",
        "self": keys[RC_SELF],
        "pretrusted": sorted(pretrusted),
        "power": {keys[k]: p for k, p in RC_POWER.items()},
        "keys": keys,
        "tasks": tasks,
        "claims": claims,
        "votes": votes,
        "expected": {"receipts": {names[i]: received.get(i) for i in ids.values()},
                     "originals": sorted(originals),
                     "duplicates": [list(d) for d in duplicates]},
    }


def generate() -> dict[str, str]:
    """File name -> file text."""
    files = {
        "keys.json": keys_vectors(),
        "canon.json": canon_vectors(),
        "envelopes.json": envelope_vectors(),
        "invalid.json": {"description": "Envelopes a receiver must refuse: raw text, receiver's swarm and now, "
                                        "and the reason its error must start with.",
                         "cases": invalid_vectors()},
        "sealing.json": sealing_vectors(),
        "http_exchange.json": http_exchange_vectors(),
        "fresh_seeds.json": fresh_seed_vectors(),
        "estimates.json": estimate_vectors(),
        "receipt.json": receipt_vectors(),
    }
    # ensure_ascii keeps the vector files themselves plain ASCII, whatever the data holds.
    return {name: json.dumps(data, indent=1, ensure_ascii=True) + "\n" for name, data in files.items()}


def main(argv: list[str]) -> int:
    files = generate()
    if "--check" in argv:
        stale = [n for n, t in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != t]
        for name in stale:
            print(f"gen_vectors: {name} is out of date; run scripts/gen_vectors.py", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (OUT / name).write_text(body, encoding="ascii")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
