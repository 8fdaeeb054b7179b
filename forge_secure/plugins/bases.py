"""Base models: the frozen networks that plugins adapt.

A base is identified by the sha256 of its weights: the bytes of
``safetensors.torch.save(model.state_dict())``. Built-in bases are registered by name in
:data:`BASES` and are made deterministically, so every site that asks for ``tabular-mlp``
gets the same digest without downloading anything:

1. parameters are initialised from a seeded NumPy ``Generator`` (PCG64);
2. pretraining is full-batch Adam in **float64** on the bundled public split (no sampling,
   no dropout), so the only machine dependence is BLAS summation order (~1e-15 relative);
3. the weights are then rounded onto a coarse grid (multiples of ``2**-16``) and stored as
   float32, which removes those last-bit differences before hashing.

The pretrained weights are cached as safetensors under ``home.cache_dir("bases")``, keyed
by the builder's settings, with their digest beside them; a cache file whose bytes do not
hash to the recorded digest is discarded and rebuilt.

Built-ins
---------
- ``tabular-mlp``: ``fc1`` (30 -> 64), ``fc2`` (64 -> 64), ``head`` (64 -> 2), ReLU. LoRA
  targets the hidden layers ``fc1`` and ``fc2``. Pretrained (60 full-batch Adam steps,
  lr 0.01) on the 113-row public split **using only the ten standard-error features**
  (columns 10-19; fc1's weights for the other twenty are exactly zero). The full data is
  easy (a linear model on all features reaches about 97 %), so a base trained on all of it
  would leave plugins nothing to learn; this one reaches 0.81 / 0.79 / 0.88 accuracy on the
  three bundled sites' test splits, and plugins gain by
  bringing in the other features through their fc1 update, and by fitting their site's
  label skew.
- ``vit-tiny``: a ``transformers`` ``ViTForImageClassification`` built from a
  ``ViTConfig`` (hidden 64, 2 layers, 2 heads, MLP 128, patch 2, image 8x8x1, 10 classes),
  pretrained briefly (30 full-batch float64 Adam steps on the first 128 public digits, about
  50 % test accuracy; float64 keeps the digest machine-independent but costs a few seconds
  on the first build); LoRA targets the attention query and value projections (``q_proj`` /
  ``v_proj`` in transformers 5), as MedForge does.
- Any local Hugging Face model directory (``from_pretrained(path, local_files_only=True)``,
  safetensors weights only), digest computed from its loaded weights; LoRA targets its
  attention q/v projections, found by name.

Hugging Face models are wrapped so that ``forward(x)`` returns the logits tensor.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import home
from ..errors import ForgeDataError, ForgeFileError, ForgeValueError
from ..fileio import atomic_write_bytes, atomic_write_json, canonical_json, sha256_bytes
from ..registry import Registry

GRID = 2.0 ** -16
CACHE_FORMAT = "forge-base-cache/1"


@dataclass(frozen=True, eq=False)
class Base:
    """A frozen base model and its identity."""

    name: str
    model: nn.Module
    digest: str
    target_modules: tuple[str, ...]
    kind: str
    n_classes: int
    input_shape: tuple[int, ...] = ()   # shape of one record, e.g. (30,) or (1, 8, 8); () if unknown
    settings: dict = field(default_factory=dict)  # builder settings (recorded in forge.json)

    def describe(self) -> dict:
        return {"name": self.name, "digest": self.digest, "settings": dict(self.settings)}


BASES: Registry[Callable[..., Base]] = Registry("base model")


# --------------------------------------------------------------------------- helpers

def weights_bytes(model: nn.Module) -> bytes:
    """The canonical bytes of a model's weights: safetensors of its state dict (CPU, contiguous)."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return save(state)


def weights_digest(model: nn.Module) -> str:
    return sha256_bytes(weights_bytes(model))


