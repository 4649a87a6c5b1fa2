"""Protocol v1 test vectors (tests/vectors/, SPEC.md sections 9 and 10.7), checked two ways: with our
protocol package (and node.net.swarmkey for the sealing, store.stats and store.ranking for the
estimates), and independently with hashlib + hmac + cryptography + a canonical encoder written here
from the spec's rules (and the estimates, test and states re-implemented here from SPEC.md 5.8 and
5.9), so a bug in protocol.canon, in the sealing or in the ranking cannot silently regenerate
matching vectors. The recorded HTTP exchange is replayed
against a real node by tests/node/test_spec_http.py.
Run: .venv/bin/python -m pytest tests/protocol/test_vectors.py"""
from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from node.net.swarmkey import (
    ReplayCache, SwarmAuthError, SwarmKey, open_request, open_response, seal_request, seal_response,
)
from protocol import Identity, ProtocolError, canon, decode, parse, task_id

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"


def load(name: str):
    return json.loads((VECTORS / name).read_text(encoding="ascii"))


# --- an independent canonical encoder, from SPEC.md section 2 ------------------------------------

_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def spec_canon(v) -> bytes:
    def enc(v) -> str:
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            assert -(2**53) <= v <= 2**53
            return str(v)
        if isinstance(v, str):
            return _string(v)
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        if isinstance(v, dict):
            keys = sorted(v, key=lambda k: [ord(c) for c in k])  # code-point order, spelled out
            return "{" + ",".join(_string(k) + ":" + enc(v[k]) for k in keys) + "}"
        raise TypeError(type(v))
    return enc(v).encode("utf-8")


def test_independent_encoder_is_not_trivially_json_dumps():
    # Guard the guard: the hand-written encoder really implements the rules.
    assert spec_canon({"b": [1, None], "a": "\u00e9\x01\n"}) == '{"a":"\u00e9\\u0001\\n","b":[1,null]}'.encode()


# --- keys ---------------------------------------------------------------------------------------

def test_keys():
    for case in load("keys.json")["keys"]:
        seed = bytes.fromhex(case["seed"])
        assert Identity.from_seed(seed).pubkey == case["pubkey"]
        private = Ed25519PrivateKey.from_private_bytes(seed)
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert raw.hex() == case["pubkey"]
        assert private.sign(b"").hex() == case["sig_empty"]


def test_rfc8032_test1_is_the_published_vector():
    case = next(c for c in load("keys.json")["keys"] if c["name"] == "rfc8032-test1")
    # RFC 8032 section 7.1, TEST 1 (typed in from the RFC, not generated).
    assert case["pubkey"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert case["sig_empty"] == ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
                                 "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


# --- canon --------------------------------------------------------------------------------------

def test_canon_cases():
    for case in load("canon.json")["cases"]:
        expected = case["canonical"].encode("utf-8")
        assert expected.hex() == case["hex"], case["name"]
        assert canon(case["value"]) == expected, case["name"]
        assert spec_canon(case["value"]) == expected, case["name"]
        assert parse(expected) == case["value"], case["name"]


def test_canon_rejects():
    for case in load("canon.json")["reject"]:
        with pytest.raises(ProtocolError) as err:
            parse(case["json"])
        assert err.value.reason.startswith(case["reason_prefix"]), case["name"]


# --- envelopes ----------------------------------------------------------------------------------

def test_valid_envelopes_with_our_code():
    data = load("envelopes.json")
    kinds = set()
    for case in data["envelopes"]:
        raw = case["canonical"].encode("utf-8")
        env = decode(raw, swarm=case["swarm"], now=case["now"])
        assert env.to_dict() == case["envelope"]
        assert env.canonical() == raw
        kinds.add(case["kind"])
    assert kinds == {"task", "claim", "vote", "peer"}
    task = next(c for c in data["envelopes"] if c["kind"] == "task")
    assert task_id(task["envelope"]["body"]) == data["task_id"]


def test_valid_envelopes_independently():
    data = load("envelopes.json")
    for case in data["envelopes"]:
        e = case["envelope"]
        raw = case["canonical"].encode("utf-8")
        assert spec_canon(e) == raw
        assert hashlib.sha256(raw).hexdigest() == case["canonical_sha256"]
        preimage = spec_canon([1, e["swarm"], e["author"], e["created_at"], e["kind"], e["body"]])
        assert preimage == case["id_preimage"].encode("utf-8")
        assert hashlib.sha256(preimage).hexdigest() == e["id"]
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(e["author"])).verify(
            bytes.fromhex(e["sig"]), bytes.fromhex(e["id"]))  # raises InvalidSignature if wrong
    task = next(c for c in data["envelopes"] if c["kind"] == "task")
    assert hashlib.sha256(spec_canon(task["envelope"]["body"])).hexdigest() == data["task_id"]


