"""DARE (Yu, Yu, Yu, Huang and Li, ICML 2024, "Language models are Super Mario").

Each task vector is **d**ropped at random (every entry kept with probability ``density``)
**a**nd **re**scaled by ``1 / density``, which keeps its expectation, then the vectors are
summed with the merge weights (PEFT's ``dare_linear``). The drop masks come from a seeded
``torch.Generator``, so a merge is reproducible and its seed is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..adapter import LoraAdapter, check_compatible
from .base import FusionMethod, FusionResult, register
from .taskvectors import task_vectors, to_adapter
from .ties import check_density


def dare_tensors(taus: Sequence[torch.Tensor], weights: Sequence[float], density: float, generator: torch.Generator) -> torch.Tensor:
    out = torch.zeros_like(taus[0])
    for w, t in zip(weights, taus, strict=True):
        keep = torch.rand(t.shape, generator=generator, dtype=torch.float64) < density
        out += w * torch.where(keep, t / density, torch.zeros_like(t))
    return out


def dare_merge(
    adapters: Sequence[LoraAdapter], weights: Sequence[float], *, density: float = 0.5, seed: int = 0, rank: int | None = None
) -> FusionResult:
    check_compatible(adapters)
    density = check_density(density)
    ffa = all(ad.ffa for ad in adapters)
    if ffa:
        check_compatible(adapters, same_rank=True, need_ffa=True)
    gen = torch.Generator().manual_seed(int(seed))
    taus = task_vectors(adapters, ffa)
    merged = {m: dare_tensors([t[m] for t in taus], weights, density, gen) for m in adapters[0].modules}
    adapter, details = to_adapter(merged, adapters[0], ffa, rank)
    details.update({"density": density, "seed": int(seed), "space": "B (FFA)" if ffa else "update B*A"})
    return FusionResult(adapter, "dare", list(map(float, weights)), details)


register(
    FusionMethod(
        "dare",
        lambda adapters, weights, density=0.5, seed=0, rank=None, **_: dare_merge(adapters, weights, density=density, seed=seed, rank=rank),
        description="DARE: random drop with rescaling by 1/density, then the weighted sum (seeded)",
    )
)
