"""Push: verified before anything is stored; every bad push is a clean 4xx carrying the
CLI's error code and fix, and leaves the hub's state unchanged. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import struct

import pytest

from forge_secure.hub.client import verify_receipt


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"] and err["fix"], err
    return err


def test_push_accepted_with_signed_receipt(hub_env):
    c = hub_env.consortium
    bundle = c.seal("site-1")
    resp = hub_env.push(bundle)
    assert resp.status_code == 200, resp.text
    receipt = resp.json()
    checked = verify_receipt(receipt, hub_env.hub.keys.verifier)
    entry = checked["entry"]
    assert entry["kind"] == "submission" and entry["site"] == "site-1" and entry["sequence"] == 1
    import hashlib

    assert entry["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert hub_env.hub.store.path(entry["bundle_sha256"]).read_bytes() == bundle.read_bytes()
    assert float(entry["dp"]["epsilon"]) > 0 and entry["dp"]["accountant"] == "rdp"
    listed = hub_env.client.get("/v1/submissions").json()["submissions"]
    assert [s["submission_id"] for s in listed] == [entry["submission_id"]]


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _envelope_span(data: bytes) -> tuple[int, int]:
    hlen = struct.unpack(">I", data[8:12])[0]
    header = json.loads(data[12 : 12 + hlen])
    pos = 12 + hlen
    wlen = struct.unpack(">H", data[pos : pos + 2])[0]
    pos += 2 + wlen
    cs, total, size = header["chunk_size"], header["chunks"], header["payload_size"]
    for i in range(total):
        pos += (size - i * cs if i == total - 1 else cs) + 16
    return pos, struct.unpack(">I", data[pos : pos + 4])[0]


def _unsigned(data: bytes) -> bytes:
    pos, elen = _envelope_span(data)
    env = json.loads(data[pos + 4 : pos + 4 + elen])
    env["signatures"] = []
    new = json.dumps(env).encode()
    return data[:pos] + struct.pack(">I", len(new)) + new


@pytest.mark.parametrize("case", ["flip-header", "flip-chunk", "flip-envelope", "truncated", "unsigned"])
def test_tampered_push_refused_and_nothing_stored(hub_env, case, tmp_path):
    data = hub_env.consortium.seal("site-1").read_bytes()
    pos, elen = _envelope_span(data)
    bad = {
        "flip-header": lambda: _flip(data, 20),
        "flip-chunk": lambda: _flip(data, pos - 40),
        "flip-envelope": lambda: _flip(data, pos + 4 + elen // 2),
        "truncated": lambda: data[: len(data) * 2 // 3],
        "unsigned": lambda: _unsigned(data),
    }[case]()
    before = hub_env.state()
    resp = hub_env.client.post("/v1/push", content=bad)
    assert 400 <= resp.status_code < 500, resp.text
    err = resp.json()["error"]
    assert err["code"].startswith("bundle.") and err["fix"]
    assert hub_env.state() == before


def test_replayed_and_rolled_back_pushes_refused(hub_env):
    c = hub_env.consortium
    first, second = c.seal("site-1"), c.seal("site-1")
    assert hub_env.push(second).status_code == 200  # sequence 2 first
    before = hub_env.state()
    _error(hub_env.push(second), 409, "bundle.replay")  # the same bundle again
    _error(hub_env.push(first), 409, "bundle.replay")  # an older sequence number (rolled back)
    assert hub_env.state() == before


def test_wrong_roster_signer_refused(hub_env):
    c = hub_env.consortium
    before = hub_env.state()
    stranger = c.seal("site-1", signer=c.signer("stranger"))  # a key the hub's roster does not list
    err = _error(hub_env.push(stranger), 403, "bundle.untrusted_signer")
    assert "roster" in err["fix"]
    assert hub_env.state() == before


def test_oversized_push_refused_before_storing(hub_factory):
    env = hub_factory(max_bundle=2048)
    bundle = env.consortium.seal("site-1")
    before = env.state()
    _error(env.push(bundle), 413, "hub.too_large")
    # chunked upload without Content-Length: the limit holds while streaming
    resp = env.client.post("/v1/push", content=iter([bundle.read_bytes()[:1500], bundle.read_bytes()[1500:]]))
    _error(resp, 413, "hub.too_large")
    assert env.state() == before


def test_empty_and_garbage_pushes(hub_env):
    before = hub_env.state()
    _error(hub_env.client.post("/v1/push", content=b""), 400, "bundle.truncated")
    resp = hub_env.client.post("/v1/push", content=b"GET / HTTP/1.1\r\n" * 100)
    assert resp.status_code == 400 and resp.json()["error"]["code"].startswith("bundle.")
    assert hub_env.state() == before


def test_revoked_site_refused_after_roster_update(hub_env, tmp_path):
    from forge_secure.crypto import load_signing_key, revoke_key, sign_roster

    c = hub_env.consortium
    old_doc = json.loads(c.roster.read_text())
    assert hub_env.push(c.seal("site-2")).status_code == 200
    revoke_key(c.roster, c.keys["site-2"].public_key.key_id, reason="laptop stolen")
    sign_roster(c.roster, load_signing_key(c.keys["admin-1"].signing))
    resp = hub_env.client.post("/v1/roster", json=json.loads(c.roster.read_text()))
    assert resp.status_code == 200 and resp.json()["changed"], resp.text
    _error(hub_env.push(c.seal("site-2")), 403, "bundle.revoked")
    _error(hub_env.client.post("/v1/roster", json=old_doc), 409, "roster.rollback")
    unsigned = json.loads(c.roster.read_text())
    unsigned["signed"]["version"] += 1
    assert hub_env.client.post("/v1/roster", json=unsigned).status_code in (400, 403)
    entries = hub_env.client.get("/v1/log/entries").json()["entries"]
    versions = [e["version"] for e in entries if e["kind"] == "roster"]
    assert versions == sorted(versions) and len(versions) == 2
