"""Many reference models trained at once: one frozen base, R stacks of LoRA factors.

A membership audit trains R reference plugins that differ only in their LoRA factors (and
their data, seeds and noise); the base is frozen and shared. Here the R references run
through *one* copy of the PEFT model whose LoRA layers are given an instance ``forward``
that applies R stacked factors with grouped matrix products (``torch.bmm``)::

    y[r] = W x[r] + b + s * B[r] (A[r] x[r])          x: (R * batch, ..., in) reshaped to (R, batch * T, in)

Every reference gets its own Poisson batch at every step; batches are padded to the
largest one and padded rows carry zero loss weight (zero gradient, zero norm, so they add
nothing to a clipped sum). DP-SGD is the target's, per reference (Abadi et al. 2016):

- Poisson sampling and Gaussian noise come from a real
  :class:`forge_secure.privacy.train.TrainingRun` built for each reference with the secret
  derived from that reference's seed (:func:`reference_secret`): its ``PoissonSampler``'s
  secret stream and its optimizer's ``NoiseSource``, both consumed in order, so the random
  draws are exactly those of a one-at-a-time run;
- per-sample clipping uses the closed-form LoRA gradients of
  :mod:`forge_secure.privacy.clipping` (``||grad_B,i|| = ||g_i|| ||h_i||``,
  ``||grad_A,i|| = ||B^T g_i|| ||x_i||``; per-sample ``out x r`` factors for sequences) with
  a reference axis added, and Opacus's clip factor ``min(1, C / (norm + 1e-6))``;
- noise ``N(0, (sigma C)^2)`` is added to each reference's clipped sum (its own generator),
  which is then divided by that reference's expected batch size ``n q``;
- the optimizer is the recipe's ``torch.optim`` class over one (R, P) parameter tensor, so
  its update (SGD momentum, Adam) is element-wise that of each reference's own optimizer.

Without DP, each reference's batch-mean gradient is clipped as a whole (as
``train_plugin``'s stabiliser, ``clip_grad_norm_``) and stepped.

The result equals one-at-a-time training up to float32 summation order (the batched
products add the same terms in another order): ``tests/attacks/membership/
test_reference_batch.py`` checks the logits agree to 1e-4 (relative to their scale) after
training. Not batched (the caller trains one at a time): LoRA dropout > 0 (it draws from
torch's global generator), and Mixture targets (a reference is placed into a mixture).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: how many (reference x record) rows one evaluation forward pass may hold
EVAL_ROWS = 16384


def reference_secret(seed: int) -> bytes:
    """The 32-byte secret of a reference model's DP noise and Poisson sampling, derived from its
    seed (``privacy.randomness.seed_from_label``): reference training is the auditor's own
    experiment, so it is reproducible, unlike a site's run."""
    from forge_secure.privacy.randomness import seed_from_label

    return seed_from_label("forge-reference-model", int(seed))


def reference_config(recipe: dict, seed: int):
    """The target's recipe (``TrainConfig.from_meta``) with the reference's seed."""
    from forge_secure.privacy import TrainConfig

    return dataclasses.replace(TrainConfig.from_meta(recipe), seed=int(seed))


def why_not_batched(config, mixture: Any = None) -> str | None:
    """None when references with ``config`` can be trained batched, else the reason."""
    if config.dropout > 0:
        return "LoRA dropout draws from torch's global generator"
    if mixture:
        return "references of a Mixture target are placed into the mixture one by one"
    return None


class _Layer:
    """One LoRA layer of the shared PEFT model and the R stacked factors it applies."""

    def __init__(self, name: str, layer, R: int):
        self.name, self.layer, self.R = name, layer, R
        A, B = layer.lora_A["default"], layer.lora_B["default"]
        self.scaling = float(layer.scaling["default"])
        self.rank, self.d_in = A.weight.shape
        self.d_out = B.weight.shape[0]
        self.train_A = bool(A.weight.requires_grad)
        self.A: torch.Tensor | None = None  # (R, rank, in)
        self.B: torch.Tensor | None = None  # (R, out, rank)
        self.record = False
        self.x: list[torch.Tensor] = []
        self.h: list[torch.Tensor] = []
        self.u: list[torch.Tensor] = []
        base_layer = layer.base_layer

        def forward(x, *args, **kwargs):
            y = base_layer(x, *args, **kwargs)
            xr = x.reshape(self.R, -1, x.shape[-1])
            h = torch.bmm(xr, self.A.transpose(1, 2))
            u = torch.bmm(h, self.B.transpose(1, 2))  # the unscaled LoRA branch output, as LoraClipper's u
            if self.record:
                self.x.append(xr)
                self.h.append(h)
                self.u.append(u)
            return y + (u * self.scaling).reshape(*y.shape)

        layer.forward = forward

    def take(self, n: int):
        """(g-able u list, h, x) as (R, n, T, d), the calls of one forward concatenated along T."""

        def seq(parts, d):
            return torch.cat([p.reshape(self.R, n, -1, d) for p in parts], dim=2)

        h = seq(self.h, self.rank)
        x = seq(self.x, self.d_in) if self.train_A else None
        return h, x

    def clear(self) -> None:
        self.x.clear()
        self.h.clear()
        self.u.clear()

    def remove(self) -> None:
        if "forward" in self.layer.__dict__:
            del self.layer.forward


