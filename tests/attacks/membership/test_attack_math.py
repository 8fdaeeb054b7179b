"""The attack score math on arrays of logits: hand-computed cases and a synthetic signal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from attacks.membership import MEMBERSHIP_ATTACKS, TooFewReferences, make_attack
from attacks.membership.stats import cross_entropy, logit_confidence, true_class_probability
from attacks.metrics import roc_auc
from attacks.references import reference_masks
from forge_secure.errors import ForgeConfigError, ForgeValueError


def test_registry_lists_attacks():
    assert MEMBERSHIP_ATTACKS.names() == ["lira", "loss", "reference", "rmia"]
    with pytest.raises(ForgeValueError, match="lira, loss, reference, rmia"):
        make_attack("shadow")
    with pytest.raises(ForgeValueError, match="unknown setting"):
        make_attack("lira", onlne=True)
    with pytest.raises(ForgeConfigError):
        make_attack("rmia", gamma=0)
    with pytest.raises(ForgeConfigError):
        make_attack("rmia", a=1.5)


def test_logit_confidence_matches_definition_and_is_stable():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [-3.0, 1.0, 4.0]])
    y = np.array([0, 1, 2])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p[np.arange(3), y]
    np.testing.assert_allclose(logit_confidence(logits, y), np.log(py / (1 - py)), rtol=1e-12)
    # p_y -> 1: naive log(p / (1 - p)) is inf, the stable form is exact
    extreme = np.array([[1000.0, 0.0], [0.0, 800.0]])
    np.testing.assert_array_equal(logit_confidence(extreme, np.array([0, 0])), [1000.0, -800.0])
    assert np.all(np.isfinite(logit_confidence(extreme * 50, np.array([0, 1]))))
    # leading reference axis
    assert logit_confidence(np.stack([logits, logits]), y).shape == (2, 3)
    np.testing.assert_allclose(cross_entropy(logits, y), -np.log(py))
    np.testing.assert_allclose(true_class_probability(logits, y, temperature=2.0).sum() > 0, True)


def _binary(phi: np.ndarray) -> np.ndarray:
    """Logits [phi, 0] so that with label 0 the logit-scaled confidence is exactly phi."""
    phi = np.asarray(phi, dtype=float)
    return np.stack([phi, np.zeros_like(phi)], axis=-1)


def test_lira_hand_computed():
    y = np.array([0])
    ref = _binary(np.array([[2.0], [4.0], [-1.0], [1.0]]))  # (4, 1, 2)
    in_mask = np.array([[True], [True], [False], [False]])
    target = _binary(np.array([3.0]))
    # IN: median 3, std 1; OUT: median 0, std 1
    online = make_attack("lira").fit(ref, y, in_mask).score(target, y)
    assert online[0] == pytest.approx(norm.logpdf(3, 3, 1) - norm.logpdf(3, 0, 1))
    assert online[0] == pytest.approx(4.5)
    offline = make_attack("lira", online=False).fit(ref, y, in_mask).score(target, y)
    assert offline[0] == pytest.approx(norm.logcdf(3.0))


def test_lira_fixed_variance_uses_one_global_std():
    y = np.array([0, 0])
    phis = np.array([[2.0, 10.0], [4.0, 14.0], [-1.0, 5.0], [1.0, 9.0]])
    in_mask = np.array([[True, True], [True, True], [False, False], [False, False]])
    a = make_attack("lira", fixed_variance=True).fit(_binary(phis), y, in_mask)
    assert a.s_in_[0] == a.s_in_[1] == pytest.approx(np.std([2.0, 4.0, 10.0, 14.0]))
    assert a.s_out_[0] == pytest.approx(np.std([-1.0, 1.0, 5.0, 9.0]))
    np.testing.assert_allclose(a.mu_in_, [3.0, 12.0])


def test_too_few_references_per_variant():
    y = np.zeros(5, int)
    ref = np.zeros((2, 5, 2))
    mask, _ = reference_masks(5, 0, 2, seed=0)
    with pytest.raises(TooFewReferences, match="at least 4"):
        make_attack("lira").fit(ref, y, mask)
    make_attack("lira", fixed_variance=True).fit(ref, y, mask)  # 1 IN + 1 OUT per record is enough
    # offline per-example variance needs 2 OUT per record; an all-IN record is refused by name
    bad = mask.copy()
    bad[:, 3] = True
    with pytest.raises(TooFewReferences, match="record 3"):
        make_attack("lira", online=False, fixed_variance=True).fit(ref, y, bad)
    with pytest.raises(TooFewReferences):
        make_attack("rmia").fit(ref[:1], y, mask[:1], population_reference_logits=np.zeros((1, 3, 2)), population_labels=np.zeros(3, int))


def test_rmia_hand_computed():
    # one candidate, three population records, two references (one IN, one OUT for x)
    y = np.array([0])
    pop_y = np.array([0, 0, 0])
    t = 1.0  # temperature 1 so probabilities are the plain softmax
    p = lambda phi: 1 / (1 + np.exp(-phi))  # noqa: E731  p_y of logits [phi, 0]
    ref = _binary(np.array([[1.0], [-1.0]]))
    in_mask = np.array([[True], [False]])
    pop_ref = _binary(np.array([[0.0, 1.0, 2.0], [0.0, -1.0, 2.0]]))
    target, pop_target = _binary(np.array([0.5])), _binary(np.array([0.0, 1.0, 3.0]))
    attack = make_attack("rmia", gamma=1.0, temperature=t)
    attack.fit(ref, y, in_mask, population_reference_logits=pop_ref, population_labels=pop_y)
    score = attack.score(target, y, population_target_logits=pop_target)
    ratio_x = p(0.5) / ((p(1.0) + p(-1.0)) / 2)
    ratio_z = np.array([p(0.0) / p(0.0), p(1.0) / ((p(1.0) + p(-1.0)) / 2), p(3.0) / p(2.0)])
    expected = np.mean(ratio_x / ratio_z >= 1.0)
    step = 1 / (2 * (3 + 1))  # ties are broken below half of the 1/m step
    assert expected <= score[0] < expected + step
    assert expected == pytest.approx(2 / 3)  # LR = 1.245, 0.85, 1.151 against gamma 1
    # offline with a given a: P(x) = ((1 + a) P_OUT(x) + (1 - a)) / 2
    a = 0.3
    off = make_attack("rmia", online=False, a=a, gamma=1.0, temperature=t)
    off.fit(ref, y, in_mask, population_reference_logits=pop_ref, population_labels=pop_y)
    px = ((1 + a) * p(-1.0) + (1 - a)) / 2
    pz = ((1 + a) * np.array([p(0.0), (p(1.0) + p(-1.0)) / 2, p(2.0)]) + (1 - a)) / 2
    expected_off = np.mean((p(0.5) / px) / (np.array([p(0.0), p(1.0), p(3.0)]) / pz) >= 1.0)
    assert expected_off <= off.score(target, y, population_target_logits=pop_target)[0] < expected_off + step


def test_rmia_tie_break_of_an_underflowing_probability_is_finite_without_warning():
    """A target whose true-class probability underflows to 0 (a logit gap of 5000) used to take
    log(0) in the tie-break (a RuntimeWarning on every bench run); it must rank lowest, finitely."""
    import warnings

    y = np.array([0, 0, 0])
    pop_y = np.array([0, 0, 0])
    ref = _binary(np.array([[1.0, 0.5, 0.0], [-1.0, 0.0, 0.2]]))
    in_mask = np.array([[True, False, True], [False, True, False]])
    pop_ref = _binary(np.array([[0.0, 1.0, 2.0], [0.0, -1.0, 2.0]]))
    target, pop_target = _binary(np.array([-5000.0, 0.0, 3.0])), _binary(np.array([0.0, 1.0, 3.0]))
    for settings in ({}, {"online": False, "a": 0.3}):
        attack = make_attack("rmia", gamma=1.0, **settings)
        attack.fit(ref, y, in_mask, population_reference_logits=pop_ref, population_labels=pop_y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any RuntimeWarning fails the test
            score = attack.score(target, y, population_target_logits=pop_target)
        assert np.all(np.isfinite(score))
        assert score[0] == score.min() and score[0] < score[1] < score[2]


def _synthetic(n=400, m=200, R=8, signal=2.0, seed=0):
    """Records of varied difficulty; a model's confidence rises by ``signal`` on its training records."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 2, n + m)
    in_mask, pop_in = reference_masks(n, m, R, seed=seed)
    full = np.concatenate([in_mask, pop_in], axis=1)
    phi_ref = difficulty + signal * full + rng.normal(0, 0.5, (R, n + m))
    members = rng.random(n) < 0.5
    t_in = np.concatenate([members, np.zeros(m, bool)])
    phi_t = difficulty + signal * t_in + rng.normal(0, 0.5, n + m)
    y = np.zeros(n + m, int)
    return _binary(phi_ref), _binary(phi_t), y, in_mask, pop_in, members.astype(int), n


