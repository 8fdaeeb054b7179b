"""DP synthetic data for tuning merge weights and routers.

A site releases **per-class noisy sums** of clipped embeddings together with noisy class
counts, by one Gaussian mechanism (Dwork and Roth 2014, Thm A.1; accounted with the
site's accountant as one step at sample rate 1, i.e. ``(sigma, 1.0, 1)`` in the history):

- each record contributes the vector ``v_i = [clip(e_i, C / sqrt 2) in its class block,
  C / sqrt 2 in its class's count slot]``, so ``||v_i|| <= C`` and adding or removing one
  record moves the released vector by at most ``C`` in L2 (the sensitivity);
- the release is ``sum_i v_i + N(0, sigma^2 C^2 I)``; the noisy class means are the noisy
  sums divided by the noisy counts (post-processing).

Synthetic samples are then fitted to the noisy means (post-processing, no further privacy
cost). Embeddings live in one of two spaces:

- ``input`` (default for tabular bases): the standardised feature vector itself; samples
  are drawn around each noisy class mean with a *public* spread (``spread``, in the units
  of the features, which the bundled data standardises with the public split's statistics);
- ``head`` (default for image and Hugging Face bases): the input of the base model's last
  linear layer; samples are inputs optimised (Adam, seeded) so that their embedding matches
  the noisy mean of their class, from seeded random starts.

The result is a :class:`forge_secure.plugins.data.Dataset` saved as one ``.npz`` (arrays
``X``, ``y`` and ``meta``, the release record as UTF-8 JSON bytes), read back with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ForgeConfigError, ForgeDataError, ForgeFileError
from ..fileio import atomic_output

if TYPE_CHECKING:
    from ..plugins.data import Dataset

SYNTH_FORMAT = "forge-synthetic/1"
SPACES = ("auto", "input", "head")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a DP synthetic-data release; validated on construction."""

    noise_multiplier: float | None = None  # sigma; or give target_epsilon
    target_epsilon: float | None = None
    delta: float = 1e-5
    clip: float = 8.0  # C: L2 bound of each record's contribution
    per_class: int = 100  # synthetic samples per class (before weighting by noisy counts)
    space: str = "auto"
    spread: float = 0.5  # public spread around the class means ("input" space)
    steps: int = 200  # optimisation steps ("head" space)
    lr: float = 0.05
    accountant: str = "prv"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ForgeConfigError(
                "give exactly one of noise_multiplier (--sigma) and target_epsilon (--epsilon)",
                fix="e.g. --epsilon 1.0",
                code="synth.config",
            )
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ForgeConfigError(
                f"noise multiplier {self.noise_multiplier} must be positive", fix="e.g. --sigma 2.0", code="synth.config"
            )
        if self.target_epsilon is not None and not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ForgeConfigError(
                f"target epsilon {self.target_epsilon} must be positive and finite", fix="e.g. --epsilon 1.0", code="synth.config"
            )
        if not 0 < self.delta < 1:
            raise ForgeConfigError(f"delta {self.delta} must be in (0, 1)", fix="e.g. --delta 1e-5", code="synth.config")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ForgeConfigError(f"clip {self.clip} must be positive", fix="e.g. --clip 8", code="synth.config")
        if not (isinstance(self.per_class, int) and self.per_class >= 1):
            raise ForgeConfigError(f"per_class {self.per_class!r} must be a positive integer", code="synth.config")
        if self.space not in SPACES:
            raise ForgeConfigError(f"space {self.space!r} is not known", fix=f"use one of: {', '.join(SPACES)}", code="synth.config")
        if not (self.spread >= 0 and self.steps >= 1 and self.lr > 0):
            raise ForgeConfigError("spread must be >= 0, steps >= 1 and lr > 0", code="synth.config")


@dataclass(frozen=True, eq=False)
class ClassMeansRelease:
    """What leaves the site: noisy class means and counts, and how they were made."""

    means: np.ndarray  # (C, d) float64
    counts: np.ndarray  # (C,) float64, noisy (may be < 1)
    space: str
    record: dict  # sigma, clip, delta, epsilon, accountant, rows


@dataclass(frozen=True, eq=False)
class SyntheticData:
    dataset: Dataset
    meta: dict


def resolve_space(base, space: str) -> str:
    if space != "auto":
        return space
    return "input" if getattr(base, "kind", "") == "tabular" else "head"