class _Poisson:
    """The Poisson batches of one reference from its TrainingRun's ``PoissonSampler``: the
    same uniforms from the same secret stream (which is consumed strictly in order, so an
    epoch's draw equals the sampler's), kept as boolean rows instead of index lists."""

    def __init__(self, sampler):
        self.stream, self.n, self.q, self.steps = sampler.stream, int(sampler.n), float(sampler.q), int(sampler.steps)
        self._rows = None
        self._k = 0

    def draw(self) -> torch.Tensor:
        if self._rows is None or self._k == self.steps:  # one epoch, as PoissonSampler.__iter__ draws it
            self._rows = torch.from_numpy(self.stream.uniform(self.n * self.steps).reshape(self.steps, self.n) < self.q)
            self._k = 0
        self._k += 1
        return self._rows[self._k - 1]


def _pad_sets(sets: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    n_max = max(len(y) for _, y in sets)
    shape = sets[0][0].shape[1:]
    X = torch.zeros((len(sets), n_max, *shape), dtype=torch.float32)
    Y = torch.zeros((len(sets), n_max), dtype=torch.int64)
    for r, (x, y) in enumerate(sets):
        X[r, : len(y)] = torch.from_numpy(np.array(x, dtype=np.float32))
        Y[r, : len(y)] = torch.from_numpy(np.array(y, dtype=np.int64))
    return X, Y


def train_batched(recipe: dict, base, sets: list[tuple[np.ndarray, np.ndarray]], seeds: list[int], eval_X: np.ndarray) -> np.ndarray:
    """Train ``len(sets)`` references (reference r on ``sets[r] = (X, y)`` with seed
    ``seeds[r]``) with the recipe of ``recipe`` on ``base``; return their logits on
    ``eval_X`` as float64 ``(R, len(eval_X), C)``."""
    from forge_secure.errors import ForgeValueError
    from forge_secure.privacy.config import OPTIMIZERS
    from forge_secure.privacy.ffa import ffa_matrix, lora_init_matrix, lora_layers
    from forge_secure.privacy.train import TrainingRun, build_lora_model, plan_privacy

    R = len(sets)
    if R == 0:
        return np.zeros((0, len(eval_X), base.n_classes))
    configs = [reference_config(recipe, s) for s in seeds]
    cfg = configs[0]
    reason = why_not_batched(cfg)
    if reason:
        raise ForgeValueError(f"these references cannot be trained batched: {reason}", code="attack.references")
    by_n: dict[int, Any] = {}  # the plan depends on the training-set size only (same recipe)
    plans = [by_n.setdefault(len(y), by_n.get(len(y)) or plan_privacy(c, len(y))) for c, (_, y) in zip(configs, sets, strict=True)]
    dp = plans[0].noise_multiplier is not None
    model, _ = build_lora_model(base, cfg)  # the PEFT model: PEFT's own target matching and scaling
    X, Y = _pad_sets(sets)

    # The randomness of each reference: a real TrainingRun with its seed's secret.
    samplers, noise = [], []
    for r, (c, p) in enumerate(zip(configs, plans, strict=True)):
        n_r = len(sets[r][1])
        run = TrainingRun(model, X[r, :n_r], Y[r, :n_r], c, p, secret=reference_secret(seeds[r]))
        run.close()
        samplers.append(_Poisson(run.sampler))
        noise.append(run.optimizer.noise_source if dp else None)

    layers = [_Layer(name, layer, R) for name, layer in lora_layers(model)]
    try:
        return _train_loop(
            model,
            layers,
            configs,
            plans,
            samplers,
            noise,
            X,
            Y,
            eval_X,
            dp,
            OPTIMIZERS.get(cfg.optimizer),
            base.digest,
            ffa_matrix,
            lora_init_matrix,
        )
    finally:
        for L in layers:
            L.remove()


def _train_loop(
    model, layers, configs, plans, samplers, noise, X, Y, eval_X, dp, optimizer_spec, digest, ffa_matrix, lora_init_matrix
) -> np.ndarray:
    R = len(configs)
    cfg = configs[0]
    # One buffer holds every reference's trainable LoRA weights, in LoraClipper's order
    # (per layer: A if trained, then B), so a row is that reference's flat gradient layout.
    layout, P = [], 0
    for L in layers:
        if L.train_A:
            layout.append((L, "A", P, (L.rank, L.d_in)))
            P += L.rank * L.d_in
        layout.append((L, "B", P, (L.d_out, L.rank)))
        P += L.d_out * L.rank
    params = torch.zeros((R, P), dtype=torch.float32)
    grads = torch.zeros((R, P), dtype=torch.float32)
    for L in layers:
        make = ffa_matrix if cfg.ffa else lora_init_matrix
        A0 = torch.stack([make(digest, c.ffa_seed if cfg.ffa else c.seed, L.name, (L.rank, L.d_in)) for c in configs])
        if L.train_A:
            a = next(o for (l2, kind, o, _) in layout if l2 is L and kind == "A")
            params[:, a : a + A0[0].numel()] = A0.reshape(R, -1)
        else:
            L.A = A0
    params.grad = grads
    cls_name, extra = optimizer_spec
    # One parameter tensor (R, P): the recipe's optimizer is element-wise, so each row gets
    # exactly the update of its reference's own optimizer.
    opt = getattr(torch.optim, cls_name)([params], lr=cfg.lr, **extra)

    def bind(requires_grad: bool):
        out = []
        for L, kind, o, shape in layout:
            t = params[:, o : o + shape[0] * shape[1]].view(R, *shape).detach()
            if requires_grad or kind == "B":
                t.requires_grad_(True)  # B: so the LoRA outputs u are in the graph (their grads are asked for)
            setattr(L, kind, t)
            out.append(t)
        return out

    steps = [p.steps for p in plans]
    ebs = torch.tensor([p.n * p.sample_rate for p in plans], dtype=torch.float32)[:, None]
    clip = cfg.max_grad_norm
    sigma_c = (plans[0].noise_multiplier or 0.0) * clip
    ar = torch.arange(R)[:, None]
    zeros_P = torch.zeros(P, dtype=torch.float64)
    n_max = X.shape[1]
    for t in range(max(steps)):
        active = [r for r in range(R) if t < steps[r]]
        drawn = torch.zeros((R, n_max), dtype=torch.bool)
        for r in active:
            drawn[r, : samplers[r].n] = samplers[r].draw()
        lens_t = drawn.sum(1)
        lens = lens_t.numpy()
        b_max = int(lens.max())
        skip = [r for r in range(R) if t >= steps[r] or (lens[r] == 0 and not dp)]
        if b_max:
            # every reference's batch (ascending indices, as the sampler yields them) in one
            # padded (R, b_max) index; padded slots get weight 0
            rows, picked = drawn.nonzero(as_tuple=True)
            cols = torch.arange(rows.numel()) - torch.repeat_interleave(torch.cumsum(lens_t, 0) - lens_t, lens_t)
            idx = torch.zeros((R, b_max), dtype=torch.int64)
            idx[rows, cols] = picked
            mask = torch.zeros((R, b_max), dtype=torch.float32)
            mask[rows, cols] = 1.0
            xb = X[ar, idx].reshape(R * b_max, *X.shape[2:])
            yb = Y[ar, idx].reshape(-1)
            stacked = bind(requires_grad=not dp)
            for L in layers:
                L.record = dp
            per = F.cross_entropy(model(xb), yb, reduction="none").view(R, b_max) * mask
            if dp:
                _clipped_sums(per.sum(), layers, layout, grads, R, b_max, clip)
            else:
                counts = mask.sum(1).clamp(min=1.0)
                gs = torch.autograd.grad((per.sum(1) / counts).sum(), stacked)
                with torch.no_grad():
                    flat = torch.cat([g.reshape(R, -1) for g in gs], 1)
                    # train_plugin's no-DP stabiliser: clip_grad_norm_ of each reference's batch gradient
                    coef = (clip / (torch.linalg.vector_norm(flat, dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
                    grads.copy_(flat * coef)
        elif dp:
            grads.zero_()
        if dp:
            with torch.no_grad():
                # each reference's next P normals from its noise stream (an empty batch is a
                # noise-only step, as in TrainingRun), converted to float32 as its optimizer does
                draws = [noise[r].take(P) if t < steps[r] else zeros_P for r in range(R)]
                grads.add_(torch.stack(draws).to(grads.dtype), alpha=sigma_c)
                grads.div_(ebs)
        _step(opt, params, skip)
    if not torch.isfinite(params).all():
        from forge_secure.errors import ForgeValueError

        raise ForgeValueError(
            f"reference training diverged (non-finite LoRA weights) at learning rate {cfg.lr:g}",
            fix="attack with a recipe whose training converges",
            code="attack.reference_failed",
        )
    return _evaluate(model, layers, bind, R, eval_X)


def _step(opt, params: torch.Tensor, skip: list[int]) -> None:
    """One optimizer step for every reference except those in ``skip`` (no batch this step:
    finished, or an empty Poisson batch without DP), whose rows of the weights and of the
    optimizer's state are put back as they were. Exact for SGD; Adam keeps one
    bias-correction step count for all rows (a skipped step still counts there)."""
    if not skip:
        opt.step()
        return
    rows = torch.as_tensor(skip)
    saved = [
        (t, t[rows].clone()) for t in [params] + [v for v in opt.state[params].values() if torch.is_tensor(v) and v.shape == params.shape]
    ]
    opt.step()
    with torch.no_grad():
        for t, old in saved:
            t[rows] = old


def _clipped_sums(loss, layers, layout, grads, R: int, n: int, clip: float) -> None:
    """Per-sample clipped gradient sums of every reference, written into ``grads`` (R, P)."""
    us = [u for L in layers for u in L.u]
    gs = torch.autograd.grad(loss, us, allow_unused=True)
    norm = torch.linalg.vector_norm
    with torch.no_grad():
        parts, k = [], 0
        sq = torch.zeros((R, n))
        for L in layers:
            g = torch.cat(
                [
                    (gi if gi is not None else torch.zeros_like(u)).reshape(R, n, -1, L.d_out)
                    for gi, u in zip(gs[k : k + len(L.u)], L.u, strict=True)
                ],
                dim=2,
            )
            k += len(L.u)
            h, x = L.take(n)
            if g.shape[2] == 1:  # one token per record: the norms factorise
                g2, h2 = g[:, :, 0], h[:, :, 0]
                sq += (norm(g2, dim=2) * norm(h2, dim=2)).square()
                entry = {"g": g2, "h": h2}
                if x is not None:
                    ga = torch.bmm(g2, L.B.detach())  # B^T g_i, (R, n, rank)
                    sq += (norm(ga, dim=2) * norm(x[:, :, 0], dim=2)).square()
                    entry.update(ga=ga, x=x[:, :, 0])
            else:  # sequences: the small per-sample factors directly
                psB = torch.einsum("rnto,rntk->rnok", g, h).reshape(R, n, -1)
                sq += psB.square().sum(2)
                entry = {"psB": psB}
                if x is not None:
                    ga = torch.einsum("rnto,rok->rntk", g, L.B.detach())
                    psA = torch.einsum("rntk,rnti->rnki", ga, x).reshape(R, n, -1)
                    sq += psA.square().sum(2)
                    entry["psA"] = psA
            parts.append(entry)
            L.clear()
        c = (clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # Opacus's clip factor
        for L, kind, o, shape in layout:
            e = parts[layers.index(L)]
            size = shape[0] * shape[1]
            if kind == "B":
                v = torch.bmm((e["g"] * c[..., None]).transpose(1, 2), e["h"]) if "g" in e else torch.einsum("rn,rnp->rp", c, e["psB"])
            else:
                v = torch.bmm((e["ga"] * c[..., None]).transpose(1, 2), e["x"]) if "ga" in e else torch.einsum("rn,rnp->rp", c, e["psA"])
            grads[:, o : o + size] = v.reshape(R, size)


def _evaluate(model, layers, bind, R: int, eval_X: np.ndarray) -> np.ndarray:
    """Logits of every reference on ``eval_X``: (R, N, C) float64."""
    bind(requires_grad=False)
    for L in layers:
        L.record = False
        L.A = L.A.detach()
        L.B = L.B.detach()
    Xe = torch.from_numpy(np.array(eval_X, dtype=np.float32))
    N = Xe.shape[0]
    chunk = max(1, EVAL_ROWS // R)
    out = []
    with torch.no_grad():
        for s in range(0, N, chunk):
            xc = Xe[s : s + chunk]
            m = xc.shape[0]
            xs = xc.unsqueeze(0).expand(R, *xc.shape).reshape(R * m, *xc.shape[1:])
            out.append(model(xs).reshape(R, m, -1))
    return torch.cat(out, 1).double().numpy()
