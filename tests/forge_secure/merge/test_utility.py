"""Utility of merging on the bundled shards at epsilon 8 (real DP training with Opacus).

Claim tested: the merged model's accuracy on the union of the three sites' test sets is
at least the best single plugin's. Seeded and deterministic; no tolerance is needed at
these seeds (measured margin: about 5 points, see docs/benchmarks.md for intervals).
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow  # trains three DP plugins (about 20 s each on a loaded 2-core machine)
def test_merged_accuracy_at_epsilon_8_is_at_least_the_best_single_plugin(base, tmp_path):
    from forge_secure.merge import build_mixture, fusion_merge
    from forge_secure.plugins.data import bundled_splits
    from forge_secure.plugins.plugin import load_plugin
    from forge_secure.privacy.config import TrainConfig
    from forge_secure.privacy.train import train_plugin

    splits = bundled_splits()
    X = np.concatenate([s.test.X for s in splits.sites])
    y = np.concatenate([s.test.y for s in splits.sites])

    def acc(model) -> float:
        return float((model.predict_proba(X).argmax(1) == y).mean())

    paths, singles = [], []
    for i, shard in enumerate(splits.sites):
        cfg = TrainConfig(ffa=True, target_epsilon=8.0, epochs=30, batch_size=16, lr=0.1, seed=i)
        plugin = train_plugin(cfg, shard.train(), site=shard.site, base=base, out=tmp_path / shard.site)
        assert plugin.meta["dp"]["epsilon"] <= 8.0 + 1e-6
        paths.append(plugin.path)
        singles.append(acc(plugin))
    best = max(singles)
    fused = acc(load_plugin(fusion_merge(paths, tmp_path / "ffa", method="ffa")))
    exact = acc(load_plugin(fusion_merge(paths, tmp_path / "exact", method="exact")))
    mixture = acc(build_mixture(paths))
    assert fused >= best, (fused, singles)
    assert exact >= best, (exact, singles)
    assert mixture >= best, (mixture, singles)
    # the homomorphic path on the same DP-trained plugins gives the same model
    from forge_secure.merge import homomorphic_merge

    he = load_plugin(homomorphic_merge(paths, tmp_path / "ckks-work", tmp_path / "ckks"))
    np.testing.assert_allclose(he.logits(X), load_plugin(tmp_path / "ffa").logits(X), rtol=1e-5, atol=1e-5)
    meta = load_plugin(tmp_path / "ffa").meta
    assert [p["epsilon"] for p in meta["dp"]["per_parent"]] == [load_plugin(p).meta["dp"]["epsilon"] for p in paths]
