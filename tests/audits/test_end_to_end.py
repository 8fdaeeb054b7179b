"""The issue's scenario for real: plugins trained with `forge train` (Opacus, PEFT), sealed by
a trusted site (cryptography), audited by `forge audit`.

A site trains without noise (with canaries), then edits forge.json to claim a consistent-looking
DP record with epsilon 1 and seals it: provenance and the re-derived DP claim both check out,
and only the consistency check's canary audit exposes the lie -> FAIL (exit 1). A site that
really trains with DP passes (exit 0).
"""

from __future__ import annotations

import json
import shutil

import pytest

from forge_secure.crypto import _time
from forge_secure.crypto.bundle import seal
from forge_secure.crypto.keys import load_public_key, load_signing_key, new_keys
from forge_secure.crypto.replay import SequenceCounter
from forge_secure.crypto.roster import Recipient, add_site_key, init_roster, sign_roster
from forge_secure.plugins.sources import default_canary_seed
from forge_secure.privacy.accountants import calibrate_noise_multiplier

POLICY = """format = "forge-audit-policy/1"
name = "e2e"
[checks.provenance]
[checks.roster-freshness]
[checks.dp-claims]
[checks.delta]
[checks.site-budget]
[checks.consistency]
"""


def _consortium(root, now):
    keys = {n: new_keys(n, root / "keys" / n).public.parent for n in ("site-1", "admin", "consortium", "auditor")}
    roster = root / "roster.json"
    init_roster(roster, "medforge", [load_public_key(keys["admin"])], expires=now + 60 * 86400,
                recipients=[load_public_key(keys["consortium"]), Recipient.from_public(load_public_key(keys["auditor"]), "auditor")])
    add_site_key(roster, load_public_key(keys["site-1"]), not_before=now - 86400, not_after=now + 365 * 86400)
    sign_roster(roster, load_signing_key(keys["admin"] / "signing.key"))
    return keys, roster


def _evidence(root, name, plugin, keys, roster, now, home):
    ev = root / name
    if (home / "ledgers").is_dir():  # the site's budget ledgers, as forge train wrote them
        shutil.copytree(home / "ledgers", ev / "ledgers")
    (ev / "plugins").mkdir(parents=True, exist_ok=True)
    (ev / "bundles").mkdir()
    (ev / "canaries").mkdir()
    shutil.copy(roster, ev / "roster.json")
    seal(plugin, load_signing_key(keys["site-1"] / "signing.key"), load_public_key(keys["consortium"]), ev / "bundles" / "p.forge",
         now=now - 60, counter=SequenceCounter(root / f"counter-{name}"))
    shutil.copytree(plugin, ev / "plugins" / "p")
    (ev / "canaries" / "p.json").write_text(json.dumps({"plugin": "plugins/p", "seed": default_canary_seed("site-1", 0)}))
    return ev


@pytest.mark.slow
def test_no_noise_plugin_claiming_epsilon_1_fails_and_a_dp_plugin_passes(forge_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_HOME", str(forge_cli.home))
    now = _time.now()
    keys, roster = _consortium(tmp_path, now)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)

    # the liar: no noise, then a forged but self-consistent DP record claiming epsilon 1
    r = forge_cli("train", "--site", "site-1", "--data", "bundled:site-1", "--no-dp", "--canaries", "300", "--out", tmp_path / "nodp")
    assert r.code == 0, r
    meta = json.loads((tmp_path / "nodp" / "forge.json").read_text())
    q, steps, delta = meta["dp"]["sample_rate"], meta["dp"]["steps"], 1e-5
    sigma = calibrate_noise_multiplier(1.0, delta, q, steps, "prv")
    meta["dp"].update({"enabled": True, "noise_multiplier": sigma, "delta": delta, "accountant": "prv", "epsilon": 1.0, "max_grad_norm": 1.0})
    (tmp_path / "nodp" / "forge.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    liar = _evidence(tmp_path, "liar", tmp_path / "nodp", keys, roster, now, forge_cli.home)

    out = tmp_path / "liar-report"
    a = forge_cli("audit", "--policy", policy, "--evidence", liar, "--out", out, "--key", keys["auditor"] / "signing.key",
                  "--decryption-key", keys["consortium"] / "decryption.key", "--json")
    assert a.code == 1, a
    report = json.loads((out / "report.json").read_text())
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status["provenance"] == "pass"  # sealed by a trusted site, weights bound to the signed payload
    assert status["dp-claims"] == "pass"   # the forged record is self-consistent
    assert status["consistency"] == "fail"  # ... but the canaries were memorised
    assert status["site-budget"] == "fail"  # and the claimed training was never recorded in the site's ledger
    (finding,) = [f for c in report["checks"] if c["name"] == "consistency" for f in c["findings"]]
    assert finding["evidence"]["empirical_epsilon_lb"] > 1.0 and "the DP claim is false" in finding["summary"]
    assert forge_cli("verify-report", out, "--key", keys["auditor"] / "public.json").code == 0

    # the honest site: real DP-SGD at epsilon 2
    r = forge_cli("train", "--site", "site-1", "--data", "bundled:site-1", "--epsilon", "2", "--delta", "1e-5", "--canaries", "300",
                  "--out", tmp_path / "dp")
    assert r.code == 0, r
    honest = _evidence(tmp_path, "honest", tmp_path / "dp", keys, roster, now, forge_cli.home)
    out2 = tmp_path / "honest-report"
    a2 = forge_cli("audit", "--policy", policy, "--evidence", honest, "--out", out2, "--decryption-key", keys["consortium"] / "decryption.key")
    assert a2.code == 0, a2
    report2 = json.loads((out2 / "report.json").read_text())
    assert all(c["status"] in ("pass", "warn") for c in report2["checks"]), report2["checks"]
    budget = next(c for c in report2["checks"] if c["name"] == "site-budget")
    assert budget["status"] == "pass" and any(f["evidence"].get("releases") == 1 for f in budget["findings"])
