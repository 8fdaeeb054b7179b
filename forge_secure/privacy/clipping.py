"""Per-sample clipping of LoRA gradients in closed form, in one backward pass.

For a LoRA linear layer ``y = W x + s B A x`` (PEFT computes ``lora_B(lora_A(x)) * s``)
with ``h = A x`` and per-sample gradient ``g_i`` of the loss with respect to the LoRA
branch output ``u = s B h`` (autograd gives ``g = dL/du_unscaled`` already scaled by s),
the per-sample gradients are

    grad_B,i = sum_t g_{i,t} h_{i,t}^T          grad_A,i = sum_t (B^T g_{i,t}) x_{i,t}^T

(t runs over sequence positions; one term for tabular inputs). For one token the norms
factorise, ``||grad_B,i||_F = ||g_i|| ||h_i||`` and ``||grad_A,i||_F = ||B^T g_i|| ||x_i||``
(Goodfellow 2015, "Efficient per-example gradient computations"; Li et al. 2022 "ghost
clipping"). For sequences the rank-r factor makes the per-sample gradient small
(``out x r``), so it is formed directly, which is cheaper than the ghost-norm Gram
matrices once T^2 exceeds r (Bu, Mao & Xu 2022, "mixed ghost clipping").

Given the norms, the clipped sum is one weighted product per parameter,
``sum_i c_i grad_i`` with ``c_i = min(1, C / (||grad_i|| + 1e-6))`` -- the "book-keeping"
trick of Bu et al. 2023 ("Differentially private optimization on large model at small
cost", ICML 2023): no second backward pass and no per-sample gradient of the frozen base.
Only the gradients with respect to the LoRA branch outputs are asked of autograd
(``torch.autograd.grad``), so the ordinary (unclipped) parameter gradients are never
computed.

The result goes into ``p.grad``; Opacus's ``DPOptimizerFastGradientClipping`` then adds
the Gaussian noise, scales by the expected batch size, steps the accountant and the
optimizer. Clip factors use Opacus's formula, so the result equals Opacus's
``DPOptimizer.clip_and_accumulate`` on its hooks-mode per-sample gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ForgeValueError
from .ffa import lora_layers

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


class _Tap:
    """What one LoRA layer saw in the last forward pass."""

    __slots__ = ("name", "A", "B", "train_A", "x", "h", "u")

    def __init__(self, name: str, A: nn.Linear, B: nn.Linear, train_A: bool):
        self.name, self.A, self.B, self.train_A = name, A, B, train_A
        self.x: list[torch.Tensor] = []
        self.h: list[torch.Tensor] = []
        self.u: list[torch.Tensor] = []


def _as_seq(t: torch.Tensor) -> torch.Tensor:
    """(n, d) -> (n, 1, d); (n, ..., d) -> (n, T, d)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """A layer called several times in one forward pass: its per-sample gradient is the
    sum over calls, i.e. over the concatenated positions."""
    if len(parts) == 1:
        return parts[0]
    return torch.cat([_as_seq(p) for p in parts], dim=1)


