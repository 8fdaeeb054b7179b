"""Fixtures for the crypto tests: a private FORGE_HOME, a hand-made plugin directory,
deterministic keys for a small consortium and a signed roster, all at a fixed clock.
The helpers live in plain modules next to this one (conftest is not importable under
--import-mode=importlib): the consortium and bundle surgery in ``_world.py``, the fuzzing
machinery and its hypothesis profiles in ``_mutators.py``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from forge_secure.crypto import ReplayStore, SequenceCounter, revoke_key
from tests.forge_secure.crypto._mutators import (
    CODE_RE,
    HOSTILE_TOKENS,
    HypothesisChoices,
    SeededChoices,
    Target,
    assert_total,
    fuzz_count,
    run_fuzz,
)
from tests.forge_secure.crypto._world import DAY, NOW, Drbg, World, build_world, join_bundle, make_plugin, split_bundle


@pytest.fixture(autouse=True)
def forge_home(tmp_path, monkeypatch):
    home = tmp_path / "forge-home"
    monkeypatch.setenv("FORGE_HOME", str(home))
    return home


@pytest.fixture
def world(tmp_path) -> World:
    return build_world(tmp_path)


__all__ = [
    "DAY",
    "NOW",
    "Drbg",
    "ReplayStore",
    "SequenceCounter",
    "World",
    "build_world",
    "join_bundle",
    "make_plugin",
    "revoke_key",
    "split_bundle",
]


@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for test modules (conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(
        NOW=NOW, DAY=DAY, Drbg=Drbg, split=split_bundle, join=join_bundle, make_plugin=make_plugin, build_world=build_world
    )


@pytest.fixture(scope="session")
def fuzzing() -> SimpleNamespace:
    """The fuzzing machinery for the fuzz test modules."""
    return SimpleNamespace(
        Target=Target,
        run=run_fuzz,
        count=fuzz_count,
        assert_total=assert_total,
        CODE_RE=CODE_RE,
        HypothesisChoices=HypothesisChoices,
        SeededChoices=SeededChoices,
        HOSTILE_TOKENS=HOSTILE_TOKENS,
    )