def test_invalid_envelopes():
    cases = load("invalid.json")["cases"]
    reasons = set()
    for case in cases:
        with pytest.raises(ProtocolError) as err:
            decode(case["raw"].encode("utf-8"), swarm=case["swarm"], now=case["now"])
        assert err.value.reason.startswith(case["reason_prefix"]), (case["name"], err.value.reason)
        reasons.add(case["reason_prefix"])
    for needed in ("bad signature", "bad id", "wrong swarm", "too large", "from the future", "unknown kind",
                   "not canonical", "schema: "):
        assert any(r.startswith("invalid: " + needed) for r in reasons), needed


def test_vector_files_are_up_to_date():
    # Regenerating gives byte-identical files: generation is deterministic and the files are current.
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_vectors.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


# --- private-swarm sealing (SPEC.md 10.3) ----------------------------------------------------------

def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 written out with hmac (32 bytes = one block), independent of node.net.swarmkey."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_sealing_independently():
    data = load("sealing.json")
    secret = bytes.fromhex(data["key_file"].strip())
    assert secret.hex() == data["secret"] and data["salt"]["text"].encode().hex() == data["salt"]["hex"]
    salt = bytes.fromhex(data["salt"]["hex"])
    for case in data["cases"]:
        swarm, keys, req, ans = case["swarm"], case["keys"], case["request"], case["answer"]
        assert bytes.fromhex(keys["info_request"]["hex"]) == b"ralphswarm v1 request|" + swarm.encode("utf-8")
        assert bytes.fromhex(keys["info_response"]["hex"]) == b"ralphswarm v1 response|" + swarm.encode("utf-8")
        request_key = _hkdf_sha256(secret, salt, bytes.fromhex(keys["info_request"]["hex"]))
        response_key = _hkdf_sha256(secret, salt, bytes.fromhex(keys["info_response"]["hex"]))
        assert (request_key.hex(), response_key.hex()) == (keys["request_key"], keys["response_key"]), case["name"]
        # request: header, associated data (canonical JSON, spelled out by spec_canon), sealed body
        assert req["header"] == {"name": "X-Ralphswarm-Auth", "value": f"v1 {req['ts']} {req['nonce']}"}
        ad = spec_canon(["ralphswarm-request", "v1", swarm, req["method"], req["target"], req["ts"]])
        assert ad == bytes.fromhex(req["ad"]["hex"]) == req["ad"]["text"].encode("utf-8"), case["name"]
        plain = bytes.fromhex(req["plaintext"]["hex"])
        assert plain == req["plaintext"]["text"].encode("utf-8")
        sealed = ChaCha20Poly1305(request_key).encrypt(bytes.fromhex(req["nonce"]), plain, ad)
        assert sealed.hex() == req["sealed"] and len(sealed) == len(plain) + 16, case["name"]
        # answer: nonce || ciphertext || tag, bound to the request's nonce and the status
        ad = spec_canon(["ralphswarm-response", "v1", swarm, req["nonce"], ans["status"]])
        assert ad == bytes.fromhex(ans["ad"]["hex"]) == ans["ad"]["text"].encode("utf-8"), case["name"]
        nonce = bytes.fromhex(ans["nonce"])
        sealed = nonce + ChaCha20Poly1305(response_key).encrypt(nonce, bytes.fromhex(ans["plaintext"]["hex"]), ad)
        assert sealed.hex() == ans["sealed"], case["name"]
    assert any(not c["swarm"].isascii() for c in data["cases"])  # raw UTF-8 in info and in the AD
    assert any(c["request"]["plaintext"]["hex"] == "" for c in data["cases"])  # a GET still carries a tag