def head_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The last linear layer of the model (its classification head)."""
    last = None
    for _, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    if last is None:
        raise ForgeDataError("the base model has no linear layer to take embeddings from", fix="use --space input", code="synth.no_head")
    return last


def embed(base, X: np.ndarray | torch.Tensor, space: str, *, grad: bool = False) -> torch.Tensor:
    """Embeddings of ``X``: the inputs themselves (``input``) or the head's input (``head``)."""
    Xt = X if isinstance(X, torch.Tensor) else torch.tensor(np.asarray(X, dtype=np.float32))
    if space == "input":
        return Xt.reshape(len(Xt), -1)
    captured = []
    handle = head_layer(base.model).register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    try:
        with torch.set_grad_enabled(grad):
            base.model(Xt)
    finally:
        handle.remove()
    e = captured[-1]
    return e.reshape(len(Xt), -1)


def compute_epsilon(history, delta: float, accountant: str = "prv") -> float:
    """Epsilon of ``history`` with the privacy package's accountants (Opacus)."""
    from .accountants import compute_epsilon as _compute

    return float(_compute(history, delta, accountant))


def sigma_for_epsilon(epsilon: float, delta: float, accountant: str = "prv") -> float:
    """The smallest noise multiplier of one release (sample rate 1, one step) within ``epsilon``."""
    from .accountants import calibrate_noise_multiplier

    return float(calibrate_noise_multiplier(epsilon, delta, 1.0, 1, accountant))


