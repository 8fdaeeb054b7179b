"""Issue 16: the pinned root of trust, distinct signers, and the recipient listed in the roster
(the crash classes, hostile names and partial outputs are in test_hardening.py).

Each test plays the adversary at full strength: it controls every byte it sends (bundles,
rosters, key files, plugin directories, names), signs with keys it made itself, and the
victim machine has only what the victim was given out of band.
"""

from __future__ import annotations

import json

import pytest

from forge_secure.cli import main as forge_main
from forge_secure.crypto import (
    BundleError,
    Recipient,
    add_admin_key,
    add_recipient,
    add_site_key,
    init_roster,
    load_public_key,
    load_roster,
    load_signing_key,
    new_keys,
    pin_root,
    read_roster,
    revoke_key,
    seal,
    sign_roster,
    verify,
)
from forge_secure.crypto import keys as keys_mod
from forge_secure.crypto.roster import Roster
from tests.forge_secure.crypto._world import code_of

# --------------------------------------------------------------------------- pinned root of trust


@pytest.fixture
def rogue(tmp_path, kit):
    """An attacker's own admin, site key and roster (signed on the attacker's machine)."""
    keys = {n: new_keys(n, tmp_path / "rogue" / n, random=kit.Drbg(f"rogue {n}")) for n in ("admin-1", "site-1", "consortium")}
    return keys


def _rogue_roster(tmp_path, kit, rogue, name: str, consortium: str, *, version: int = 1) -> object:
    path = tmp_path / name
    init_roster(
        path, consortium, [rogue["admin-1"].public_key], expires=kit.NOW + 365 * kit.DAY, recipients=[rogue["consortium"].public_key]
    )
    add_site_key(path, rogue["site-1"].public_key, not_before=kit.NOW - kit.DAY, not_after=kit.NOW + 100 * kit.DAY)
    for _ in range(version - 2):
        sign_roster(
            path, load_signing_key(rogue["admin-1"].signing), expires=kit.NOW + 300 * kit.DAY, state_dir=tmp_path / "attacker-state"
        )
    sign_roster(path, load_signing_key(rogue["admin-1"].signing), state_dir=tmp_path / "attacker-state")
    return path


def test_rogue_roster_on_a_fresh_machine_is_refused(tmp_path, kit, world, rogue):
    path = _rogue_roster(tmp_path, kit, rogue, "rogue.json", "medforge", version=9)
    forged = seal(
        world.plugin,
        load_signing_key(rogue["site-1"].signing),
        rogue["consortium"].public,
        tmp_path / "f.forge",
        now=kit.NOW,
        roster=path,
        state_dir=tmp_path / "attacker-state",
    )
    fresh = tmp_path / "fresh-machine"
    assert code_of(verify, forged, path, now=kit.NOW, state_dir=fresh) == "roster.unpinned"
    # given the genuine root out of band (a file, or a digest), the rogue roster does not chain to it
    assert code_of(verify, forged, path, now=kit.NOW, state_dir=fresh, root=world.roster) == "roster.rotation"
    digest = read_roster(world.roster).digest
    assert code_of(verify, forged, path, now=kit.NOW, state_dir=tmp_path / "fresh-2", root=f"sha256:{digest}") == "roster.pin_mismatch"
    assert code_of(pin_root, path, sha256=digest, state_dir=tmp_path / "fresh-3") == "roster.pin_mismatch"
    assert not (tmp_path / "fresh-3" / "medforge.json").exists()
    # the genuine roster verifies genuine bundles on that machine
    assert verify(world.seal("g.forge"), world.roster, now=kit.NOW, state_dir=fresh).site == "site-1"


def test_rogue_roster_under_a_new_consortium_name_is_refused(tmp_path, kit, world, rogue):
    world.trusted()  # this machine has the genuine root for "medforge"
    path = _rogue_roster(tmp_path, kit, rogue, "rogue.json", "medforge-eu", version=5)
    forged = seal(
        world.plugin,
        load_signing_key(rogue["site-1"].signing),
        rogue["consortium"].public,
        tmp_path / "f.forge",
        now=kit.NOW,
        roster=path,
        state_dir=tmp_path / "attacker-state",
    )
    assert code_of(verify, forged, path, now=kit.NOW) == "roster.unpinned"
    # and a root for another consortium cannot be passed off as its root
    assert code_of(verify, forged, path, now=kit.NOW, root=world.roster) == "roster.unpinned"


