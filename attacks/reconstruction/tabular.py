"""Gradient inversion of one plugin update on tabular records, in the manner of TabLeak
(Vero, Balunovic, Dimitrov, Vechev, "TabLeak: Tabular Data Leakage in Federated Learning",
ICML 2023).

The attacker optimises dummy records so that their gradient with respect to the plugin's
trainable LoRA tensors points the same way as the observed one: loss 1 - cos(grad(x), g).
Categorical features are softmax relaxations of free logits with a temperature; continuous
ones pass through a bounded map lo + (hi - lo) sigmoid(z) with bounds from the population
prior. Adam, several random restarts run at once (``torch.func.vmap``), then pooled after
Hungarian matching to the best restart: median for continuous features, majority vote for
categorical ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.progress import task

from ..estimator import ConfigEstimator
from .features import FeatureSpec
from .gradients import DISTANCES, Grads, LoraFunctional, gradient_distance, prepare_observed
from .labels import LABEL_MODES
from .measures import match_records


@dataclass
class TabularInversionConfig:
    """Settings of the tabular inversion (defaults after TabLeak: Adam lr 0.06, 1,500 steps,
    30 restarts)."""

    steps: int = 1500
    restarts: int = 30
    lr: float = 0.06
    temperature: float = 1.0
    lr_decay: bool = True  # x0.1 at 3/8, 5/8 and 7/8 of the steps
    labels: str = "given"  # "given", "search" (batch of one: try every class) or "idlg"
    distance: str = "layer-cosine"  # "cosine" over all tensors at once, or averaged per tensor
    scale_search: bool = True  # grid search over each record's scale half-way (see _scale_search)
    scale_grid: int = 49
    pool_fraction: float = 0.5  # pool the best half of the restarts (a stuck restart only adds noise)

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ForgeValueError(f"steps must be a positive integer, got {self.steps!r}", code="recon.config")
        if not (isinstance(self.restarts, int) and self.restarts >= 1):
            raise ForgeValueError(f"restarts must be a positive integer, got {self.restarts!r}", code="recon.config")
        if not (0 < self.pool_fraction <= 1):
            raise ForgeValueError(f"pool_fraction must lie in (0, 1], got {self.pool_fraction!r}", code="recon.config")
        if not (self.lr > 0 and self.temperature > 0):
            raise ForgeValueError(f"lr and temperature must be > 0, got lr={self.lr}, temperature={self.temperature}", code="recon.config")
        if self.distance not in DISTANCES:
            raise ForgeValueError(f"unknown distance {self.distance!r}", fix=f"use one of: {', '.join(DISTANCES)}", code="recon.config")
        if self.labels not in LABEL_MODES:
            raise ForgeValueError(f"unknown label mode {self.labels!r}", fix=f"use one of: {', '.join(LABEL_MODES)}", code="recon.config")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reconstruction:
    """Reconstructed records (in the data's own layout), their labels, and the attack loss of
    the best restart (1 - cosine)."""

    records: np.ndarray
    labels: np.ndarray
    loss: float
    restart_losses: np.ndarray


def _milestones(steps: int) -> list[int]:
    return [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]


class TabularInversion(ConfigEstimator):
    """TabLeak-style inversion: ``TabularInversion(steps=..., ...).fit(fn, spec, prior).reconstruct(g, ...)``
    (settings: the fields of :class:`TabularInversionConfig`)."""

    Config = TabularInversionConfig

    def fit(self, fn: LoraFunctional, spec: FeatureSpec, prior: np.ndarray) -> TabularInversion:
        """Attach the attacked plugin (before the update), the record layout and population records
        (used for the restarts' starting points)."""
        self._check_settings()  # the settings' values are checked here
        self._clear_fitted()
        prior = np.asarray(prior, dtype=np.float64)
        if prior.ndim != 2 or prior.shape[1] != spec.n_columns:
            raise ForgeDataError(
                f"population prior has shape {prior.shape}, the feature spec expects {spec.n_columns} columns",
                fix="pass records with the plugin's columns",
                code="recon.prior",
            )
        self.fn_, self.spec_, self.prior_ = fn, spec, prior
        return self

    # ------------------------------------------------------------------ parameterisation
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (..., d) -> records (..., d): bounded continuous columns, softmax groups."""
        spec, tau = self.spec_, self.config.temperature
        out = torch.empty_like(z)
        c = list(spec.continuous)
        if c:
            lo = torch.tensor([spec.lower[i] for i in c], dtype=z.dtype)
            hi = torch.tensor([spec.upper[i] for i in c], dtype=z.dtype)
            out[..., c] = lo + (hi - lo) * torch.sigmoid(z[..., c])
        for g in spec.categorical:
            out[..., list(g)] = torch.softmax(z[..., list(g)] / tau, dim=-1)
        return out

    def _init(self, shape: tuple[int, ...], rng: np.random.Generator) -> torch.Tensor:
        """Starting points: each continuous column drawn from the prior's marginal, categorical
        logits small and random."""
        spec = self.spec_
        z = rng.normal(0.0, 0.1, size=shape)
        n = int(np.prod(shape[:-1]))
        c = list(spec.continuous)
        if c:
            lo = np.array([spec.lower[i] for i in c])
            hi = np.array([spec.upper[i] for i in c])
            draws = self.prior_[rng.integers(0, len(self.prior_), size=(n, len(c))), c]
            u = np.clip((draws - lo) / (hi - lo), 1e-3, 1 - 1e-3)
            z.reshape(n, -1)[:, c] = np.log(u / (1 - u))
        return torch.tensor(z, dtype=self.fn_.dtype)

    # ------------------------------------------------------------------ the attack
    def reconstruct(
        self,
        target: Grads,
        batch_size: int,
        labels: np.ndarray | None = None,
        *,
        n_classes: int | None = None,
        seed: int | np.random.Generator = 0,
    ) -> Reconstruction:
        """Rebuild ``batch_size`` records from the observed gradient ``target``."""
        self._check_fitted("the tabular inversion")
        fn, cfg = self.fn_, self.config
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        label_sets, target = prepare_observed(fn, target, batch_size, labels, n_classes, cfg.labels, cfg.distance)
        R = cfg.restarts
        ys = torch.stack([torch.tensor(ls, dtype=torch.long) for ls in label_sets for _ in range(R)])
        z = self._init((len(ys), batch_size, self.spec_.n_columns), rng).requires_grad_(True)
        gfn = fn.grad_fn()
        params = dict(fn.params)

        def attack_loss(zr: torch.Tensor, yr: torch.Tensor) -> torch.Tensor:
            g = gfn(params, self._decode(zr), yr)
            return gradient_distance(g, target, fn.names, cfg.distance)

        batched = torch.func.vmap(attack_loss)
        first = cfg.steps // 2 if cfg.scale_search else cfg.steps
        with task("gradient inversion (tabular)", cfg.steps) as advance:
            self._adam(z, ys, batched, first, cfg.lr, advance)
            if cfg.scale_search:
                with torch.no_grad():
                    z.copy_(self._scale_search(z.detach(), ys, batched))
                self._adam(z, ys, batched, cfg.steps - first, cfg.lr * 0.3, advance)
        with torch.no_grad():
            final = batched(z, ys).numpy()
            recs = self._decode(z).numpy().astype(np.float64)
        # choose the label set with the lowest best loss, pool its restarts
        per_set = final.reshape(len(label_sets), R)
        best_set = int(np.argmin(per_set.min(axis=1)))
        sl = slice(best_set * R, (best_set + 1) * R)
        pooled = self._pool(recs[sl], final[sl])
        return Reconstruction(
            self.spec_.project(pooled), np.asarray(label_sets[best_set]), float(per_set[best_set].min()), per_set[best_set]
        )

    def _adam(self, z: torch.Tensor, ys: torch.Tensor, batched, steps: int, lr: float, advance) -> None:
        if steps <= 0:
            return
        opt = torch.optim.Adam([z], lr=lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, _milestones(steps), 0.1) if self.config.lr_decay else None
        for _ in range(steps):
            opt.zero_grad()
            batched(z, ys).sum().backward()
            opt.step()
            if sched:
                sched.step()
            advance(1)

    def _encode(self, x: torch.Tensor, z_like: torch.Tensor) -> torch.Tensor:
        """Inverse of the bounded map for the continuous columns (categorical logits kept)."""
        spec = self.spec_
        z = z_like.clone()
        c = list(spec.continuous)
        lo = torch.tensor([spec.lower[i] for i in c], dtype=x.dtype)
        hi = torch.tensor([spec.upper[i] for i in c], dtype=x.dtype)
        u = ((x[..., c] - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
        z[..., c] = torch.log(u / (1 - u))
        return z

    def _scale_search(self, z: torch.Tensor, ys: torch.Tensor, batched) -> torch.Tensor:
        """Line search over the scale of each record's continuous part about the prior mean.

        For a record seen through a ReLU network's LoRA gradients, the first layer's grad_A
        fixes the direction of x exactly, but its scale only moves the activation pattern, a
        piecewise-constant signal that gradient steps cannot follow; a grid over the scale
        (log-spaced, 1/4 to 4) finds it. Keeps the best point per restart and record."""
        spec, cfg = self.spec_, self.config
        c = list(spec.continuous)
        if not c:
            return z
        mu = torch.tensor(self.prior_[:, c].mean(axis=0), dtype=z.dtype)
        grid = torch.exp(torch.linspace(np.log(0.25), np.log(4.0), cfg.scale_grid, dtype=z.dtype))
        R, B, _ = z.shape
        G = len(grid)
        for b in range(B):
            x = self._decode(z)  # (R, B, d)
            cand = x.unsqueeze(1).repeat(1, G, 1, 1)  # (R, G, B, d)
            cand[:, :, b, c] = mu + grid[None, :, None] * (x[:, None, b, c] - mu)
            zc = self._encode(cand, z.unsqueeze(1).repeat(1, G, 1, 1))
            losses = batched(zc.reshape(R * G, B, -1), ys.repeat_interleave(G, dim=0)).reshape(R, G)
            best = torch.argmin(losses, dim=1)
            z = zc[torch.arange(R), best]
        return z

    def _pool(self, recs: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """Keep the best ``pool_fraction`` of the restarts, match their records to the best
        restart's (Hungarian), then take the median of continuous columns and the majority
        category of every one-hot group."""
        spec = self.spec_
        keep = np.argsort(losses)[: max(1, int(np.ceil(len(losses) * self.config.pool_fraction)))]
        recs, losses = recs[keep], losses[keep]
        ref = recs[int(np.argmin(losses))]
        aligned = np.stack([r[match_records(r, ref, spec)] for r in recs])  # (R, B, d)
        out = np.median(aligned, axis=0)
        for g in spec.categorical:
            votes = np.argmax(aligned[:, :, list(g)], axis=2)  # (R, B)
            ref_cat = np.argmax(ref[:, list(g)], axis=1)
            for b in range(out.shape[0]):
                counts = np.bincount(votes[:, b], minlength=len(g))
                winners = np.flatnonzero(counts == counts.max())
                pick = ref_cat[b] if ref_cat[b] in winners else winners[0]
                out[b, list(g)] = 0.0
                out[b, g[pick]] = 1.0
        return out