def test_sealing_with_our_code():
    data = load("sealing.json")
    secret = bytes.fromhex(data["secret"])
    for case in data["cases"]:
        key = SwarmKey.from_secret(secret, case["swarm"])
        req, ans = case["request"], case["answer"]
        assert (key.request_key.hex(), key.response_key.hex()) == (case["keys"]["request_key"],
                                                                   case["keys"]["response_key"])
        plain = bytes.fromhex(req["plaintext"]["hex"])
        headers, sealed = seal_request(key, req["method"], req["target"], plain, req["ts"] + 0.75,
                                       nonce=bytes.fromhex(req["nonce"]))
        assert headers == {"X-Ralphswarm-Auth": req["header"]["value"], "Content-Type": "application/octet-stream"}
        assert sealed.hex() == req["sealed"], case["name"]
        opened = open_request(key, req["method"], req["target"], headers, sealed, req["ts"], ReplayCache())
        assert opened == plain
        request_nonce = bytes.fromhex(req["nonce"])
        answer = bytes.fromhex(ans["plaintext"]["hex"])
        sealed = seal_response(key, request_nonce, ans["status"], answer, nonce=bytes.fromhex(ans["nonce"]))
        assert sealed.hex() == ans["sealed"], case["name"]
        assert open_response(key, request_nonce, ans["status"], sealed) == answer


def test_sealing_refusals():
    data = load("sealing.json")
    secret = bytes.fromhex(data["secret"])
    first = data["cases"][0]["request"]
    key = SwarmKey.from_secret(secret, data["cases"][0]["swarm"])
    for case in data["accepted"]:
        headers = {"X-Ralphswarm-Auth": first["header"]["value"]}
        open_request(key, first["method"], first["target"], headers, bytes.fromhex(first["sealed"]), case["now"],
                     ReplayCache())
    reasons = set()
    for case in data["refusals"]:
        k = SwarmKey.from_secret(secret, case["swarm"])
        headers = {} if case["header"] is None else {"X-Ralphswarm-Auth": case["header"]}
        cache = ReplayCache()
        args = (k, case["method"], case["target"], headers, bytes.fromhex(case["sealed"]), case["now"], cache)
        if case["opened_before"]:
            open_request(*args)
        with pytest.raises(SwarmAuthError) as err:
            open_request(*args)
        assert err.value.reason.startswith(case["reason_prefix"]), (case["name"], err.value.reason)
        reasons.add(case["reason_prefix"])
    assert {"missing swarm auth header", "garbled swarm auth header", "stale request timestamp",
            "request timestamp in the future", "bad request tag", "replayed request"} <= reasons
    for case in data["answer_refusals"]:
        with pytest.raises(SwarmAuthError):
            open_response(key, bytes.fromhex(case["request_nonce"]), case["status"], bytes.fromhex(case["sealed"]))


# --- fresh seeds (SPEC.md 5.4.1) ---------------------------------------------------------------------

SPEC_SEED_DOMAIN = b"ralphswarm/v1/fresh-seed" + b"\x00"  # typed in from SPEC.md 5.4.1


def test_fresh_seeds_independently():
    cases = load("fresh_seeds.json")["cases"]
    for case in cases:
        message = SPEC_SEED_DOMAIN + bytes.fromhex(case["claim"])
        assert len(message) == 57 and message.hex() == case["message_hex"], case["name"]
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["key_seed"]))
        proof = private.sign(message)
        assert proof.hex() == case["seed_proof"], case["name"]
        private.public_key().verify(proof, message)
        assert int.from_bytes(hashlib.sha256(proof).digest()[:8], "big") % 2**31 == case["seed"], case["name"]
    assert len({c["seed"] for c in cases}) == len(cases)