@pytest.mark.parametrize(
    "name, settings",
    [
        ("lira", {}),
        ("lira", {"fixed_variance": True}),
        ("lira", {"online": False}),
        ("rmia", {}),
        ("rmia", {"online": False}),
        ("reference", {}),
    ],
)
def test_calibrated_attacks_find_a_synthetic_signal(name, settings):
    ref, t, y, in_mask, pop_in, members, n = _synthetic()
    attack = make_attack(name, **settings).fit(
        ref[:, :n], y[:n], in_mask, population_reference_logits=ref[:, n:], population_labels=y[n:], population_in_mask=pop_in
    )
    scores = attack.score(t[:n], y[:n], population_target_logits=t[n:])
    assert scores.shape == (n,)
    assert roc_auc(scores, members) > 0.85
    # calibration beats the uncalibrated loss when records differ in difficulty
    loss_auc = roc_auc(make_attack("loss").fit(None, y[:n]).score(t[:n], y[:n]), members)
    assert roc_auc(scores, members) > loss_auc


def test_no_signal_stays_near_chance():
    ref, t, y, in_mask, pop_in, members, n = _synthetic(signal=0.0, seed=4)
    for name in ("lira", "rmia"):
        attack = make_attack(name).fit(
            ref[:, :n], y[:n], in_mask, population_reference_logits=ref[:, n:], population_labels=y[n:], population_in_mask=pop_in
        )
        auc = roc_auc(attack.score(t[:n], y[:n], population_target_logits=t[n:]), members)
        assert abs(auc - 0.5) < 0.08, (name, auc)


