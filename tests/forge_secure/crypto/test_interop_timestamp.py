"""Interoperability (DSSE envelopes checked by securesystemslib, as model_signing does) and the
short-lived signed timestamp that bounds freeze attacks."""

from __future__ import annotations

import json

import pytest

from forge_secure.cli import main as forge_main
from forge_secure.crypto import BundleError, load_signing_key, new_keys, revoke_key, sign_roster, verify
from forge_secure.crypto.roster import add_timestamp_key, read_roster
from forge_secure.crypto.timestamp import issue_timestamp, read_timestamp, verify_timestamp


def code_of(fn, *a, **kw) -> str:
    with pytest.raises(BundleError) as e:
        fn(*a, **kw)
    return e.value.code


@pytest.mark.parametrize("post_quantum", [False, True])
def test_bundle_envelopes_verify_with_securesystemslib_dsse(tmp_path, kit, post_quantum):
    dsse = pytest.importorskip("securesystemslib.dsse")
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    world = kit.build_world(tmp_path, post_quantum=post_quantum)
    data = world.seal().read_bytes()
    envelope = json.loads(kit.split(data).envelope)
    site = world.keys["site-1"].public_key
    key = SSlibKey(f"ed25519:{site.key_id}", "ed25519", "ed25519", {"public": site.signing.keys["ed25519"].hex()})
    env = dsse.Envelope.from_dict(json.loads(json.dumps(envelope)))  # from_dict edits the dict it is given
    assert env.payload_type == "application/vnd.in-toto+json"
    accepted = env.verify([key], 1)  # securesystemslib's own PAE and Ed25519 check (ML-DSA is not in securesystemslib)
    assert list(accepted) == [f"ed25519:{site.key_id}"]
    statement = json.loads(env.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1" and statement["predicate"]["site"] == "site-1"
    envelope["payload"] = envelope["payload"][:-4] + ("AAAA" if not envelope["payload"].endswith("AAAA") else "BBBB")
    with pytest.raises(VerificationError):
        dsse.Envelope.from_dict(json.loads(json.dumps(envelope))).verify([key], 1)


def test_timestamp_bounds_a_freeze_attack(world, kit):
    admin = load_signing_key(world.keys["admin-1"].signing)
    hub = new_keys("hub", world.root / "keys" / "hub", random=kit.Drbg("hub"))
    add_timestamp_key(world.roster, hub.public_key)
    sign_roster(world.roster, admin)
    world.trusted()
    frozen = world.root / "frozen-roster.json"
    frozen.write_bytes(world.roster.read_bytes())
    ts_path = world.root / "ts.json"
    issue_timestamp(world.roster, load_signing_key(hub.signing), ts_path, lifetime=6 * 3600, now=kit.NOW)
    bundle = world.seal("b.forge")
    assert verify(bundle, world.roster, now=kit.NOW + 3600, timestamp=ts_path).site == "site-1"
    # the revocation is published: a new roster and a new timestamp naming it
    revoke_key(world.roster, world.keys["site-1"].public_key.key_id, reason="stolen", at=kit.NOW + 3600)
    sign_roster(world.roster, admin)
    issue_timestamp(world.roster, load_signing_key(hub.signing), ts_path, now=kit.NOW + 2 * 3600)
    # an attacker withholds the new roster from a machine that never saw it, and replays the old
    # timestamp: it expires within hours, and the new one names the new roster
    other = world.root / "other-machine"
    old_ts = world.root / "old-ts.json"
    issue_timestamp(frozen, load_signing_key(hub.signing), old_ts, now=kit.NOW)
    assert code_of(verify, bundle, frozen, now=kit.NOW + 7 * 3600, state_dir=other, root=frozen, timestamp=old_ts) == "timestamp.expired"
    assert code_of(verify, bundle, frozen, now=kit.NOW + 3 * 3600, state_dir=other, timestamp=ts_path) == "timestamp.stale_roster"
    assert code_of(verify, bundle, world.roster, now=kit.NOW + 3 * 3600, state_dir=other, timestamp=ts_path) == "bundle.revoked"


def test_timestamp_signers_lifetimes_and_files(world, kit, tmp_path):
    roster = read_roster(world.roster)
    stranger = load_signing_key(world.keys["stranger"].signing)
    path = tmp_path / "ts.json"
    assert code_of(issue_timestamp, roster, stranger, path, now=kit.NOW) == "timestamp.not_signer"
    assert (
        code_of(issue_timestamp, roster, load_signing_key(world.keys["admin-1"].signing), path, lifetime=30 * 86400, now=kit.NOW)
        == "timestamp.lifetime"
    )
    issue_timestamp(roster, load_signing_key(world.keys["admin-1"].signing), path, now=kit.NOW)  # an admin may sign one
    ts = read_timestamp(path)
    assert ts.expires - ts.issued == 6 * 3600 and ts.roster_sha256 == roster.digest
    assert verify_timestamp(path, roster, now=kit.NOW + 60).roster_version == roster.version
    assert code_of(verify_timestamp, path, roster, now=kit.NOW - 3600) == "timestamp.future"
    doc = json.loads(path.read_text())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(doc))
    assert code_of(verify_timestamp, path, roster, now=kit.NOW) == "timestamp.signature"
    for raw, code in ((b"", "file.empty"), (b"[" * 60000, "timestamp.invalid"), (b"[]", "timestamp.wrong_type")):
        path.write_bytes(raw)
        assert code_of(read_timestamp, path) == code


def test_cli_timestamp(world, kit, tmp_path, capsys, monkeypatch):
    from forge_secure.crypto import _time

    monkeypatch.setattr(_time, "now", lambda: kit.NOW)
    ts = tmp_path / "ts.json"
    assert (
        forge_main(
            [
                "roster",
                "timestamp",
                str(world.roster),
                "--key",
                str(world.keys["admin-1"].signing),
                "--out",
                str(ts),
                "--lifetime",
                "2h",
                "--json",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "forge-timestamp/1" and info["expires"] == _time.format_time(kit.NOW + 7200)
    bundle = world.seal("c.forge")
    assert forge_main(["verify", str(bundle), "--roster", str(world.roster), "--timestamp", str(ts)]) == 0
    monkeypatch.setattr(_time, "now", lambda: kit.NOW + 3 * 3600)
    assert forge_main(["verify", str(bundle), "--roster", str(world.roster), "--timestamp", str(ts)]) == 2
    assert "timestamp.expired" in capsys.readouterr().err
