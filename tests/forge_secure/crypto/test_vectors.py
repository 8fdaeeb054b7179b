"""Known-answer vectors: the bundle format, key files and roster cannot drift silently.

See tests/vectors/make_vectors.py for how the vectors are made and regenerated.
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
from pathlib import Path

import pytest

from forge_secure.crypto import _primitives as P
from forge_secure.crypto import keys, load_decryption_key, open_bundle, verify
from forge_secure.crypto.bundle import INFO_LABEL

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


@pytest.fixture(scope="module")
def mv():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keys_and_roster_regenerate_byte_for_byte(tmp_path, mv):
    made = mv.make_keys(tmp_path)
    for name in mv.KEY_SPECS:
        for f in (keys.SIGNING_FILE, keys.DECRYPTION_FILE, keys.PUBLIC_FILE):
            assert (tmp_path / "keys" / name / f).read_bytes() == (VECTORS / "keys" / name / f).read_bytes(), (name, f)
    assert mv.make_roster(tmp_path, made).read_bytes() == (VECTORS / "roster.json").read_bytes()


def _stored_wrap_hook(name: str, kit):
    """Re-use the stored HPKE encapsulation, after checking it wraps the regenerated data key."""
    stored = kit.split((VECTORS / name).read_bytes()).wrapped
    recipient = load_decryption_key(VECTORS / "keys" / name_to_recipient(name) / keys.DECRYPTION_FILE)
    calls = []

    def wrap(kem, public_raw, data_key, info):
        assert info.startswith(INFO_LABEL)
        assert P.hpke_unwrap(kem, recipient.keys, stored, info) == data_key
        calls.append(info)
        return stored

    return wrap, calls


def name_to_recipient(name: str) -> str:
    return {"classic.forge": "consortium", "post-quantum.forge": "consortium-pq"}[name]


def test_classic_bundle_regenerates_byte_for_byte(tmp_path, mv, kit):
    mv.make_keys(tmp_path)
    wrap, calls = _stored_wrap_hook("classic.forge", kit)
    out = mv.make_bundle(tmp_path, "classic.forge", VECTORS / "plugin", wrap=wrap)
    assert calls, "the wrap hook was not used"
    assert out.read_bytes() == (VECTORS / "classic.forge").read_bytes()


def test_post_quantum_bundle_regenerates_up_to_the_ml_dsa_signature(tmp_path, mv, kit):
    made = mv.make_keys(tmp_path)
    wrap, _ = _stored_wrap_hook("post-quantum.forge", kit)
    fresh = kit.split(mv.make_bundle(tmp_path, "post-quantum.forge", VECTORS / "plugin", wrap=wrap).read_bytes())
    stored = kit.split((VECTORS / "post-quantum.forge").read_bytes())
    assert fresh.head == stored.head and fresh.chunks == stored.chunks
    env_f, env_s = json.loads(fresh.envelope), json.loads(stored.envelope)
    assert env_f["payload"] == env_s["payload"]                      # the signed statement is identical
    assert env_f["signatures"][0] == env_s["signatures"][0]          # Ed25519 is deterministic
    assert [s["keyid"] for s in env_f["signatures"]] == [s["keyid"] for s in env_s["signatures"]]
    roster = mv.make_roster(tmp_path, made)
    assert verify(tmp_path / "post-quantum.forge", roster, now=mv.FIXED_NOW).post_quantum  # fresh ML-DSA signature verifies


@pytest.mark.parametrize("name", ["classic.forge", "post-quantum.forge"])
def test_stored_vectors_verify_and_open(tmp_path, mv, name):
    expected = json.loads((VECTORS / "expected.json").read_text())[name]
    v = verify(VECTORS / name, VECTORS / "roster.json", now=mv.FIXED_NOW)
    assert {k: val for k, val in v.to_dict().items() if k != "path"} == expected
    opened = open_bundle(VECTORS / name, VECTORS / "keys" / name_to_recipient(name) / keys.DECRYPTION_FILE,
                         VECTORS / "roster.json", tmp_path / "out", now=mv.FIXED_NOW)
    assert sorted(opened.files) == sorted(p.name for p in (VECTORS / "plugin").iterdir())
    _, mismatch, errors = filecmp.cmpfiles(VECTORS / "plugin", tmp_path / "out", list(opened.files), shallow=False)
    assert not mismatch and not errors


def test_primitive_vectors():
    # DSSE PAE example from the DSSE protocol document
    assert P.pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    # the chunk stream is deterministic given key, prefix, header digest, index and flag
    cipher = P.ChunkCipher(bytes(range(32)), b"\x01" * 8, b"\x02" * 32)
    out = bytearray(5 + 16)
    sealed = bytes(cipher.seal_chunk(3, True, memoryview(b"hello"), out))
    assert cipher.nonce(3) == b"\x01" * 8 + b"\x00\x00\x00\x03"
    assert cipher.aad(3, True) == b"\x02" * 32 + b"\x00" * 7 + b"\x03\x01"
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert sealed == AESGCM(bytes(range(32))).encrypt(cipher.nonce(3), b"hello", cipher.aad(3, True))
