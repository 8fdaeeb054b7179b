"""Replay envelopes, auditor canaries and the replay check, with real Opacus, PEFT and cryptography.

The liar here plays at full strength: it trains however it likes, writes a forge.json that is
self-consistent (produced by a real honest run of the recipe it claims, epsilon included),
inserts whatever canaries it likes, seals with its own roster key and hands over an envelope
(with the claimed recipe, or with the true one). It never volunteers anything against itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from forge_secure.crypto.trust import pin_root
from forge_secure.errors import ForgeError
from forge_secure.plugins.data import load_data
from forge_secure.privacy.canaries import issue_record
from forge_secure.privacy.replay import ReplayError, assemble_data, envelope_path, open_replay_envelope, replay
from forge_secure.privacy.site import train_site

DAY = 86400
SITE = "site-1"
CLAIMED = dict(noise_multiplier=1.0, epochs=4, batch_size=32, lr=0.05, max_grad_norm=1.0, accountant="rdp", delta=1e-5)


@pytest.fixture(scope="module")
def world(tmp_path_factory, replay_tools):
    root = tmp_path_factory.mktemp("replay-world")
    w = replay_tools.build(root, "replay-test")
    w["honest"] = train_site(
        site=SITE,
        data_spec=f"bundled:{SITE}",
        base_name="tabular-mlp",
        out=root / "honest",
        canary_grant=w["grant"],
        grant_key=w["keys"][SITE].decryption,
        roster=w["roster"],
        auditor=w["keys"]["auditor"].public,
        signer=w["keys"][SITE].signing,
        ledger_root=root / "ledgers",
        **CLAIMED,
    )
    return w


@pytest.fixture(autouse=True)
def _pinned(request):
    """Every test has its own FORGE_HOME: pin the consortium's root there (obtained out of band)."""
    if "world" in request.fixturenames:
        pin_root(request.getfixturevalue("world")["roster"])


def _replay(world, plugin_dir: Path, envelope: Path | None = None, *, key=None):
    recipe = open_replay_envelope(
        envelope or envelope_path(plugin_dir), key=key or world["keys"]["auditor"].decryption, roster=world["roster"]
    )
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
    assert forge_cli("roster", "pin", world["roster"]).code == 0  # the auditor's machine pins the root once
    r = forge_cli(
        "audit",
        "replay",
        run.envelope,
        "--plugin",
        run.plugin.path,
        "--key",
        world["keys"]["auditor"].decryption,
        "--roster",
        world["roster"],
        "--canary-record",
        rec,
        "--json",
    )
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["verified"] and out["bit_exact"]


def _liar(world, replay_tools, name: str, **kw):
    plugin, env, _ = replay_tools.liar(world, name, claimed_cfg=CLAIMED, **kw)
    return plugin, env


LIES = {
    "less noise": dict(train_cfg={**CLAIMED, "noise_multiplier": 0.5}),
    "no noise": dict(
        train_cfg={k: v for k, v in CLAIMED.items() if k not in ("noise_multiplier", "delta", "accountant")} | {"no_dp": True}
    ),
    "larger sample rate": dict(train_cfg={**CLAIMED, "batch_size": 64}),
    "more steps": dict(train_cfg={**CLAIMED, "epochs": 8}),
    "larger clipping norm": dict(train_cfg={**CLAIMED, "max_grad_norm": 4.0}),
    "other learning rate": dict(train_cfg={**CLAIMED, "lr": 0.2}),
    "other data": dict(train_cfg=CLAIMED, lie_data=lambda d, c: d.subset(np.arange(len(d)) != 3).concat(c, name=d.name)),
    "canaries dropped": dict(train_cfg=CLAIMED, lie_data=lambda d, c: d),
    "canaries altered": dict(train_cfg=CLAIMED, lie_data=lambda d, c: d.concat(dataclasses.replace(c, y=(1 - c.y)), name=d.name)),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_every_lie_fails_replay(world, replay_tools, lie):
    plugin, _ = _liar(world, replay_tools, lie.replace(" ", "-"), **LIES[lie])
    result = _replay(world, plugin)
    assert not result.verified, result.message
    assert result.reason in ("replay.weights_differ", "replay.claim_mismatch")
    assert result.distance is None or result.distance > 1e-2


def test_truthful_envelope_under_a_lying_forge_json_fails_on_the_claims(world, replay_tools):
    plugin, _ = _liar(world, replay_tools, "truth-inside", train_cfg={**CLAIMED, "noise_multiplier": 0.5}, envelope_recipe="true")
    result = _replay(world, plugin)
    assert not result.verified and result.reason == "replay.claim_mismatch"
    assert any(c.field == "dp.noise_multiplier" and not c.ok for c in result.comparisons)


def test_missing_swapped_truncated_and_foreign_envelopes_are_clean_errors(world, replay_tools, tmp_path):
    honest = world["honest"]
    with pytest.raises(ReplayError) as e:
        open_replay_envelope(tmp_path / "none.replay.forge", key=world["keys"]["auditor"].decryption, roster=world["roster"])
    assert e.value.code == "replay.missing"
    # swapped: another plugin's envelope
    other, other_env = _liar(world, replay_tools, "swap-source", train_cfg=CLAIMED)
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
    assert forge_cli("roster", "pin", world["roster"]).code == 0  # the site's machine pins the root once
    r = forge_cli(
        "train",
        "--site",
        SITE,
        "--data",
        f"bundled:{SITE}",
        "--noise-multiplier",
        "1",
        "--epochs",
        "1",
        "--out",
        out,
        "--auditor",
        k["auditor"].public,
        "--signer",
        k[SITE].signing,
        "--canary-grant",
        world["grant"],
        "--grant-key",
        k[SITE].decryption,
        "--roster",
        world["roster"],
        "--json",
    )
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert Path(s["replay_envelope"]).is_file() and s["canaries"]["count"] == world["record"]["included"]
    r = forge_cli(
        "train",
        "--site",
        "site-2",
        "--data",
        "bundled:site-2",
        "--noise-multiplier",
        "1",
        "--epochs",
        "1",
        "--out",
        tmp_path / "q",
        "--canary-grant",
        world["grant"],
        "--grant-key",
        k[SITE].decryption,
        "--roster",
        world["roster"],
    )
    assert r.code == 2 and "Traceback" not in r.err and "site-1" in r.err
    assert not (tmp_path / "q").exists()
