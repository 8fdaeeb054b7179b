"""The model a bench cell evaluates and attacks, built from the sites' plugin directories:

* ``none``: the first site's plugin alone (the single-site baseline);
* ``mixture``: MedForge's Mixture with static weights (training-set sizes),
  p(y|x) = sum_j w_j softmax(f(x; W0 + dW_j)) (:func:`forge_secure.merge.build_mixture`);
* any Fusion method of :data:`forge_secure.merge.FUSIONS`: the adapters are merged with
  :func:`forge_secure.merge.fuse` (weights = training-set sizes) and evaluated as
  W = W0 + s B A on the base (:func:`forge_secure.merge.evaluate.adapted_logits`). Methods
  that tune scalars (MedForge's sequential merge) tune them on the public split, which
  holds no site's records, so tuning costs no site privacy.

Each predictor exposes ``logits(X) -> float64 (n, C)``; for a Mixture these are the log
mixture probabilities, which is what the membership attacks score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from forge_secure.plugins.bases import Base

from .registries import MERGE_MIXTURE, MERGE_NONE


class Predictor(Protocol):
    def logits(self, X: np.ndarray) -> np.ndarray: ...


class FusedModel:
    """The base with a merged adapter's update applied (no PEFT model is built)."""

    def __init__(self, base: Base, adapter, details: dict):
        self.base, self.adapter, self.details = base, adapter, details

    def logits(self, X: np.ndarray) -> np.ndarray:
        from forge_secure.merge.evaluate import adapted_logits

        return adapted_logits(self.base.model, self.adapter, X)


def build_model(merge: str, plugin_dirs: Sequence[Path], base: Base, *, seed: int, tune_X=None, tune_y=None) -> Predictor:
    from forge_secure.plugins.plugin import load_plugin

    if merge == MERGE_NONE:
        return load_plugin(plugin_dirs[0], base)
    if merge == MERGE_MIXTURE:
        from forge_secure.merge import build_mixture

        return build_mixture(list(plugin_dirs), router="static", seed=seed, base=base)
    from forge_secure.merge import FUSIONS, fuse
    from forge_secure.merge.evaluate import make_loss
    from forge_secure.merge.io import default_weights, read_inputs

    files = read_inputs(plugin_dirs, base)
    options: dict = {"seed": seed}
    if FUSIONS.get(merge).needs_loss:
        options["loss_fn"] = make_loss(base.model, tune_X, tune_y)
    result = fuse(merge, [f.adapter for f in files], default_weights(files), **options)
    return FusedModel(base, result.adapter, result.details)
