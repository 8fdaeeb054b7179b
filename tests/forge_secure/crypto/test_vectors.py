"""Known-answer vectors: the bundle format, key files and roster cannot drift silently.

See tests/vectors/make_vectors.py for how the vectors are made and regenerated.
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from forge_secure.crypto import _primitives as P
from forge_secure.crypto import keys, load_decryption_key, open_bundle, verify
from forge_secure.crypto.bundle import INFO_LABEL

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def secret_copy(path: Path, tmp: Path) -> Path:
    """A stored secret key vector copied with mode 0600 (git checks files out 0644, and a
    group-readable secret key is refused on load)."""
    out = tmp / "secret-copies" / path.parent.name / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out)
    out.chmod(0o600)
    return out


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


def _stored_wrap_hook(name: str, kit, tmp: Path):
    """Re-use the stored HPKE encapsulation, after checking it wraps the regenerated data key."""
    stored = kit.split((VECTORS / name).read_bytes()).wrapped
    recipient = load_decryption_key(secret_copy(VECTORS / "keys" / name_to_recipient(name) / keys.DECRYPTION_FILE, tmp))
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
    wrap, calls = _stored_wrap_hook("classic.forge", kit, tmp_path)
    out = mv.make_bundle(tmp_path, "classic.forge", VECTORS / "plugin", wrap=wrap)
    assert calls, "the wrap hook was not used"
    assert out.read_bytes() == (VECTORS / "classic.forge").read_bytes()


def test_post_quantum_bundle_regenerates_up_to_the_ml_dsa_signature(tmp_path, mv, kit):
    made = mv.make_keys(tmp_path)
    wrap, _ = _stored_wrap_hook("post-quantum.forge", kit, tmp_path)
    fresh = kit.split(mv.make_bundle(tmp_path, "post-quantum.forge", VECTORS / "plugin", wrap=wrap).read_bytes())
    stored = kit.split((VECTORS / "post-quantum.forge").read_bytes())
    assert fresh.head == stored.head and fresh.chunks == stored.chunks
    env_f, env_s = json.loads(fresh.envelope), json.loads(stored.envelope)
    assert env_f["payload"] == env_s["payload"]  # the signed statement is identical
    assert env_f["signatures"][0] == env_s["signatures"][0]  # Ed25519 is deterministic
    assert [s["keyid"] for s in env_f["signatures"]] == [s["keyid"] for s in env_s["signatures"]]
    roster = mv.make_roster(tmp_path, made)
    assert verify(tmp_path / "post-quantum.forge", roster, now=mv.FIXED_NOW, state_dir=tmp_path / "state").post_quantum


@pytest.mark.parametrize("roster_file", ["roster.json", "roster-v1.json"])
@pytest.mark.parametrize("name", ["classic.forge", "post-quantum.forge"])
def test_stored_vectors_verify_and_open(tmp_path, mv, name, roster_file):
    """Both roster formats (2, with recipients, and the format-1 file written before it) verify
    the stored bundles; each roster is its own pinned root here."""
    expected = json.loads((VECTORS / "expected.json").read_text())[name]
    roster = VECTORS / roster_file
    v = verify(VECTORS / name, roster, now=mv.FIXED_NOW, root=roster)
    assert {k: val for k, val in v.to_dict().items() if k != "path"} == expected
    opened = open_bundle(
        VECTORS / name,
        secret_copy(VECTORS / "keys" / name_to_recipient(name) / keys.DECRYPTION_FILE, tmp_path),
        roster,
        tmp_path / "out",
        now=mv.FIXED_NOW,
    )
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


def test_stored_key_vectors_load_and_the_v1_roster_reads(tmp_path):
    """Every stored key file (format 1) still loads; the stored format-1 roster parses as format 1."""
    from forge_secure.crypto import read_roster

    for d in sorted((VECTORS / "keys").iterdir()):
        assert keys.load_signing_key(secret_copy(d / keys.SIGNING_FILE, tmp_path)).site == d.name
        assert keys.load_decryption_key(secret_copy(d / keys.DECRYPTION_FILE, tmp_path)).site == d.name
    old, new = read_roster(VECTORS / "roster-v1.json"), read_roster(VECTORS / "roster.json")
    assert (old.format, new.format) == ("forge-roster/1", "forge-roster/2")
    assert not old.recipients and {r.name for r in new.recipients} == {"consortium", "consortium-pq"}
    assert old.version == new.version == 3
