"""Mixture over real plugins: routers, probabilities, save/load, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from forge_secure.errors import ForgeDataError, ForgeIntegrityError, ForgeValueError
from forge_secure.merge.mixture import Mixture, StaticRouter, build_mixture, fit_gate, load_mixture, tune_static_weights
from forge_secure.plugins.plugin import load_plugin


@pytest.fixture(scope="module")
def plugins(tmp_path_factory, make_plugin):
    d = tmp_path_factory.mktemp("mix")
    return [make_plugin(d / f"p{i}", 40 + i, rows=r, site=f"site-{i + 1}", scale=1.0) for i, r in enumerate([84, 62, 31])]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 30)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 12] > 0).astype(np.int64)
    return X, y


def test_static_mixture_is_the_weighted_average_of_plugin_probabilities(plugins, data):
    X, _ = data
    mix = build_mixture(plugins)  # weights = training-set sizes
    loaded = [load_plugin(p) for p in plugins]
    w = np.array([84, 62, 31]) / 177
    want = sum(wi * p.predict_proba(X) for wi, p in zip(w, loaded, strict=True))
    np.testing.assert_allclose(mix.predict_proba(X), want, rtol=1e-10)
    np.testing.assert_allclose(np.exp(mix.logits(X)), want, rtol=1e-10)
    assert np.allclose(mix.predict_proba(X).sum(1), 1.0)


def test_tuned_static_weights_do_not_lose_to_equal_weights(plugins, data):
    X, y = data
    loaded = [load_plugin(p) for p in plugins]
    w, info = tune_static_weights(loaded, X, y, budget=25, seed=0)

    def nll(ws):
        return -np.log(Mixture(loaded, StaticRouter(ws).fit(loaded)).predict_proba(X)[np.arange(len(y)), y]).mean()

    assert sum(w) == pytest.approx(1.0)
    assert nll(w) <= nll([1, 1, 1]) + 0.05 * 0.5 + 1e-9


def test_gate_router_fits_and_round_trips(plugins, data, tmp_path, base):
    X, y = data
    loaded = [load_plugin(p) for p in plugins]
    gate = fit_gate(loaded, base, X, y, epochs=150, seed=0)
    mix = Mixture(loaded, gate, base)
    w = mix.route(X)
    assert w.shape == (120, 3) and np.allclose(w.sum(1), 1.0)
    nll_gate = -np.log(mix.predict_proba(X)[np.arange(len(y)), y]).mean()
    nll_flat = -np.log(Mixture(loaded, StaticRouter([1, 1, 1]).fit(loaded)).predict_proba(X)[np.arange(len(y)), y]).mean()
    assert nll_gate <= nll_flat + 1e-9
    out = mix.save(tmp_path / "mix")
    again = load_mixture(out)
    np.testing.assert_allclose(again.predict_proba(X), mix.predict_proba(X), rtol=1e-6)
    meta = json.loads((out / "mixture.json").read_text())
    assert meta["router"] == "gate" and len(meta["plugins"]) == 3


def test_similarity_router_is_training_free_and_input_dependent(plugins, data, tmp_path):
    X, _ = data
    mix = build_mixture(plugins, router="similarity")
    w = mix.route(X)
    assert np.allclose(w.sum(1), 1.0) and (w >= 0).all()
    assert w.std(0).max() > 0  # depends on the input
    again = load_mixture(mix.save(tmp_path / "sim"))
    np.testing.assert_allclose(again.predict_proba(X), mix.predict_proba(X), rtol=1e-10)


def test_bad_mixture_inputs(plugins, tmp_path):
    with pytest.raises(ForgeValueError, match="--tune-on"):
        build_mixture(plugins, router="gate")
    with pytest.raises(ForgeValueError) as e:
        build_mixture(plugins, router="moe")
    assert "similarity" in str(e.value) and "gate" in str(e.value)
    with pytest.raises(ForgeValueError, match="weights"):
        build_mixture(plugins, weights=[1, 2])
    out = build_mixture(plugins).save(tmp_path / "m")
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    f = next((bad / "plugins").iterdir()) / "adapter_model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(ForgeIntegrityError, match="digest") as e:  # the plugins' gateway: as when the plugin is loaded
        load_mixture(bad)
    assert e.value.code == "plugin.adapter_digest"
    meta = json.loads((out / "mixture.json").read_text())
    meta["plugins"][0]["path"] = "../../etc"
    (bad / "mixture.json").write_text(json.dumps(meta))
    with pytest.raises(ForgeDataError, match="leaves the mixture"):
        load_mixture(bad)
    (bad / "mixture.json").write_text("[]")
    with pytest.raises(ForgeDataError, match="not a forge-mixture"):
        load_mixture(bad)
