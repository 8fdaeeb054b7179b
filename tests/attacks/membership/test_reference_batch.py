"""Batched reference training (attacks.reference_batch) against one-at-a-time training.

The batched path must give the *same* reference models as ``train_plugin`` with the same
seeds and secrets: same LoRA initialisation, same Poisson batches, same Gaussian noise (drawn
from the same secret streams), same clipping and optimizer. Exact equality is impossible only because the
grouped products sum the same float32 terms in another order (last-bit differences, which
training carries along); the logits are required to agree to 1e-4 relative to their scale,
while a single different batch or noise draw moves them by orders of magnitude more
(checked below with a shifted seed).
"""

from __future__ import annotations

import numpy as np
import pytest

from forge_secure.errors import ForgeValueError

TOL = 1e-4


def _recipe(meta):
    return {k: meta[k] for k in ("base", "lora", "training", "dp")}


def _one_at_a_time(recipe, base, sets, seeds, eval_X, kind):
    from attacks.reference_batch import reference_config, reference_secret
    from forge_secure.plugins.data import Dataset
    from forge_secure.privacy import train_plugin

    out = []
    for (X, y), s in zip(sets, seeds, strict=True):
        plugin = train_plugin(
            reference_config(recipe, s), Dataset(X, y, base.n_classes, "ref", kind), site="ref", base=base, secret=reference_secret(s)
        )
        out.append(np.asarray(plugin.logits(eval_X), dtype=np.float64))
    return np.stack(out)