def test_a_higher_version_by_other_admins_does_not_chain(tmp_path, kit, world, rogue):
    world.trusted()
    path = _rogue_roster(tmp_path, kit, rogue, "rogue.json", "medforge", version=9)
    assert read_roster(path).version == 9
    assert code_of(load_roster, path, now=kit.NOW) == "roster.rotation"


def test_old_roster_with_a_revoked_key_is_refused(tmp_path, kit, world):
    admin = load_signing_key(world.keys["admin-1"].signing)
    old = tmp_path / "old-roster.json"
    old.write_bytes(world.roster.read_bytes())  # still lists site-1's key, unrevoked
    revoke_key(world.roster, world.keys["site-1"].public_key.key_id, reason="laptop stolen", at=kit.NOW - 10)
    sign_roster(world.roster, admin)
    stolen = world.seal("stolen.forge")  # the thief seals with the stolen key
    # a machine that saw the revocation: the old roster is a rollback
    assert code_of(verify, stolen, world.roster, now=kit.NOW) == "bundle.revoked"
    assert code_of(verify, stolen, old, now=kit.NOW) == "roster.rollback"
    # a fresh machine pinned with the current roster (file or digest) refuses the old one too
    assert code_of(verify, stolen, old, now=kit.NOW, state_dir=tmp_path / "m1", root=world.roster) == "roster.rollback"
    digest = read_roster(world.roster).digest
    assert code_of(verify, stolen, old, now=kit.NOW, state_dir=tmp_path / "m2", root=f"sha256:{digest}") == "roster.pin_mismatch"


def test_pin_needs_a_threshold_of_its_own_admins(tmp_path, kit):
    admins = {n: new_keys(n, tmp_path / n, random=kit.Drbg(n)) for n in ("a1", "a2")}
    path = tmp_path / "r.json"
    init_roster(path, "c", [admins["a1"].public_key, admins["a2"].public_key], threshold=2, expires=kit.NOW + kit.DAY)
    sign_roster(path, load_signing_key(admins["a1"].signing), state_dir=tmp_path / "s")
    assert not (tmp_path / "s" / "c.json").exists()  # one of two: not pinned
    assert code_of(pin_root, path, state_dir=tmp_path / "s") == "roster.signature"
    sign_roster(path, load_signing_key(admins["a2"].signing), state_dir=tmp_path / "s")
    assert (tmp_path / "s" / "c.json").exists()  # the admin's own machine pins what it signed


# --------------------------------------------------------------------------- distinct signers


def test_a_hybrid_key_and_its_own_ed25519_half_are_one_signer(tmp_path, kit):
    """The attack: admin A's Ed25519 key, plus the same Ed25519 key with a fresh ML-DSA key as a
    second 'admin', met a threshold of 2 with one party's key."""
    a = new_keys("admin-a", tmp_path / "a", random=kit.Drbg("a"))
    hybrid = new_keys("admin-h", tmp_path / "h", post_quantum=True, random=kit.Drbg("h"))
    ed_half = keys_mod.SigningPublicKey(("ed25519",), {"ed25519": hybrid.public_key.signing.keys["ed25519"]})
    same_party = keys_mod.PublicKey("admin-x", ed_half, a.public_key.kem, a.public_key.encryption_key)
    path = tmp_path / "r.json"
    init_roster(path, "c", [hybrid.public_key], expires=kit.NOW + kit.DAY)
    assert code_of(add_admin_key, path, same_party, threshold=2) == "roster.invalid"
    with pytest.raises(BundleError):
        Roster("c", 1, kit.NOW + kit.DAY, 2, (roster_admin(hybrid.public_key), roster_admin(same_party)))
    # counting: two admin entries sharing a component key count once (the rotation check counts the
    # previously trusted admins this way too). One party signs under both entries:
    sign_roster(path, load_signing_key(hybrid.signing), state_dir=tmp_path / "s")
    r = read_roster(path)
    ed_sig = r.signatures[hybrid.public_key.key_id]["ed25519"]
    object.__setattr__(r, "signatures", {**r.signatures, same_party.key_id: {"ed25519": ed_sig}})
    both = (roster_admin(hybrid.public_key), roster_admin(same_party))
    assert len(r.valid_signers(both)) == 2 and r.signer_count(both) == 1