def _round_to_grid(model: nn.Module) -> None:
    """Round every parameter and buffer onto multiples of GRID, in float32."""
    model.float()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(torch.round(t.double() / GRID) * GRID)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _numpy_init(model: nn.Module, seed: int) -> None:
    """Initialise all parameters from a seeded NumPy Generator (stable across machines):
    weights U(-k, k) with k = 1/sqrt(fan_in) (PyTorch's Linear default), biases 0,
    LayerNorm weight 1 / bias 0."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:  # LayerNorm scale, embeddings tokens
                if "layernorm" in name.lower() or "norm" in name.lower():
                    p.fill_(1.0)
                else:
                    p.copy_(torch.from_numpy(rng.normal(0.0, 0.02, size=tuple(p.shape))))
            else:
                fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else p.shape[0]
                k = 1.0 / np.sqrt(fan_in)
                p.copy_(torch.from_numpy(rng.uniform(-k, k, size=tuple(p.shape))))


def _pretrain(model: nn.Module, X: np.ndarray, y: np.ndarray, steps: int, lr: float) -> None:
    """Full-batch Adam in float64 (deterministic: no sampling, no dropout)."""
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


_cache_lock = threading.Lock()
_memo: dict[str, Base] = {}


def _cached_build(name: str, settings: dict, make: Callable[[], nn.Module], pretrain: Callable[[nn.Module], None]) -> tuple[nn.Module, str]:
    """Return (frozen model, digest), from the on-disk cache when its digest checks out."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    key = sha256_bytes(canonical_json({"format": CACHE_FORMAT, "name": name, "settings": settings, "torch": torch.__version__.split("+")[0]}))[:20]
    folder = home.cache_dir("bases")
    wfile, mfile = folder / f"{name}-{key}.safetensors", folder / f"{name}-{key}.json"
    with torch.random.fork_rng(devices=[]):  # constructors draw from the global RNG: leave it untouched
        torch.manual_seed(0)
        model = make()
    if wfile.is_file() and mfile.is_file():
        try:
            raw = wfile.read_bytes()
            recorded = json.loads(mfile.read_text())["digest"]
            if sha256_bytes(raw) == recorded:
                model.load_state_dict(load(raw), strict=True)
                return _freeze(model), recorded
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
            pass  # unreadable or tampered cache: rebuild below
    pretrain(model)
    _round_to_grid(model)
    raw = weights_bytes(model)
    digest = sha256_bytes(raw)
    atomic_write_bytes(wfile, raw)
    atomic_write_json(mfile, {"format": CACHE_FORMAT, "name": name, "settings": settings, "digest": digest})
    return _freeze(model), digest


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ForgeValueError(f"{name} {value!r} must be an integer >= {low}", code="base.settings")
    return int(value)


# --------------------------------------------------------------------------- tabular-mlp

class TabularMLP(nn.Module):
    """30 -> 64 -> 64 -> 2 multilayer perceptron with named layers fc1, fc2, head."""

    def __init__(self, d_in: int = 30, hidden: int = 64, n_classes: int = 2):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


# The tabular base sees only the ten "standard error" features of the breast-cancer data
# (columns 10-19); its fc1 weights for the other twenty are exactly zero. A plugin's fc1
# update B A (A spans all 30 inputs) is what brings the mean and worst-case features in.
TABULAR_BASE_FEATURES = tuple(range(10, 20))