def test_fresh_seeds_with_our_code():
    from protocol.seeds import check_seed_proof, fresh_seed, seed_from_proof, seed_message

    data = load("fresh_seeds.json")
    for case in data["cases"]:
        identity = Identity.from_seed(bytes.fromhex(case["key_seed"]))
        assert identity.pubkey == case["pubkey"]
        assert seed_message(case["claim"]).hex() == case["message_hex"]
        assert fresh_seed(identity, case["claim"]) == (case["seed"], case["seed_proof"])
        assert seed_from_proof(case["seed_proof"]) == case["seed"]
        assert check_seed_proof(case["pubkey"], case["claim"], case["seed_proof"])
    vote = data["vote"]
    env = decode(vote["canonical"].encode("utf-8"), swarm=vote["swarm"], now=vote["now"])
    assert env.to_dict() == vote["envelope"] and spec_canon(vote["envelope"]) == vote["canonical"].encode("utf-8")
    body = env.body
    assert body["result"]["seed"] == seed_from_proof(body["seed_proof"])
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(env.author)).verify(
        bytes.fromhex(body["seed_proof"]), SPEC_SEED_DOMAIN + bytes.fromhex(body["claim"]))
    reasons = set()
    for case in data["invalid"]:
        with pytest.raises(ProtocolError) as err:
            decode(case["raw"].encode("utf-8"), swarm=case["swarm"], now=case["now"])
        assert err.value.reason.startswith(case["reason_prefix"]), (case["name"], err.value.reason)
        reasons.add(case["reason_prefix"])
    assert {"invalid: bad signature", "invalid: schema: body.seed_proof", "invalid: schema: body.result",
            "invalid: schema: body.result.seed"} <= reasons


# --- estimates, the test, the states, the board (SPEC.md 5.8, 5.9) ------------------------------------

def _estimates_with_our_code(data: dict, tmp_path: Path) -> tuple[dict, list[str], list[str], list[str]]:
    from protocol import Envelope
    from store import ranking
    from store.stats import NoiseTable, mismatch_threshold
    from store.trust import TrustView, VoteFact

    path = tmp_path / "noise.json"
    path.write_text(json.dumps(data["noise"]))
    noise = NoiseTable.load(path)
    task, tolerance = data["task"]["id"], float(data["task"]["tolerance"])
    claims = [Envelope(c["id"], c["author"], c["created_at"], "public", "claim",
                       {"task": task, "parent": c["parent"], "patch": c["patch"], "source_sha256": c["source_sha256"],
                        "note": "", "outcome": c["outcome"],
                        "result": None if c["claimed_bpb"] is None else {"val_bpb": c["claimed_bpb"],
                                                                         "tokens": c["tokens"]}}, "00" * 64)
              for c in data["claims"]]
    facts = [VoteFact(v["id"], v["voter"], v["claim"], v["verdict"], v["val_bpb"], v["created_at"], v["fresh"],
                      v["device"]) for v in data["votes"]]
    view = TrustView({k: float(w) for k, w in data["trust"].items()}, frozenset(), frozenset(data["pretrusted"]))
    grouped = ranking.group_votes(facts)

    def sigma_of(device: str | None) -> float:
        return noise.sigma(task, device, tolerance)

    statuses = {c.id: ranking.claim_status(c, grouped.get(c.id, []), view, data["self"], ranking.RankingSettings(),
                                           sigma_of) for c in claims}
    tests = ranking.significances(claims, statuses, data["task"]["source_sha256"])
    out = {}
    for c in data["claims"]:
        est, sig = statuses[c["id"]].estimate, tests[c["id"]]
        out[c["name"]] = {"estimate": None if est is None else est.to_json(), "state": sig.state,
                          "reference": sig.reference, "p": None if sig.p is None else f"{sig.p:.6g}",
                          "z": None if sig.z is None else f"{sig.z:.6g}"}
    board = ranking.leaderboard(claims, statuses, data["task"]["source_sha256"])
    names = {c["id"]: c["name"] for c in data["claims"]}
    thresholds = [f"{mismatch_threshold(sigma_of(t['claim_device']), sigma_of(t['voter_device']), tolerance):.6f}"
                  for t in data["expected"]["mismatch_thresholds"]]
    return (out, [names[e.claim.id] for e in board.verified], [names[e.claim.id] for e in board.duplicates],
            thresholds)