class LoraClipper:
    """Taps every PEFT LoRA layer of ``model`` and computes clipped LoRA gradients.

    Use::

        clipper = LoraClipper(peft_model)
        loss = F.cross_entropy(peft_model(x), y, reduction="sum")  # one term per sample
        norms = clipper.clip_backward(loss, max_grad_norm)          # fills p.grad
        dp_optimizer.step()

    Only LoRA ``A``/``B`` weights may be trainable (refused otherwise): DP is on the LoRA
    parameters only. ``lora_B`` biases and non-Linear LoRA layers are not supported.
    """

    def __init__(self, model: nn.Module, adapter: str = "default"):
        self.taps: list[_Tap] = []
        self._handles: list[nn.Linear] = []
        self._flat: torch.Tensor | None = None
        self._flat_plan = None
        self.flat_grad: torch.Tensor | None = None  # set when the last clip_backward filled the flat buffer
        #: the flat path divides its clipped sums by this (the DP step's expected batch size, folded into
        #: the clip factors, which saves an operation per step); the buffer records it for the optimizer
        self.flat_divisor = 1.0
        lora_params: set[int] = set()
        for name, layer in lora_layers(model, adapter):
            A, B = layer.lora_A[adapter], layer.lora_B[adapter]
            if not isinstance(A, nn.Linear) or not isinstance(B, nn.Linear):
                raise ForgeValueError(
                    f"LoRA layer {name} is a {type(A).__name__}; closed-form clipping supports Linear layers only",
                    fix="target Linear modules only",
                    code="dp.unsupported_layer",
                )
            if B.bias is not None and B.bias.requires_grad:
                raise ForgeValueError(
                    f"LoRA layer {name} has a trainable lora_B bias", fix="train with lora_bias=False", code="dp.unsupported_layer"
                )
            if getattr(layer, "use_dora", {}).get(adapter, False):
                raise ForgeValueError(f"LoRA layer {name} uses DoRA", fix="train plain LoRA or FFA-LoRA", code="dp.unsupported_layer")
            tap = _Tap(name, A, B, A.weight.requires_grad)
            if B.weight.requires_grad:
                self.taps.append(tap)
                lora_params.update({id(B.weight), id(A.weight)})
                self._wrap(B, self._tap_B(tap))
                if tap.train_A:
                    self._wrap(A, self._tap_A(tap))
            elif A.weight.requires_grad:
                raise ForgeValueError(f"LoRA layer {name} trains A but not B", fix="train B (FFA) or both", code="dp.unsupported_layer")
        if not self.taps:
            raise ForgeValueError("the model has no trainable LoRA layer", fix="wrap it with PEFT LoRA first", code="dp.no_lora")
        others = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in lora_params]
        if others:
            raise ForgeValueError(
                f"parameters outside LoRA are trainable ({', '.join(others[:3])})",
                fix="freeze the base model; DP training covers the LoRA parameters only",
                code="dp.not_lora_only",
            )

    def _wrap(self, module: nn.Linear, fn) -> None:
        """Replace the module's ``forward`` (instance attribute) by a recording one.
        Cheaper than a forward hook, which sends every call down PyTorch's slow path."""
        module.forward = fn  # type: ignore[method-assign]  # deliberate: an instance attribute shadows Linear.forward
        self._handles.append(module)

    @staticmethod
    def _tap_A(tap: _Tap):
        A = tap.A

        def forward(x):
            if torch.is_grad_enabled():
                tap.x.append(x)  # read only under no_grad
            return F.linear(x, A.weight, A.bias)

        return forward

    @staticmethod
    def _tap_B(tap: _Tap):
        B = tap.B

        def forward(h):
            u = F.linear(h, B.weight, B.bias)
            if torch.is_grad_enabled():
                tap.h.append(h)  # kept in the graph: the flat path asks autograd for dL/dh = B^T g
                tap.u.append(u)
            return u

        return forward

    @property
    def parameters(self) -> list[torch.Tensor]:
        out = []
        for tap in self.taps:
            if tap.train_A:
                out.append(tap.A.weight)
            out.append(tap.B.weight)
        return out

    def reset(self) -> None:
        for tap in self.taps:
            tap.x.clear()
            tap.h.clear()
            tap.u.clear()

    def remove(self) -> None:
        """Remove the hooks (the model is left as it was)."""
        for module in self._handles:
            if "forward" in module.__dict__:
                del module.forward
        self._handles.clear()
        self.reset()

    # ------------------------------------------------------------------ core
    def _output_grads(self, loss: torch.Tensor) -> list[tuple[_Tap, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        live = [t for t in self.taps if t.u]
        if not live:
            raise ForgeValueError(
                "no LoRA layer ran in the forward pass", fix="call the model between reset() and clip_backward()", code="dp.no_forward"
            )
        outs = [u for t in live for u in t.u]
        grads = torch.autograd.grad(loss, outs, allow_unused=True)
        result, k = [], 0
        for t in live:
            gs = [g if g is not None else torch.zeros_like(u) for g, u in zip(grads[k : k + len(t.u)], t.u, strict=True)]
            k += len(t.u)
            result.append((t, _cat(gs), _cat(t.h), _cat(t.x) if t.train_A else None))
        return result

    def per_sample_norms(self, loss: torch.Tensor) -> torch.Tensor:
        """Per-sample gradient norms over all trainable LoRA parameters (no clipping, no
        change to ``p.grad``): for testing against Opacus's reference implementation."""
        parts = self._output_grads(loss)
        with torch.no_grad():
            return self._norms_only(parts)

    def _norms_only(self, parts) -> torch.Tensor:
        sq = None
        for tap, g, h, x in parts:
            for s in self._sq_norms(tap, g, h, x)[0]:
                sq = s if sq is None else sq + s
        self.reset()
        if sq is None:
            raise ValueError("no LoRA layer recorded a forward pass since the last reset")
        return sq.sqrt()

    @staticmethod
    def _sq_norms(tap: _Tap, g: torch.Tensor, h: torch.Tensor, x: torch.Tensor | None):
        """Squared per-sample norms of grad_B (and grad_A), plus what the clipped sum needs."""
        sq, cache = [], {}
        if g.dim() == 2:  # one token per sample: norms factorise
            sq.append((torch.linalg.vector_norm(g, dim=1) * torch.linalg.vector_norm(h, dim=1)).square())
            if x is not None:
                ga = g @ tap.B.weight  # (n, r) = B^T g_i
                cache["ga"] = ga
                sq.append((torch.linalg.vector_norm(ga, dim=1) * torch.linalg.vector_norm(x, dim=1)).square())
        else:  # sequences: form the small (out x r) and (r x in) per-sample gradients
            g3, h3 = _as_seq(g), _as_seq(h)
            n = g3.shape[0]
            psB = torch.bmm(g3.transpose(1, 2), h3).reshape(n, -1)  # (n, out * r)
            cache["psB"] = psB
            sq.append(psB.square().sum(1))
            if x is not None:
                ga = g3 @ tap.B.weight  # (n, T, r)
                psA = torch.bmm(ga.transpose(1, 2), _as_seq(x)).reshape(n, -1)  # (n, r * in)
                cache["psA"] = psA
                sq.append(psA.square().sum(1))
        return sq, cache

    def _flat_views(self):
        """One persistent buffer holding every trainable LoRA gradient (in
        :attr:`parameters` order) and a view of it per weight: the flat path writes its
        clipped sums straight into the views, and the optimizer noises the whole buffer in
        one operation (see ``privacy.train``)."""
        if self._flat is None:
            params = self.parameters
            flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype)
            views, o = {}, 0
            for p in params:
                views[id(p)] = flat[o : o + p.numel()].view(p.shape)
                o += p.numel()
            self._flat = flat
            self._flat_plan = [
                (t.B.weight, views[id(t.B.weight)], t.A.weight if t.train_A else None, views[id(t.A.weight)] if t.train_A else None)
                for t in self.taps
            ]
        return self._flat, self._flat_plan

    def _clip_backward_flat(self, loss: torch.Tensor, max_grad_norm: float) -> np.ndarray | None:
        """The common tabular case with the fewest tensor operations (small models are
        dominated by per-operation overhead): every layer ran once on (n, d) CPU inputs of a
        dtype NumPy holds. Returns None (nothing changed) when that does not hold."""
        taps = self.taps
        outs, hs = [], []
        for t in taps:
            if len(t.u) != 1 or t.u[0].dim() != 2 or t.u[0].dtype not in _NUMPY_DTYPES or t.u[0].device.type != "cpu":
                return None
            outs.append(t.u[0])
            if t.train_A:
                if not t.h[0].requires_grad:
                    return None
                hs.append(t.h[0])
        # dL/du (the LoRA branch outputs) and, for trained A, dL/dh = B^T g (h = A x), which
        # autograd forms on its way down anyway
        grads = list(torch.autograd.grad(loss, outs + hs, allow_unused=True))
        if any(g is None for g in grads):  # a branch the loss ignores: zero gradient
            grads = [g if g is not None else torch.zeros_like(v) for g, v in zip(grads, outs + hs, strict=True)]
        gs, it = grads[: len(taps)], iter(grads[len(taps) :])
        gas = [next(it) if t.train_A else None for t in taps]
        return self._flat_math(taps, gs, gas, max_grad_norm)  # in NumPy: nothing for autograd to record

    def _fused_plan(self, taps, gs, gas):
        """The column layout of the (n, width) matrix :meth:`_flat_math` concatenates every
        layer's factors into, the 0/1 matrix that sums squared entries per factor, and NumPy
        views of the flat gradient buffer, one per weight. Built once (the layer shapes are the
        same at every step)."""
        cached = self.__dict__.get("_fused")
        if cached is not None:  # the layers, and so the widths, are fixed; _flat_math checks the total
            return cached
        flat, plan = self._flat_views()
        # the left factors first (g, then B^T g), then the right ones (h, then x) in the same order:
        # block k's per-sample norm is the product of the row norms of left block k and right block k
        lefts, rights, views = [], [], []
        for t, g, ga, (_, vB, _, vA) in zip(taps, gs, gas, plan, strict=True):
            lefts.append(g.shape[1])
            rights.append(t.h[0].shape[1])
            views.append(vB.numpy())
            if ga is not None:
                lefts.append(ga.shape[1])
                rights.append(t.x[0].shape[1])
                views.append(vA.numpy())
        widths = lefts + rights
        ind = np.zeros((sum(widths), len(widths)), dtype=_NUMPY_DTYPES[flat.dtype])
        bounds, o = [], 0
        for k, w in enumerate(widths):
            ind[o : o + w, k] = 1.0
            bounds.append((o, o + w))
            o += w
        nb = len(lefts)
        fused = (ind, nb, bounds[nb - 1][1], list(zip(bounds[:nb], bounds[nb:], strict=True)), views)
        self.__dict__["_fused"] = fused
        return fused

    def _flat_math(self, taps, gs, gas, max_grad_norm: float) -> np.ndarray:
        """The fewest operations the maths allows, in NumPy (a small model's step is dominated by
        the fixed cost of each operation, which is about half of torch's in NumPy). For one token
        per sample each block's per-sample norm is a product of two row norms,
        ``||grad_B,i|| = ||g_i|| ||h_i||`` and ``||grad_A,i|| = ||B^T g_i|| ||x_i||``. Every
        factor goes into one (n, width) matrix ``S``; one product of ``S * S`` with a 0/1 matrix
        gives every factor's squared row norm, and the per-sample squared norm is the row sum of
        the products of the paired columns. Each clipped sum is then one matrix product, of a
        column block of ``c S`` (a left factor, scaled by the clip factors) with a column block
        of ``S`` (its right factor), written straight into the flat buffer."""
        flat, plan = self._flat_views()
        ind, nb, split, pairs, views = self._fused_plan(taps, gs, gas)
        parts = [v for g, ga in zip(gs, gas, strict=True) for v in (g, ga) if v is not None]  # the left factors
        for t, ga in zip(taps, gas, strict=True):
            parts.append(t.h[0])
            if ga is not None:
                parts.append(t.x[0])
        with torch.no_grad():  # h and x are in the graph: concatenate them outside it
            S = torch.cat(parts, 1).numpy()  # (n, width); one torch op and one view (cheaper than a view per factor)
        if S.shape[1] != ind.shape[0]:
            raise RuntimeError(f"LoRA factor widths changed between steps ({S.shape[1]} != {ind.shape[0]})")  # a bug
        q = (S * S) @ ind  # (n, 2 nb): every factor's squared row norm
        norms = np.sqrt(np.vecdot(q[:, :nb], q[:, nb:]))[:, None]  # (n, 1)
        c = norms + 1e-6  # Opacus's clip factor min(1, C / (norm + 1e-6)), in one buffer
        np.minimum(np.divide(max_grad_norm, c, out=c), 1.0, out=c)
        divisor = self.flat_divisor
        if divisor != 1.0:
            np.divide(c, divisor, out=c)
        L = S[:, :split] * c  # the left factors, clipped
        for ((l0, l1), (r0, r1)), v in zip(pairs, views, strict=True):
            np.matmul(L[:, l0:l1].T, S[:, r0:r1], out=v)
        for Bw, vB, Aw, vA in plan:
            if Bw.grad is not vB:
                Bw.grad = vB
            if Aw is not None and Aw.grad is not vA:
                Aw.grad = vA
        flat._forge_processed = False  # fresh clipped sums: the optimizer may noise them once
        flat._forge_divisor = divisor  # the sums are divided by this
        self.flat_grad = flat
        self.reset()
        return norms

    def clip_backward(self, loss: torch.Tensor, max_grad_norm: float, *, norms: bool = True) -> torch.Tensor | None:
        """One backward pass; sets ``p.grad = sum_i c_i grad_i`` for every trainable LoRA
        weight and returns the per-sample norms before clipping (``norms=False``: nothing, which
        saves a conversion on the training loop's tabular path). ``loss`` must be the *sum* of
        per-sample losses."""
        self.flat_grad = None
        fast = self._clip_backward_flat(loss, max_grad_norm)
        if fast is not None:
            return torch.from_numpy(fast.reshape(-1)) if norms else None
        parts = self._output_grads(loss)
        with torch.no_grad():  # B requires grad: keep autograd out of the clipping math
            return self._general_math(parts, max_grad_norm)

    def _general_math(self, parts, max_grad_norm: float) -> torch.Tensor:
        sq, caches = None, []
        for tap, g, h, x in parts:
            s, cache = self._sq_norms(tap, g, h, x)
            caches.append(cache)
            for v in s:
                sq = v if sq is None else sq + v
        if sq is None:
            raise ValueError("no LoRA layer recorded a forward pass since the last reset")
        norms = sq.sqrt()
        # Opacus's clip factor (DPOptimizer.clip_and_accumulate)
        c = (max_grad_norm / (norms + 1e-6)).clamp_(max=1.0)
        c_col = c[:, None]
        for (tap, g, h, x), cache in zip(parts, caches, strict=True):
            if "psB" in cache:
                tap.B.weight.grad = (c @ cache["psB"]).view_as(tap.B.weight)
                if x is not None:
                    tap.A.weight.grad = (c @ cache["psA"]).view_as(tap.A.weight)
            else:
                gc = (g * c_col).T
                tap.B.weight.grad = gc @ h
                if x is not None:
                    tap.A.weight.grad = (cache["ga"] * c_col).T @ x
        for tap in self.taps:  # layers that did not run (or empty batch): zero gradient
            if tap.B.weight.grad is None:
                tap.B.weight.grad = torch.zeros_like(tap.B.weight)
            if tap.train_A and tap.A.weight.grad is None:
                tap.A.weight.grad = torch.zeros_like(tap.A.weight)
        self.reset()
        return norms.detach()
