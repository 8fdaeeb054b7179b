"""The trust roster: signatures, threshold, expiry, rollback, fork, rotation, broken files."""

from __future__ import annotations

import json

import pytest

from forge_secure.crypto import (
    add_admin_key,
    add_site_key,
    init_roster,
    load_roster,
    load_signing_key,
    new_keys,
    read_roster,
    revoke_key,
    sign_roster,
)
from tests.forge_secure.crypto._world import code_of


@pytest.fixture
def admins(tmp_path, kit):
    return {n: new_keys(n, tmp_path / n, random=kit.Drbg(n)) for n in ("admin-1", "admin-2", "admin-3", "site-1")}


def test_unsigned_then_signed(tmp_path, admins, kit):
    path = tmp_path / "r.json"
    init_roster(path, "medforge", [admins["admin-1"].public_key], expires=kit.NOW + kit.DAY)
    assert code_of(load_roster, path, now=kit.NOW) == "roster.signature"
    sign_roster(path, load_signing_key(admins["admin-1"].signing))
    r = load_roster(path, now=kit.NOW)
    assert r.version == 1 and r.describe(kit.NOW)["trusted"]
    assert code_of(sign_roster, path, load_signing_key(admins["admin-2"].signing)) == "roster.not_admin"


def test_threshold_two_of_three(tmp_path, admins, kit):
    path = tmp_path / "r.json"
    init_roster(path, "medforge", [admins[a].public_key for a in ("admin-1", "admin-2", "admin-3")], threshold=2, expires=kit.NOW + kit.DAY)
    sign_roster(path, load_signing_key(admins["admin-1"].signing))
    assert code_of(load_roster, path, now=kit.NOW) == "roster.signature"
    sign_roster(path, load_signing_key(admins["admin-3"].signing))
    assert load_roster(path, now=kit.NOW).describe(kit.NOW)["valid_signatures"] == 2
    assert (
        code_of(init_roster, tmp_path / "r2.json", "x", [admins["admin-1"].public_key], threshold=2, expires=kit.NOW) == "roster.threshold"
    )
    assert code_of(init_roster, path, "medforge", [admins["admin-1"].public_key], expires=kit.NOW) == "roster.exists"


def test_edits_bump_version_and_clear_signatures(tmp_path, admins, kit):
    path = tmp_path / "r.json"
    init_roster(path, "medforge", [admins["admin-1"].public_key], expires=kit.NOW + kit.DAY)
    sign_roster(path, load_signing_key(admins["admin-1"].signing))
    r = add_site_key(path, admins["site-1"].public_key, not_before=kit.NOW - 10, not_after=kit.NOW + 100)
    assert r.version == 2 and not r.signatures
    assert code_of(add_site_key, path, admins["site-1"].public_key, not_before=kit.NOW, not_after=kit.NOW + 1) == "roster.duplicate"
    assert code_of(add_site_key, path, admins["admin-2"].public_key, not_before=kit.NOW, not_after=kit.NOW) == "roster.window"
    r = revoke_key(path, admins["site-1"].public_key.key_id, reason="compromised", at=kit.NOW)
    assert r.version == 3 and r.revoked(admins["site-1"].public_key.key_id).reason == "compromised"
    assert code_of(revoke_key, path, "ab" * 32, reason="x") == "roster.unknown_key"
    assert code_of(add_site_key, path, admins["site-1"].public_key, not_before=kit.NOW, not_after=kit.NOW + 1) == "roster.duplicate"