def test_estimates_with_our_code(tmp_path):
    data = load("estimates.json")
    claims, board, duplicates, thresholds = _estimates_with_our_code(data, tmp_path)
    expected = data["expected"]
    assert claims == expected["claims"]
    assert board == expected["board"] and duplicates == expected["duplicates"]
    assert thresholds == [t["threshold"] for t in expected["mismatch_thresholds"]]
    from store import stats
    assert data["constants"] == {"ALPHA": repr(stats.ALPHA), "MAX_SAMPLES": stats.MAX_SAMPLES,
                                 "MIN_NO_GAIN": stats.MIN_NO_GAIN, "PRIOR_DF": repr(stats.PRIOR_DF),
                                 "Z_MISMATCH": repr(stats.Z_MISMATCH)}


# Written from SPEC.md 5.8 and 5.9 alone: exact sums (fractions), math.erfc; the constants typed in.
SPEC_ALPHA, SPEC_MAX_SAMPLES, SPEC_MIN_NO_GAIN, SPEC_PRIOR_DF = 0.01, 5, 2, 4
SPEC_Z_MISMATCH = 2.5758293035489


def _spec_estimates(data: dict) -> tuple[dict, list[str], list[str], list[str]]:
    import math
    from fractions import Fraction

    task, tolerance = data["task"]["id"], float(data["task"]["tolerance"])

    def sigma(device):
        entry = data["noise"].get(task, {}).get(device)
        return float(entry["sigma"]) if entry is not None else tolerance / 3

    claims = data["claims"]
    by_id = {c["id"]: c for c in claims}
    latest: dict[tuple[str, str], dict] = {}
    for v in data["votes"]:
        key = (v["claim"], v["voter"])
        if key not in latest or (v["created_at"], v["id"]) > (latest[key]["created_at"], latest[key]["id"]):
            latest[key] = v

    def trust(k):
        return float(data["trust"].get(k, "0"))

    estimates = {}
    for c in claims:
        heard = [v for (claim, voter), v in latest.items()
                 if claim == c["id"] and voter != c["author"] and v["verdict"] in ("reproduced", "mismatch")
                 and v["fresh"] and v["val_bpb"] is not None and trust(voter) > 0]
        pre = [v for v in heard if v["voter"] in data["pretrusted"]]
        rest = sorted((v for v in heard if v not in pre), key=lambda v: (-trust(v["voter"]), v["created_at"], v["id"]))
        if pre:
            m = sum(Fraction(float(v["val_bpb"])) for v in pre) / len(pre)
            var = sum(Fraction(sigma(v["device"])) ** 2 for v in pre) / len(pre) ** 2
            rest = [v for v in rest if abs(float(v["val_bpb"]) - float(m))
                    <= SPEC_Z_MISMATCH * math.sqrt(sigma(v["device"]) ** 2 + float(var))][:len(pre)]
        samples = [(Fraction(float(v["val_bpb"])), Fraction(sigma(v["device"]))) for v in pre + rest]
        n = len(samples)
        if n == 0:
            estimates[c["id"]] = None
            continue
        mean = sum(x for x, _ in samples) / n
        prior = sum(s * s for _, s in samples) / n
        scatter = sum((x - mean) ** 2 for x, _ in samples)
        sd = math.sqrt((SPEC_PRIOR_DF * prior + scatter) / (SPEC_PRIOR_DF + n - 1))
        estimates[c["id"]] = (float(mean), sd / math.sqrt(n), n, sd)

    def is_base(c):
        return (c["parent"] is None and c["patch"] == "" and c["outcome"] != "crashed"
                and c["source_sha256"] == data["task"]["source_sha256"])

    def tokens(c):  # a crashed claim has no result, so no budget
        return c["tokens"] if c["claimed_bpb"] is not None else None

    base_of: dict = {}  # result.tokens -> the baseline claim at that budget
    for c in sorted(filter(is_base, claims), key=lambda c: (c["created_at"], c["id"])):
        base_of.setdefault(tokens(c), c["id"])
    bases = set(base_of.values())
    out = {}
    for c in claims:
        est = estimates[c["id"]]
        shown = None if est is None else {"mean": f"{est[0]:.6f}", "se": f"{est[1]:.6f}", "n": est[2],
                                          "sigma": f"{est[3]:.6f}"}
        if c["id"] in bases:
            out[c["name"]] = {"estimate": shown, "state": "baseline", "reference": None, "p": None, "z": None}
            continue
        parent = by_id.get(c["parent"])
        if c["parent"] is not None and (parent is None or tokens(parent) == tokens(c)):
            ref = c["parent"]
        else:
            ref = base_of.get(tokens(c))
        ref_est = estimates.get(ref) if ref in by_id else None
        if est is None or ref_est is None:
            out[c["name"]] = {"estimate": shown, "state": "not significant yet", "reference": ref, "p": None,
                              "z": None}
            continue
        spread = math.sqrt(ref_est[1] ** 2 + est[1] ** 2)
        z = (ref_est[0] - est[0]) / spread
        p = min(1.0, SPEC_MAX_SAMPLES * math.erfc(z / math.sqrt(2)) / 2)
        if p < SPEC_ALPHA:
            state = "significant"
        elif est[2] >= SPEC_MIN_NO_GAIN and est[0] >= ref_est[0]:
            state = "no gain"
        elif est[2] >= SPEC_MAX_SAMPLES and ref_est[2] >= SPEC_MAX_SAMPLES:
            state = "no gain"
        else:
            state = "not significant yet"
        out[c["name"]] = {"estimate": shown, "state": state, "reference": ref, "p": f"{p:.6g}", "z": f"{z:.6g}"}

    first: dict = {}
    listed, duplicates = [], []
    for c in sorted((c for c in claims if c["outcome"] != "crashed"), key=lambda c: (c["created_at"], c["id"])):
        key = (c["source_sha256"], tokens(c)) if is_base(c) else c["source_sha256"]
        if first.setdefault(key, c["id"]) != c["id"]:
            duplicates.append(c["name"])
        elif c["outcome"] == "improved" or is_base(c):
            listed.append(c)

    def rank(c):
        est = estimates[c["id"]]
        own = latest.get((c["id"], data["self"]))  # this vector: the node reproduced every listed claim
        return (est[0] if est is not None else float(own["val_bpb"]), c["created_at"], c["id"])

    def threshold(claim_device: str, voter_device: str) -> float:
        return max(tolerance, SPEC_Z_MISMATCH * math.sqrt(sigma(claim_device) ** 2 + sigma(voter_device) ** 2))

    thresholds = [f"{threshold(t['claim_device'], t['voter_device']):.6f}"
                  for t in data["expected"]["mismatch_thresholds"]]
    return out, [c["name"] for c in sorted(listed, key=rank)], duplicates, thresholds