def roster_admin(pub):
    from forge_secure.crypto.roster import Admin

    return Admin(pub.site, pub.signing)


# --------------------------------------------------------------------------- the recipient is in the roster


def test_seal_refuses_a_recipient_not_in_the_roster(world, kit):
    plugin, signer = world.plugin, world.signer()
    for kw in ({"roster": world.roster}, {}):  # an explicit roster, or the one trusted on this machine
        with pytest.raises(BundleError) as e:
            seal(plugin, signer, world.keys["stranger"].public, world.root / "s.forge", now=kit.NOW, **kw)
        assert e.value.code == "bundle.unlisted_recipient" and "not listed" in str(e.value)
        assert not (world.root / "s.forge").exists()
    # listed recipients work, an auditor's too
    assert seal(plugin, signer, world.keys["other"].public, world.root / "aud.forge", now=kit.NOW, roster=world.roster).exists()
    # a swapped public.json: the consortium's name, the attacker's encryption key
    doc = json.loads(world.keys["consortium"].public.read_text())
    doc["encryption"] = json.loads(world.keys["stranger"].public.read_text())["encryption"]
    swapped = world.root / "swapped.json"
    swapped.write_text(json.dumps(doc))
    assert code_of(seal, plugin, signer, swapped, world.root / "w.forge", now=kit.NOW, roster=world.roster) == "bundle.unlisted_recipient"
    # a revoked recipient key
    revoke_key(world.roster, world.keys["other"].public_key.encryption_key_id, reason="auditor left", at=kit.NOW - 5)
    sign_roster(world.roster, load_signing_key(world.keys["admin-1"].signing))
    assert (
        code_of(seal, plugin, signer, world.keys["other"].public, world.root / "r.forge", now=kit.NOW, roster=world.roster)
        == "bundle.unlisted_recipient"
    )


def test_cli_seal_with_an_unlisted_recipient_says_so(world, capsys, tmp_path):
    code = forge_main(
        [
            "seal",
            str(world.plugin),
            "--signer",
            str(world.keys["site-1"].signing),
            "--recipient",
            str(world.keys["stranger"].public),
            "--roster",
            str(world.roster),
            "--out",
            str(tmp_path / "x.forge"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "bundle.unlisted_recipient" in err and "not listed in roster" in err
    assert not (tmp_path / "x.forge").exists()


def test_add_recipient_and_show(world, kit, capsys):
    add_recipient(world.roster, world.keys["stranger"].public_key, role="auditor")
    assert forge_main(["roster", "show", str(world.roster)]) == 0
    out = capsys.readouterr().out
    assert "stranger (auditor)" in out and "consortium (consortium)" in out
    assert code_of(add_recipient, world.roster, world.keys["stranger"].public_key) == "roster.duplicate"


def test_recipient_from_public_key_roundtrip(world):
    r = Recipient.from_public(world.keys["consortium"].public_key)
    assert r.key_id == world.keys["consortium"].public_key.encryption_key_id
    assert load_public_key(world.keys["consortium"].public).encryption_key_id == r.key_id


def test_cli_roster_pin(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "fresh-home"))  # a fresh machine
    digest = read_roster(world.roster).digest
    assert forge_main(["roster", "pin", str(world.roster), "--sha256", "ab" * 32]) == 2
    assert "roster.pin_mismatch" in capsys.readouterr().err
    assert forge_main(["roster", "pin", str(world.roster), "--sha256", f"sha256:{digest}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == digest
    assert (tmp_path / "fresh-home" / "roster" / "medforge.json").is_file()
