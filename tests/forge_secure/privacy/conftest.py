"""Fixtures of the privacy tests: the bundled tabular shard and base (homes and caches: tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tab_base():
    from forge_secure.plugins import load_base

    return load_base("tabular-mlp")


@pytest.fixture(scope="session")
def tab_shard():
    from forge_secure.plugins import bundled_splits

    return bundled_splits().sites[0]


@pytest.fixture(scope="session")
def tab_train(tab_shard):
    return tab_shard.train()


@pytest.fixture(scope="session")
def randomise_B():
    """Set every LoRA B weight to seeded N(0, 0.3^2) values: B = 0 at initialisation would
    make grad_A vanish, so tests of the general case start here."""
    from tests.conftest import randomise_lora_B

    return lambda model, seed: randomise_lora_B(model, seed, 0.3)
