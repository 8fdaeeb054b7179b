"""ReRo bounds: the (eps, delta) bound and the DP-SGD Monte Carlo bound of Hayes et al. 2023."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from attacks.reconstruction.bounds import rero_bound_dp, rero_bound_dpsgd, rero_bound_from_meta
from forge_secure.errors import ForgeValueError


@pytest.mark.parametrize("kappa, expected", [(0.1, 0.48), (0.01, 0.15)])
def test_dpsgd_bound_matches_the_papers_example(kappa, expected):
    # q 0.05, sigma 1, T 400 (REFERENCES.md): about 0.48 at kappa 0.1 and 0.15 at kappa 0.01
    b = rero_bound_dpsgd(1.0, 0.05, 400, kappa, samples=20_000, seed=1)
    assert abs(b.bound - expected) < 0.02 + 3 * b.mc_stderr, b


def test_single_gaussian_step_matches_the_closed_form():
    # q = 1, T = 1: P = N(1, s^2), Q = N(0, s^2); the Neyman-Pearson set is a half line
    for sigma in (0.5, 1.0, 2.0):
        kappa = 0.1
        exact = 1 - norm.cdf(norm.ppf(1 - kappa) - 1 / sigma)
        b = rero_bound_dpsgd(sigma, 1.0, 1, kappa, samples=50_000, seed=0)
        assert abs(b.bound - exact) < 4 * b.mc_stderr + 0.01, (sigma, b.bound, exact)


def test_bound_is_seeded_monotone_and_at_least_kappa():
    a = rero_bound_dpsgd(1.0, 0.5, 10, 0.1, samples=5000, seed=3)
    assert a == rero_bound_dpsgd(1.0, 0.5, 10, 0.1, samples=5000, seed=3)
    bounds = [rero_bound_dpsgd(s, 0.5, 10, 0.1, samples=20_000, seed=0).bound for s in (0.5, 1.0, 2.0, 8.0)]
    assert bounds == sorted(bounds, reverse=True)
    assert bounds[-1] >= 0.1 and bounds[0] > 0.9
    assert rero_bound_dpsgd(0.0, 0.5, 10, 0.1).bound == 1.0


def test_epsilon_delta_bound():
    assert rero_bound_dp(0.0, 0.0, 0.1) == pytest.approx(0.1)
    assert rero_bound_dp(1.0, 1e-5, 0.1) == pytest.approx(math.e * 0.1 + 1e-5)
    assert rero_bound_dp(10.0, 0.0, 0.1) == 1.0
    assert rero_bound_dp(math.inf, 0.0, 0.1) == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: rero_bound_dp(1.0, 0.0, 0.0),
        lambda: rero_bound_dp(-1.0, 0.0, 0.1),
        lambda: rero_bound_dp(1.0, 2.0, 0.1),
        lambda: rero_bound_dpsgd(1.0, 0.0, 10, 0.1),
        lambda: rero_bound_dpsgd(1.0, 0.5, 0, 0.1),
        lambda: rero_bound_dpsgd(-1.0, 0.5, 10, 0.1),
        lambda: rero_bound_dpsgd(float("nan"), 0.5, 10, 0.1),
        lambda: rero_bound_dpsgd(1.0, 0.5, 10, 1.5),
        lambda: rero_bound_dpsgd(1.0, 0.5, 10, 0.1, samples=10),
    ],
)
def test_bad_bound_inputs_are_clean_errors(call):
    with pytest.raises(ForgeValueError) as e:
        call()
    assert e.value.code.startswith("recon.")


def test_bound_from_a_plugin_record():
    dp = {"enabled": True, "noise_multiplier": 1.0, "sample_rate": 0.05, "steps": 400, "epsilon": 3.0, "delta": 1e-5}
    r = rero_bound_from_meta(dp, 0.1, samples=5000)
    assert r["bound"] == min(r["dpsgd"], r["epsilon_delta"]) and 0.4 < r["dpsgd"] < 0.56
    assert rero_bound_from_meta({"enabled": False}, 0.1)["bound"] == 1.0
    with pytest.raises(ForgeValueError, match="DP record"):
        rero_bound_from_meta({"enabled": True, "noise_multiplier": "x"}, 0.1)
