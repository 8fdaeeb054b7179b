"""Exact weighted merges of LoRA updates.

Averaging ``A`` and ``B`` separately is not averaging the updates:
``mean(B) mean(A) = (1/K^2) sum_ij B_i A_j`` carries cross terms. Two merges are exact:

- ``exact`` (concatenation, as PEFT's ``cat`` combination): for independent ``A_i``,
  ``A' = vstack(s_i w_i A_i)`` and ``B' = hstack(B_i)`` give
  ``B' A' = sum_i w_i s_i B_i A_i`` at rank ``sum_i r_i``; the scaling is folded into ``A'``
  and the config's ``lora_alpha`` is set so PEFT's own scaling is 1.
- ``ffa`` (weighted average of ``B``): with ``A`` frozen and shared (FFA-LoRA; Sun, Qin,
  Li and Ding, ICLR 2024), ``sum_i w_i s B_i A = s (sum_i w_i B_i) A``: exact, linear in
  ``B``, rank unchanged, and the basis of homomorphic Fusion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..adapter import LoraAdapter, check_compatible, check_finite
from .base import FusionMethod, FusionResult, register


def unit_alpha(rank: int, rslora: bool) -> float:
    """The ``lora_alpha`` that makes PEFT's scaling exactly 1 at this rank."""
    return math.sqrt(rank) if rslora else float(rank)


def concat_merge(adapters: Sequence[LoraAdapter], weights: Sequence[float]) -> FusionResult:
    """Exact merge by concatenation; ``weights`` are applied as given (normalise first)."""
    check_compatible(adapters)
    first = adapters[0]
    rank = sum(ad.rank for ad in adapters)
    rslora = first.rslora
    unit = unit_alpha(rank, rslora)
    target_scale = unit / (math.sqrt(rank) if rslora else rank)  # == 1.0
    state = {}
    for module, (ka, kb) in first.modules.items():
        a_parts, b_parts = [], []
        for w, ad in zip(weights, adapters, strict=True):
            a_parts.append(ad.A(module).double() * (w * ad.scaling / target_scale))
            b_parts.append(ad.B(module).double())
        dtype = first.A(module).dtype
        state[ka] = torch.cat(a_parts, dim=0).to(dtype).contiguous()
        state[kb] = torch.cat(b_parts, dim=1).to(first.B(module).dtype).contiguous()
    check_finite(state, "the merged adapter")
    merged = LoraAdapter(state=state, rank=rank, alpha=unit, rslora=rslora, ffa=False, name="merged")
    return FusionResult(merged, "exact", list(map(float, weights)), {"rank": rank, "scaling_folded_into_A": True})


def ffa_average(adapters: Sequence[LoraAdapter], weights: Sequence[float]) -> FusionResult:
    """Exact merge of FFA-LoRA plugins: the weighted sum of ``B`` (weights as given)."""
    check_compatible(adapters, same_rank=True, need_ffa=True)
    first = adapters[0]
    state = {}
    for module, (ka, kb) in first.modules.items():
        acc = torch.zeros_like(first.B(module), dtype=torch.float64)
        for w, ad in zip(weights, adapters, strict=True):
            acc += (w * ad.scaling / first.scaling) * ad.B(module).double()
        state[ka] = first.A(module).clone()
        state[kb] = acc.to(first.B(module).dtype)
    check_finite(state, "the merged adapter")
    merged = first.with_state(state, name="merged", ffa=True)
    return FusionResult(merged, "ffa", list(map(float, weights)), {"rank": first.rank})


register(
    FusionMethod(
        "exact",
        lambda adapters, weights, **_: concat_merge(adapters, weights),
        description="exact weighted sum of the updates B*A by concatenation (rank grows to the sum of ranks)",
    )
)
register(
    FusionMethod(
        "ffa",
        lambda adapters, weights, **_: ffa_average(adapters, weights),
        needs_ffa=True,
        same_rank=True,
        description="exact weighted average of B for FFA-LoRA plugins (shared frozen A)",
    )
)
