"""Replay envelopes, auditor canaries and the replay check, with real Opacus, PEFT and cryptography.

The liar here plays at full strength: it trains however it likes, writes a forge.json that is
self-consistent (produced by a real honest run of the recipe it claims, epsilon included),
inserts whatever canaries it likes, seals with its own roster key and hands over an envelope
(with the claimed recipe, or with the true one). It never volunteers anything against itself.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from forge_secure.crypto.keys import load_public_key, load_signing_key, new_keys
from forge_secure.crypto.roster import add_site_key, init_roster, sign_roster
from forge_secure.errors import ForgeError
from forge_secure.fileio import sha256_file
from forge_secure.plugins.data import load_data
from forge_secure.privacy import TrainConfig, train_plugin
from forge_secure.privacy.canaries import included_canaries, issue_record, write_grant
from forge_secure.privacy.randomness import fresh_secret
from forge_secure.privacy.replay import (ReplayError, assemble_data, build_recipe, envelope_path, open_replay_envelope, replay,
                                         write_replay_envelope)
from forge_secure.privacy.site import train_site

DAY = 86400
SITE = "site-1"
CLAIMED = dict(noise_multiplier=1.0, epochs=4, batch_size=32, lr=0.05, max_grad_norm=1.0, accountant="rdp", delta=1e-5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import time

    root = tmp_path_factory.mktemp("replay-world")
    keys = {who: new_keys(who, root / "keys" / who) for who in ("admin", SITE, "auditor", "stranger")}
    now = int(time.time())
    roster = root / "roster.json"
    init_roster(roster, "medforge", [load_public_key(keys["admin"].public)], expires=now + 90 * DAY)
    for who in (SITE, "auditor"):
        add_site_key(roster, load_public_key(keys[who].public), not_before=now - DAY, not_after=now + 365 * DAY)
    sign_roster(roster, load_signing_key(keys["admin"].signing))
    like = load_data(f"bundled:{SITE}")
    record = issue_record(SITE, 64, like)
    grant = write_grant(record, signer=load_signing_key(keys["auditor"].signing), site_key=keys[SITE].public, out=root / "grant.forge")
    honest = train_site(site=SITE, data_spec=f"bundled:{SITE}", base_name="tabular-mlp", out=root / "honest", canary_grant=grant,
                        grant_key=keys[SITE].decryption, roster=roster, auditor=keys["auditor"].public, signer=keys[SITE].signing,
                        ledger_root=root / "ledgers", **CLAIMED)
    return {"root": root, "keys": keys, "roster": roster, "record": record, "grant": grant, "honest": honest}


def _replay(world, plugin_dir: Path, envelope: Path | None = None, *, key=None):
    recipe = open_replay_envelope(envelope or envelope_path(plugin_dir), key=key or world["keys"]["auditor"].decryption,
                                  roster=world["roster"])
    data = assemble_data(recipe, canary_record=world["record"])
    return replay(recipe, plugin_dir, data)


def test_honest_plugin_is_verified_bit_for_bit(world):
    run = world["honest"]
    assert run.envelope == envelope_path(run.plugin.path) and run.envelope.is_file()
    assert run.plugin.secret is None  # dropped once sealed
    meta = json.loads((run.plugin.path / "forge.json").read_text())
    assert meta["data"]["canaries"]["grant_id"] == world["record"]["grant_id"]
    assert meta["data"]["rows"] == 84 + world["record"]["included"] or meta["data"]["rows"] > world["record"]["included"]
    raw = run.envelope.read_bytes()
    result = _replay(world, run.plugin.path)
    assert result.verified and result.bit_exact and result.distance == 0.0, result.message
    recipe = open_replay_envelope(run.envelope, key=world["keys"]["auditor"].decryption, roster=world["roster"])
    assert recipe["secret"].hex().encode() not in raw  # the secret travels encrypted only
    assert all(c.ok for c in result.comparisons) and len(result.comparisons) >= 18


def test_replay_in_another_process_through_the_cli(world, forge_cli):
    run = world["honest"]
    rec = world["root"] / "record.json"
    rec.write_text(json.dumps(world["record"]))
    r = forge_cli("audit", "replay", run.envelope, "--plugin", run.plugin.path, "--key", world["keys"]["auditor"].decryption,
                  "--roster", world["roster"], "--canary-record", rec, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["verified"] and out["bit_exact"]


def _liar(world, name: str, *, train_cfg: dict, claimed_cfg: dict = CLAIMED, lie_data=None, envelope_recipe: str = "claimed",
          canaries_in_lie=None):
    """A self-consistent lying plugin: forge.json from a real honest run of ``claimed_cfg`` on the
    honest data (same secret), weights from the run the liar really did."""
    root = world["root"] / "liars" / name
    root.mkdir(parents=True)
    site_data = load_data(f"bundled:{SITE}")
    cset = included_canaries(world["record"])
    claimed_data = site_data.concat(cset, name=site_data.name)
    real_data = lie_data(site_data, cset) if lie_data else claimed_data
    secret = fresh_secret()
    canaries = {"grant_id": world["record"]["grant_id"], "count": len(cset), "digest": cset.digest()}
    commitment = {"canaries": {"count": len(cset), "issuer": "auditor", "grant_id": canaries["grant_id"]}}
    shown = train_plugin(TrainConfig(**claimed_cfg), claimed_data, site=SITE, secret=secret, commitment=commitment, out=root / "released")
    real = train_plugin(TrainConfig(**train_cfg), real_data, site=SITE, secret=secret, commitment=commitment, out=root / "real")
    # release the real weights under the shown forge.json
    shutil.copy(root / "real" / "adapter_model.safetensors", root / "released" / "adapter_model.safetensors")
    meta = json.loads((root / "released" / "forge.json").read_text())
    meta["dp"]["randomness"]["source"] = "os"  # the liar says what an honest run says
    meta["adapter"]["sha256"] = sha256_file(root / "released" / "adapter_model.safetensors")
    (root / "released" / "forge.json").write_text(json.dumps(meta))
    shown.secret = secret
    if envelope_recipe == "claimed":
        recipe = build_recipe(shown, TrainConfig(**claimed_cfg), source={"spec": f"bundled:{SITE}"}, data=claimed_data, canaries=canaries)
    else:  # the truth in the envelope, the lie in forge.json
        real.secret = secret
        recipe = build_recipe(real, TrainConfig(**train_cfg), source={"spec": f"bundled:{SITE}"}, data=real_data, canaries=canaries)
        recipe["plugin"]["adapter_sha256"] = meta["adapter"]["sha256"]
    env = write_replay_envelope(recipe, signer=world["keys"][SITE].signing, auditor=world["keys"]["auditor"].public,
                                out=envelope_path(root / "released"))
    return root / "released", env


LIES = {
    "less noise": dict(train_cfg={**CLAIMED, "noise_multiplier": 0.5}),
    "no noise": dict(train_cfg={k: v for k, v in CLAIMED.items() if k not in ("noise_multiplier", "delta", "accountant")} | {"no_dp": True}),
    "larger sample rate": dict(train_cfg={**CLAIMED, "batch_size": 64}),
    "more steps": dict(train_cfg={**CLAIMED, "epochs": 8}),
    "larger clipping norm": dict(train_cfg={**CLAIMED, "max_grad_norm": 4.0}),
    "other learning rate": dict(train_cfg={**CLAIMED, "lr": 0.2}),
    "other data": dict(train_cfg=CLAIMED, lie_data=lambda d, c: d.subset(np.arange(len(d)) != 3).concat(c, name=d.name)),
    "canaries dropped": dict(train_cfg=CLAIMED, lie_data=lambda d, c: d),
    "canaries altered": dict(train_cfg=CLAIMED, lie_data=lambda d, c: d.concat(
        dataclasses.replace(c, y=(1 - c.y)), name=d.name)),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_every_lie_fails_replay(world, lie):
    plugin, _ = _liar(world, lie.replace(" ", "-"), **LIES[lie])
    result = _replay(world, plugin)
    assert not result.verified, result.message
    assert result.reason in ("replay.weights_differ", "replay.claim_mismatch")
    assert result.distance is None or result.distance > 1e-2


def test_truthful_envelope_under_a_lying_forge_json_fails_on_the_claims(world):
    plugin, _ = _liar(world, "truth-inside", train_cfg={**CLAIMED, "noise_multiplier": 0.5}, envelope_recipe="true")
    result = _replay(world, plugin)
    assert not result.verified and result.reason == "replay.claim_mismatch"
    assert any(c.field == "dp.noise_multiplier" and not c.ok for c in result.comparisons)


def test_missing_swapped_truncated_and_foreign_envelopes_are_clean_errors(world, tmp_path):
    honest = world["honest"]
    with pytest.raises(ReplayError) as e:
        open_replay_envelope(tmp_path / "none.replay.forge", key=world["keys"]["auditor"].decryption, roster=world["roster"])
    assert e.value.code == "replay.missing"
    # swapped: another plugin's envelope
    other, other_env = _liar(world, "swap-source", train_cfg=CLAIMED)
    result = _replay(world, honest.plugin.path, envelope=other_env)
    assert not result.verified and result.reason == "replay.other_plugin"
    # truncated
    cut = tmp_path / "cut.replay.forge"
    cut.write_bytes(honest.envelope.read_bytes()[:-100])
    with pytest.raises(ReplayError) as e:
        _replay(world, honest.plugin.path, envelope=cut)
    assert e.value.code == "replay.damaged"
    # sealed to another auditor
    with pytest.raises(ReplayError) as e:
        _replay(world, honest.plugin.path, key=world["keys"]["stranger"].decryption)
    assert e.value.code == "replay.not_for_this_key"
    assert "sealed to this auditor" in str(e.value)


def test_replay_refuses_the_wrong_canary_record(world):
    other = issue_record(SITE, 64, load_data(f"bundled:{SITE}"))
    recipe = open_replay_envelope(world["honest"].envelope, key=world["keys"]["auditor"].decryption, roster=world["roster"])
    with pytest.raises(ForgeError) as e:
        assemble_data(recipe, canary_record=other)
    assert e.value.code == "replay.canaries"
    with pytest.raises(ForgeError) as e:
        assemble_data(recipe, canary_record=None)
    assert e.value.code == "replay.canaries"


def test_train_cli_writes_the_envelope_and_the_grant_is_refused_to_another_site(world, forge_cli, tmp_path):
    k = world["keys"]
    out = tmp_path / "p"
    r = forge_cli("train", "--site", SITE, "--data", f"bundled:{SITE}", "--noise-multiplier", "1", "--epochs", "1",
                  "--out", out, "--auditor", k["auditor"].public, "--signer", k[SITE].signing, "--canary-grant", world["grant"],
                  "--grant-key", k[SITE].decryption, "--roster", world["roster"], "--json")
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert Path(s["replay_envelope"]).is_file() and s["canaries"]["count"] == world["record"]["included"]
    r = forge_cli("train", "--site", "site-2", "--data", "bundled:site-2", "--noise-multiplier", "1", "--epochs", "1",
                  "--out", tmp_path / "q", "--canary-grant", world["grant"], "--grant-key", k[SITE].decryption,
                  "--roster", world["roster"])
    assert r.code == 2 and "Traceback" not in r.err and "site-1" in r.err
    assert not (tmp_path / "q").exists()
