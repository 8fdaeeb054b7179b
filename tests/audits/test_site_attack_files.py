"""Attack results the audited site supplies are not evidence.

The adversary is the site at full strength: it trains without noise, writes a self-consistent
DP record claiming epsilon 1 (noise multiplier calibrated with the project's own accountant, a
matching ledger entry), seals it with its own roster key, and puts whatever attack results it
likes under the evidence's attacks/: random scores, scores crafted to look private, on as many
records as it wants. None of it may change the verdict. Only the auditor's own attack runs
(``--attack-results``, outside the evidence), and site files whose every score the audit
re-derives from per-record signals, count.
"""

from __future__ import annotations

import numpy as np
import pytest

from audits import Status, default_policy_text, parse_policy, run_audit
from forge_secure.privacy.accountants import calibrate_noise_multiplier

from .conftest import membership_results


def _policy(required: bool):
    """The default policy (``required``) or the consortium's audit without data access: no attack,
    replay or canaries of its own. The synthetic plugins carry no randomness commitment (a
    forge train output does): dp-randomness is left out, it is tested with real training."""
    text = default_policy_text().replace("[checks.dp-randomness]", "[checks.dp-randomness]\nenabled = false", 1)
    if not required:
        for name in ("membership", "consistency", "replay", "auditor-canaries"):
            text = text.replace(f"[checks.{name}]", f"[checks.{name}]\nrequired = false", 1)
    return parse_policy(text)


@pytest.fixture
def liar(world):
    sigma = calibrate_noise_multiplier(1.0, 1e-5, 0.08, 65, "prv")
    world.add_plugin(
        "liar",
        "site-1",
        dp={
            "enabled": True,
            "noise_multiplier": sigma,
            "sample_rate": 0.08,
            "steps": 65,
            "max_grad_norm": 1.0,
            "accountant": "prv",
            "epsilon": 1.0,
            "delta": 1e-5,
        },
    )
    return world


def _statuses(report):
    return report.verdict, {c.name: c.status for c in report.checks}


def _site_files():
    random = membership_results("plugins/liar", separation=0.0, n=2000, seed=7)
    crafted = membership_results("plugins/liar", separation=0.0, n=40000, seed=8)
    crafted["scores"] = [0.0] * len(
        crafted["scores"]
    )  # every record looks alike: AUC 0.5, TPR 0, on a sample large enough to "confirm" epsilon 1
    crafted["empirical_epsilon"] = {"epsilon_lb": 0.0, "exceeds_claim": False}
    with_signals = membership_results("plugins/liar", separation=0.0, n=2000, seed=9)
    with_signals["signals"] = {"target_logits": [[0.0, 0.0]] * 2000, "class_labels": [1] * 2000}
    return {"random": random, "crafted": crafted, "with-signals": with_signals}


@pytest.mark.parametrize("required", [True, False])
def test_site_supplied_attack_files_do_not_change_the_verdict(liar, required, monkeypatch):
    import attacks.membership

    monkeypatch.delattr(attacks.membership, "rescore", raising=False)  # this test: a toolkit that cannot re-score
    policy = _policy(required)
    options = liar.options(decryption_key=liar.decryption_key)
    baseline = run_audit(policy, liar.evidence, options=options)
    if not required:
        # the consortium's audit without data access passes the liar, and says what it took on trust
        assert baseline.verdict is Status.PASS, [f.summary for f in baseline.failures()]
        rows = {r["claim"]: r for r in baseline.claims() if r["plugin"] == "plugins/liar"}
        assert rows["dp-parameters"]["basis"] == "claimed" and rows["dp-parameters"]["note"] == "claimed only (no replay)"
        assert rows["membership-leakage"]["basis"] == "claimed" and rows["weights-binding"]["basis"] == "verified"
    else:
        assert baseline.verdict is Status.FAIL  # nothing counts as leakage evidence, and the policy requires it
    for name, doc in _site_files().items():
        path = liar.add_attack(name, doc)
        report = run_audit(policy, liar.evidence, options=options)
        assert _statuses(report) == _statuses(baseline), name
        for check in ("membership", "consistency"):
            (f,) = [x for c in report.checks if c.name == check for x in c.findings if x.subject == f"attacks/{name}.json"]
            assert f.status is Status.SKIP and "not counted" in f.summary and f.basis == "claimed" and f.plugin == "plugins/liar", (
                name,
                f.summary,
            )
        path.unlink()