def release_class_means(base, data, *, sigma: float, clip: float, space: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian-mechanism release described above: (noisy means, noisy counts)."""
    emb = embed(base, data.X, space).detach().double().numpy()
    n, d = emb.shape
    C = data.n_classes
    part = clip / math.sqrt(2.0)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    clipped = emb * np.minimum(1.0, part / np.maximum(norms, 1e-12))
    sums = np.zeros((C, d))
    np.add.at(sums, data.y, clipped)
    counts = np.bincount(data.y, minlength=C).astype(np.float64) * part
    noisy_sums = sums + rng.normal(0.0, sigma * clip, size=sums.shape)
    noisy_counts = (counts + rng.normal(0.0, sigma * clip, size=C)) / part
    means = noisy_sums / np.maximum(noisy_counts, 1.0)[:, None]
    return means, noisy_counts


def fit_samples(
    base,
    means: np.ndarray,
    counts: np.ndarray,
    *,
    space: str,
    per_class: int,
    spread: float,
    steps: int,
    lr: float,
    rng: np.random.Generator,
    input_shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic inputs per class (post-processing of the release only)."""
    C = len(means)
    share = np.clip(counts, 1.0, None)
    share = share / share.sum()
    n_per = np.maximum(1, np.round(share * per_class * C)).astype(int)
    y = np.repeat(np.arange(C), n_per)
    if space == "input":
        X = means[y] + rng.normal(0.0, spread, size=(len(y), means.shape[1]))
        return X.reshape((len(y),) + tuple(input_shape)).astype(np.float32), y.astype(np.int64)
    image = getattr(base, "kind", "") == "image"
    start = (
        rng.uniform(0.0, 1.0, size=(len(y),) + tuple(input_shape)) if image else rng.normal(0.0, 1.0, size=(len(y),) + tuple(input_shape))
    )
    x = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    target = torch.as_tensor(means[y], dtype=torch.float32)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        e = embed(base, x, space, grad=True)
        loss = ((e - target) ** 2).sum(1).mean() / max(float((target**2).sum(1).mean()), 1e-12)
        loss.backward()
        opt.step()
        if image:
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
    return x.detach().numpy().astype(np.float32), y.astype(np.int64)


def make_synthetic(base, data, config: SynthConfig, *, site: str, ledger=None) -> SyntheticData:
    """Release noisy class means of ``data`` (charged to ``ledger`` first, if given) and fit
    synthetic samples to them."""
    from ..plugins.data import Dataset

    if len(data) == 0:
        raise ForgeDataError(f"data set {data.name} is empty", fix="give the site's training data", code="synth.empty")
    space = resolve_space(base, config.space)
    if config.noise_multiplier is not None:
        sigma = config.noise_multiplier
    else:
        assert config.target_epsilon is not None  # SynthConfig holds exactly one of the two
        sigma = sigma_for_epsilon(config.target_epsilon, config.delta, config.accountant)
    history = [(float(sigma), 1.0, 1)]
    epsilon = compute_epsilon(history, config.delta, config.accountant)
    if ledger is not None:
        ledger.check(history, config.delta, accountant=config.accountant)
    rng = np.random.default_rng(config.seed)
    means, counts = release_class_means(base, data, sigma=sigma, clip=config.clip, space=space, rng=rng)
    if ledger is not None:
        ledger.record(
            history,
            kind="synthetic",
            delta=config.delta,
            accountant=config.accountant,
            note={"release": "noisy class means", "clip": config.clip, "space": space, "rows": len(data)},
        )
    input_shape = tuple(data.X.shape[1:])
    X, y = fit_samples(
        base,
        means,
        counts,
        space=space,
        per_class=config.per_class,
        spread=config.spread,
        steps=config.steps,
        lr=config.lr,
        rng=rng,
        input_shape=input_shape,
    )
    meta = {
        "format": SYNTH_FORMAT,
        "site": site,
        "base": base.describe() if hasattr(base, "describe") else {"name": base.name, "digest": base.digest},
        "source": data.name,
        "kind": data.kind,
        "n_classes": int(data.n_classes),
        "space": space,
        "release": {
            "mechanism": "gaussian",
            "noise_multiplier": float(sigma),
            "clip": config.clip,
            "sensitivity": config.clip,
            "delta": config.delta,
            "epsilon": float(epsilon),
            "accountant": config.accountant,
            "history": [list(h) for h in history],
        },
        "config": asdict(config),
        "rows": int(len(y)),
        "noisy_counts": [float(c) for c in counts],
    }
    ds = Dataset(
        X=X,
        y=y,
        n_classes=int(data.n_classes),
        name=f"synthetic:{site}",
        kind=data.kind,
        feature_names=tuple(getattr(data, "feature_names", ()) or ()),
    )
    return SyntheticData(ds, meta)


def combine_synthetic(parts: list[SyntheticData]) -> SyntheticData:
    """Pool several sites' synthetic sets (post-processing; each keeps its own record)."""
    from ..plugins.data import Dataset

    if not parts:
        raise ForgeDataError("no synthetic data sets to combine", code="synth.empty")
    first = parts[0].dataset
    X = np.concatenate([p.dataset.X for p in parts])
    y = np.concatenate([p.dataset.y for p in parts])
    meta = {
        "format": SYNTH_FORMAT,
        "site": "+".join(p.meta["site"] for p in parts),
        "base": parts[0].meta["base"],
        "kind": first.kind,
        "n_classes": first.n_classes,
        "parts": [p.meta for p in parts],
        "rows": int(len(y)),
    }
    return SyntheticData(Dataset(X=X, y=y, n_classes=first.n_classes, name="synthetic:pooled", kind=first.kind), meta)


def save_synthetic(synth: SyntheticData, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.exists():
        raise ForgeFileError(f"{path} already exists", fix="choose another --out", code="file.exists")
    meta_bytes = np.frombuffer(json.dumps(synth.meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_output(path) as f:
        np.savez(f, X=synth.dataset.X, y=synth.dataset.y, meta=meta_bytes)
    return path


def load_synthetic(path: str | os.PathLike) -> SyntheticData:
    """Read a synthetic set written by :func:`save_synthetic` (no pickle)."""
    import zipfile

    from ..plugins.data import Dataset

    path = Path(path)
    if not path.exists():
        raise ForgeFileError(f"synthetic data {path} does not exist", fix="make it with `forge synth`", code="file.missing")
    if path.is_dir():
        raise ForgeFileError(
            f"synthetic data {path} is a directory", fix="give the .npz file written by `forge synth`", code="file.is_directory"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            X, y, raw = z["X"], z["y"], z["meta"]
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as e:
        raise ForgeDataError(
            f"{path} is not a forge synthetic data file ({e.__class__.__name__})",
            fix="make it again with `forge synth`; it may be truncated",
            code="synth.bad_file",
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != SYNTH_FORMAT:
        raise ForgeDataError(f"{path} is not a {SYNTH_FORMAT} file", fix="make it with `forge synth`", code="synth.bad_file")
    try:
        ds = Dataset(X=X, y=y, n_classes=int(meta["n_classes"]), name=f"synthetic:{meta.get('site')}", kind=meta["kind"])
    except (KeyError, TypeError, ValueError) as e:
        raise ForgeDataError(
            f"{path} holds inconsistent arrays ({e})", fix="make it again with `forge synth`", code="synth.bad_file"
        ) from None
    if not np.isfinite(ds.X).all():
        raise ForgeDataError(f"{path} holds NaN or infinite values", fix="make it again with `forge synth`", code="synth.bad_file")
    return SyntheticData(ds, meta)
