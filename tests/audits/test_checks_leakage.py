"""The leakage and consistency checks on evidence built with real plugin directories and
attack results files (see test_checks.py for provenance)."""

from __future__ import annotations

import json

import pytest

from audits import CHECKS, Policy, Status, run_audit

from ._run_checks import audit, by_subject, findings
from .conftest import membership_results

# ----------------------------------------------------------------------------- leakage and consistency

# a self-consistent record (q = 32/400, 65 = 5 x 13 steps) claiming epsilon 1: a plugin trained without noise
# claims it, and only an attack can contradict it
LIAR_DP = {
    "enabled": True,
    "noise_multiplier": 4.2,
    "sample_rate": 0.08,
    "steps": 65,
    "max_grad_norm": 1.0,
    "accountant": "prv",
    "epsilon": 1.0,
    "delta": 1e-5,
}


def test_no_noise_plugin_claiming_epsilon_1_fails_consistency(world):
    """A plugin trained without noise whose manifest was edited to claim epsilon 1 (and sealed
    by a trusted site) is caught by the empirical lower bound of its membership attack."""
    world.add_plugin("liar", "site-1", dp=LIAR_DP)
    world.add_auditor_attack("mia-liar", membership_results("plugins/liar", separation=4.0, seed=1))
    report = audit(world, "provenance", "consistency")
    assert by_subject(report, "provenance")["bundles/liar.forge"].status is Status.PASS  # signed by a trusted site
    (f,) = findings(report, "consistency")
    assert f.status is Status.FAIL and "the DP claim is false" in f.summary
    assert f.evidence["empirical_epsilon_lb"] > 1.0
    assert set(f.evidence["lower_bounds"]) == {"clopper-pearson", "one-run"}
    assert f.plots and f.plots[0].kind == "bars"


def test_one_run_audit_needs_coin_flips_recorded_by_the_target_not_just_the_attack_file(world):
    """The one-run audit is valid only for membership drawn by fair coin flips. An attack file
    saying so is not enough when the target's own forge.json records no such draw (trained on a
    whole file) or another seed: only the threshold-based bound applies then."""
    import copy

    world.add_plugin("whole", "site-1", seal_it=False)
    meta_path = world.evidence / "plugins" / "whole" / "forge.json"
    meta = json.loads(meta_path.read_text())
    meta["data"]["membership"] = None
    meta_path.write_text(json.dumps(meta))
    world.add_auditor_attack("mia-whole", membership_results("plugins/whole", separation=4.0, seed=1))
    world.add_plugin("drawn", "site-2", seal_it=False)
    doc = membership_results("plugins/drawn", separation=4.0, seed=2)
    other = copy.deepcopy(doc)
    other["membership"]["seed_sha256"] = "1" * 64  # not the draw the plugin committed to ("0" * 64)
    world.add_auditor_attack("mia-drawn-other-seed", other)
    doc["membership"]["seed_sha256"] = "0" * 64
    world.add_auditor_attack("mia-drawn", doc)
    f = {x.subject.rsplit("/", 1)[-1]: x for x in findings(audit(world, "consistency"), "consistency")}
    assert set(f["mia-whole.json"].evidence["lower_bounds"]) == {"clopper-pearson"}
    assert f["mia-whole.json"].evidence["coin_flip_membership"] is False
    assert set(f["mia-drawn-other-seed.json"].evidence["lower_bounds"]) == {"clopper-pearson"}
    assert set(f["mia-drawn.json"].evidence["lower_bounds"]) == {"clopper-pearson", "one-run"}
    assert set(f["mia-drawn.json"].evidence["ceilings"]) == {"clopper-pearson", "one-run"}


def test_consistency_passes_when_the_attack_learns_nothing_and_needs_the_target(world):
    world.add_plugin("p", "site-1")
    world.add_auditor_attack("mia-p", membership_results("plugins/p", separation=0.0, n=2000))
    world.add_auditor_attack("mia-ghost", membership_results("plugins/ghost", separation=0.0))
    f = {x.subject.rsplit("/", 1)[-1]: x for x in findings(audit(world, "consistency"), "consistency")}
    ok = f["mia-p.json"]
    assert ok.status is Status.PASS and ok.evidence["epsilon_ceiling"] > ok.evidence["claimed_epsilon"] == 4.0
    assert ok.plugin == "plugins/p" and ok.claim == "epsilon" and ok.basis == "verified"
    assert f["mia-ghost.json"].status is Status.FAIL and "not in the evidence" in f["mia-ghost.json"].summary


