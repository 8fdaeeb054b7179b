"""Merge weights tuned on (DP synthetic) data instead of training-set sizes.

As in MedForge/LoraHub, nevergrad NGOpt (budget 40, start 0.5) searches the weights that
minimise the cross-entropy of the merged model on tuning data plus ``0.05 * mean |w|``;
here the weights are kept in ``[0, 1.5]`` and normalised to sum 1, because every method
except ``sequential`` takes a convex combination. The tuning data must not be the data the
result is reported on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..adapter import LoraAdapter
from .base import FUSIONS, FusionMethod
from .sequential import minimise_scalars


def tune_weights(
    method: str | FusionMethod,
    adapters: Sequence[LoraAdapter],
    loss_fn: Callable[[LoraAdapter], float],
    *,
    budget: int = 40,
    init: float = 0.5,
    upper: float = 1.5,
    l1: float = 0.05,
    seed: int = 0,
    **options,
) -> tuple[list[float], dict]:
    """Weights (summing to 1) for ``method`` (a name, or the :class:`FusionMethod` a merge
    looked up already) tuned to minimise ``loss_fn`` of the merge."""
    spec = method if isinstance(method, FusionMethod) else FUSIONS.get(method)

    def objective(x: np.ndarray) -> float:
        w = np.clip(x, 0.0, None)
        if w.sum() <= 1e-9:
            return 1e12
        merged = spec.fuse(list(adapters), list(w / w.sum()), **options).adapter
        value = float(loss_fn(merged)) + l1 * float(np.mean(np.abs(x)))
        return value if np.isfinite(value) else 1e12

    x, value = minimise_scalars(objective, len(adapters), budget=budget, init=init, bound=upper, lower=0.0, seed=seed)
    w = np.clip(x, 0.0, None)
    if w.sum() <= 1e-9:
        w = np.ones(len(adapters))
    w = w / w.sum()
    return [float(v) for v in w], {"tuned": True, "budget": budget, "objective": value, "seed": seed, "optimizer": "nevergrad NGOpt"}
