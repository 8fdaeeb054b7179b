"""Gradient inversion of one plugin update on images, in the manner of Inverting Gradients
(Geiping, Bauermeister, Droege, Moeller, "Inverting Gradients - How easy is it to break
privacy in federated learning?", NeurIPS 2020).

Loss: 1 - cosine between the dummy images' LoRA gradient and the observed one, plus a total
variation prior (weight about 0.2 in the ``breaching`` defaults for photographs; 0.01 here,
measured best on the 8x8 digits). Adam (lr 0.1) on the *signed*
gradient of that loss, step decay (x0.1 at 3/8, 5/8, 7/8 of the steps), pixels clamped to
[0, 1] after every step, several random restarts run at once (``torch.func.vmap``); the
restart with the lowest loss is kept. Labels are given, read off the update by the iDLG rule,
or searched (see :mod:`.labels`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.progress import task

from ..estimator import ConfigEstimator
from .gradients import DISTANCES, Grads, LoraFunctional, gradient_distance, prepare_observed
from .labels import LABEL_MODES
from .tabular import Reconstruction, _milestones


@dataclass
class ImageInversionConfig:
    """Settings of the image inversion (Inverting Gradients defaults, scaled down: the paper
    runs 24,000 steps on ImageNet-sized images)."""

    steps: int = 2000
    restarts: int = 4
    lr: float = 0.1
    tv_weight: float = 0.01  # breaching uses 0.2 on 32x32+ photos; 8x8 digits with hard strokes want far less
    signed: bool = True
    lr_decay: bool = True
    labels: str = "given"
    distance: str = "cosine"

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1 and isinstance(self.restarts, int) and self.restarts >= 1):
            raise ForgeValueError(
                f"steps and restarts must be positive integers, got {self.steps!r}, {self.restarts!r}", code="recon.config"
            )
        if not (self.lr > 0 and self.tv_weight >= 0):
            raise ForgeValueError(f"need lr > 0 and tv_weight >= 0, got lr={self.lr}, tv_weight={self.tv_weight}", code="recon.config")
        if self.labels not in LABEL_MODES:
            raise ForgeValueError(f"unknown label mode {self.labels!r}", fix=f"use one of: {', '.join(LABEL_MODES)}", code="recon.config")
        if self.distance not in DISTANCES:
            raise ForgeValueError(f"unknown distance {self.distance!r}", fix=f"use one of: {', '.join(DISTANCES)}", code="recon.config")

    def to_dict(self) -> dict:
        return asdict(self)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels, over
    both image axes (``x`` is (..., H, W))."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


class ImageInversion(ConfigEstimator):
    """``ImageInversion(steps=..., ...).fit(fn, image_shape).reconstruct(g, batch_size, labels)``
    (settings: the fields of :class:`ImageInversionConfig`)."""

    Config = ImageInversionConfig

    def fit(self, fn: LoraFunctional, image_shape: tuple[int, ...]) -> ImageInversion:
        """Attach the attacked plugin (before the update) and the shape of one image (C, H, W)."""
        self._check_settings()  # the settings' values are checked here
        self._clear_fitted()
        if len(image_shape) != 3:
            raise ForgeDataError(f"an image must be (C, H, W), got shape {tuple(image_shape)}", code="recon.shape")
        self.fn_, self.shape_ = fn, tuple(int(s) for s in image_shape)
        return self

    def reconstruct(
        self,
        target: Grads,
        batch_size: int,
        labels: np.ndarray | None = None,
        *,
        n_classes: int | None = None,
        seed: int | np.random.Generator = 0,
    ) -> Reconstruction:
        self._check_fitted("the image inversion")
        fn, cfg = self.fn_, self.config
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        label_sets, target = prepare_observed(fn, target, batch_size, labels, n_classes, cfg.labels, cfg.distance)
        R = cfg.restarts
        ys = torch.stack([torch.tensor(ls, dtype=torch.long) for ls in label_sets for _ in range(R)])
        x = torch.tensor(rng.uniform(0.0, 1.0, size=(len(ys), batch_size) + self.shape_), dtype=fn.dtype, requires_grad=True)
        gfn = fn.grad_fn()
        params = dict(fn.params)

        def attack_loss(xr: torch.Tensor, yr: torch.Tensor) -> torch.Tensor:
            g = gfn(params, xr, yr)
            return gradient_distance(g, target, fn.names, cfg.distance) + cfg.tv_weight * total_variation(xr)

        batched = torch.func.vmap(attack_loss)
        opt = torch.optim.Adam([x], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, _milestones(cfg.steps), 0.1) if cfg.lr_decay else None
        with task("gradient inversion (images)", cfg.steps) as advance:
            for _ in range(cfg.steps):
                opt.zero_grad()
                batched(x, ys).sum().backward()
                if cfg.signed and x.grad is not None:
                    x.grad.sign_()
                opt.step()
                if sched:
                    sched.step()
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
                advance(1)
        with torch.no_grad():
            final = batched(x, ys).numpy()
        best = int(np.argmin(final))
        set_index = best // R
        per_set = final.reshape(len(label_sets), R)
        return Reconstruction(
            x.detach()[best].numpy().astype(np.float64), np.asarray(label_sets[set_index]), float(final[best]), per_set[set_index]
        )