def test_a_claim_above_what_the_sample_can_show_is_inconclusive_never_pass(world):
    """400 coin-flip records: even a perfect attack shows at most epsilon ~3.1 at 95 %, so a claim
    of 4 can be neither confirmed nor contradicted; 2000 records can (ceiling ~4.7)."""
    from attacks.metrics import clopper_pearson_epsilon_ceiling, one_run_epsilon_ceiling

    world.add_plugin("p", "site-1")
    world.add_auditor_attack("small", membership_results("plugins/p", separation=0.0, n=400))
    world.add_auditor_attack("perfect-but-small", membership_results("plugins/p", separation=50.0, n=400, seed=3))
    f = {x.subject.rsplit("/", 1)[-1]: x for x in findings(audit(world, "consistency"), "consistency")}
    small = f["small.json"]
    assert small.status is Status.INCONCLUSIVE and "cannot tell" in small.summary and small.remedy
    ceilings = small.evidence["ceilings"]
    assert small.evidence["epsilon_ceiling"] == max(ceilings.values()) < 4.0
    assert ceilings["one-run"] == pytest.approx(one_run_epsilon_ceiling(80, m=400, delta=1e-5, p_target=0.025))
    members = sum(membership_results("plugins/p", separation=0.0, n=400)["labels"])
    assert ceilings["clopper-pearson"] == pytest.approx(
        clopper_pearson_epsilon_ceiling(members - members // 2, (400 - members) - (400 - members) // 2, delta=1e-5, alpha=0.025)
    )
    # a perfect attack on that sample reaches its ceiling, and still cannot contradict the claim
    perfect = f["perfect-but-small.json"]
    assert perfect.status is Status.INCONCLUSIVE
    assert perfect.evidence["empirical_epsilon_lb"] == pytest.approx(perfect.evidence["epsilon_ceiling"], rel=0.02)


def test_membership_leakage_thresholds(world):
    world.add_plugin("p", "site-1")
    world.add_auditor_attack("weak", membership_results("plugins/p", separation=0.0, n=300))
    world.add_auditor_attack("strong", membership_results("plugins/p", separation=2.0, n=300))
    f = {x.subject.rsplit("/", 1)[-1]: x for x in findings(audit(world, "membership"), "membership")}
    assert f["strong.json"].status is Status.FAIL and "AUC" in f["strong.json"].summary
    assert f["strong.json"].claim == "membership-leakage" and f["strong.json"].basis == "verified"
    weak = f["weak.json"]
    assert 0 < weak.evidence["epsilon_ceiling"] < 4 and weak.evidence["claimed_epsilon"] == 4.0
    assert weak.status is Status.WARN  # within policy, but 0.1 % FPR is not resolvable with ~150 non-members
    lo, hi = weak.evidence["auc_ci"]
    assert lo < weak.evidence["auc"] < hi
    assert weak.evidence["fpr_reached_for_1pct"] <= 0.01
    assert weak.plots[0].kind == "roc"


def test_bad_auditor_attack_results_fail_the_leakage_checks(world):
    world.add_plugin("p", "site-1")
    doc = membership_results("plugins/p", separation=0.0)
    doc["labels"] = doc["labels"][:-3]
    world.add_auditor_attack("short", doc)
    doc2 = membership_results("plugins/p", separation=0.0)
    del doc2["scores"]
    world.add_auditor_attack("noscores", doc2)
    world.add_auditor_attack("other", {"format": "something-else/1", "rows": [1, 2]})
    f = {x.subject.rsplit("/", 1)[-1]: x for x in findings(audit(world, "membership"), "membership")}
    assert f["short.json"].status is Status.FAIL and "labels" in f["short.json"].summary
    assert f["noscores.json"].status is Status.FAIL and "re-derived" in f["noscores.json"].summary
    assert f["other.json"].status is Status.FAIL and f["other.json"].evidence["reason_code"] == "evidence.attack_results"


@pytest.mark.parametrize(
    "content, code",
    [
        ('{"format": "forge-attack-mia/1", "scores": [0.1, ', "file.not_json"),
        ("[1, 2, 3]", "evidence.wrong_type"),
        (None, "evidence.attack_results_missing"),
        ("inside", "evidence.attack_results_inside"),
    ],
)
def test_the_auditors_own_results_file_must_be_readable_and_outside_the_evidence(world, content, code):
    """The auditor's own input: a broken, missing or misplaced file stops the audit (exit 2 from the CLI)."""
    from audits import AuditOptions
    from forge_secure.errors import ForgeError

    world.add_plugin("p", "site-1")
    path = world.root / "mine.json"
    if content == "inside":
        path = world.add_attack("inside", membership_results("plugins/p", separation=0.0))
    elif content is not None:
        path.write_text(content)
    policy = Policy(name="t", description="", checks={"membership": CHECKS.get("membership").Settings()})
    with pytest.raises(ForgeError) as e:
        run_audit(policy, world.evidence, options=AuditOptions(attack_results=(path,)))
    assert e.value.code == code


def test_one_bad_attack_file_does_not_hide_the_findings_on_the_others(world):
    """NaN scores, or too few records to split, fail that file only: the other files are still judged."""
    world.add_plugin("p", "site-1")
    world.add_auditor_attack("good", membership_results("plugins/p", separation=0.0, n=2000))
    nan = membership_results("plugins/p", separation=0.0)
    nan["scores"][0] = float("nan")
    world.add_auditor_attack("nan", nan)
    world.add_auditor_attack("tiny", {**membership_results("plugins/p", separation=0.0), "scores": [0.2, 0.1, 0.3], "labels": [1, 0, 1]})
    report = audit(world, "membership", "consistency")

    def named(check):
        return {x.subject.rsplit("/", 1)[-1]: x for x in findings(report, check)}

    for check in ("membership", "consistency"):
        f = named(check)
        assert f["good.json"].status in (Status.PASS, Status.WARN), (check, f["good.json"].summary)
        assert f["nan.json"].status is Status.FAIL and "NaN" in f["nan.json"].summary, check
    for check in ("membership", "consistency"):  # 1 non-member: no interval exists; a finding, not a crash
        tiny = named(check)["tiny.json"]
        assert tiny.status is Status.FAIL and "cannot be evaluated" in tiny.summary, (check, tiny.summary)


def test_reconstruction_against_the_rero_bound(world):
    world.add_plugin("p", "site-1")
    world.add_auditor_attack(
        "recon-ok",
        {"format": "forge-attack-recon/1", "attack": "prior-aware", "target": "plugins/p", "outcomes": [1] * 3 + [0] * 97, "kappa": 0.01},
    )
    world.add_auditor_attack(
        "recon-bad",
        {"format": "forge-attack-recon/1", "attack": "prior-aware", "target": "plugins/p", "outcomes": [1] * 95 + [0] * 5, "kappa": 0.01},
    )
    # the site's own file claiming a perfect reconstruction is not counted either way
    world.add_attack(
        "recon-site",
        {"format": "forge-attack-recon/1", "attack": "prior-aware", "target": "plugins/p", "outcomes": [1] * 100, "kappa": 0.01},
    )
    f = {
        x.subject.rsplit("/", 1)[-1]: x
        for x in findings(audit(world, "reconstruction", reconstruction={"mc_samples": 20000}), "reconstruction")
    }
    assert f["recon-ok.json"].status is Status.PASS and f["recon-ok.json"].plugin == "plugins/p"
    bad = f["recon-bad.json"]
    assert bad.status is Status.FAIL and bad.evidence["success_ci"][0] > bad.evidence["rero_bound"]
    assert f["recon-site.json"].status is Status.SKIP and "not counted" in f["recon-site.json"].summary