def _sets(data, R, rows, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(R):
        sel = rng.permutation(len(data))[:rows]
        out.append((data.X[sel], data.y[sel]))
    return out


def _agree(a, b):
    scale = max(1.0, float(np.abs(b).max()))
    return float(np.abs(a - b).max()) / scale


@pytest.mark.parametrize(
    "cfg",
    [
        dict(noise_multiplier=1.5, epochs=4, batch_size=16, lr=0.1, rank=4, alpha=8),  # DP-SGD, LoRA A and B trained
        dict(no_dp=True, epochs=6, batch_size=16, lr=0.05, rank=4, alpha=8),  # no DP: batch-gradient clipping
        dict(noise_multiplier=1.0, epochs=4, batch_size=16, lr=0.01, ffa=True, optimizer="adam"),  # FFA-LoRA (A frozen), Adam
        dict(noise_multiplier=1.0, epochs=2, batch_size=1, lr=0.05, rank=2, alpha=4),  # q = 1/60: many empty Poisson batches (noise only)
        dict(no_dp=True, epochs=2, batch_size=1, lr=0.05, rank=2, alpha=4),  # ... and skipped steps without DP
    ],
)
def test_batched_equals_one_at_a_time_tabular(mia_home, cfg):
    from attacks.reference_batch import train_batched
    from forge_secure.plugins.bases import load_base
    from forge_secure.plugins.sources import prepare_training_data
    from forge_secure.privacy import TrainConfig, train_plugin

    base = load_base("tabular-mlp")
    data = prepare_training_data("bundled:site-1").data
    target = train_plugin(TrainConfig(**cfg), data, site="t", base=base)
    recipe = _recipe(target.meta)
    sets, seeds = _sets(data, 3, 60), [3, 17, 17 + 2**40]
    batched = train_batched(recipe, base, sets, seeds, data.X)
    single = _one_at_a_time(recipe, base, sets, seeds, data.X, "tabular")
    assert batched.shape == single.shape == (3, len(data), 2)
    assert _agree(batched, single) < TOL
    # the tolerance is meaningful: another seed (other init, batches and noise) is far outside it
    other = train_batched(recipe, base, sets[:1], [4], data.X)
    assert _agree(other[0], single[0]) > 100 * TOL


def test_batched_equals_one_at_a_time_vit(mia_home):
    """The sequence path (per-sample factors over tokens) on the ViT base."""
    from attacks.reference_batch import train_batched
    from forge_secure.plugins.bases import load_base
    from forge_secure.plugins.data import load_data
    from forge_secure.privacy import TrainConfig, train_plugin

    base = load_base("vit-tiny")
    data = load_data("bundled-digits:public")
    small = _sets(data, 1, 48, seed=5)[0]
    from forge_secure.plugins.data import Dataset

    target = train_plugin(
        TrainConfig(base="vit-tiny", noise_multiplier=1.0, epochs=2, batch_size=16, lr=0.05, rank=2, alpha=4),
        Dataset(small[0], small[1], base.n_classes, "t", "image"),
        site="t",
        base=base,
    )
    recipe = _recipe(target.meta)
    sets, seeds = _sets(data, 2, 48, seed=1), [1, 2]
    ev = data.X[:40]
    batched = train_batched(recipe, base, sets, seeds, ev)
    single = _one_at_a_time(recipe, base, sets, seeds, ev, "image")
    assert _agree(batched, single) < TOL


def test_train_references_batched_matches_sequential(mia_home, dp_plugin, tmp_path):
    """The whole reference pipeline (splits, top-up, cache) gives the same ReferenceSet either way."""
    from attacks.references import train_references
    from forge_secure.plugins.data import load_data
    from forge_secure.plugins.record import read_plugin

    meta = read_plugin(dp_plugin, weights=False).meta
    cands, pop = load_data("bundled:site-1/pool"), load_data("bundled:public")
    a = train_references(meta, cands, pop, count=4, seed=3, cache=False, batch=True)
    b = train_references(meta, cands, pop, count=4, seed=3, cache=False, batch=False)
    assert np.array_equal(a.in_mask, b.in_mask)
    assert _agree(a.candidate_logits, b.candidate_logits) < TOL
    assert _agree(a.population_logits, b.population_logits) < TOL
    # split into two batched tasks (what two workers get): the same references
    from attacks.references import _batch_tasks, train_reference_batch

    pool_X, pool_y = np.concatenate([cands.X, pop.X]), np.concatenate([cands.y, pop.y])
    masks = np.concatenate([a.in_mask, a.population_in_mask], 1)
    from attacks.references import reference_seed

    tasks = [
        {
            "recipe": {k: meta[k] for k in ("base", "lora", "training", "dp")},
            "mask": masks[i],
            "seed": reference_seed(3, i),
            "eval_X": pool_X,
        }
        for i in range(4)
    ]
    parts = _batch_tasks(tasks, pool_X, pool_y, 2)
    assert [len(p["seeds"]) for p in parts] == [2, 2]
    halves = np.concatenate([train_reference_batch(p) for p in parts])
    assert _agree(halves[:, : len(cands)], a.candidate_logits) < TOL
    # a pass bounded by memory (a large base): one worker takes four passes of one reference each
    # in turn, and they are still the same references
    parts = _batch_tasks(tasks, pool_X, pool_y, 1, per_pass=1)
    assert [len(p["seeds"]) for p in parts] == [1, 1, 1, 1]
    singles = np.concatenate([train_reference_batch(p) for p in parts])
    assert _agree(singles[:, : len(cands)], a.candidate_logits) < TOL


def test_references_per_pass_follows_the_base_size():
    from attacks.references import PASS_BUDGET, references_per_pass
    from forge_secure.plugins.bases import load_base

    tiny = load_base("tabular-mlp")
    assert references_per_pass(tiny) >= 1000  # the toy bases are never split
    params = sum(p.numel() for p in tiny.model.parameters())
    assert references_per_pass(tiny) == PASS_BUDGET // params

    class _Big:  # MiniLM's size (22.7 M parameters) without loading it: 6 references per pass
        class model:
            @staticmethod
            def parameters():
                import torch

                return [torch.zeros(1).expand(22_700_000)]

    assert references_per_pass(_Big) == 6


def test_dropout_recipe_is_not_batched(mia_home, train, tmp_path):
    from attacks.references import train_references
    from forge_secure.plugins.data import load_data
    from forge_secure.plugins.record import read_plugin

    path = train(tmp_path / "drop", no_dp=True, epochs=1, batch_size=32, rank=2, alpha=4, dropout=0.1)
    meta = read_plugin(path, weights=False).meta
    cands = load_data("bundled:site-1/pool")
    with pytest.raises(ForgeValueError) as e:
        train_references(meta, cands, None, count=2, cache=False, batch=True)
    assert e.value.code == "attack.references" and "dropout" in e.value.message
    refs = train_references(meta, cands, None, count=2, cache=False)  # falls back to one at a time
    assert refs.candidate_logits.shape == (2, len(cands), 2)


@pytest.mark.slow
def test_persistent_workers_give_the_in_process_references(mia_home, dp_plugin):
    """Two persistent workers (each a batch of references) return what one process returns."""
    from attacks.references import train_references
    from forge_secure.parallel import close_pools
    from forge_secure.plugins.data import load_data
    from forge_secure.plugins.record import read_plugin

    meta = read_plugin(dp_plugin, weights=False).meta
    cands, pop = load_data("bundled:site-1/pool"), load_data("bundled:public")
    try:
        here = train_references(meta, cands, pop, count=4, seed=5, cache=False)
        pooled = train_references(meta, cands, pop, count=4, seed=5, cache=False, workers=2)
        again = train_references(meta, cands, pop, count=4, seed=5, cache=False, workers=2, batch=False)
    finally:
        close_pools()
    assert _agree(pooled.candidate_logits, here.candidate_logits) < TOL
    assert _agree(again.candidate_logits, here.candidate_logits) < TOL
