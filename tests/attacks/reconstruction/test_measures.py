"""Success measures: Hungarian-matched tabular accuracy with a prior baseline, image metrics."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.reconstruction.canary import exposure
from attacks.reconstruction.features import FeatureSpec
from attacks.reconstruction.measures import (
    feature_hits,
    image_baseline,
    image_success,
    match_records,
    nn_identifiable,
    psnr,
    ssim,
    tabular_baseline,
    tabular_success,
)
from forge_secure.errors import ForgeDataError, ForgeValueError


def mixed_prior(n=400, seed=0):
    rng = np.random.default_rng(seed)
    cont = rng.normal(size=(n, 3))
    cat = np.eye(4)[rng.integers(0, 4, size=n)]
    return np.concatenate([cont, cat], axis=1)


def test_feature_spec_from_prior_and_validation():
    prior = mixed_prior()
    spec = FeatureSpec.from_prior(prior, [(3, 4, 5, 6)])
    assert spec.continuous == (0, 1, 2) and spec.n_features == 4
    assert spec.decode(prior[:2]).shape == (2, 4)
    with pytest.raises(ForgeDataError, match="not one-hot"):
        FeatureSpec.from_prior(prior, [(0, 1)])
    with pytest.raises(ForgeValueError, match="two categorical groups"):
        FeatureSpec.from_prior(prior, [(3, 4), (4, 5)])
    with pytest.raises(ForgeValueError, match="outside"):
        FeatureSpec.from_prior(prior, [(3, 9)])
    with pytest.raises(ForgeDataError, match="NaN"):
        FeatureSpec.from_prior(np.full((3, 2), np.nan))


def test_hits_matching_and_tolerance():
    prior = mixed_prior()
    spec = FeatureSpec.from_prior(prior, [(3, 4, 5, 6)])
    truth = prior[:3]
    recon = truth[[2, 0, 1]].copy()
    recon[:, 0] += 0.1 * spec.std[0]  # inside the 0.25-std tolerance
    recon[:, 1] += 0.5 * spec.std[1]  # outside it
    perm = match_records(recon, truth, spec)
    assert list(perm) == [1, 2, 0]
    hits = feature_hits(recon[perm], truth, spec)
    assert hits[:, 0].all() and not hits[:, 1].any() and hits[:, 2].all() and hits[:, 3].all()
    res = tabular_success(recon, truth, spec)
    assert res["feature_accuracy"]["rate"] == pytest.approx(0.75)
    assert res["record_rate"]["rate"] == 0.0
    lo, hi = res["feature_accuracy"]["ci"]
    assert lo < 0.75 < hi
    exact = tabular_success(truth[[1, 2, 0]], truth, spec)
    assert exact["record_rate"]["rate"] == 1.0


def test_random_baseline_draws_from_the_prior():
    prior = mixed_prior(2000)
    spec = FeatureSpec.from_prior(prior, [(3, 4, 5, 6)])
    truth = [prior[i : i + 1] for i in range(20)]
    base = tabular_baseline(truth, prior, spec, draws=50, seed=0)
    acc = base["per_feature"]
    # categorical with 4 equally likely values: about 1/4; a continuous N(0,1) within 0.25 std of
    # a draw: about P(|Z| < 0.25/sqrt 2) ~ 0.14
    cat_name = spec.feature_names()[-1]
    assert 0.15 < acc[cat_name] < 0.35
    assert base == tabular_baseline(truth, prior, spec, draws=50, seed=0)
    assert base["feature_accuracy"]["rate"] < 0.35


def test_image_metrics():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, 1, 8, 8))
    assert np.all(psnr(a, a) == 100.0)
    np.testing.assert_allclose(ssim(a, a), 1.0)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    c = rng.uniform(size=a.shape)
    assert np.all(psnr(b, a) > psnr(c, a)) and np.all(ssim(b, a) > ssim(c, a))
    assert np.all(psnr(b, a) > 15)
    pool = rng.uniform(size=(20, 1, 8, 8))
    assert nn_identifiable(b, a, pool).all()
    assert not nn_identifiable(pool[:3] * 0.99, a, pool).any()
    s = image_success([b], [a], pool)
    base = image_baseline([a], pool, pool, seed=0)
    assert s["psnr_db"]["mean"] > base["psnr_db"]["mean"] + 5
    assert s["nn_identification"]["rate"] == 1.0 and s["nn_chance"] == pytest.approx(1 / 21)


def test_exposure():
    assert exposure(1, 1024) == pytest.approx(10.0)
    assert exposure(1024, 1024) == pytest.approx(0.0)
    with pytest.raises(ForgeValueError):
        exposure(0, 10)