def test_estimates_independently():
    data = load("estimates.json")
    claims, board, duplicates, thresholds = _spec_estimates(data)
    expected = data["expected"]
    for name, want in expected["claims"].items():
        assert claims[name] == want, name
    assert board == expected["board"] and duplicates == expected["duplicates"]
    assert thresholds == [t["threshold"] for t in expected["mismatch_thresholds"]]
    # The corpus exercises every state and both kinds of reference.
    assert {c["state"] for c in claims.values()} == {"baseline", "significant", "no gain", "not significant yet"}


def test_spec_constants_are_the_normal_quantiles_they_claim():
    from statistics import NormalDist

    assert abs(NormalDist().inv_cdf(0.995) - SPEC_Z_MISMATCH) < 1e-12  # two-sided 1% (SPEC.md 5.8)


# --- credit by receipt (SPEC.md 5.10) ------------------------------------------------------------------

def _receipts_with_our_code(data: dict) -> tuple[dict, list[str], list[list[str]]]:
    from protocol import Envelope
    from store import ranking
    from store.trust import TrustView, VoteFact

    pre = frozenset(data["pretrusted"])
    view = TrustView({k: 1.0 for k in pre}, frozenset(), pre, power={k: float(p) for k, p in data["power"].items()})
    result = {"val_bpb": "1.000000"}
    claims = [Envelope(c["id"], c["author"], c["created_at"], "public", "claim",
                       {"task": c["task"], "parent": None, "patch": "+x\n", "source_sha256": c["source_sha256"],
                        "note": "", "outcome": c["outcome"], "result": None if c["outcome"] == "crashed" else result},
                       "00" * 64) for c in data["claims"]]
    facts = [VoteFact(v["id"], v["voter"], v["claim"], v["verdict"], "1.000000", v["created_at"],
                      claim_received_at=v["claim_received_at"]) for v in data["votes"]]
    names = {c["id"]: c["name"] for c in data["claims"]}
    received = ranking.receipt_times(claims, {c["id"]: c["own_receipt"] for c in data["claims"]}, facts, view)
    grouped = ranking.group_votes(facts)
    duplicates = []
    for task in (data["tasks"]["t"], data["tasks"]["u"]):
        mine = [c for c in claims if c.body["task"] == task]
        statuses = {c.id: ranking.claim_status(c, grouped.get(c.id, []), view, data["self"], ranking.RankingSettings())
                    for c in mine}
        board = ranking.leaderboard(mine, statuses, None, received)
        duplicates += [[names[e.claim.id], names[e.duplicate_of]] for e in board.duplicates]
    dup_names = {d for d, _ in duplicates}
    originals = sorted(c["name"] for c in data["claims"] if c["outcome"] != "crashed" and c["name"] not in dup_names)
    return {names[c.id]: received.get(c.id) for c in claims}, originals, duplicates


