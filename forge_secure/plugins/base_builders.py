"""Builders of the bundled bases: how the shipped artifacts were made (never on the load path).

The bundled bases (``tabular-mlp``, ``vit-tiny``) ship as files inside the package
(``forge_secure/plugins/assets/<name>/``) and are loaded by :func:`~.bases.load_base`
without any training. This module is the recipe that produced those files, kept so that
anyone can see and rerun it: ``python tools/make_bases.py`` rebuilds the shipped assets
and ``python tools/make_bases.py vit-tiny --set image_size=28 --out DIR`` builds a base
with other settings into a directory, which is then used as ``--base DIR``.

Floating-point results differ between CPUs (instruction sets, BLAS kernels, thread
counts), so a rebuild on another machine may give other bytes; that is exactly why the
bases are artifacts. The builders still pin what they can:

1. parameters are initialised from a seeded NumPy ``Generator`` (PCG64);
2. pretraining is full-batch Adam in **float64** on the bundled public split (no
   sampling, no dropout), with one torch thread;
3. the weights are rounded onto multiples of ``2**-16`` and stored as float32.

Built-ins
---------
- ``tabular-mlp``: ``fc1`` (30 -> 64), ``fc2`` (64 -> 64), ``head`` (64 -> 2), ReLU.
  Pretrained (60 full-batch Adam steps, lr 0.01) on the 113-row public split **using only
  the ten standard-error features** (columns 10-19; fc1's weights for the other twenty are
  exactly zero). The full data is easy (a linear model on all features reaches about
  97 %), so a base trained on all of it would leave plugins nothing to learn; this one
  reaches 0.81 / 0.79 / 0.88 accuracy on the three bundled sites' test splits, and plugins
  gain by bringing in the other features through their fc1 update and by fitting their
  site's label skew.
- ``vit-tiny``: a ``transformers`` ``ViTForImageClassification`` (hidden 64, 2 layers,
  2 heads, MLP 128, patch 2, image 8x8x1, 10 classes), pretrained briefly (30 full-batch
  Adam steps on the first 128 public digits, about 50 % test accuracy). Other image
  sizes, channels and class counts are allowed (e.g. for MedMNIST files): the digits are
  then resized (bilinear), repeated over channels and labelled ``y mod C``, a generic,
  deterministic warm start.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ForgeValueError
from ..fileio import atomic_directory
from .bases import BASE_FILE, BASE_FORMAT, GRID, TABULAR_BASE_FEATURES, WEIGHTS_FILE, build_architecture, directory_digest, weights_bytes


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ForgeValueError(f"{name} {value!r} must be an integer >= {low}", code="base.settings")
    return int(value)


def _check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value):
        raise ForgeValueError(f"{name} {value!r} must be a finite number", code="base.settings")
    return float(value)


def round_to_grid(model: nn.Module) -> None:
    """Round every parameter and buffer onto multiples of GRID, in float32."""
    model.float()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(torch.round(t.double() / GRID) * GRID)


def numpy_init(model: nn.Module, seed: int) -> None:
    """Initialise all parameters from a seeded NumPy Generator: weights U(-k, k) with
    k = 1/sqrt(fan_in) (PyTorch's Linear default), biases 0, LayerNorm weight 1, other
    vectors N(0, 0.02^2)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                if "layernorm" in name.lower() or "norm" in name.lower():
                    p.fill_(1.0)
                else:
                    p.copy_(torch.from_numpy(rng.normal(0.0, 0.02, size=tuple(p.shape))))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else p.shape[0]
                k = 1.0 / np.sqrt(fan_in)
                p.copy_(torch.from_numpy(rng.uniform(-k, k, size=tuple(p.shape))))


def pretrain(model: nn.Module, X: np.ndarray, y: np.ndarray, steps: int, lr: float) -> None:
    """Full-batch Adam in float64 (no sampling, no dropout)."""
    model.double().train()
    Xt = torch.tensor(np.asarray(X, dtype=np.float64))
    yt = torch.tensor(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(Xt), yt)
        loss.backward()
        opt.step()
    model.eval()


def _construct(architecture: str, config: dict) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # constructors draw from the global RNG: leave it untouched
        torch.manual_seed(0)
        return build_architecture(architecture, config)


def build_tabular_mlp(
    *, hidden: int = 64, seed: int = 0, pretrain_steps: int = 60, lr: float = 0.01, init_scale: float = 1.0
) -> tuple[nn.Module, dict]:
    """The tabular base and its ``base.json`` record (without the file list)."""
    from .data import bundled_splits

    hidden = _check_int("hidden", hidden)
    pretrain_steps = _check_int("pretrain_steps", pretrain_steps, 0)
    seed = _check_int("seed", seed, 0)
    lr, init_scale = _check_float("lr", lr), _check_float("init_scale", init_scale)
    public = bundled_splits().public
    d_in, n_classes = int(public.X.shape[1]), int(public.n_classes)
    config = {"d_in": d_in, "hidden": hidden, "n_classes": n_classes}
    model = _construct("tabular-mlp", config)
    numpy_init(model, seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(init_scale)
    keep = np.zeros(d_in, dtype=bool)
    keep[list(TABULAR_BASE_FEATURES)] = True
    with torch.no_grad():
        first = model.get_submodule("fc1")
        assert isinstance(first, nn.Linear)
        first.weight[:, torch.from_numpy(~keep)] = 0.0
    X = np.where(keep, public.X, 0.0)  # masked inputs: the zeroed weights get no gradient
    pretrain(model, X, public.y, pretrain_steps, lr)
    record = {
        "architecture": "tabular-mlp",
        "config": config,
        "kind": "tabular",
        "n_classes": n_classes,
        "input_shape": [d_in],
        "targets": ["fc1", "fc2"],
        "settings": {"hidden": hidden, "seed": seed, "pretrain_steps": pretrain_steps, "lr": lr, "init_scale": init_scale},
        "pretraining": {"data": public.digest(), "features": list(TABULAR_BASE_FEATURES), "optimizer": "full-batch Adam, float64"},
    }
    return model, record


def build_vit_tiny(
    *,
    image_size: int = 8,
    num_channels: int = 1,
    n_classes: int = 10,
    patch_size: int = 2,
    seed: int = 0,
    pretrain_steps: int = 30,
    lr: float = 0.01,
    pretrain_rows: int = 128,
) -> tuple[nn.Module, dict]:
    """A tiny ViT pretrained briefly on the public digits split, and its ``base.json`` record."""
    from .data import bundled_image_splits

    image_size = _check_int("image_size", image_size)
    num_channels = _check_int("num_channels", num_channels)
    n_classes = _check_int("n_classes", n_classes, 2)
    patch_size = _check_int("patch_size", patch_size)
    if image_size % patch_size:
        raise ForgeValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}", code="base.settings")
    pretrain_steps = _check_int("pretrain_steps", pretrain_steps, 0)
    seed = _check_int("seed", seed, 0)
    pretrain_rows = _check_int("pretrain_rows", pretrain_rows)
    lr = _check_float("lr", lr)
    public = bundled_image_splits().public
    config = {
        "image_size": image_size,
        "num_channels": num_channels,
        "n_classes": n_classes,
        "patch_size": patch_size,
        "hidden": 64,
        "layers": 2,
        "heads": 2,
        "intermediate": 128,
    }
    model = _construct("vit-tiny", config)
    numpy_init(model, seed)
    X = torch.tensor(public.X[:pretrain_rows], dtype=torch.float64)
    if image_size != X.shape[-1]:
        X = nn.functional.interpolate(X, size=(image_size, image_size), mode="bilinear", align_corners=False)
    X = X.repeat(1, num_channels, 1, 1)
    pretrain(model, X.numpy(), public.y[:pretrain_rows] % n_classes, pretrain_steps, lr)
    record = {
        "architecture": "vit-tiny",
        "config": config,
        "kind": "image",
        "n_classes": n_classes,
        "input_shape": [num_channels, image_size, image_size],
        "targets": None,
        "settings": {
            "image_size": image_size,
            "num_channels": num_channels,
            "n_classes": n_classes,
            "patch_size": patch_size,
            "seed": seed,
            "pretrain_steps": pretrain_steps,
            "lr": lr,
            "pretrain_rows": pretrain_rows,
        },
        "pretraining": {"data": public.digest(), "rows": pretrain_rows, "optimizer": "full-batch Adam, float64"},
    }
    return model, record


BUILDERS: dict[str, Callable[..., tuple[nn.Module, dict]]] = {"tabular-mlp": build_tabular_mlp, "vit-tiny": build_vit_tiny}


def _versions() -> dict:
    import safetensors
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "threads": 1,
    }


def build_files(name: str, **settings) -> dict[str, bytes]:
    """The files of base ``name`` built with ``settings``: ``{"base.json": ..., "model.safetensors": ...}``.
    Runs with one torch thread (restored afterwards)."""
    if name not in BUILDERS:
        raise ForgeValueError(f"no builder for base {name!r}", fix=f"use one of: {', '.join(sorted(BUILDERS))}", code="base.unknown")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, record = BUILDERS[name](**settings)
    finally:
        torch.set_num_threads(threads)
    round_to_grid(model)
    weights = weights_bytes(model)
    record = {"format": BASE_FORMAT, "name": name, **record, "built_with": _versions()}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    return {BASE_FILE: text.encode("utf-8"), WEIGHTS_FILE: weights}


def write_base(name: str, out: str | Path, *, overwrite: bool = False, **settings) -> str:
    """Build base ``name`` into directory ``out`` (atomically); returns its digest."""
    files = build_files(name, **settings)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for rel, data in files.items():
            (tmp / rel).write_bytes(data)
    return directory_digest(Path(out), sorted(files))[0]