def test_score_shape_errors():
    ref, t, y, in_mask, pop_in, members, n = _synthetic(n=20, m=10, R=4)
    attack = make_attack("lira").fit(ref[:, :n], y[:n], in_mask)
    with pytest.raises(ForgeValueError, match="same candidate records"):
        attack.score(t[: n - 1], y[: n - 1])
    with pytest.raises(ForgeValueError, match="not fitted"):
        make_attack("lira").score(t[:n], y[:n])
    with pytest.raises(ForgeValueError, match="population"):
        make_attack("rmia").fit(ref[:, :n], y[:n], in_mask)
    with pytest.raises(ForgeValueError, match="NaN"):
        bad = ref[:, :n].copy()
        bad[0, 0, 0] = np.nan
        make_attack("lira").fit(bad, y[:n], in_mask)
    with pytest.raises(ForgeValueError, match="labels"):
        make_attack("lira").fit(ref[:, :n], np.full(n, 5), in_mask)


def test_lira_agrees_with_the_independent_numpy_version_in_the_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_mia.py"
    spec = importlib.util.spec_from_file_location("bench_mia_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(7)
    R, n, C = 8, 40, 3
    ref, target = rng.normal(0, 20, (R, n, C)), rng.normal(0, 20, (n, C))
    y = rng.integers(0, C, n)
    mask, _ = reference_masks(n, 0, R, seed=3)
    for kw in ({}, {"fixed_variance": True}, {"online": False}, {"online": False, "fixed_variance": True}):
        lib = make_attack("lira", **kw).fit(ref, y, mask).score(target, y)
        np.testing.assert_allclose(lib, bench.numpy_lira(target, ref, mask, y, **kw), rtol=1e-9, atol=1e-9)
