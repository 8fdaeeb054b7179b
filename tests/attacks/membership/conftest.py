"""Fixtures for the membership suite: small plugins trained once per session on the bundled data.

FORGE_HOME points at a private temporary directory for the whole session (base-model and
reference caches), so nothing touches the user's.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def mia_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("mia-home")
    old = os.environ.get("FORGE_HOME")
    os.environ["FORGE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("FORGE_HOME", None)
    else:
        os.environ["FORGE_HOME"] = old


def _train(out, *, site="site-1", seed=0, canaries=0, canary_seed=None, **cfg):
    """Train like ``forge train --data bundled:<site>`` does (same commitment and canaries)."""
    from forge_secure.plugins.sources import default_canary_seed, prepare_training_data
    from forge_secure.privacy import TrainConfig, train_plugin

    if canaries and canary_seed is None:
        canary_seed = default_canary_seed(site, seed)  # what forge train derives when no seed is given
    td = prepare_training_data(f"bundled:{site}", canaries=canaries, canary_seed=canary_seed)
    train_plugin(TrainConfig(seed=seed, **cfg), td.data, site=site, commitment=td.commitment, out=out)
    return out


# An overfitting recipe: no DP, many epochs, a higher rank (issue 5: "train without DP with many
# epochs and a higher rank so it overfits"), with 40 canaries (forge train --canaries 40): the
# bundled breast-cancer records are easy (95 % held-out accuracy), so the real records alone
# leak only weakly; memorised canaries are the standard probe (Steinke et al. 2023).
OVERFIT = dict(no_dp=True, epochs=60, batch_size=16, lr=0.1, rank=16, alpha=32, canaries=40)
# A DP recipe at epsilon 1.
DP_EPS1 = dict(target_epsilon=1.0, delta=1e-3, epochs=10, batch_size=16, lr=0.1, rank=4, alpha=8)


# A cheap plugin for command-line, cache and bad-input tests (trains in about a second).
SMALL = dict(no_dp=True, epochs=5, batch_size=16, lr=0.05, rank=4, alpha=8)


@pytest.fixture(scope="session")
def small_plugin(mia_home, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plugins") / "small", **SMALL)


@pytest.fixture(scope="session")
def overfit_plugin(mia_home, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plugins") / "overfit", **OVERFIT)


@pytest.fixture(scope="session")
def dp_plugin(mia_home, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plugins") / "dp-eps1", **DP_EPS1)


@pytest.fixture(scope="session")
def train():
    return _train