@BASES.register("tabular-mlp")
def build_tabular_mlp(*, hidden: int = 64, seed: int = 0, pretrain_steps: int = 60, lr: float = 0.01,
                      init_scale: float = 1.0) -> Base:
    """The tabular base, pretrained on the bundled breast-cancer public split using only
    the standard-error features (:data:`TABULAR_BASE_FEATURES`), so that it is useful
    (about 82 % accuracy on the sites' test splits) but leaves the sites something to learn."""
    from .data import bundled_splits

    hidden = _check_int("hidden", hidden)
    pretrain_steps = _check_int("pretrain_steps", pretrain_steps, 0)
    seed = _check_int("seed", seed, 0)
    public = bundled_splits().public
    d_in, n_classes = public.X.shape[1], public.n_classes
    settings = {"hidden": hidden, "seed": seed, "pretrain_steps": pretrain_steps, "lr": repr(float(lr)),
                "init_scale": repr(float(init_scale)), "data": public.digest(),
                "features": list(TABULAR_BASE_FEATURES)}

    def make() -> nn.Module:
        return TabularMLP(d_in, hidden, n_classes)

    def pretrain(model: nn.Module) -> None:
        _numpy_init(model, seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(float(init_scale))
        keep = np.zeros(d_in, dtype=bool)
        keep[list(TABULAR_BASE_FEATURES)] = True
        with torch.no_grad():
            model.fc1.weight[:, torch.from_numpy(~keep)] = 0.0
        X = np.where(keep, public.X, 0.0)  # masked inputs: the zeroed weights get no gradient
        _pretrain(model, X, public.y, pretrain_steps, float(lr))

    model, digest = _cached_build("tabular-mlp", settings, make, pretrain)
    return Base("tabular-mlp", model, digest, ("fc1", "fc2"), "tabular", n_classes, (d_in,),
                {"hidden": hidden, "seed": seed, "pretrain_steps": pretrain_steps, "lr": float(lr), "init_scale": float(init_scale)})


# --------------------------------------------------------------------------- Hugging Face models

class HFClassifier(nn.Module):
    """Wrap a Hugging Face classifier so that ``forward(x)`` returns the logits tensor."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        self.input_name = getattr(hf_model, "main_input_name", "pixel_values")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(**{self.input_name: x}).logits


# attention query/value projection names used by common HF architectures (MedForge targets q/v)
QV_NAMES = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"))


def attention_qv_targets(model: nn.Module) -> tuple[str, ...]:
    """The names (last components) of the attention query and value Linear layers."""
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for q, v in QV_NAMES:
        if q in leaves and v in leaves:
            return (q, v)
    raise ForgeValueError(
        "cannot find the attention query/value projections in this model",
        fix="name the LoRA targets explicitly (TrainConfig.targets)",
        code="base.no_targets",
    )


def vit_config(image_size: int = 8, num_channels: int = 1, n_classes: int = 10, patch_size: int = 2, hidden: int = 64,
               layers: int = 2, heads: int = 2, intermediate: int = 128):
    from transformers import ViTConfig

    return ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=num_channels, hidden_size=hidden,
                     num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
                     num_labels=n_classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@BASES.register("vit-tiny")
def build_vit_tiny(*, image_size: int = 8, num_channels: int = 1, n_classes: int = 10, patch_size: int = 2,
                   seed: int = 0, pretrain_steps: int = 30, lr: float = 0.01, pretrain_rows: int = 128) -> Base:
    """A tiny ViT pretrained briefly on the public digits split.

    Other image sizes/channels/class counts are allowed (e.g. for MedMNIST files): the
    digits are then resized (bilinear), repeated over channels, and labelled ``y mod C``
    for pretraining, which only serves as a generic, deterministic warm start.
    """
    from transformers import ViTForImageClassification

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
    public = bundled_image_splits().public
    settings = {"image_size": image_size, "num_channels": num_channels, "n_classes": n_classes, "patch_size": patch_size,
                "seed": seed, "pretrain_steps": pretrain_steps, "lr": repr(float(lr)), "pretrain_rows": pretrain_rows,
                "data": public.digest()}
    config = vit_config(image_size, num_channels, n_classes, patch_size)
    config._attn_implementation = "eager"

    def make() -> nn.Module:
        return HFClassifier(ViTForImageClassification(config))

    def pretrain(model: nn.Module) -> None:
        _numpy_init(model, seed)
        X = torch.tensor(public.X[:pretrain_rows], dtype=torch.float64)
        if image_size != X.shape[-1]:
            X = nn.functional.interpolate(X, size=(image_size, image_size), mode="bilinear", align_corners=False)
        X = X.repeat(1, num_channels, 1, 1)
        _pretrain(model, X.numpy(), public.y[:pretrain_rows] % n_classes, pretrain_steps, float(lr))

    model, digest = _cached_build("vit-tiny", settings, make, pretrain)
    return Base("vit-tiny", model, digest, attention_qv_targets(model), "image", n_classes,
                (num_channels, image_size, image_size),
                {"image_size": image_size, "num_channels": num_channels, "n_classes": n_classes, "patch_size": patch_size,
                 "seed": seed, "pretrain_steps": pretrain_steps, "lr": float(lr), "pretrain_rows": pretrain_rows})


def load_hf_base(path: str | Path) -> Base:
    """A Hugging Face classification model from a local directory (safetensors only)."""
    path = Path(path)
    if not path.is_dir():
        raise ForgeFileError(f"base model directory {path} does not exist", fix="give a local Hugging Face model directory", code="base.missing")
    if not (path / "config.json").is_file():
        raise ForgeFileError(f"{path} has no config.json, so it is not a Hugging Face model directory",
                             fix="give a directory written by save_pretrained", code="base.not_hf")
    if not any(path.glob("*.safetensors")):
        raise ForgeFileError(f"{path} holds no .safetensors weights", fix="convert the weights to safetensors (pickled weights are refused)",
                             code="base.no_safetensors")
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ForgeDataError(f"{path}/config.json cannot be read as a model configuration ({e})", fix="restore the directory from a good copy",
                             code="base.bad_config") from None
    hf = None
    for auto in (AutoModelForImageClassification, AutoModelForSequenceClassification):
        try:
            hf, info = auto.from_pretrained(path, local_files_only=True, use_safetensors=True, attn_implementation="eager",
                                            output_loading_info=True)
            break
        except ValueError as e:
            if "Unrecognized configuration class" in str(e):  # not of this model family: try the next
                continue
            raise ForgeDataError(f"cannot load the model in {path} ({str(e)[:200]})", fix="restore the directory from a good copy",
                                 code="base.bad_weights") from None
        except Exception as e:  # OSError, RuntimeError, safetensors' own errors for truncated files, ...
            raise ForgeDataError(f"cannot load the model in {path} ({e.__class__.__name__}: {str(e)[:200]})",
                                 fix="restore the directory from a good copy", code="base.bad_weights") from None
    if hf is None:
        raise ForgeValueError(f"{path} holds a {config.model_type!r} model, which is not an image or sequence classifier",
                              fix="give a model with a classification head", code="base.unsupported")
    missing = list(info.get("missing_keys") or [])
    if missing:  # freshly initialised weights would make the digest differ on every load
        raise ForgeDataError(
            f"the model in {path} has no stored weights for {', '.join(sorted(missing)[:4])}",
            fix="give a complete classification model (with its trained head) saved by save_pretrained",
            code="base.incomplete",
        )
    hf.float()
    model = _freeze(HFClassifier(hf))
    image = model.input_name == "pixel_values"
    shape = (int(getattr(config, "num_channels", 3)), int(config.image_size), int(config.image_size)) if image and hasattr(config, "image_size") else ()
    return Base(str(path.resolve()), model, weights_digest(model), attention_qv_targets(model), "image" if image else "sequence",
                int(config.num_labels), shape, {})


# --------------------------------------------------------------------------- entry points

def load_base(name_or_path: str | Path, **kwargs) -> Base:
    """A base by registered name (``tabular-mlp``, ``vit-tiny``; ``kwargs`` go to its
    builder) or by the path of a local Hugging Face model directory. Results are memoised
    in-process (a directory only while its files are unchanged); the model is frozen, so use
    :func:`fresh_copy` before wrapping it."""
    name = str(name_or_path)
    memo_key = name + "|" + canonical_json({k: repr(v) for k, v in kwargs.items()}).decode()
    if name not in BASES and Path(name).is_dir():  # a directory: remember it only while its files are unchanged
        files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(name).iterdir() if f.is_file())
        memo_key = str(Path(name).resolve()) + "|" + repr(files)
    with _cache_lock:
        if memo_key in _memo:
            return _memo[memo_key]
    if name in BASES:
        base = BASES.get(name)(**kwargs)
    elif Path(name).is_dir() or "/" in name or name.startswith("."):
        if kwargs:
            raise ForgeValueError(f"settings {sorted(kwargs)} apply only to built-in bases", code="base.settings")
        base = load_hf_base(name)
    else:
        raise ForgeValueError(
            f"unknown base model {name!r}",
            fix=f"use one of: {', '.join(BASES.names())}, or the path of a local Hugging Face model directory",
            code="base.unknown",
        )
    with _cache_lock:
        _memo[memo_key] = base
    return base


def fresh_copy(base: Base) -> nn.Module:
    """A deep copy of the frozen base model, to wrap with PEFT (the shared one is never changed)."""
    return copy.deepcopy(base.model)
