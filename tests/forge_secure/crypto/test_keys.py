"""Key files: generation, modes, passphrases, and every broken input."""

from __future__ import annotations

import json
import stat

import pytest

from forge_secure.crypto import BundleError, load_decryption_key, load_public_key, load_signing_key, new_keys, read_passphrase


def code_of(fn, *a, **kw) -> str:
    with pytest.raises(BundleError) as e:
        fn(*a, **kw)
    assert "\n" not in str(e.value)
    return e.value.code


def test_new_keys_files_modes_and_ids(tmp_path):
    files = new_keys("site-1", tmp_path / "k")
    assert stat.S_IMODE(files.signing.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.decryption.stat().st_mode) == 0o600
    pub = load_public_key(files.public)
    assert pub.site == "site-1" and pub.kem == "x25519" and pub.signing.algorithms == ("ed25519",)
    assert load_signing_key(files.signing).key_id == pub.key_id
    assert load_decryption_key(files.decryption).key_id == pub.encryption_key_id
    doc = json.loads(files.public.read_text())
    assert doc["key_id"] == pub.key_id and len(doc["key_id"]) == 64
    assert "BEGIN PRIVATE KEY" in files.signing.read_text()


def test_post_quantum_keys(tmp_path):
    files = new_keys("site-1", tmp_path / "k", post_quantum=True)
    pub = load_public_key(tmp_path / "k")  # a key directory works too
    assert pub.post_quantum and pub.kem == "ml-kem-768+x25519"
    assert load_signing_key(files.signing).algorithms == ("ed25519", "ml-dsa-65")
    assert set(load_decryption_key(files.decryption).keys) == {"ml-kem-768", "x25519"}


def test_refuses_to_overwrite(tmp_path):
    new_keys("site-1", tmp_path / "k")
    before = (tmp_path / "k" / "signing.key").read_bytes()
    assert code_of(new_keys, "site-1", tmp_path / "k") == "key.exists"
    assert (tmp_path / "k" / "signing.key").read_bytes() == before
    (tmp_path / "file").write_text("x")
    assert code_of(new_keys, "site-1", tmp_path / "file") == "file.not_a_directory"
    assert code_of(new_keys, "../evil", tmp_path / "k2") == "key.bad_site"


def test_passphrases(tmp_path):
    files = new_keys("site-1", tmp_path / "k", passphrase=b"correct horse battery")
    assert "ENCRYPTED PRIVATE KEY" in files.signing.read_text()
    assert load_signing_key(files.signing, b"correct horse battery").site == "site-1"
    assert code_of(load_signing_key, files.signing, b"wrong horse battery") == "key.bad_passphrase"
    assert code_of(load_decryption_key, files.decryption, b"wrong horse battery") == "key.bad_passphrase"
    assert code_of(load_signing_key, files.signing) == "key.passphrase_required"
    plain = new_keys("site-2", tmp_path / "p")
    assert code_of(load_signing_key, plain.signing, b"unneeded pass") == "key.not_encrypted"
    assert code_of(new_keys, "site-3", tmp_path / "s", passphrase=b"short") == "key.passphrase_short"


def test_read_passphrase(tmp_path, monkeypatch):
    f = tmp_path / "pass.txt"
    f.write_text("s3cret-phrase\nignored\n")
    assert read_passphrase(file=f) == b"s3cret-phrase"
    monkeypatch.setenv("FORGE_PASS", "from-env-123")
    assert read_passphrase(env="FORGE_PASS") == b"from-env-123"
    assert read_passphrase() is None
    assert code_of(read_passphrase, env="FORGE_UNSET_VARIABLE") == "key.passphrase_empty"
    (tmp_path / "empty.txt").write_text("\n")
    assert code_of(read_passphrase, file=tmp_path / "empty.txt") == "key.passphrase_empty"
    assert code_of(read_passphrase, file=tmp_path) == "file.is_directory"
    assert code_of(read_passphrase, file=f, env="FORGE_PASS") == "key.passphrase_source"


def test_broken_key_files(tmp_path):
    files = new_keys("site-1", tmp_path / "k")
    bad = tmp_path / "bad.key"
    good = files.signing.read_bytes()
    cases = {
        b"": "file.empty",
        good[: len(good) // 2]: "key.invalid",                          # truncated
        b"\x00\x01binary garbage": "key.invalid",
        files.public.read_bytes(): "key.wrong_type",                      # a public key where a private one belongs
        files.decryption.read_bytes(): "key.wrong_type",                  # the other role
        good.replace(b'"site": "site-1"', b'"site": "site-2"'): None,     # site is not part of the key id: still loads
    }
    doc = json.loads(good)
    doc["key_id"] = "00" * 32
    cases[json.dumps(doc).encode()] = "key.invalid"                       # tampered key id
    doc = json.loads(good)
    doc["algorithms"] = ["ed448"]
    cases[json.dumps(doc).encode()] = "key.algorithm"
    doc = json.loads(good)
    doc["pkcs8"]["ed25519"] = doc["pkcs8"]["ed25519"][:60] + "AAAA" + doc["pkcs8"]["ed25519"][64:]
    cases[json.dumps(doc).encode()] = "key.invalid"                       # tampered PEM body
    for data, code in cases.items():
        bad.write_bytes(data)
        if code is None:
            load_signing_key(bad)
        else:
            assert code_of(load_signing_key, bad) == code, data[:80]
    assert code_of(load_signing_key, tmp_path) == "file.is_directory"
    assert code_of(load_signing_key, tmp_path / "missing.key") == "file.missing"
    assert code_of(load_public_key, files.signing) == "key.wrong_type"
    pub = json.loads(files.public.read_text())
    pub["signing"]["public_keys"]["ed25519"] = "AAAA"
    bad.write_text(json.dumps(pub))
    assert code_of(load_public_key, bad) == "key.invalid"