def test_expired_rollback_fork(tmp_path, admins, kit):
    path, state = tmp_path / "r.json", tmp_path / "state"
    key = load_signing_key(admins["admin-1"].signing)
    init_roster(path, "medforge", [admins["admin-1"].public_key], expires=kit.NOW + kit.DAY)
    sign_roster(path, key)
    assert code_of(load_roster, path, now=kit.NOW + 2 * kit.DAY, state_dir=state) == "roster.expired"
    renewed = tmp_path / "renewed.json"
    renewed.write_bytes(path.read_bytes())
    assert sign_roster(renewed, key, expires=kit.NOW + 10 * kit.DAY).version == 2
    assert load_roster(renewed, now=kit.NOW + 2 * kit.DAY, state_dir=tmp_path / "other-state", root=renewed).version == 2
    v1 = path.read_bytes()
    load_roster(path, now=kit.NOW, state_dir=state, root=path)
    add_site_key(path, admins["site-1"].public_key, not_before=kit.NOW, not_after=kit.NOW + 100)
    sign_roster(path, key)
    load_roster(path, now=kit.NOW, state_dir=state)  # version 2 remembered
    old = tmp_path / "old.json"
    old.write_bytes(v1)
    assert code_of(load_roster, old, now=kit.NOW, state_dir=state) == "roster.rollback"
    # another version 2 with different content, properly signed: equivocation
    fork = tmp_path / "fork.json"
    fork.write_bytes(v1)
    add_site_key(fork, admins["admin-2"].public_key, not_before=kit.NOW, not_after=kit.NOW + 100)
    sign_roster(fork, key)
    assert code_of(load_roster, fork, now=kit.NOW, state_dir=state) == "roster.fork"
    # a fresh client trusts nothing on first use: it needs the root, and a digest given out of band must match
    assert code_of(load_roster, fork, now=kit.NOW, state_dir=tmp_path / "fresh") == "roster.unpinned"
    genuine = read_roster(path).digest
    assert code_of(load_roster, fork, now=kit.NOW, state_dir=tmp_path / "fresh", root=f"sha256:{genuine}") == "roster.pin_mismatch"
    assert load_roster(path, now=kit.NOW, state_dir=tmp_path / "fresh", root=f"sha256:{genuine}").version == 2


def test_admin_rotation_needs_the_old_admins(tmp_path, admins, kit):
    path, state = tmp_path / "r.json", tmp_path / "state"
    init_roster(path, "medforge", [admins["admin-1"].public_key], expires=kit.NOW + kit.DAY)
    sign_roster(path, load_signing_key(admins["admin-1"].signing))
    load_roster(path, now=kit.NOW, state_dir=state, root=path)
    hijack = tmp_path / "hijack.json"  # an attacker's roster for the same consortium, higher version
    init_roster(hijack, "medforge", [admins["admin-2"].public_key], expires=kit.NOW + kit.DAY)
    add_admin_key(hijack, admins["admin-3"].public_key)  # version 2 > the version 1 already seen
    sign_roster(hijack, load_signing_key(admins["admin-2"].signing))
    sign_roster(hijack, load_signing_key(admins["admin-3"].signing))
    assert code_of(load_roster, hijack, now=kit.NOW, state_dir=state) == "roster.rotation"
    # a genuine rotation: the old admin signs the new admin set too
    add_admin_key(path, admins["admin-2"].public_key)
    sign_roster(path, load_signing_key(admins["admin-2"].signing))
    assert code_of(load_roster, path, now=kit.NOW, state_dir=state) == "roster.rotation"
    sign_roster(path, load_signing_key(admins["admin-1"].signing))
    assert load_roster(path, now=kit.NOW, state_dir=state).version == 2


def test_broken_roster_files(tmp_path, admins, kit):
    path = tmp_path / "r.json"
    init_roster(path, "medforge", [admins["admin-1"].public_key], expires=kit.NOW + kit.DAY)
    sign_roster(path, load_signing_key(admins["admin-1"].signing))
    good = path.read_bytes()
    bad = tmp_path / "bad.json"
    doc = json.loads(good)
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"  # tampered: signature no longer matches
    tampered = json.dumps(doc).encode()
    doc2 = json.loads(good)
    doc2["signed"]["extra"] = 1
    doc3 = json.loads(good)
    doc3["signed"]["format"] = "forge-roster/9"
    for data, code in (
        (b"", "file.empty"),
        (good[:100], "roster.invalid"),
        (b"[1,2]", "roster.wrong_type"),
        (tampered, "roster.signature"),
        (json.dumps(doc2).encode(), "roster.invalid"),
        (json.dumps(doc3).encode(), "roster.version"),
        (admins["admin-1"].public.read_bytes(), "roster.wrong_type"),
    ):
        bad.write_bytes(data)
        assert code_of(load_roster, bad, now=kit.NOW, state_dir=tmp_path / "s") == code, data[:60]
    assert code_of(read_roster, tmp_path) == "file.is_directory"
    assert code_of(read_roster, tmp_path / "nope.json") == "file.missing"
