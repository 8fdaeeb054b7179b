"""Metric functions on small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attacks import metrics as M
from forge_secure.errors import ForgeValueError


def test_roc_auc_hand_computed():
    # 4 records: the pairs (member, non-member) ordered correctly are 3 of 4
    assert M.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert M.roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert M.roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0


def test_tpr_at_fpr_reports_fpr_reached():
    scores, labels = [4, 3, 2, 1], [1, 0, 1, 0]
    r = M.tpr_at_fpr(scores, labels, 0.0)
    assert (r.tpr, r.fpr_reached, r.threshold) == (0.5, 0.0, 4.0)
    r = M.tpr_at_fpr(scores, labels, 0.4)  # FPR 0.5 is not allowed, so the largest reached is 0
    assert (r.tpr, r.fpr_reached) == (0.5, 0.0)
    r = M.tpr_at_fpr(scores, labels, 0.5)
    assert (r.tpr, r.fpr_reached) == (1.0, 0.5)
    assert r.min_resolvable_fpr == 0.5


def test_tpr_at_low_fpr_with_many_negatives():
    # 1000 non-members at scores 0..999, 10 members at 995.5..1004.5
    neg = np.arange(1000, dtype=float)
    pos = np.arange(10) + 995.5
    s = np.concatenate([neg, pos])
    y = np.r_[np.zeros(1000, int), np.ones(10, int)]
    r = M.tpr_at_fpr(s, y, 0.001)  # one false positive (999) allowed: threshold 998.5 keeps 7 members
    assert r.fpr_reached == pytest.approx(0.001)
    assert r.tpr == pytest.approx(0.7)
    r = M.tpr_at_fpr(s, y, 0.0)  # threshold 999.5 keeps 6 members and no non-member
    assert r.tpr == pytest.approx(0.6) and r.fpr_reached == 0.0


def test_balanced_accuracy():
    scores, labels = [4, 3, 2, 1], [1, 0, 1, 0]
    assert M.balanced_accuracy(scores, labels, threshold=2.5) == (0.5, 2.5)
    acc, thr = M.balanced_accuracy(scores, labels)
    assert acc == 0.75 and thr == 4.0


def test_bootstrap_is_seeded_and_brackets():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    s = rng.normal(size=200) + 0.8 * y
    a = M.bootstrap_ci(M.roc_auc, s, y, n_boot=60, seed=3)
    b = M.bootstrap_ci(M.roc_auc, s, y, n_boot=60, seed=3)
    assert a == b
    assert a[0] < M.roc_auc(s, y) < a[1]
    assert M.bootstrap_ci(M.roc_auc, np.arange(4.0), [0, 0, 1, 1], n_boot=50, seed=0) == (1.0, 1.0)


def test_attack_metrics_dict():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300, int), np.ones(300, int)]
    s = rng.normal(size=600) + y
    out = M.attack_metrics(s, y, n_boot=40, seed=0)
    assert out["members"] == 300 and out["non_members"] == 300
    assert out["auc"]["ci"][0] <= out["auc"]["value"] <= out["auc"]["ci"][1]
    assert [r["target_fpr"] for r in out["tpr_at_fpr"]] == [0.001, 0.01]
    for r in out["tpr_at_fpr"]:
        assert r["fpr_reached"] <= r["target_fpr"]
        assert r["ci"][0] <= r["ci"][1]


@pytest.mark.parametrize(
    "scores, labels, code",
    [
        ([0.1, 0.2], [0, 0], "metrics.one_class"),
        ([0.1, 0.2, 0.3], [0, 1], "metrics.shape"),
        ([0.1, 0.2], [0, 2], "metrics.labels"),
        ([0.1, float("nan")], [0, 1], "metrics.nonfinite"),
    ],
)
def test_bad_input(scores, labels, code):
    with pytest.raises(ForgeValueError) as e:
        M.roc_auc(scores, labels)
    assert e.value.code == code


def test_epsilon_from_rates():
    assert M.epsilon_from_rates(0.5, 0.05) == pytest.approx(math.log(10))
    assert M.epsilon_from_rates(0.5, 0.5) == 0.0
    assert M.epsilon_from_rates(0.5, 0.0) == math.inf
    assert M.epsilon_from_rates(0.5, 0.05, delta=0.1) == pytest.approx(math.log(8))


def test_clopper_pearson_epsilon_hand_computed():
    # TP = P = 10, FP = 0: Beta(10, 1) and Beta(1, 10) have closed-form quantiles
    r = M.clopper_pearson_epsilon(10, 10, 0, 10, alpha=0.05)
    tpr_lo = 0.025 ** (1 / 10)
    assert r["tpr_lo"] == pytest.approx(tpr_lo)
    assert r["fpr_hi"] == pytest.approx(1 - tpr_lo)
    assert r["epsilon_lb"] == pytest.approx(math.log(tpr_lo / (1 - tpr_lo)))  # 0.8071
    assert r["epsilon_lb"] == pytest.approx(0.8071, abs=1e-4)
    # no signal: zero
    assert M.clopper_pearson_epsilon(5, 10, 5, 10)["epsilon_lb"] == 0.0
    # the existing interval helper agrees with the Beta quantiles
    lo, hi = M.clopper_pearson(10, 10)
    assert lo == pytest.approx(tpr_lo) and hi == 1.0


def test_split_clopper_pearson_uses_held_out_half():
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    s = y * 10.0 + np.random.default_rng(0).normal(size=400)
    r = M.split_clopper_pearson_epsilon(s, y, seed=0)
    assert r["selection_records"] + r["evaluation_records"] == 400
    assert r["members"] + r["non_members"] == r["evaluation_records"]
    # near-perfect separation on 100 + 100 held-out records: close to, never above, the
    # bound for a perfect test on that many records
    lo = 0.025 ** (1 / 100)
    assert 3.0 < r["epsilon_lb"] <= math.log(lo / (1 - lo)) + 1e-9
    # no signal: the held-out bound stays small even though the selection half was searched
    noise = np.random.default_rng(1).normal(size=400)
    assert M.split_clopper_pearson_epsilon(noise, y, seed=0)["epsilon_lb"] < 0.5


def test_one_run_p_value_hand_computed():
    # r = v = m = 2, eps = 0: q = 1/2, beta = P[Bin(2,1/2) >= 2] = 1/4
    assert M.one_run_p_value(2, 2, 2, 0.0) == pytest.approx(0.25)
    # alpha = max(P[Bin = 1] / 1, P[0 <= Bin < 2] / 2) = max(0.5, 0.375) = 0.5; p = 0.25 + 0.5 * 0.01 * 2 * 2
    assert M.one_run_p_value(2, 2, 2, 0.0, delta=0.01) == pytest.approx(0.27)
    # eps = ln 3: q = 3/4, beta = 9/16
    assert M.one_run_p_value(2, 2, 2, math.log(3)) == pytest.approx(9 / 16)
    # r = 3, v = 2, q = 1/2: P[Bin(3, 1/2) >= 2] = 4/8
    assert M.one_run_p_value(3, 2, 10, 0.0) == pytest.approx(0.5)


def test_one_run_epsilon_bisection():
    # all 10 guesses right, delta 0: p(eps) = q^10 < 0.05  <=>  q < 0.05^(1/10)
    q = 0.05**0.1
    assert M.one_run_epsilon(10, 10, 10, p_target=0.05) == pytest.approx(math.log(q / (1 - q)), abs=1e-5)
    assert M.one_run_epsilon(10, 5, 10) == 0.0


def test_one_run_audit_on_scores():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.5).astype(int)
    strong = M.one_run_audit(y * 5.0 + rng.normal(size=1000), y, k_plus=100, k_minus=100)
    assert strong["correct"] == 200 and strong["epsilon_lb"] > 1.5
    weak = M.one_run_audit(rng.normal(size=1000), y, k_plus=100, k_minus=100)
    assert weak["epsilon_lb"] < 0.5


@pytest.mark.parametrize("r, expected", [(64, 3.04), (256, 4.44), (1000, 5.81), (4000, 7.20)])
def test_one_run_ceiling_reference_values(r, expected):
    from attacks.metrics import one_run_epsilon, one_run_epsilon_ceiling

    ceiling = one_run_epsilon_ceiling(r, p_target=0.05)
    assert ceiling == pytest.approx(expected, abs=0.005)
    # the closed form is the bisection of the audit itself with every guess right
    assert one_run_epsilon(r, r, r, p_target=0.05) == pytest.approx(ceiling, abs=1e-5)
    # and no attack on that sample shows more: one wrong guess already gives less
    assert one_run_epsilon(r, r - 1, r, p_target=0.05) < ceiling


def test_one_run_ceiling_with_delta_is_lower_and_needs_m():
    from attacks.metrics import one_run_epsilon, one_run_epsilon_ceiling

    c0 = one_run_epsilon_ceiling(1000)
    c1 = one_run_epsilon_ceiling(1000, m=1000, delta=1e-5)
    c2 = one_run_epsilon_ceiling(1000, m=1000, delta=1e-3)
    assert c2 < c1 <= c0
    assert c1 == pytest.approx(one_run_epsilon(1000, 1000, 1000, delta=1e-5), abs=1e-5)
    assert one_run_epsilon_ceiling(0) == 0.0
    assert one_run_epsilon_ceiling(200, m=1000, delta=1e-3) < one_run_epsilon_ceiling(200, m=200, delta=1e-3)


def test_clopper_pearson_ceiling_is_the_perfect_attack():
    from attacks.metrics import clopper_pearson_epsilon, clopper_pearson_epsilon_ceiling

    # hand computed: P = N = 42 at alpha 0.05: TPR_lo = 0.025^(1/42), FPR_hi = 1 - 0.025^(1/42)
    b = 0.025 ** (1 / 42)
    assert clopper_pearson_epsilon_ceiling(42, 42) == pytest.approx(math.log(b / (1 - b)), rel=1e-9)
    assert clopper_pearson_epsilon_ceiling(42, 42) == clopper_pearson_epsilon(42, 42, 0, 42)["epsilon_lb"]
    # any other outcome on the same sample gives less; more records give a higher ceiling
    assert clopper_pearson_epsilon(41, 42, 0, 42)["epsilon_lb"] < clopper_pearson_epsilon_ceiling(42, 42)
    assert clopper_pearson_epsilon_ceiling(500, 500) > clopper_pearson_epsilon_ceiling(42, 42)
    assert clopper_pearson_epsilon_ceiling(42, 42, delta=1e-2) < clopper_pearson_epsilon_ceiling(42, 42)


def test_guesses_needed_inverts_the_ceiling():
    from attacks.metrics import one_run_epsilon_ceiling, one_run_guesses_needed

    for eps in (1.0, 2.0, 4.0, 8.0):
        r = one_run_guesses_needed(eps)
        assert one_run_epsilon_ceiling(r) >= eps > one_run_epsilon_ceiling(r - 1)


@pytest.mark.parametrize(
    "call, code",
    [
        (lambda M: M.one_run_epsilon_ceiling(-1), "metrics.one_run_counts"),
        (lambda M: M.one_run_epsilon_ceiling(10, m=5), "metrics.one_run_counts"),
        (lambda M: M.one_run_epsilon_ceiling(10, p_target=1.5), "metrics.p_target"),
        (lambda M: M.clopper_pearson_epsilon_ceiling(0, 10), "metrics.counts"),
        (lambda M: M.clopper_pearson_epsilon_ceiling(10, 2.5), "metrics.counts"),
    ],
)
def test_ceiling_bad_input(call, code):
    import attacks.metrics as M
    from forge_secure.errors import ForgeValueError

    with pytest.raises(ForgeValueError) as e:
        call(M)
    assert e.value.code == code


def test_one_interval_method_for_attack_results_and_the_audit():
    """The audit's interval for a results file is the file's own (issue 14, item 3)."""
    from audits.checks.leakage import membership_metrics

    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(200, int), np.ones(150, int)]
    s = rng.normal(size=350) + 0.7 * y
    res = M.attack_metrics(s, y, n_boot=200, confidence=0.9, seed=7)
    aud = membership_metrics(s, y, n_boot=200, confidence=0.9, seed=7)
    assert aud["auc"] == res["auc"]
    assert aud["tpr_at_fpr"] == res["tpr_at_fpr"]
    for row in res["tpr_at_fpr"]:  # Clopper-Pearson on the true positives at the non-member threshold
        tp = int(round(row["tpr"] * 150))
        assert row["ci"] == list(M.clopper_pearson(tp, 150, 0.9))
        assert row["fpr_reached"] <= row["target_fpr"] <= 1 and row["fpr_hi"] >= row["fpr_reached"]
    assert M.auc_interval(s, y, n_boot=200, confidence=0.9, seed=7) == tuple(res["auc"]["ci"])
