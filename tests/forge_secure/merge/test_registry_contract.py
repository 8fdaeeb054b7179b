"""The contracts of the merge registries, run over every entry the way scikit-learn's
``parametrize_with_checks`` runs every estimator (a new entry is checked by registering it):

- :data:`FUSIONS`: every method merges real PEFT adapters into a finite adapter over the same
  modules with the weights it applied (the given ones, normalised, unless it tunes its own), is fixed by its seed, and
  refuses non-finite tensors,
  bad weights and inputs its kind cannot merge with a ``ForgeError``;
- :data:`ROUTERS`: every mixture router is a scikit-learn estimator (settings in ``__init__``,
  learned state with a trailing underscore), is unfitted until ``fit``, routes each record to a
  point of the simplex, is fixed by its seed, survives a save/load round trip of the mixture,
  and refuses requests it cannot serve with a ``ForgeError``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as sk
from sklearn.utils.validation import check_is_fitted

from forge_secure.errors import ForgeError
from forge_secure.merge.evaluate import make_loss
from forge_secure.merge.fusion import FUSIONS, fuse
from forge_secure.merge.mixture import (
    ROUTERS,
    Mixture,
    check_router_request,
    load_mixture,
)
from forge_secure.plugins.plugin import load_plugin
from forge_secure.plugins.record import read_plugin

from ._helpers import TinyMLP, peft_adapter, toy_data

SKLEARN_API_CHECKS = (
    sk.check_no_attributes_set_in_init,
    sk.check_estimator_cloneable,
    sk.check_estimator_repr,
    sk.check_parameters_default_constructible,
    sk.check_get_params_invariance,
    sk.check_set_params,
    sk.check_do_not_raise_errors_in_init_or_set_params,
)


# --------------------------------------------------------------------------- FUSIONS
def _adapters(spec, seeds=(1, 2, 3)):
    """Inputs every method can merge: FFA-LoRA (shared A) of one rank when the method needs it."""
    return [peft_adapter(s, shared_a_seed=7 if spec.needs_ffa else None) for s in seeds]


def _options(spec):
    return {"loss_fn": make_loss(TinyMLP(), *toy_data(60)), "budget": 8} if spec.needs_loss else {}


@pytest.mark.parametrize("name", FUSIONS.names())
def test_every_fusion_merges_real_adapters(name):
    spec = FUSIONS.get(name)
    ads = _adapters(spec)
    res = fuse(name, ads, [3.0, 2.0, 1.0], seed=0, **_options(spec))
    assert res.method == name
    assert len(res.weights) == 3 and all(np.isfinite(res.weights))
    if not spec.needs_loss:  # a tuned merge (MedForge) records its own scalars, which need not sum to one
        assert sum(res.weights) == pytest.approx(1.0)
    assert res.adapter.modules == ads[0].modules
    for m in ads[0].modules:
        delta = res.adapter.delta(m)
        assert delta.shape == ads[0].delta(m).shape and torch.isfinite(delta).all()


@pytest.mark.parametrize("name", FUSIONS.names())
def test_every_fusion_is_fixed_by_its_seed(name):
    spec = FUSIONS.get(name)
    ads = _adapters(spec)
    a = fuse(name, ads, seed=4, **_options(spec))
    b = fuse(name, ads, seed=4, **_options(spec))
    assert a.weights == b.weights
    for m in ads[0].modules:
        torch.testing.assert_close(a.adapter.delta(m), b.adapter.delta(m), rtol=0, atol=0)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_every_fusion_refuses_bad_input_with_a_forge_error(name):
    spec = FUSIONS.get(name)
    ads = _adapters(spec, seeds=(1, 2))
    bad = {k: v.clone() for k, v in ads[1].state.items()}
    bad[next(iter(bad))].view(-1)[0] = float("nan")
    with pytest.raises(ForgeError) as e:
        fuse(name, [ads[0], ads[1].with_state(bad, name="broken")], **_options(spec))
    assert e.value.code == "merge.not_finite"
    for weights in ([1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("inf")]):
        with pytest.raises(ForgeError):
            fuse(name, ads, weights, **_options(spec))
    with pytest.raises(ForgeError):
        fuse(name, [], **_options(spec))
    if spec.needs_ffa:
        with pytest.raises(ForgeError):
            fuse(name, [peft_adapter(1), peft_adapter(2)], **_options(spec))  # plain LoRA: different A
    if spec.same_rank:
        with pytest.raises(ForgeError):
            fuse(
                name,
                [
                    peft_adapter(1, rank=2, shared_a_seed=7 if spec.needs_ffa else None),
                    peft_adapter(2, rank=3, shared_a_seed=7 if spec.needs_ffa else None),
                ],
                **_options(spec),
            )
    if spec.needs_loss:
        with pytest.raises(ForgeError) as e:
            fuse(name, ads)
        assert e.value.code == "merge.needs_tuning_data"


# --------------------------------------------------------------------------- ROUTERS
@pytest.fixture(scope="module")
def mixture_inputs(tmp_path_factory, make_plugin):
    d = tmp_path_factory.mktemp("router-contract")
    dirs = [make_plugin(d / f"p{i}", 60 + i, rows=r, site=f"site-{i + 1}", scale=1.0) for i, r in enumerate([70, 40, 25])]
    rng = np.random.default_rng(5)
    X = rng.normal(size=(90, 30)).astype(np.float32)
    y = (X[:, 0] - 0.5 * X[:, 3] > 0).astype(np.int64)
    return {"dirs": dirs, "plugins": [load_plugin(p) for p in dirs], "records": [read_plugin(p) for p in dirs], "X": X, "y": y}


def _fit(router, inp):
    return router.fit(inp["plugins"], inp["X"], inp["y"], base=inp["plugins"][0].base, records=inp["records"], source="contract")


@pytest.mark.parametrize("name", ROUTERS.names())
@pytest.mark.parametrize("check", SKLEARN_API_CHECKS, ids=lambda c: c.__name__)
def test_every_router_keeps_the_scikit_learn_api(name, check):
    check(name, ROUTERS.get(name)())


@pytest.mark.parametrize("name", ROUTERS.names())
def test_every_router_is_unfitted_until_fit_then_routes_to_the_simplex(name, mixture_inputs):
    inp = mixture_inputs
    router = ROUTERS.get(name)()
    with pytest.raises(NotFittedError):
        check_is_fitted(router)
    with pytest.raises(ForgeError) as e:
        Mixture(inp["plugins"], router).route(inp["X"])
    assert e.value.code == "mixture.router_not_fitted"
    assert _fit(router, inp) is router
    check_is_fitted(router)
    w = Mixture(inp["plugins"], router).route(inp["X"])
    assert w.shape == (len(inp["X"]), 3) and (w >= 0).all() and np.allclose(w.sum(1), 1.0)
    p = Mixture(inp["plugins"], router).predict_proba(inp["X"])
    assert np.allclose(p.sum(1), 1.0)


@pytest.mark.parametrize("name", ROUTERS.names())
def test_every_router_is_fixed_by_its_seed_and_round_trips_its_params(name, mixture_inputs):
    inp = mixture_inputs
    a = _fit(ROUTERS.get(name)(), inp)
    b = _fit(clone(a), inp)
    assert clone(a).get_params() == a.get_params()
    np.testing.assert_array_equal(Mixture(inp["plugins"], a).route(inp["X"]), Mixture(inp["plugins"], b).route(inp["X"]))
    assert a.details_ == b.details_


@pytest.mark.parametrize("name", ROUTERS.names())
def test_every_router_survives_a_save_and_load_of_its_mixture(name, mixture_inputs, tmp_path):
    inp = mixture_inputs
    mix = Mixture(inp["plugins"], _fit(ROUTERS.get(name)(), inp))
    again = load_mixture(mix.save(tmp_path / name))
    assert type(again.router) is ROUTERS.get(name)
    check_is_fitted(again.router)
    np.testing.assert_allclose(again.predict_proba(inp["X"]), mix.predict_proba(inp["X"]), rtol=1e-6)
    if again.router.tensors():  # learned tensors live in router.safetensors: a changed file is refused
        f = tmp_path / name / "router.safetensors"
        raw = bytearray(f.read_bytes())
        raw[-1] ^= 1
        f.write_bytes(bytes(raw))
        with pytest.raises(ForgeError) as e:
            load_mixture(tmp_path / name)
        assert e.value.code == "mixture.tampered"


@pytest.mark.parametrize("name", ROUTERS.names())
def test_every_router_refuses_requests_it_cannot_serve(name, mixture_inputs):
    inp = mixture_inputs
    cls = ROUTERS.get(name)
    if cls.takes_weights():
        with pytest.raises(ForgeError):
            cls(weights=[1.0, 2.0]).fit(inp["plugins"])  # two weights for three plugins
    else:
        with pytest.raises(ForgeError) as e:
            check_router_request(name, [1.0, 1.0, 1.0], "synthetic.npz")
        assert e.value.code == "merge.bad_weights"
    if cls.needs_data:
        with pytest.raises(ForgeError) as e:
            check_router_request(name, None, None)
        assert e.value.code == "merge.needs_tuning_data"
        with pytest.raises(ForgeError) as e:
            cls().fit(inp["plugins"])
        assert e.value.code == "merge.needs_tuning_data"
