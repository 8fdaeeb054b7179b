"""Accountants: agreement with Opacus, monotonicity, composition, calibration, refusals."""

from __future__ import annotations

import warnings

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from forge_secure.errors import ForgeValueError
from forge_secure.privacy.accountants import ACCOUNTANTS, MAX_NOISE_MULTIPLIER, calibrate_noise_multiplier, compute_epsilon, default_delta


def _opacus(cls, history, delta):
    acc = cls()
    acc.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return acc.get_epsilon(delta=delta)


@pytest.mark.parametrize("name,cls", [("prv", PRVAccountant), ("rdp", RDPAccountant)])
def test_matches_opacus_directly(name, cls):
    h = [(1.1, 0.25, 40)]
    assert compute_epsilon(h, 1e-3, name) == pytest.approx(_opacus(cls, h, 1e-3), rel=1e-12)


@pytest.mark.parametrize("name", ["prv", "rdp"])
def test_epsilon_falls_as_noise_grows(name):
    eps = [compute_epsilon([(s, 0.3, 30)], 1e-3, name) for s in (0.8, 1.2, 2.0, 4.0)]
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False)), eps
    assert eps[-1] > 0


def test_composition_is_concatenation():
    a, b = [(1.5, 0.3, 20)], [(2.0, 1.0, 1)]
    both = compute_epsilon(a + b, 1e-3, "rdp")
    assert both == pytest.approx(_opacus(RDPAccountant, a + b, 1e-3), rel=1e-12)
    assert both > max(compute_epsilon(a, 1e-3, "rdp"), compute_epsilon(b, 1e-3, "rdp"))
    # identical mechanisms compose like one longer run
    assert compute_epsilon([(1.5, 0.3, 10), (1.5, 0.3, 10)], 1e-3, "prv") == pytest.approx(
        compute_epsilon([(1.5, 0.3, 20)], 1e-3, "prv"), rel=1e-9
    )
    assert compute_epsilon([], 1e-3) == 0.0


def test_gdp_caveat_and_refusal():
    assert ACCOUNTANTS.get("gdp").caveat and "under-estimate" in ACCOUNTANTS.get("gdp").caveat
    assert compute_epsilon([(1.5, 0.3, 20)], 1e-3, "gdp") > 0
    with pytest.raises(ForgeValueError) as e:
        compute_epsilon([(1.5, 0.3, 20), (2.0, 1.0, 1)], 1e-3, "gdp")
    assert e.value.code == "dp.accountant_unsupported" and "prv" in str(e.value)


def test_calibration_hits_target():
    sigma = calibrate_noise_multiplier(3.0, 1e-3, 0.4, 30, "rdp")
    eps = compute_epsilon([(sigma, 0.4, 30)], 1e-3, "rdp")
    assert 3.0 * 0.99 <= eps <= 3.0
    sigma_prv = calibrate_noise_multiplier(3.0, 1e-3, 0.4, 30, "prv")
    eps_prv = compute_epsilon([(sigma_prv, 0.4, 30)], 1e-3, "prv")
    assert 3.0 * 0.99 <= eps_prv <= 3.0
    assert sigma_prv < sigma  # PRV is tighter than RDP: less noise for the same guarantee
    # a second call is served from the (verified) cache, with the same answer
    assert calibrate_noise_multiplier(3.0, 1e-3, 0.4, 30, "prv") == sigma_prv


def test_unreachable_target_is_refused():
    with pytest.raises(ForgeValueError) as e:
        calibrate_noise_multiplier(0.01, 1e-5, 1.0, 2000, "rdp")
    assert e.value.code == "dp.unreachable"
    text = str(e.value)
    assert "0.01" in text and "2000 steps" in text and str(int(MAX_NOISE_MULTIPLIER)) in text
    assert "raise the target epsilon" in text.lower()


@pytest.mark.parametrize(
    "history,word",
    [
        ([(0.0, 0.3, 10)], "noise multiplier"),
        ([(1.0, 1.5, 10)], "sample rate"),
        ([(1.0, 0.3, 0)], "steps"),
        ([(1.0, 0.3, 2.5)], "whole number"),
        ([(1.0, 0.3)], "not (noise_multiplier"),
        (["abc"], "not (noise_multiplier"),
    ],
)
def test_bad_history(history, word):
    with pytest.raises(ForgeValueError) as e:
        compute_epsilon(history, 1e-3, "rdp")
    assert word in str(e.value)


def test_bad_delta_and_accountant():
    for d in (0, 1, -1e-3, "x", float("nan")):
        with pytest.raises(ForgeValueError):
            compute_epsilon([(1.0, 0.3, 10)], d, "rdp")
    with pytest.raises(ForgeValueError) as e:
        compute_epsilon([(1.0, 0.3, 10)], 1e-3, "moments")
    assert "gdp, prv, rdp" in str(e.value)


def test_default_delta_is_far_below_one_over_n():
    """min(1e-5, 1/n^2): 1e-5 at the bundled sizes, 1/n^2 for large n; delta * n <= 0.01 at every n."""
    assert default_delta(84) == default_delta(150) == pytest.approx(1e-5)
    assert default_delta(10_000) == pytest.approx(1e-8)
    assert max(default_delta(n) * n for n in range(1, 100_000, 7)) <= 0.01
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ForgeValueError):
            default_delta(bad)


def test_prv_refused_beyond_its_range():
    with pytest.raises(ForgeValueError) as e:
        compute_epsilon([(0.35, 0.5, 400)], 1e-3, "prv")
    assert e.value.code == "dp.prv_range" and "rdp" in str(e.value)
    assert compute_epsilon([(0.35, 0.5, 400)], 1e-3, "rdp") > 50
