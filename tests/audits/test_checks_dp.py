"""The DP-claim and site-budget checks on evidence built with real plugin directories and
ledgers (see test_checks.py for provenance)."""

from __future__ import annotations

import json

import pytest

from audits import CHECKS, Status

from ._run_checks import audit, by_subject, findings

# ----------------------------------------------------------------------------- DP claims


def test_dp_claims_rederive_epsilon_and_catch_understated_claims(world):
    world.add_plugin("honest", "site-1")
    world.add_plugin(
        "understated",
        "site-2",
        dp={
            "enabled": True,
            "noise_multiplier": 1.1,
            "sample_rate": 0.08,
            "steps": 65,
            "max_grad_norm": 1.0,
            "accountant": "prv",
            "epsilon": 1.0,
            "delta": 1e-5,
        },
    )
    world.add_plugin("nodp", "site-3", dp={"enabled": False, "epsilon": "inf"})
    f = by_subject(audit(world, "dp-claims"), "dp-claims")
    assert f["plugins/honest"].status is Status.PASS
    assert f["plugins/honest"].evidence["rederived_epsilon"] == pytest.approx(3.87, abs=0.05)
    assert f["plugins/honest"].claim == "epsilon" and f["plugins/honest"].basis == "re-derived"
    assert f["plugins/understated"].status is Status.FAIL and "claims epsilon 1" in f["plugins/understated"].summary
    assert f["plugins/nodp"].status is Status.FAIL and "without differential privacy" in f["plugins/nodp"].summary
    strict = by_subject(audit(world, "dp-claims", dp_claims={"max_epsilon": 2.0, "require_dp": False}), "dp-claims")
    assert strict["plugins/honest"].status is Status.FAIL and "exceeds the policy maximum" in strict["plugins/honest"].summary
    assert strict["plugins/nodp"].status is Status.WARN


def test_corrupt_manifests_fail_instead_of_stopping_the_audit(world):
    p = world.add_plugin("broken", "site-1")
    (p / "forge.json").write_text('{"dp": {"enabled": true, "noise_multiplier": "lots"')
    q = world.add_plugin("mistyped", "site-2")
    meta = json.loads((q / "forge.json").read_text())
    meta["dp"]["steps"] = "many"
    (q / "forge.json").write_text(json.dumps(meta))
    r = world.add_plugin("list", "site-3")
    (r / "forge.json").write_text("[1, 2]")
    f = by_subject(audit(world, "dp-claims"), "dp-claims")
    assert f["plugins/broken"].status is Status.FAIL and f["plugins/broken"].evidence["reason_code"] == "file.not_json"
    # the plugins' gateway reads the evidence: the codes loading, sealing or merging the plugin would give
    assert f["plugins/mistyped"].status is Status.FAIL and f["plugins/mistyped"].evidence["reason_code"] == "plugin.meta_invalid"
    assert f["plugins/list"].status is Status.FAIL and f["plugins/list"].evidence["reason_code"] == "plugin.wrong_type"


def test_delta_must_be_at_most_1e_5_and_delta_times_n_at_most_1_percent(world):
    def dp(delta):
        return {
            "enabled": True,
            "noise_multiplier": 1.1,
            "sample_rate": 0.08,
            "steps": 65,
            "max_grad_norm": 1.0,
            "accountant": "prv",
            "epsilon": 9.0,
            "delta": delta,
        }

    world.add_plugin("ok", "site-1")  # 1e-5 x 400 = 0.004
    world.add_plugin("big-delta", "site-2", rows=50, dp=dp(0.02))  # delta x n = 1
    world.add_plugin("old-default", "site-3", dp=dp(1 / (10 * 400)))  # the old default 1/(10 n): 0.1
    world.add_plugin("many-rows", "site-1", rows=5000, dp=dp(1e-5), seed=4)  # delta fine, delta x n = 0.05
    world.add_plugin("edge", "site-2", rows=1000, dp=dp(1e-5), seed=5)  # exactly 0.01: allowed
    f = by_subject(audit(world, "delta"), "delta")
    assert f["plugins/ok"].status is Status.PASS and f["plugins/ok"].claim == "delta"
    assert f["plugins/big-delta"].status is Status.FAIL and f["plugins/big-delta"].evidence["delta_times_n"] == pytest.approx(1.0)
    assert f["plugins/old-default"].status is Status.FAIL and "exceeds the policy maximum 1e-05" in f["plugins/old-default"].summary
    assert f["plugins/many-rows"].status is Status.FAIL and "delta x n = 0.05" in f["plugins/many-rows"].summary
    assert f["plugins/edge"].status is Status.PASS
    loose = by_subject(audit(world, "delta", delta={"max_delta": 0.5, "max_delta_times_n": 1.0}), "delta")
    assert loose["plugins/old-default"].status is Status.PASS and loose["plugins/big-delta"].status is Status.PASS


