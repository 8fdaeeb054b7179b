"""Fusion: merge LoRA plugins into one, as plain functions over adapter tensors.

Methods register by name in :data:`FUSIONS` (``exact``, ``ffa``, ``sequential``, ``ties``,
``dare``); :func:`fuse` runs one by name with normalised weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..adapter import LoraAdapter, normalise_weights
from . import dare, exact, sequential, ties  # noqa: F401  (register the methods)
from .base import FUSIONS, FusionMethod, FusionResult
from .dare import dare_merge
from .exact import concat_merge, ffa_average
from .sequential import minimise_scalars, sequential_merge
from .ties import ties_merge
from .tuning import tune_weights


def fuse(method: str | FusionMethod, adapters: Sequence[LoraAdapter], weights: Sequence[float] | None = None, **options) -> FusionResult:
    """Merge ``adapters`` with the registered ``method`` (a name, or a :class:`FusionMethod`
    looked up already); ``weights`` (default equal) are normalised to sum 1. Options:
    ``density``/``seed``/``rank`` (TIES, DARE), ``loss_fn``/``budget``/``seed`` (sequential).
    A merge recipe that has its method and normalised weights calls ``spec.fuse`` itself."""
    spec = method if isinstance(method, FusionMethod) else FUSIONS.get(method)
    w = normalise_weights(weights, len(adapters))
    return spec.fuse(list(adapters), w, **options)


__all__ = [
    "FUSIONS",
    "FusionMethod",
    "FusionResult",
    "fuse",
    "concat_merge",
    "ffa_average",
    "ties_merge",
    "dare_merge",
    "sequential_merge",
    "minimise_scalars",
    "tune_weights",
]