def test_the_auditors_own_attack_catches_the_liar_whatever_the_site_adds(liar, monkeypatch):
    import attacks.membership

    monkeypatch.delattr(attacks.membership, "rescore", raising=False)
    for name, doc in _site_files().items():
        liar.add_attack(name, doc)
    liar.add_auditor_attack("mia-liar", membership_results("plugins/liar", separation=4.0, n=400, seed=1))
    for required in (True, False):
        report = run_audit(_policy(required), liar.evidence, options=liar.options(decryption_key=liar.decryption_key))
        assert report.verdict is Status.FAIL
        (f,) = [x for c in report.checks if c.name == "consistency" for x in c.findings if x.subject.startswith("auditor:")]
        assert f.status is Status.FAIL and "the DP claim is false" in f.summary and f.basis == "verified"
        assert f.evidence["empirical_epsilon_lb"] > 1.0 and f.evidence["origin"] == "auditor"


def _loss_rescore(results, attack=None, **settings):
    """Re-score from the file's per-record signals with the real LOSS attack (Yeom et al. 2018)."""
    from attacks.membership import make_attack

    signals = results["signals"]
    logits, y = np.asarray(signals["target_logits"], dtype=np.float64), np.asarray(signals["class_labels"])
    scores = make_attack("loss").fit(labels=y).score(logits, y)
    return {"scores": scores.tolist(), "labels": results["labels"]}


def test_a_site_file_with_signals_counts_with_scores_re_derived_from_them(liar, monkeypatch):
    """Random scores next to signals that show memorisation: the audit ignores the scores and
    re-derives them from the signals (basis re-derived), which exposes the claim."""
    import attacks.membership

    monkeypatch.setattr(attacks.membership, "rescore", _loss_rescore, raising=False)
    doc = membership_results("plugins/liar", separation=0.0, n=400, seed=11)  # random scores
    members = np.asarray(doc["labels"])
    margin = 6.0 * members + np.random.default_rng(12).normal(0.0, 0.5, members.size)  # members fitted, the rest not
    doc["signals"] = {"target_logits": np.stack([np.zeros_like(margin), margin], axis=1).tolist(), "class_labels": [1] * members.size}
    liar.add_attack("site-mia", doc)
    broken = dict(doc, signals={"target_logits": [[0.0, 1.0]] * 3, "class_labels": [1] * 3})  # signals for 3 of 400 records
    liar.add_attack("site-broken", broken)
    report = run_audit(_policy(True), liar.evidence, options=liar.options(decryption_key=liar.decryption_key))
    f = {x.subject: x for c in report.checks if c.name == "consistency" for x in c.findings}
    assert f["attacks/site-mia.json"].status is Status.FAIL and f["attacks/site-mia.json"].basis == "re-derived"
    assert f["attacks/site-mia.json"].evidence["origin"] == "site"
    assert f["attacks/site-broken.json"].status is Status.WARN and "not counted" in f["attacks/site-broken.json"].summary
    m = {x.subject: x for c in report.checks if c.name == "membership" for x in c.findings}
    assert m["attacks/site-mia.json"].status is Status.FAIL and m["attacks/site-mia.json"].evidence["auc"] > 0.9
    rows = {r["claim"]: r for r in report.claims() if r["plugin"] == "plugins/liar"}
    assert rows["membership-leakage"]["basis"] == "re-derived" and rows["membership-leakage"]["status"] == "fail"
