"""A plugin as a function of its LoRA tensors, and the updates an attacker may observe.

What the attacker sees (the threat model of the gradient-inversion attack):

* the base model and the plugin *before* the update (both public to the consortium);
* one plugin update: the difference between the plugin and the same plugin after one local
  SGD step on a batch with a known learning rate, ``delta = -lr * grad``, so the gradient of
  the trainable LoRA tensors is ``-delta / lr``; or
* one recorded noisy DP-SGD gradient: per-sample gradients clipped to norm ``C``, summed,
  Gaussian noise of standard deviation ``sigma * C`` added, divided by the expected batch size
  (Abadi et al. 2016, as Opacus does it), simulated with the plugin's recorded noise
  multiplier and clipping norm.

For a LoRA layer y = (W + s B A) x with output gradient g: grad_B = s g (A x)^T and
grad_A = s B^T g x^T. At LoRA initialisation (B = 0) grad_A is exactly zero and grad_B only
reveals the r-dimensional projection A x; with FFA-LoRA (A frozen) that stays so for the
plugin's whole life. Only once B != 0 and A is trained do the rows of grad_A lie in the span
of the inputs, which is what lets gradient inversion rebuild records. The attacks therefore
target one local step of an already-trained plugin, and which tensors are trained (A and B,
or only B for FFA) is read from the plugin's ``forge.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from forge_secure.errors import ForgeDataError, ForgeValueError

Grads = dict[str, torch.Tensor]


def trainable_lora_names(model: nn.Module, ffa: bool = False) -> list[str]:
    """Names of the LoRA tensors that training changes: ``lora_A`` and ``lora_B`` tensors, or only
    ``lora_B`` for FFA-LoRA (Sun et al. 2024)."""
    names = []
    for n, _ in model.named_parameters():
        if "lora_B" in n or (not ffa and "lora_A" in n):
            names.append(n)
    if not names:
        raise ForgeValueError(
            "the target model has no LoRA tensors (no parameter named lora_A / lora_B)",
            fix="attack a plugin: a PEFT LoRA adapter on a forge base model",
            code="recon.not_lora",
        )
    return names


class LoraFunctional:
    """The plugin's model as a pure function of its trainable LoRA tensors (``torch.func``).

    Holds a private frozen copy of the model in eval mode; the plugin itself is never changed.
    """

    def __init__(self, model: nn.Module, trainable: Sequence[str] | None = None, *, ffa: bool = False, dtype: torch.dtype = torch.float64):
        # float64 by default: gradients of confidently classified records can be ~1e-10, where
        # float32 cosines lose their direction
        self.dtype = dtype
        self.model = copy.deepcopy(model).eval().to(dtype)
        for p in self.model.parameters():
            p.requires_grad_(False)
        names = list(trainable) if trainable is not None else trainable_lora_names(self.model, ffa)
        named = dict(self.model.named_parameters())
        missing = [n for n in names if n not in named]
        if missing:
            raise ForgeValueError(f"the model has no parameter {missing[0]!r}", code="recon.not_lora")
        self.names = names
        self.params: Grads = {n: named[n].detach().clone() for n in names}
        self.frozen: dict[str, torch.Tensor] = {n: p.detach() for n, p in named.items() if n not in self.params}
        self.frozen.update({n: b for n, b in self.model.named_buffers()})

    # ----------------------------------------------------------------- the model as a function
    def logits(self, x: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        p = self.params if params is None else params
        return functional_call(self.model, {**self.frozen, **p}, (x.to(self.dtype),))

    def loss(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the batch ``(x, y)``."""
        return nn.functional.cross_entropy(self.logits(x, params), y)

    def grad_fn(self):
        """``f(params, x, y) -> {name: grad}``, composable with ``vmap`` and outer autograd."""
        return grad(self.loss)

    def batch_grad(self, x: torch.Tensor, y: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> Grads:
        """Gradient of the mean loss of the batch with respect to the trainable LoRA tensors."""
        p = self.params if params is None else params
        return {n: g.detach() for n, g in self.grad_fn()(dict(p), x, y).items()}

    def per_sample_grads(self, x: torch.Tensor, y: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> Grads:
        """Per-example gradients ``{name: (n, *shape)}`` via ``vmap`` over the batch."""
        p = dict(self.params if params is None else params)
        g = self.grad_fn()

        def one(xi, yi):
            return g(p, xi[None], yi[None])

        return {n: v.detach() for n, v in vmap(one)(x, y).items()}

    def flatten(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate in the order of ``self.names`` (per-example tensors keep their batch axis)."""
        first = grads[self.names[0]]
        batched = first.dim() == self.params[self.names[0]].dim() + 1
        if batched:
            return torch.cat([grads[n].reshape(first.shape[0], -1) for n in self.names], dim=1)
        return torch.cat([grads[n].reshape(-1) for n in self.names])


DISTANCES = ("cosine", "layer-cosine")


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine that stays defined for gradients as small as 1e-38 (a confidently classified
    record): norms with a 1e-300 floor instead of torch's 1e-8 eps."""
    return (a * b).sum() / (torch.sqrt((a * a).sum() + 1e-300) * torch.sqrt((b * b).sum() + 1e-300))


def normalise(target: Mapping[str, torch.Tensor], names: Sequence[str], kind: str) -> Grads:
    """Scale the observed gradient (cosine losses ignore its scale) so that tiny gradients keep
    their direction in floating point: per tensor for ``layer-cosine``, as a whole for ``cosine``."""
    if kind == "cosine":
        norm = torch.sqrt(torch.stack([(target[n] ** 2).sum() for n in names]).sum())
        return {n: target[n] / norm if norm > 0 else target[n] for n in names}
    out = {}
    for n in names:
        norm = target[n].norm()
        out[n] = target[n] / norm if norm > 0 else target[n]
    return out


def gradient_distance(g: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], names: Sequence[str], kind: str) -> torch.Tensor:
    """Gradient-matching loss. ``cosine``: 1 - cos between the concatenated gradients (Geiping et
    al. 2020). ``layer-cosine``: the mean over tensors of 1 - cos, so that a small tensor such as
    the first layer's grad_A, whose rows are parallel to the input, weighs as much as a large one."""
    if kind == "cosine":
        a = torch.cat([g[n].reshape(-1) for n in names])
        b = torch.cat([target[n].reshape(-1) for n in names])
        return 1.0 - _cos(a, b)
    return torch.stack([1.0 - _cos(g[n].reshape(-1), target[n].reshape(-1)) for n in names]).mean()


def clip_per_sample(flat: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Scale each row to norm at most ``max_grad_norm`` (factor min(1, C / (norm + 1e-6)),
    as Opacus's flat clipping)."""
    norms = flat.norm(dim=1, keepdim=True)
    return flat * torch.clamp(max_grad_norm / (norms + 1e-6), max=1.0)


@dataclass(frozen=True)
class DPSetting:
    """The DP-SGD parameters recorded in a plugin (``forge.json["dp"]``)."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and self.max_grad_norm > 0 and 0 < self.sample_rate <= 1 and self.steps >= 1):
            raise ForgeValueError(
                f"invalid DP setting: noise_multiplier={self.noise_multiplier}, max_grad_norm={self.max_grad_norm}, "
                f"sample_rate={self.sample_rate}, steps={self.steps}",
                fix="need noise_multiplier >= 0, max_grad_norm > 0, 0 < sample_rate <= 1, steps >= 1",
                code="recon.dp_params",
            )

    @classmethod
    def from_meta(cls, dp: Mapping) -> DPSetting | None:
        """``None`` for a plugin trained without DP."""
        if not dp or not dp.get("enabled"):
            return None
        try:
            return cls(float(dp["noise_multiplier"]), float(dp["max_grad_norm"]), float(dp["sample_rate"]), int(dp["steps"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ForgeValueError(
                f"the plugin's DP record is incomplete or malformed ({e.__class__.__name__}: {e})",
                fix="forge.json 'dp' needs noise_multiplier, max_grad_norm, sample_rate and steps",
                code="recon.dp_record",
            ) from None


def one_step_update(fn: LoraFunctional, x: torch.Tensor, y: torch.Tensor, lr: float) -> Grads:
    """The plugin update of one local SGD step on ``(x, y)``: new minus old LoRA tensors."""
    return {n: -lr * g for n, g in fn.batch_grad(x, y).items()}


def gradient_from_update(update: Mapping[str, torch.Tensor], lr: float) -> Grads:
    """Invert :func:`one_step_update`: ``grad = -update / lr``."""
    if not lr > 0:
        raise ForgeValueError(f"learning rate must be > 0, got {lr!r}", code="recon.lr")
    return {n: -u / lr for n, u in update.items()}


def noisy_dp_gradient(
    fn: LoraFunctional,
    x: torch.Tensor,
    y: torch.Tensor,
    dp: DPSetting,
    *,
    expected_batch_size: float | None = None,
    generator: torch.Generator,
    params: Mapping[str, torch.Tensor] | None = None,
) -> Grads:
    """One noisy DP-SGD gradient (Abadi et al. 2016): (sum_i clip_C(g_i) + N(0, (sigma C)^2 I))
    divided by the expected batch size (the batch size when not given)."""
    ps = fn.per_sample_grads(x, y, params)
    flat = clip_per_sample(fn.flatten(ps), dp.max_grad_norm)
    total = flat.sum(dim=0)
    noise = torch.normal(0.0, dp.noise_multiplier * dp.max_grad_norm, size=total.shape, generator=generator)
    denom = float(expected_batch_size) if expected_batch_size else float(len(x))
    return unflatten(fn, (total + noise) / denom)


def unflatten(fn: LoraFunctional, flat: torch.Tensor) -> Grads:
    out, i = {}, 0
    for n in fn.names:
        k = fn.params[n].numel()
        out[n] = flat[i : i + k].reshape(fn.params[n].shape)
        i += k
    return out


def to_tensor(x: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype)


def prepare_observed(
    fn: LoraFunctional, target: Grads, batch_size: int, labels, n_classes, label_mode: str, distance: str
) -> tuple[list, Grads]:
    """The checks and set-up every gradient-inversion attack does first: the observed update must
    hold exactly the plugin's trainable LoRA tensors and be finite and non-zero; returns the label
    candidates and the observed update normalised for ``distance``."""
    from .labels import label_candidates

    if set(target) != set(fn.names):
        raise ForgeDataError(
            "the observed update does not hold the plugin's trainable LoRA tensors",
            fix="pass the update of this plugin (same adapter, same FFA setting)",
            code="recon.update_mismatch",
        )
    label_sets = label_candidates(fn, target, batch_size, labels, n_classes, label_mode)
    target = normalise({n: t.to(fn.dtype) for n, t in target.items()}, fn.names, distance)
    flat = fn.flatten(target)
    if not torch.isfinite(flat).all() or flat.norm() == 0:
        raise ForgeDataError("the observed update is zero or not finite", fix="check the update", code="recon.update_zero")
    return label_sets, target
