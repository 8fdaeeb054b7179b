"""TIES-Merging (Yadav, Tam, Choshen, Raffel and Bansal, NeurIPS 2023).

Three steps on the task vectors ``tau_i``: **trim** each to its ``density`` fraction of
largest magnitudes, **elect** a sign per entry (the sign of the weighted sum of the trimmed
vectors), and take the **disjoint mean**: average, per entry, only the trimmed values whose
sign agrees with the elected one (weighted by the merge weights). The paper keeps the top
20 % of a full fine-tune; rank-8 adapters are far smaller, so the default keeps half.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import ForgeValueError
from ..adapter import LoraAdapter, check_compatible
from .base import FusionMethod, FusionResult, register
from .taskvectors import task_vectors, to_adapter


def check_density(density: float) -> float:
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise ForgeValueError(
            f"density {density} is outside (0, 1]", fix="give the fraction of entries to keep, e.g. 0.5", code="merge.bad_density"
        )
    return density


def trim(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries, zero the rest."""
    k = max(1, int(round(density * t.numel())))
    if k >= t.numel():
        return t.clone()
    flat = t.abs().flatten()
    threshold = torch.topk(flat, k, largest=True, sorted=True).values[-1]
    return torch.where(t.abs() >= threshold, t, torch.zeros_like(t))


def ties_tensors(taus: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    trimmed = torch.stack([trim(t, density) for t in taus])
    w = torch.tensor(list(weights), dtype=trimmed.dtype).view(-1, *([1] * (trimmed.ndim - 1)))
    elected = torch.sign((w * trimmed).sum(0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    num = (w * trimmed * agree).sum(0)
    den = (w * agree).sum(0)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def ties_merge(adapters: Sequence[LoraAdapter], weights: Sequence[float], *, density: float = 0.5, rank: int | None = None) -> FusionResult:
    check_compatible(adapters)
    density = check_density(density)
    ffa = all(ad.ffa for ad in adapters)
    if ffa:
        check_compatible(adapters, same_rank=True, need_ffa=True)
    taus = task_vectors(adapters, ffa)
    merged = {m: ties_tensors([t[m] for t in taus], weights, density) for m in adapters[0].modules}
    adapter, details = to_adapter(merged, adapters[0], ffa, rank)
    details.update({"density": density, "space": "B (FFA)" if ffa else "update B*A"})
    return FusionResult(adapter, "ties", list(map(float, weights)), details)


register(
    FusionMethod(
        "ties",
        lambda adapters, weights, density=0.5, rank=None, **_: ties_merge(adapters, weights, density=density, rank=rank),
        description="TIES: trim, elect sign, disjoint mean (on B for FFA plugins, else on B*A then SVD)",
    )
)