def test_default_delta_passes_the_default_delta_check_at_every_size():
    from forge_secure.privacy.accountants import default_delta

    settings = CHECKS.get("delta").Settings()
    for n in (1, 84, 150, 316, 1000, 10**6):
        d = default_delta(n)
        assert d <= settings.max_delta and d * n <= settings.max_delta_times_n, n


def _cross(world, name, site="site-1", rows=400, training=None, data=None, **dp_changes):
    from .conftest import plugin_meta

    dp = dict(plugin_meta(site)["dp"], **dp_changes)
    p = world.add_plugin(name, site, rows=rows, dp=dp, seal_it=False, ledger=False)
    if training or data:
        meta = json.loads((p / "forge.json").read_text())
        meta["training"].update(training or {})
        meta["data"].update(data or {})
        (p / "forge.json").write_text(json.dumps(meta))
    return p


def test_dp_claims_cross_checks_sample_rate_steps_and_rows(world):
    """A self-consistent manifest is the least a site must hand in: q = batch / rows, steps =
    epochs x ceil(rows / batch), rows within the data commitment. Each mismatch fails with its figures."""
    _cross(world, "honest", training={"steps_per_epoch": 13}, history=[[1.1, 0.08, 65]])
    _cross(world, "bigger-batch", sample_rate=0.16)  # trained with batch 64, says 32
    _cross(world, "more-steps", steps=130)  # 10 epochs, says 5
    _cross(world, "fewer-rows", rows=200)  # q would be 32/200
    _cross(world, "rows-beyond-pool", data={"membership": {"include_prob": 0.5, "pool_rows": 300, "seed_sha256": "0" * 64}})
    _cross(world, "history", history=[[0.5, 0.08, 65]])  # the accountant saw less noise
    _cross(world, "spe", training={"steps_per_epoch": 7})
    _cross(world, "no-batch", training={"batch_size": None})
    _cross(world, "canaries", data={"records": 380, "canaries": {"count": 30, "inserted": 15, "seed_sha256": None}})
    _cross(world, "rounded", sample_rate=32 / 400 * (1 + 1e-12))  # float rounding is tolerated
    report = audit(world, "dp-claims")
    cross = {f.subject: f for f in findings(report, "dp-claims") if f.claim == "dp-parameters"}
    assert cross["plugins/honest"].status is Status.PASS and cross["plugins/rounded"].status is Status.PASS
    assert cross["plugins/honest"].basis == "re-derived"
    assert "sample rate 0.16 != batch size 32 / rows 400 = 0.08" in cross["plugins/bigger-batch"].summary
    assert "steps 130 != epochs 5 x ceil(400 / 32) = 65" in cross["plugins/more-steps"].summary
    assert cross["plugins/fewer-rows"].evidence["implied_sample_rate"] == pytest.approx(0.16)
    assert "exceeds the 300 records of the membership pool" in cross["plugins/rows-beyond-pool"].summary
    assert "accountant history" in cross["plugins/history"].summary
    assert "steps per epoch 7" in cross["plugins/spe"].summary
    assert "cannot cross-check" in cross["plugins/no-batch"].summary
    assert "data.rows 400 != 380 records + 15 inserted canaries" in cross["plugins/canaries"].summary
    for name in ("bigger-batch", "more-steps", "fewer-rows", "rows-beyond-pool", "history", "spe", "no-batch", "canaries"):
        assert cross[f"plugins/{name}"].status is Status.FAIL and cross[f"plugins/{name}"].remedy, name


def test_site_budget_rederives_each_sites_ledger_total(world):
    world.add_plugin("a", "site-1")
    world.add_plugin("b", "site-1", seed=1)  # a second training on the same data composes
    world.add_plugin("c", "site-2")
    world.add_plugin("unrecorded", "site-3", ledger=False)
    report = audit(world, "site-budget", site_budget={"max_site_epsilon": 5.0})
    f = findings(report, "site-budget")
    subj = {x.subject.split("/")[1] if x.subject.startswith("ledgers/") else x.subject: x for x in f}
    assert subj["site-1"].status is Status.FAIL and subj["site-1"].evidence["releases"] == 2
    assert subj["site-1"].evidence["total_epsilon"] > subj["site-2"].evidence["total_epsilon"] > 3.5
    assert subj["site-2"].status is Status.PASS
    assert subj["plugins/unrecorded"].status is Status.FAIL and "not in site-3's ledger" in subj["plugins/unrecorded"].summary
    assert any(p.kind == "bars" for x in f for p in x.plots)


def test_tampered_ledger_fails_site_budget(world):
    world.add_plugin("a", "site-1")
    (ledger,) = (world.evidence / "ledgers" / "site-1").glob("*.jsonl")
    ledger.write_text(ledger.read_text().replace('"steps"', '"steps"').replace("65]", "10]"))
    f = findings(audit(world, "site-budget"), "site-budget")
    bad = [x for x in f if x.subject.startswith("ledgers/")]
    assert bad and bad[0].status is Status.FAIL and bad[0].evidence["reason_code"] == "ledger.corrupt"
