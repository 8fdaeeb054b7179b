"""The default policy, on site: an honest plugin PASSES, and a self-consistent lying plugin sealed by
a trusted site FAILS. Real training (Opacus, PEFT), real sealing (cryptography), real replay.

The liar plays at full strength: its forge.json is the one an honest run of the recipe it claims
produces (epsilon, ledger entry, data and secret commitments all consistent), its bundle is
sealed with its own, listed key, its envelope carries the claimed recipe and the real secret,
and it hands the auditor whatever attack results it likes (none count). Only the weights are
what it really trained.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from audits import audit_directory
from audits.findings import Status
from forge_secure.crypto.bundle import seal
from forge_secure.crypto.trust import pin_root
from forge_secure.privacy.replay import envelope_path
from forge_secure.privacy.site import train_site

DAY = 86400
SITE = "site-1"
CLAIMED = dict(noise_multiplier=1.5, epochs=4, batch_size=32, lr=0.05, max_grad_norm=1.0, accountant="rdp", delta=1e-5)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory, replay_tools):
    return replay_tools.build(tmp_path_factory.mktemp("onsite"), "onsite-test", maintainer=True)


@pytest.fixture(autouse=True)
def _pinned(request):
    """Every test has its own FORGE_HOME: pin the consortium's root there (obtained out of band)."""
    if "consortium" in request.fixturenames:
        pin_root(request.getfixturevalue("consortium")["roster"])


def _evidence(c, name: str, plugin_dir: Path, ledgers: Path) -> Path:
    ev = c["root"] / name / "evidence"
    (ev / "bundles").mkdir(parents=True)
    (ev / "plugins").mkdir()
    shutil.copy(c["roster"], ev / "roster.json")
    seal(plugin_dir, c["keys"][SITE].signing, c["keys"]["maintainer"].public, ev / "bundles" / f"{SITE}.forge")
    shutil.copytree(plugin_dir, ev / "plugins" / SITE)
    if envelope_path(plugin_dir).exists():
        shutil.copy(envelope_path(plugin_dir), ev / "plugins" / f"{SITE}.replay.forge")
    shutil.copytree(ledgers, ev / "ledgers", ignore=shutil.ignore_patterns("*.lock"))
    return ev


def _audit(c, ev: Path, plugin_dir: Path):
    from attacks.membership.run import MiaSettings, run_mia, write_results

    attacks = ev.parent / "auditor-attacks"  # the auditor runs its own attack: only such results count
    attacks.mkdir()
    res = run_mia(ev / "plugins" / SITE, f"bundled:{SITE}", settings=MiaSettings(attack="loss", references=0, n_boot=50), cache=False)
    write_results(res, attacks / "mia.json")
    return audit_directory(
        ev,
        None,
        decryption_key=c["keys"]["maintainer"].decryption,
        replay_key=c["keys"]["auditor"].decryption,
        canary_records=[c["record_path"]],
        attack_results=[attacks / "mia.json"],
    )


def _statuses(report) -> dict:
    return {ch.name: ch.status for ch in report.checks}


def test_an_honest_site_passes_the_default_onsite_audit(consortium):
    c = consortium
    run = train_site(
        site=SITE,
        data_spec=f"bundled:{SITE}",
        base_name="tabular-mlp",
        out=c["root"] / "honest" / "plugin",
        canary_grant=c["grant"],
        grant_key=c["keys"][SITE].decryption,
        roster=c["roster"],
        auditor=c["keys"]["auditor"].public,
        signer=c["keys"][SITE].signing,
        ledger_root=c["root"] / "honest" / "ledgers",
        **CLAIMED,
    )
    ev = _evidence(c, "honest", run.plugin.path, c["root"] / "honest" / "ledgers")
    report = _audit(c, ev, run.plugin.path)
    st = _statuses(report)
    assert report.verdict is Status.PASS, [f.summary for f in report.failures()]
    assert st["replay"] is Status.PASS and st["dp-randomness"] is Status.PASS and st["provenance"] is Status.PASS
    assert st["auditor-canaries"] in (Status.PASS, Status.INCONCLUSIVE)


