"""Reference splits and the cache key/entry logic (no training here; see test_end_to_end)."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.references import _cache_path, _load_cached, _store, cache_key, recipe_of, reference_masks, reference_seed
from forge_secure.errors import ForgeConfigError

RECIPE = {
    "base": {"name": "tabular-mlp", "digest": "a" * 64},
    "lora": {"rank": 8, "alpha": 16, "targets": ["fc1"], "ffa": False},
    "training": {"epochs": 30, "batch_size": 32, "lr": 0.05, "seed": 0},
    "dp": {"enabled": True, "noise_multiplier": 1.1, "epsilon": 3.2, "delta": 1e-3},
}


def test_pair_design_balances_membership_and_is_stable():
    cand, pop = reference_masks(30, 20, 8, seed=1)
    assert (cand.sum(0) == 4).all()  # every candidate IN for exactly half
    assert np.array_equal(cand[0], ~cand[1])
    # each reference is topped up with population records to the training-set size
    assert ((cand.sum(1) + pop.sum(1)) == 25).all() and (pop.sum(1) == 10).all()
    sized, sized_pop = reference_masks(30, 20, 4, seed=1, train_rows=18)
    assert (sized.sum(1) + sized_pop.sum(1) == 18).all()
    # the split of reference i does not depend on how many references are asked for
    c4, p4 = reference_masks(30, 20, 4, seed=1)
    assert np.array_equal(c4, cand[:4]) and np.array_equal(p4, pop[:4])
    assert not np.array_equal(reference_masks(30, 20, 2, seed=2)[0], cand[:2])
    # offline: candidates never IN
    c_off, p_off = reference_masks(30, 20, 4, seed=1, online=False, train_rows=12)
    assert not c_off.any() and (p_off.sum(1) == 12).all()
    assert reference_seed(0, 1) != reference_seed(0, 2) != reference_seed(1, 1)


def test_cache_key_changes_with_every_input():
    base = dict(recipe=RECIPE, base_digest="a" * 64, candidates_digest="c", population_digest="p")
    k0 = cache_key(**base, online=True, seed=0, index=0)
    assert k0 == cache_key(**base, online=True, seed=0, index=0)
    changed = [
        cache_key(**{**base, "recipe": {**RECIPE, "dp": {**RECIPE["dp"], "noise_multiplier": 1.2}}}, online=True, seed=0, index=0),
        cache_key(**{**base, "recipe": {**RECIPE, "lora": {**RECIPE["lora"], "rank": 4}}}, online=True, seed=0, index=0),
        cache_key(**{**base, "recipe": {**RECIPE, "training": {**RECIPE["training"], "epochs": 31}}}, online=True, seed=0, index=0),
        cache_key(**{**base, "base_digest": "b" * 64}, online=True, seed=0, index=0),
        cache_key(**{**base, "candidates_digest": "c2"}, online=True, seed=0, index=0),
        cache_key(**{**base, "population_digest": None}, online=True, seed=0, index=0),
        cache_key(**base, online=False, seed=0, index=0),
        cache_key(**base, online=True, seed=1, index=0),
        cache_key(**base, online=True, seed=0, index=1),
        cache_key(**base, online=True, seed=0, index=0, context={"path": "mix", "component": 0, "sha256": "x"}),
    ]
    assert len({k0, *changed}) == len(changed) + 1


def test_cache_entries_round_trip_and_reject_damage(tmp_path):
    key = "k" * 64
    mask = np.array([True, False, True])
    logits = np.arange(6, dtype=float).reshape(3, 2)
    path = _cache_path(key, tmp_path)
    _store(path, key, logits, mask)
    np.testing.assert_array_equal(_load_cached(path, key, 3, mask), logits)
    assert _load_cached(path, "other", 3, mask) is None  # key recorded inside must match
    assert _load_cached(path, key, 4, mask) is None  # wrong number of records
    assert _load_cached(path, key, 3, ~mask) is None  # another split
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated
    assert _load_cached(path, key, 3, mask) is None
    path.write_bytes(b"\x00" * 40)  # garbage
    assert _load_cached(path, key, 3, mask) is None
    assert _load_cached(tmp_path / "missing.safetensors", key, 3, mask) is None


def test_recipe_needs_all_sections():
    assert set(recipe_of({**RECIPE, "site": "x"})) == {"base", "lora", "training", "dp"}
    with pytest.raises(ForgeConfigError, match="training"):
        recipe_of({k: v for k, v in RECIPE.items() if k != "training"})
