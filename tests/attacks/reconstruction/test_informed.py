"""The informed adversary against DP-SGD, beside the ReRo bound (Hayes et al. 2023)."""

from __future__ import annotations

import pytest

from attacks.reconstruction.gradients import LoraFunctional
from attacks.reconstruction.informed import InformedAdversary, InformedConfig
from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.plugins import load_data, make_canaries
from forge_secure.privacy import compute_epsilon


def game(plugin, sigma, trials, steps=8, mode="gradients", seed=0):
    fn = LoraFunctional(plugin.model)
    known = load_data("bundled:site-1").subset(range(8))
    # the prior: out-of-distribution records with random labels, whose gradients are large and
    # distinct, so that the attack has something to find (on well-classified records the
    # gradients, and with them the signal, are tiny)
    pool = make_canaries(200, known, 1)
    cfg = InformedConfig(noise_multiplier=sigma, sample_rate=0.5, steps=steps, candidates=10, mode=mode, bound_samples=20_000)
    return InformedAdversary(cfg).fit(fn, known.X, known.y).run(pool.X, pool.y, trials, seed=seed)


@pytest.mark.parametrize("sigma", [0.6, 1.5, 4.0])
def test_success_stays_within_the_rero_bound(tabular_plugins, sigma):
    """Issue 6: at several epsilons the informed adversary's success stays within the ReRo bound
    plus its interval (the Clopper-Pearson lower limit never exceeds the bound)."""
    eps = compute_epsilon([(sigma, 0.5, 8)], 1e-3, "rdp")
    res = game(tabular_plugins["nodp"], sigma, trials=30)
    lo = res["success"]["ci"][0]
    bound = res["bound"]["bound"] + 3 * res["bound"]["mc_stderr"]
    assert lo <= bound, (eps, res)
    assert res["within_bound"]
    assert res["baseline"] == 0.1 and 0.1 <= res["bound"]["bound"] <= 1.0


def test_low_noise_attack_beats_the_baseline(tabular_plugins):
    res = game(tabular_plugins["nodp"], 0.3, trials=20)
    assert res["success"]["ci"][0] > 0.1, res["success"]


def test_model_mode_and_bad_input(tabular_plugins):
    res = game(tabular_plugins["nodp"], 1.0, trials=5, steps=3, mode="model")
    assert 0 <= res["success"]["rate"] <= 1
    with pytest.raises(ForgeValueError, match="candidates"):
        InformedConfig(noise_multiplier=1.0, sample_rate=0.5, steps=3, candidates=1)
    with pytest.raises(ForgeValueError, match="mode"):
        InformedConfig(noise_multiplier=1.0, sample_rate=0.5, steps=3, mode="psychic")
    with pytest.raises(ForgeValueError):
        InformedConfig(noise_multiplier=1.0, sample_rate=0.0, steps=3)
    cfg = InformedConfig(noise_multiplier=1.0, sample_rate=0.5, steps=2, candidates=10)
    fn = LoraFunctional(tabular_plugins["nodp"].model)
    pool = load_data("bundled:public")
    adv = InformedAdversary(cfg).fit(fn, pool.X[:5], pool.y[:5])
    with pytest.raises(ForgeDataError, match="fewer than"):
        adv.run(pool.X[:3], pool.y[:3], 2)


def test_recipe_from_a_plugin(tabular_plugins):
    meta = tabular_plugins["dp"].meta
    cfg = InformedConfig.from_meta(meta, candidates=5)
    assert cfg.noise_multiplier == meta["dp"]["noise_multiplier"] and cfg.steps == meta["dp"]["steps"] and cfg.candidates == 5
    nodp = InformedConfig.from_meta(tabular_plugins["nodp"].meta)
    assert nodp.noise_multiplier == 0.0