LIES = {
    "no noise": dict(
        train_cfg={k: v for k, v in CLAIMED.items() if k not in ("noise_multiplier", "delta", "accountant")} | {"no_dp": True}
    ),
    "more steps": dict(train_cfg={**CLAIMED, "epochs": 12}),
    "canaries dropped": dict(train_cfg=CLAIMED, lie_data=lambda d, cs: d),
    "other data": dict(train_cfg=CLAIMED, lie_data=lambda d, cs: d.subset(np.arange(len(d)) != 0).concat(cs, name=d.name)),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_self_consistent_liar_fails_the_default_onsite_audit(consortium, replay_tools, lie):
    plugin, _, ledgers = replay_tools.liar(consortium, lie.replace(" ", "-"), claimed_cfg=CLAIMED, ledger=True, **LIES[lie])
    ev = _evidence(consortium, lie.replace(" ", "-"), plugin, ledgers)
    report = _audit(consortium, ev, plugin)
    st = _statuses(report)
    assert report.verdict is Status.FAIL
    assert st["replay"] is Status.FAIL
    # everything the liar controls is consistent: the checks that take its word pass
    assert st["dp-claims"] is Status.PASS and st["dp-randomness"] is Status.PASS and st["provenance"] is Status.PASS


# The auditor's canaries alone, at the default count and policy, contradict a false claim: a site that
# trains without noise and claims epsilon 1 (everything else consistent) fails the auditor-canaries check
# even where nothing is replayed; an honest epsilon-1 plugin on the same canaries stays below its claim.
POWER_CLAIM = dict(target_epsilon=1.0, delta=1e-5, epochs=100, accountant="rdp")


@pytest.fixture(scope="module")
def powered(tmp_path_factory, replay_tools):
    from forge_secure.privacy.canaries import DEFAULT_COUNT

    return replay_tools.build(tmp_path_factory.mktemp("power"), "power-test", maintainer=True, canaries=DEFAULT_COUNT)


def _canary_finding(c, ev: Path):
    report = audit_directory(ev, None, decryption_key=c["keys"]["maintainer"].decryption, canary_records=[c["record_path"]])
    (check,) = [ch for ch in report.checks if ch.name == "auditor-canaries"]
    (finding,) = check.findings
    return finding


def test_default_canaries_contradict_a_no_noise_plugin_claiming_epsilon_1(powered, replay_tools):
    pin_root(powered["roster"])
    no_noise = {k: v for k, v in POWER_CLAIM.items() if k not in ("target_epsilon", "delta", "accountant")} | {"no_dp": True}
    plugin, _, ledgers = replay_tools.liar(powered, "power-no-noise", claimed_cfg=POWER_CLAIM, ledger=True, train_cfg=no_noise)
    f = _canary_finding(powered, _evidence(powered, "power-no-noise", plugin, ledgers))
    assert f.status is Status.FAIL, f.summary
    assert f.evidence["epsilon_lb"] > 1.0 and f.evidence["claimed_epsilon"] == pytest.approx(1.0, abs=0.01)
    assert f.evidence["guesses"] == round(0.25 * f.evidence["included"] + 0.25 * f.evidence["held_back"])


def test_default_canaries_leave_an_honest_epsilon_1_plugin_below_its_claim(powered):
    pin_root(powered["roster"])
    c = powered
    run = train_site(
        site=SITE,
        data_spec=f"bundled:{SITE}",
        base_name="tabular-mlp",
        out=c["root"] / "power-honest" / "plugin",
        canary_grant=c["grant"],
        grant_key=c["keys"][SITE].decryption,
        roster=c["roster"],
        auditor=c["keys"]["auditor"].public,
        signer=c["keys"][SITE].signing,
        ledger_root=c["root"] / "power-honest" / "ledgers",
        **POWER_CLAIM,
    )
    f = _canary_finding(c, _evidence(c, "power-honest", run.plugin.path, c["root"] / "power-honest" / "ledgers"))
    assert f.status is Status.PASS, f.summary  # the sample could show about 3: a PASS, not "cannot tell"
    assert f.evidence["epsilon_lb"] <= 1.0 < f.evidence["ceiling"]