def test_receipts_with_our_code():
    data = load("receipt.json")
    receipts, originals, duplicates = _receipts_with_our_code(data)
    expected = data["expected"]
    assert receipts == expected["receipts"]
    assert originals == expected["originals"] and duplicates == expected["duplicates"]


def _spec_receipts(data: dict) -> tuple[dict, list[str], list[list[str]]]:
    """Written from SPEC.md 5.10 alone: a claim's trusted receipt is the least of this node's own
    receipt and the claim_received_at of every current vote (latest per voter by (created_at, id),
    5.9) of a pre-trusted voter other than the claim's author; the original
    of a task's source is the first non-crashed claim in (trusted receipt, created_at, id), a claim
    without a trusted receipt last."""
    def has_power(key: str) -> bool:
        return key in data["pretrusted"]

    latest: dict[tuple[str, str], dict] = {}
    for v in data["votes"]:
        k = (v["claim"], v["voter"])
        if k not in latest or (v["created_at"], v["id"]) > (latest[k]["created_at"], latest[k]["id"]):
            latest[k] = v
    receipts = {}
    for c in data["claims"]:
        times = [c["own_receipt"]] if c["own_receipt"] is not None else []
        times += [v["claim_received_at"] for (claim, voter), v in latest.items()
                  if claim == c["id"] and v["claim_received_at"] is not None and has_power(voter)
                  and voter != c["author"]]
        receipts[c["name"]] = min(times) if times else None
    infinity = float("inf")
    originals, duplicates = [], []
    for task in (data["tasks"]["t"], data["tasks"]["u"]):
        order = sorted((c for c in data["claims"] if c["task"] == task and c["outcome"] != "crashed"),
                       key=lambda c: (receipts[c["name"]] if receipts[c["name"]] is not None else infinity,
                                      c["created_at"], c["id"]))
        first: dict[str, str] = {}
        for c in order:
            original = first.setdefault(c["source_sha256"], c["name"])
            if original == c["name"]:
                originals.append(c["name"])
            else:
                duplicates.append([c["name"], original])
    return receipts, sorted(originals), duplicates


def test_receipts_independently():
    data = load("receipt.json")
    receipts, originals, duplicates = _spec_receipts(data)
    expected = data["expected"]
    assert receipts == expected["receipts"]
    assert originals == expected["originals"] and duplicates == expected["duplicates"]
    # The corpus holds what 5.10 is about: a copy backdated a year that a trusted receipt (the node's
    # own, or a pre-trusted vote's) keeps a duplicate, and the documented limit, where nothing but equal
    # receipts of the node's own is known and created_at decides.
    dup_of = dict(map(tuple, duplicates))
    assert dup_of["a-copy"] == "a-orig" and dup_of["b-copy"] == "b-orig" and dup_of["c-orig"] == "c-copy"
    assert receipts["c-copy"] == receipts["c-orig"] and receipts["e-unknown"] is None
