"""The contract every registered membership attack keeps, run over :data:`MEMBERSHIP_ATTACKS`
the way scikit-learn's ``parametrize_with_checks`` runs every estimator: a new attack is
checked by registering it.

Real signals: the target and the reference models are scikit-learn MLPs (wide, no weight decay,
so they memorise) on the bundled breast-cancer records, of which a fixed 30 % carry a flipped
label (mislabelled records, the usual membership probe: only a model trained on one can fit
it). The target is trained on the candidates drawn by fair coins, each reference on half of
the candidates (pairs of references split them the opposite way, so every record has as many
IN as OUT references) and on half of the population records.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.utils import estimator_checks as sk
from sklearn.utils.validation import check_is_fitted

from attacks.membership import MEMBERSHIP_ATTACKS, TooFewReferences, make_attack
from forge_secure.errors import ForgeError
from forge_secure.plugins import bundled_splits

NAMES = MEMBERSHIP_ATTACKS.names()
R = 8  # reference models

#: scikit-learn's own checks of the estimator API that need no fit on (X, y)
SKLEARN_API_CHECKS = (
    sk.check_no_attributes_set_in_init,
    sk.check_estimator_cloneable,
    sk.check_estimator_repr,
    sk.check_parameters_default_constructible,
    sk.check_get_params_invariance,
    sk.check_set_params,
    sk.check_do_not_raise_errors_in_init_or_set_params,
)


def _logits(model: MLPClassifier, X: np.ndarray) -> np.ndarray:
    p = np.clip(model.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
    d = np.log(p) - np.log1p(-p)
    return np.stack([np.zeros_like(d), d], axis=1)  # softmax logits of the two classes


def _fit_model(X: np.ndarray, y: np.ndarray) -> MLPClassifier:
    return MLPClassifier(hidden_layer_sizes=(128,), alpha=0.0, max_iter=3000, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def signals():
    splits = bundled_splits()
    pool = splits.sites[0].pool
    population = splits.public.subset(np.arange(60))
    rng = np.random.default_rng(0)
    flip = np.random.default_rng(9).random(len(pool)) < 0.3
    X, y, pX, py = pool.X.astype(np.float64), np.where(flip, 1 - pool.y, pool.y), population.X.astype(np.float64), population.y
    members = rng.random(len(y)) < 0.5
    target = _fit_model(X[members], y[members])
    in_mask = np.zeros((R, len(y)), dtype=bool)
    pop_in = np.zeros((R, len(py)), dtype=bool)
    refs, pop_refs = [], []
    for _ in range(0, R, 2):
        half, pop_half = rng.random(len(y)) < 0.5, rng.random(len(py)) < 0.5
        for m, pm in ((half, pop_half), (~half, ~pop_half)):
            j = len(refs)
            in_mask[j], pop_in[j] = m, pm
            model = _fit_model(np.concatenate([X[m], pX[pm]]), np.concatenate([y[m], py[pm]]))
            refs.append(_logits(model, X))
            pop_refs.append(_logits(model, pX))
    fit_args = (np.stack(refs), y, in_mask)
    fit_kwargs = {"population_reference_logits": np.stack(pop_refs), "population_labels": py, "population_in_mask": pop_in}
    return {
        "fit_args": fit_args,
        "fit_kwargs": fit_kwargs,
        "target": _logits(target, X),
        "population_target": _logits(target, pX),
        "labels": y,
        "members": members,
    }


def _fit_score(attack, s):
    attack.fit(*s["fit_args"], **s["fit_kwargs"])
    return attack.score(s["target"], s["labels"], population_target_logits=s["population_target"])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("check", SKLEARN_API_CHECKS, ids=lambda c: c.__name__)
def test_scikit_learn_estimator_api(name, check):
    check(name, make_attack(name))


@pytest.mark.parametrize("name", NAMES)
def test_unfitted_until_fit(name, signals):
    attack = make_attack(name)
    with pytest.raises(NotFittedError):
        check_is_fitted(attack)
    with pytest.raises(ForgeError) as e:
        attack.score(signals["target"], signals["labels"], population_target_logits=signals["population_target"])
    assert e.value.code == "attack.not_fitted"


@pytest.mark.parametrize("name", NAMES)
def test_fits_on_real_signals_and_scores_members_higher(name, signals):
    attack = make_attack(name)
    scores = _fit_score(attack, signals)
    check_is_fitted(attack)
    assert scores.shape == signals["labels"].shape and scores.dtype == np.float64 and np.isfinite(scores).all()
    assert roc_auc_score(signals["members"], scores) > 0.6  # the target memorises its members; every attack sees it


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_refit_forgets(name, signals):
    attack = make_attack(name)
    first = _fit_score(attack, signals)
    np.testing.assert_array_equal(_fit_score(attack, signals), first)  # refit on the same signals
    np.testing.assert_array_equal(_fit_score(clone(attack), signals), first)
    refs, labels, mask = signals["fit_args"]
    attack.fit(refs[:, :50], labels[:50], mask[:, :50], **signals["fit_kwargs"])  # fewer records: nothing of the old fit is kept
    assert attack.n_records_ == 50
    assert attack.score(signals["target"][:50], labels[:50], population_target_logits=signals["population_target"]).shape == (50,)


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name, signals):
    attack = make_attack(name)
    params = attack.get_params()
    assert make_attack(name, **params).get_params() == params
    assert attack.set_params(**params) is attack and attack.get_params() == params
    settings = attack.settings()
    assert settings["attack"] == name and {k: settings[k] for k in params} == params
    _fit_score(attack, signals)
    fresh = clone(attack)
    assert fresh.get_params() == params
    with pytest.raises(NotFittedError):
        check_is_fitted(fresh)


@pytest.mark.parametrize("name", NAMES)
def test_refuses_bad_input_with_a_forge_error(name, signals):
    refs, labels, mask = signals["fit_args"]
    kw = signals["fit_kwargs"]
    cases = [
        (lambda a: a.fit(refs[:, :-1], labels, mask[:, :-1], **kw), "attack.reference_shape"),
        (lambda a: a.fit(refs, labels, mask.astype(int), **kw), "attack.in_mask_shape"),
        (lambda a: a.fit(refs, None, mask, **kw), "attack.labels_missing"),
    ]
    for bad, code in cases:
        attack = make_attack(name)
        with pytest.raises(ForgeError) as e:
            bad(attack)
        assert e.value.code == code, (bad, e.value)
        with pytest.raises(NotFittedError):
            check_is_fitted(attack)
    attack = make_attack(name)
    _fit_score(attack, signals)
    with pytest.raises(ForgeError) as e:
        attack.score(signals["target"][:-1], labels[:-1], population_target_logits=signals["population_target"])
    assert e.value.code == "attack.target_shape"
    with pytest.raises(ForgeError) as e:
        make_attack(name, no_such_setting=1)
    assert e.value.code == "attack.settings"


@pytest.mark.parametrize("name", [n for n in NAMES if make_attack(n).get_params()])
def test_bad_setting_values_fail_in_make_attack_and_in_fit(name, signals):
    attack = make_attack(name)
    key = min(attack.get_params())
    with pytest.raises(ForgeError) as e:
        make_attack(name, **{key: "not-a-setting-value"})
    assert e.value.code == "attack.settings"
    attack.set_params(**{key: "not-a-setting-value"})  # stored unchanged, as scikit-learn does
    assert attack.get_params()[key] == "not-a-setting-value"
    with pytest.raises(ForgeError):
        _fit_score(attack, signals)


@pytest.mark.parametrize("name", [n for n in NAMES if make_attack(n).min_references() > 0])
def test_too_few_references_leave_it_unfitted(name, signals):
    refs, labels, mask = signals["fit_args"]
    attack = make_attack(name)
    _fit_score(attack, signals)
    with pytest.raises(TooFewReferences):
        attack.fit(
            refs[:0],
            labels,
            mask[:0],
            **{
                **signals["fit_kwargs"],
                "population_reference_logits": signals["fit_kwargs"]["population_reference_logits"][:0],
                "population_in_mask": signals["fit_kwargs"]["population_in_mask"][:0],
            },
        )
    with pytest.raises(NotFittedError):
        check_is_fitted(attack)  # the failed fit did not leave the earlier fit's state behind
