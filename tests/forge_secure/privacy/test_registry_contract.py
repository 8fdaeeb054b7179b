"""The contracts of the privacy registries, run over every entry the way scikit-learn's
``parametrize_with_checks`` runs every estimator (a new entry is checked by registering it):

- :data:`ACCOUNTANTS`: every accountant reports what Opacus's accountant of its name reports,
  falls as the noise grows and grows with the steps, calibrates a noise multiplier that meets
  its target, and refuses a malformed history with a ``ForgeError``;
- :data:`OPTIMIZERS`: every optimizer trains a real DP plugin (Opacus, PEFT) that records it,
  and an unknown name is refused with the registered names.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from opacus.accountants import create_accountant

from forge_secure.errors import ForgeError
from forge_secure.privacy import TrainConfig, train_plugin
from forge_secure.privacy.accountants import ACCOUNTANTS, calibrate_noise_multiplier, compute_epsilon
from forge_secure.privacy.config import OPTIMIZERS

HISTORY = [(1.1, 0.25, 40)]
DELTA = 1e-3


@pytest.mark.parametrize("name", ACCOUNTANTS.names())
def test_every_accountant_reports_what_opacus_reports(name):
    spec = ACCOUNTANTS.get(name)
    assert spec.name == name and spec.description
    acc = create_accountant(spec.opacus_name)
    acc.history = list(HISTORY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = acc.get_epsilon(delta=DELTA)
    assert compute_epsilon(HISTORY, DELTA, name) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("name", ACCOUNTANTS.names())
def test_every_accountant_is_monotone(name):
    by_noise = [compute_epsilon([(s, 0.25, 40)], DELTA, name) for s in (0.9, 1.5, 3.0)]
    by_steps = [compute_epsilon([(1.1, 0.25, t)], DELTA, name) for t in (10, 40, 160)]
    assert by_noise[0] > by_noise[1] > by_noise[2] > 0, by_noise
    assert by_steps[0] < by_steps[1] < by_steps[2], by_steps


#: known defects the contract found, each strict: fixing one makes its test fail until removed here
KNOWN_CALIBRATION_DEFECTS: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(n in KNOWN_CALIBRATION_DEFECTS, strict=True, reason=KNOWN_CALIBRATION_DEFECTS.get(n, "")))
        for n in ACCOUNTANTS.names()
    ],
)
def test_every_accountant_calibrates_a_noise_multiplier_that_meets_its_target(name):
    sigma = calibrate_noise_multiplier(3.0, DELTA, 0.25, 40, name)
    eps = compute_epsilon([(sigma, 0.25, 40)], DELTA, name)
    assert eps <= 3.0 and eps >= 3.0 * (1 - 0.02)  # the smallest noise, to the tolerance
    assert calibrate_noise_multiplier(3.0, DELTA, 0.25, 40, name) == sigma  # deterministic


@pytest.mark.parametrize("name", ACCOUNTANTS.names())
@pytest.mark.parametrize(
    "bad",
    [[(0.0, 0.25, 10)], [(1.0, 1.5, 10)], [(1.0, 0.25, 0)], [(1.0, 0.25, 2.5)], [("x", 0.2, 3)], [(1.0, 0.2)]],
    ids=["sigma0", "q>1", "steps0", "steps-fraction", "text", "two-fields"],
)
def test_every_accountant_refuses_a_malformed_history(name, bad):
    with pytest.raises(ForgeError) as e:
        compute_epsilon(bad, DELTA, name)
    assert e.value.code == "dp.history"


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_trains_a_dp_plugin_that_records_it(name, tab_base, tab_train):
    cls_name, extra = OPTIMIZERS.get(name)
    assert issubclass(getattr(torch.optim, cls_name), torch.optim.Optimizer)
    config = TrainConfig(optimizer=name, noise_multiplier=1.0, epochs=2, batch_size=16, lr=0.05, seed=1)
    plugin = train_plugin(config, tab_train, site="site-1", base=tab_base)
    assert plugin.meta["training"]["optimizer"] == name and plugin.meta["dp"]["enabled"]
    state = plugin.adapter_state()
    assert all(torch.isfinite(t).all() for t in state.values())
    assert any(t.abs().sum() > 0 for k, t in state.items() if "lora_B" in k)  # B moved from its zero start
    assert TrainConfig.from_meta(plugin.meta).optimizer == name


def test_an_unknown_optimizer_is_refused_with_the_registered_names():
    with pytest.raises(ForgeError) as e:
        TrainConfig(optimizer="rmsprop-of-dreams", noise_multiplier=1.0, epochs=1, batch_size=8, lr=0.1)
    assert all(n in str(e.value) for n in OPTIMIZERS.names())
