"""Evaluate a base model with a LoRA update applied, without building a PEFT model.

Merges change ranks (concatenation) and tuning evaluates dozens of candidates, so the
candidates are evaluated functionally: ``W = W0 + s B A`` is substituted for each target
linear layer's weight through ``torch.func.functional_call``. The written plugins are
still loaded with PEFT (see :mod:`forge_secure.merge.io`); the tests check both agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ForgeDataError
from .adapter import LoraAdapter, module_path


def _weights(model: torch.nn.Module, adapter: LoraAdapter | None) -> dict[str, torch.Tensor]:
    if adapter is None:
        return {}
    modules = dict(model.named_modules())
    out = {}
    for m in adapter.modules:
        path = module_path(m)
        layer = modules.get(path)
        if not isinstance(layer, torch.nn.Linear):
            raise ForgeDataError(
                f"the base model has no linear layer {path!r} for {adapter.name}",
                fix="use the base model the plugin was trained on",
                code="merge.base_mismatch",
            )
        delta = adapter.delta(m)
        if tuple(delta.shape) != tuple(layer.weight.shape):
            raise ForgeDataError(
                f"{adapter.name}: update of {path} has shape {tuple(delta.shape)}, the base layer {tuple(layer.weight.shape)}",
                fix="use the base model the plugin was trained on",
                code="merge.base_mismatch",
            )
        out[f"{path}.weight"] = layer.weight.detach() + delta.to(layer.weight.dtype)
    return out


@torch.no_grad()
def adapted_logits(model: torch.nn.Module, adapter: LoraAdapter | None, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits (float64, ``(n, C)``) of ``model`` with ``adapter``'s update added."""
    model.eval()
    params = _weights(model, adapter)
    outs = []
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    for i in range(0, len(Xt), batch_size):
        xb = Xt[i : i + batch_size]
        out = torch.func.functional_call(model, params, (xb,), strict=False) if params else model(xb)
        out = getattr(out, "logits", out)
        outs.append(out.double())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy_of_logits(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(logits)[np.arange(len(y)), np.asarray(y)].mean())


def make_loss(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> Callable[[LoraAdapter], float]:
    """``loss(adapter)``: mean cross-entropy of the adapted model on ``(X, y)``."""
    y = np.asarray(y, dtype=np.int64)

    def loss(adapter: LoraAdapter) -> float:
        return cross_entropy_of_logits(adapted_logits(model, adapter, X), y)

    return loss
