"""The issue's scenario for real: plugins trained with `forge train` (Opacus, PEFT), sealed by
a trusted site (cryptography), audited by `forge audit`.

The liar at full strength: it trains without noise, writes a self-consistent DP record claiming
epsilon 1 (noise multiplier calibrated with the project's own accountant), records a matching
entry in its own budget ledger, seals the plugin with its roster key, and puts attack results
with random scores under attacks/. It volunteers no canaries and no seeds. Without replay or an
attack of its own, the audit cannot tell it from an honest DP site, and the report says exactly
that: the same verdict for both, the DP parameters "claimed only", the site's attack file
"not counted". (Catching it takes the on-site audit: replay and the auditor's own canaries.)
"""

from __future__ import annotations

import json
import shutil

import pytest

from audits import default_policy_text
from forge_secure.crypto import _time
from forge_secure.crypto.bundle import seal
from forge_secure.crypto.keys import load_public_key, load_signing_key, new_keys
from forge_secure.crypto.replay import SequenceCounter
from forge_secure.crypto.roster import Recipient, add_site_key, init_roster, sign_roster
from forge_secure.privacy.accountants import calibrate_noise_multiplier, default_delta

from .conftest import membership_results

CONSORTIUM_POLICY = """format = "forge-audit-policy/1"
name = "consortium, no data access"
[checks.provenance]
[checks.roster-freshness]
[checks.dp-claims]
[checks.delta]
[checks.site-budget]
[checks.membership]
required = false
[checks.consistency]
required = false
"""


def _consortium(root, now):
    keys = {n: new_keys(n, root / "keys" / n).public.parent for n in ("site-1", "admin", "consortium", "auditor")}
    roster = root / "roster.json"
    init_roster(
        roster,
        "medforge",
        [load_public_key(keys["admin"])],
        expires=now + 60 * 86400,
        recipients=[load_public_key(keys["consortium"]), Recipient.from_public(load_public_key(keys["auditor"]), "auditor")],
    )
    add_site_key(roster, load_public_key(keys["site-1"]), not_before=now - 86400, not_after=now + 365 * 86400)
    sign_roster(roster, load_signing_key(keys["admin"] / "signing.key"))
    return keys, roster


def _evidence(root, name, plugin, keys, roster, now, ledgers):
    ev = root / name
    shutil.copytree(ledgers, ev / "ledgers")  # the site's budget ledger, as it hands it over
    (ev / "plugins").mkdir(parents=True, exist_ok=True)
    (ev / "bundles").mkdir()
    shutil.copy(roster, ev / "roster.json")
    seal(
        plugin,
        load_signing_key(keys["site-1"] / "signing.key"),
        load_public_key(keys["consortium"]),
        ev / "bundles" / "p.forge",
        now=now - 60,
        counter=SequenceCounter(root / f"counter-{name}"),
        roster=roster,
        root=roster,
    )
    shutil.copytree(plugin, ev / "plugins" / "p")
    (ev / "attacks").mkdir()
    (ev / "attacks" / "site-mia.json").write_text(json.dumps(membership_results("plugins/p", separation=0.0, n=4000, seed=5)))
    return ev


def _audit(forge_cli, policy, evidence, out, keys):
    a = forge_cli(
        "audit",
        "--policy",
        policy,
        "--evidence",
        evidence,
        "--out",
        out,
        "--key",
        keys["auditor"] / "signing.key",
        "--decryption-key",
        keys["consortium"] / "decryption.key",
        "--json",
    )
    report = json.loads((out / "report.json").read_text())
    return a, report


@pytest.mark.slow
def test_a_self_consistent_liar_gets_the_same_verdict_as_an_honest_site_and_the_report_says_claimed_only(forge_cli, tmp_path, monkeypatch):
    from forge_secure.privacy.ledger import Ledger

    monkeypatch.setenv("FORGE_HOME", str(forge_cli.home))
    now = _time.now()
    keys, roster = _consortium(tmp_path, now)
    consortium = tmp_path / "consortium.toml"
    consortium.write_text(CONSORTIUM_POLICY)
    default = tmp_path / "default.toml"
    default.write_text(default_policy_text())

    # the honest site: real DP-SGD at epsilon 1 (default delta), recorded in its ledger by forge train
    r = forge_cli("train", "--site", "site-1", "--data", "bundled:site-1", "--epsilon", "1", "--out", tmp_path / "dp")
    assert r.code == 0, r
    honest = _evidence(tmp_path, "honest", tmp_path / "dp", keys, roster, now, forge_cli.home / "ledgers")

    # the liar: no noise, then a forged but self-consistent DP record and a matching ledger entry
    liar_home = tmp_path / "liar-home"
    monkeypatch.setenv("FORGE_HOME", str(liar_home))
    r = forge_cli("train", "--site", "site-1", "--data", "bundled:site-1", "--no-dp", "--out", tmp_path / "nodp")
    assert r.code == 0, r
    meta = json.loads((tmp_path / "nodp" / "forge.json").read_text())
    q, steps, rows = meta["dp"]["sample_rate"], meta["dp"]["steps"], meta["data"]["rows"]
    delta = default_delta(rows)
    sigma = calibrate_noise_multiplier(1.0, delta, q, steps, "prv")
    meta["dp"].update(
        {
            "enabled": True,
            "noise_multiplier": sigma,
            "delta": delta,
            "accountant": "prv",
            "epsilon": 1.0,
            "max_grad_norm": 1.0,
            "history": [[sigma, q, steps]],
        }
    )
    (tmp_path / "nodp" / "forge.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    Ledger.open("site-1", "bundled:site-1", None, root=liar_home / "ledgers").record(
        [(sigma, q, steps)], kind="train", delta=delta, note={}
    )
    liar = _evidence(tmp_path, "liar", tmp_path / "nodp", keys, roster, now, liar_home / "ledgers")

    results = {}
    for who, evidence in (("honest", honest), ("liar", liar)):
        for pname, policy in (("consortium", consortium), ("default", default)):
            results[who, pname] = _audit(forge_cli, policy, evidence, tmp_path / f"{who}-{pname}", keys)

    for pname, code in (("consortium", 0), ("default", 1)):
        (a_h, rep_h), (a_l, rep_l) = results["honest", pname], results["liar", pname]
        assert a_h.code == a_l.code == code, (pname, a_h, a_l)
        status_h = {c["name"]: c["status"] for c in rep_h["checks"]}
        status_l = {c["name"]: c["status"] for c in rep_l["checks"]}
        assert status_h == status_l, pname  # nothing the site controls tells them apart
        for rep in (rep_h, rep_l):
            rows_ = {r["claim"]: r for r in rep["claims"] if r["plugin"] == "plugins/p"}
            assert rows_["dp-parameters"]["basis"] == "claimed" and "claimed only" in rows_["dp-parameters"]["note"]
            assert rows_["weights-binding"]["basis"] == "verified" and rows_["membership-leakage"]["basis"] == "claimed"
            (site_file,) = [
                f for c in rep["checks"] if c["name"] == "consistency" for f in c["findings"] if f["subject"] == "attacks/site-mia.json"
            ]
            assert site_file["status"] == "skip" and "not counted" in site_file["summary"]
    assert {c["name"]: c["status"] for c in results["liar", "consortium"][1]["checks"]}["dp-claims"] == "pass"
    assert forge_cli("verify-report", tmp_path / "liar-consortium", "--key", keys["auditor"] / "public.json").code == 0
