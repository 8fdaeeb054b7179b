"""Task vectors of LoRA adapters, and back, for the sparsifying merges (TIES, DARE).

For FFA-LoRA plugins (shared frozen ``A``; ``B`` starts at zero) the task vector is ``B``
itself (rescaled to a common scaling), and the merged ``B`` reuses the shared ``A``: exact,
rank unchanged. For independent adapters the task vector is the update ``s B A`` of each
target module; the merged update is factored back into LoRA form by a truncated SVD
(Eckart-Young: the best approximation at the kept rank). The default rank is the largest
``min(out, in)`` over the target modules, which is exact (factors are zero-padded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..adapter import LoraAdapter, check_finite
from .exact import unit_alpha


def task_vectors(adapters: Sequence[LoraAdapter], ffa: bool) -> list[dict[str, torch.Tensor]]:
    """Per adapter, ``{module: float64 tensor}``: ``B`` (FFA) or ``s B A`` (otherwise)."""
    first = adapters[0]
    if ffa:
        return [{m: ad.B(m).double() * (ad.scaling / first.scaling) for m in first.modules} for ad in adapters]
    return [ad.deltas() for ad in adapters]


def to_adapter(merged: dict[str, torch.Tensor], template: LoraAdapter, ffa: bool, rank: int | None) -> tuple[LoraAdapter, dict]:
    """Turn merged task vectors back into a :class:`LoraAdapter` (and details for the record)."""
    state = {}
    if ffa:
        for m, (ka, kb) in template.modules.items():
            state[ka] = template.A(m).clone()
            state[kb] = merged[m].to(template.B(m).dtype)
        check_finite(state, "the merged adapter")
        return template.with_state(state, name="merged", ffa=True), {"rank": template.rank}
    full = max(min(d.shape) for d in merged.values())
    R = full if rank is None else int(rank)
    if R < 1:
        raise ValueError("rank must be positive")
    alpha = unit_alpha(R, template.rslora)
    err_num = err_den = 0.0
    for m, (ka, kb) in template.modules.items():
        d = merged[m]
        U, S, Vh = torch.linalg.svd(d, full_matrices=False)
        k = min(R, S.numel())
        B = torch.zeros(d.shape[0], R, dtype=torch.float64)
        A = torch.zeros(R, d.shape[1], dtype=torch.float64)
        root = S[:k].sqrt()
        B[:, :k] = U[:, :k] * root
        A[:k] = root[:, None] * Vh[:k]
        err_num += float((S[k:] ** 2).sum())
        err_den += float((S**2).sum())
        state[ka] = A.to(template.A(m).dtype).contiguous()
        state[kb] = B.to(template.B(m).dtype).contiguous()
    check_finite(state, "the merged adapter")
    rel = (err_num / err_den) ** 0.5 if err_den > 0 else 0.0
    return LoraAdapter(state=state, rank=R, alpha=alpha, rslora=template.rslora, ffa=False, name="merged"), {
        "rank": R,
        "svd_relative_truncation_error": rel,
    }
