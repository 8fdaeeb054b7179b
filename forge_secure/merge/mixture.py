"""Mixture: keep the plugins apart and mix their predictions (MedForge's second merge).

``p(y | x) = sum_j w_j(x) softmax(f(x; W0 + dW_j))`` with a router giving ``w(x)`` on the
simplex. Routers register by name in :data:`ROUTERS`:

- ``static``: fixed weights, as in MedForge: training-set sizes by default, or tuned on
  (synthetic) data with nevergrad NGOpt (budget 40, start 0.5, weights in [0, 1.5] then
  normalised, plus ``0.05 * mean |w|``), following LoraHub (Huang et al. 2023);
- ``gate``: a small linear softmax gate on base-model embeddings, fitted on synthetic data
  by minimising the mixture's negative log-likelihood (a mixture of experts, Jacobs,
  Jordan, Nowlan and Hinton 1991), seeded;
- ``similarity``: training-free; ``w_j(x)`` proportional to how strongly plugin ``j``'s
  update responds to the input, ``sum_m ||s_j B_j A_j h_m(x)|| / ||h_m(x)||`` over the
  target layers ``m`` (``h_m`` the layer's input in the base model).

:meth:`Mixture.logits` returns the log of the mixture probabilities, so attack suites can
treat a mixture like any model. A mixture is saved as a directory: ``plugins/NN-site/``
(the plugin directories as they are), ``mixture.json`` and, for the gate,
``router.safetensors``; :func:`load_mixture` reads it back.
"""

from __future__ import annotations

import abc
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from ..errors import ForgeDataError, ForgeFileError, ForgeValueError
from ..fileio import atomic_directory, atomic_write_json, read_json_file, sha256_file
from ..registry import Registry
from .adapter import LoraAdapter, module_path, normalise_weights
from .evaluate import log_softmax

if TYPE_CHECKING:
    from ..plugins.bases import Base

MIXTURE_FORMAT = "forge-mixture/1"
ROUTERS: Registry[type[Router]] = Registry("mixture router")


def _softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(z))


class Router(BaseEstimator, abc.ABC):
    """A router, shaped like a scikit-learn estimator: settings in ``__init__`` (stored
    unchanged), ``fit(plugins, X, y, ...)`` learns the state that ends with an underscore,
    ``route(mixture, X)`` gives the weights. ``from_saved`` rebuilds a fitted router from a mixture
    directory. Class attributes: ``needs_data`` (fitted on labelled, DP synthetic, data) and,
    from the signature, whether the router takes given ``weights``."""

    name: ClassVar[str] = "router"
    needs_data: ClassVar[bool] = False

    @classmethod
    def takes_weights(cls) -> bool:
        return "weights" in cls._get_param_names()

    @abc.abstractmethod
    def fit(
        self,
        plugins: Sequence,
        X: np.ndarray | None = None,
        y: np.ndarray | None = None,
        *,
        base=None,
        records: Sequence | None = None,
        source: str | None = None,
    ) -> Router:
        """Learn the routing for ``plugins`` (loaded plugins); ``X, y``: tuning data (DP
        synthetic), ``records``: the plugins' forge.json records, ``source``: where X came from."""

    @abc.abstractmethod
    def _weights(self, mixture: Mixture, X: np.ndarray) -> np.ndarray:
        """Routing weights of every record over the J components, shape (n, J)."""

    @classmethod
    @abc.abstractmethod
    def from_saved(cls, folder: Path, meta: dict, n_plugins: int) -> Router:
        """The fitted router that :meth:`Mixture.save` wrote into ``folder`` (``mixture.json`` = ``meta``)."""

    def route(self, mixture: Mixture, X: np.ndarray) -> np.ndarray:
        """Routing weights ``(n, J)`` of a fitted router."""
        try:
            check_is_fitted(self)
        except NotFittedError:
            raise ForgeValueError(
                f"the {self.name} router is not fitted",
                fix="call fit(plugins, ...) first, or use build_mixture",
                code="mixture.router_not_fitted",
            ) from None
        return self._weights(mixture, X)

    def to_json(self) -> dict:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}


@ROUTERS.register("static")
class StaticRouter(Router):
    """Fixed weights: ``weights`` as given, else tuned on ``X, y`` (NGOpt, ``budget``, ``l1``,
    ``seed``), else the training-set sizes of the plugins' records; normalised in ``fit``."""

    name = "static"

    def __init__(self, weights: Sequence[float] | None = None, *, budget: int = 40, l1: float = 0.05, seed: int = 0):
        self.weights = weights
        self.budget = budget
        self.l1 = l1
        self.seed = seed

    def fit(self, plugins, X=None, y=None, *, base=None, records=None, source=None):
        from .io import default_weights

        J = len(plugins)
        if self.weights is not None:
            w, details = normalise_weights(self.weights, J), {"weight_source": "given"}
        elif X is not None:
            w, info = tune_static_weights(plugins, X, y, budget=self.budget, l1=self.l1, seed=self.seed)
            details = {**info, "weight_source": "tuned on synthetic data", **({"tuned_on": source} if source is not None else {})}
        else:
            if records is None:
                raise ForgeValueError(
                    "the static router needs weights, tuning data or the plugins' records (training-set sizes)",
                    fix="give weights, or build the mixture with build_mixture",
                    code="merge.bad_weights",
                )
            w, details = normalise_weights(default_weights(records), J), {"weight_source": "training-set sizes"}
        self.weights_, self.details_ = w, details
        return self

    def _weights(self, mixture, X):
        return np.tile(np.asarray(self.weights_, dtype=np.float64), (len(X), 1))

    def to_json(self) -> dict:
        return {"weights": list(self.weights_)}

    @classmethod
    def from_saved(cls, folder, meta, n_plugins):
        saved = list((meta.get("router_settings") or {}).get("weights") or [])
        if len(saved) != n_plugins:
            raise ForgeDataError(
                "mixture.json has a different number of weights than plugins", fix="write the mixture again", code="mixture.bad_meta"
            )
        return cls(saved).fit([None] * n_plugins)


@ROUTERS.register("gate")
class GateRouter(Router):
    """``w(x) = softmax(W e(x) + b)``, ``e`` the base-model embedding (standardised), fitted on
    ``X, y`` by :func:`fit_gate`'s full-batch Adam (``epochs``, ``lr``, ``l2``, ``seed``)."""

    name = "gate"
    needs_data = True

    def __init__(self, *, space: str = "auto", epochs: int = 300, lr: float = 0.05, l2: float = 1e-3, seed: int = 0):
        self.space = space
        self.epochs = epochs
        self.lr = lr
        self.l2 = l2
        self.seed = seed

    def fit(self, plugins, X=None, y=None, *, base=None, records=None, source=None):
        from ..privacy.synthetic import embed, resolve_space

        if X is None or y is None:
            raise ForgeValueError(
                "the gate router is fitted on data and got none",
                fix="give synthetic data with --tune-on (forge synth)",
                code="merge.needs_tuning_data",
            )
        base = base if base is not None else plugins[0].base
        space = resolve_space(base, self.space)
        gen = torch.Generator().manual_seed(int(self.seed))
        e = embed(base, X, space).detach().double()
        mu, sd = e.mean(0), e.std(0).clamp_min(1e-6)
        e = (e - mu) / sd
        comp = torch.as_tensor(np.stack([p.predict_proba(X) for p in plugins]))  # (J, n, C)
        picked = comp[:, torch.arange(len(y)), torch.as_tensor(y)].T  # (n, J)
        J, d = len(plugins), e.shape[1]
        W = (torch.randn(J, d, generator=gen, dtype=torch.float64) * 0.01).requires_grad_(True)
        b = torch.zeros(J, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=self.lr)
        for _ in range(int(self.epochs)):
            opt.zero_grad()
            logw = torch.log_softmax(e @ W.T + b, dim=1)
            nll = -torch.logsumexp(logw + torch.log(picked.clamp_min(1e-300)), dim=1).mean()
            loss = nll + self.l2 * (W**2).sum()
            loss.backward()
            opt.step()
        self._set_state(W.detach(), b.detach(), mu, sd, space)
        self.details_ = {**({"fitted_on": source} if source is not None else {}), "seed": self.seed}
        return self

    def _set_state(self, W: torch.Tensor, b: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor, space: str) -> None:
        self.W_, self.b_, self.mu_, self.sd_, self.space_ = W, b, mu, sd, space

    def _weights(self, mixture, X):
        from ..privacy.synthetic import embed

        e = (embed(mixture.base, X, self.space_).detach().double() - self.mu_.double()) / self.sd_.double()
        z = e @ self.W_.double().T + self.b_.double()
        return torch.softmax(z, dim=1).numpy()

    def to_json(self) -> dict:
        return {"space": self.space_}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "W": self.W_.float().contiguous(),
            "b": self.b_.float().contiguous(),
            "mu": self.mu_.float().contiguous(),
            "sd": self.sd_.float().contiguous(),
        }

    @classmethod
    def from_saved(cls, folder, meta, n_plugins):
        from safetensors.torch import load_file

        f = Path(folder) / "router.safetensors"
        if not f.is_file() or sha256_file(f) != meta.get("router_sha256"):
            raise ForgeDataError(f"{f} is missing or does not match mixture.json", fix="write the mixture again", code="mixture.tampered")
        t = load_file(str(f))
        space = str((meta.get("router_settings") or {}).get("space", "input"))
        router = cls(space=space)
        router._set_state(t["W"], t["b"], t["mu"], t["sd"], space)
        if router.W_.shape[0] != n_plugins:
            raise ForgeDataError("the gate has a different number of outputs than plugins", code="mixture.bad_meta")
        return router


@ROUTERS.register("similarity")
class SimilarityRouter(Router):
    """Training-free: ``w_j(x)`` proportional to plugin ``j``'s update response to ``x``."""

    name = "similarity"

    def __init__(self) -> None:
        pass

    def fit(self, plugins, X=None, y=None, *, base=None, records=None, source=None):
        self.n_components_ = len(plugins)
        self.details_: dict = {}
        return self

    def _weights(self, mixture, X):
        scores = mixture.update_responses(X)  # (n, J)
        total = scores.sum(1, keepdims=True)
        J = scores.shape[1]
        return np.where(total > 0, scores / np.where(total > 0, total, 1.0), 1.0 / J)

    @classmethod
    def from_saved(cls, folder, meta, n_plugins):
        return cls().fit([None] * n_plugins)


def plugin_adapter(plugin) -> LoraAdapter:
    """The LoRA tensors and settings of a loaded plugin (from its PEFT config)."""
    cfg = plugin.model.peft_config["default"]
    return LoraAdapter(
        state=plugin.adapter_state(),
        rank=int(cfg.r),
        alpha=float(cfg.lora_alpha),
        rslora=bool(cfg.use_rslora),
        ffa=bool((plugin.meta.get("lora") or {}).get("ffa")),
        name=plugin.site or "plugin",
    )


@dataclass
class Mixture:
    """Plugins (``forge_secure.plugins.plugin.Plugin``) mixed by a router."""

    plugins: list
    router: Router
    base: Base | None = None  # the plugins' base when not given
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.plugins:
            raise ForgeValueError("a mixture needs at least one plugin", code="mixture.empty")
        digests = {p.base.digest for p in self.plugins}
        if len(digests) != 1:
            raise ForgeDataError(
                "mixture plugins were trained on different base models",
                fix="mix only plugins of one base model version",
                code="merge.different_bases",
            )
        classes = {p.base.n_classes for p in self.plugins}
        if len(classes) != 1:
            raise ForgeDataError("mixture plugins predict different numbers of classes", code="merge.different_classes")
        if self.base is None:
            self.base = self.plugins[0].base

    @property
    def _base(self) -> Base:
        assert self.base is not None  # set in __post_init__
        return self.base

    def component_proba(self, X: np.ndarray) -> np.ndarray:
        """``(J, n, C)``: each plugin's class probabilities."""
        return np.stack([p.predict_proba(X) for p in self.plugins])

    def route(self, X: np.ndarray) -> np.ndarray:
        w = np.asarray(self.router.route(self, X), dtype=np.float64)
        if w.shape != (len(X), len(self.plugins)) or not np.isfinite(w).all():
            raise ForgeDataError("the router returned weights of the wrong shape or non-finite values", code="mixture.bad_router")
        return w

    def predict_proba(self, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        comp = self.component_proba(X)
        w = self.route(X)
        return np.einsum("nj,jnc->nc", w, comp)

    def logits(self, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Log of the mixture probabilities (float64), floored at the smallest normal."""
        return np.log(np.maximum(self.predict_proba(X), np.finfo(np.float64).tiny))

    def update_responses(self, X: np.ndarray) -> np.ndarray:
        """``(n, J)``: ``sum_m ||s_j B_j A_j h_m(x)|| / ||h_m(x)||`` over target layers."""
        adapters = [plugin_adapter(p) for p in self.plugins]
        modules = dict(self._base.model.named_modules())
        inputs: dict[str, torch.Tensor] = {}
        handles = []
        for m in adapters[0].modules:
            path = module_path(m)
            handles.append(modules[path].register_forward_hook(lambda mod, inp, out, path=path: inputs.__setitem__(path, inp[0].detach())))
        try:
            with torch.no_grad():
                self._base.model(torch.as_tensor(np.asarray(X, dtype=np.float32)))
        finally:
            for h in handles:
                h.remove()
        n = len(X)
        scores = np.zeros((n, len(adapters)))
        for j, ad in enumerate(adapters):
            for m in ad.modules:
                h = inputs[module_path(m)].double()
                resp = h @ ad.delta(m).T  # (..., out)
                num = resp.reshape(n, -1, resp.shape[-1]).norm(dim=-1).sum(1)
                den = h.reshape(n, -1, h.shape[-1]).norm(dim=-1).sum(1).clamp_min(1e-12)
                scores[:, j] += (num / den).numpy()
        return scores

    def save(self, out: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        out = Path(out)
        entries = []
        with atomic_directory(out) as tmp:
            (tmp / "plugins").mkdir()
            for j, p in enumerate(self.plugins):
                if p.path is None:
                    raise ForgeValueError("mixture plugins must be saved plugin directories", code="mixture.unsaved_plugin")
                rel = Path("plugins") / f"{j:02d}-{p.site or 'plugin'}"
                shutil.copytree(p.path, tmp / rel)
                entries.append(
                    {
                        "path": str(rel),
                        "site": p.site,
                        "digest": sha256_file(tmp / rel / "adapter_model.safetensors"),
                        "dp": p.meta.get("dp"),
                        "rows": (p.meta.get("data") or {}).get("rows"),
                    }
                )
            meta = {
                "format": MIXTURE_FORMAT,
                "toolkit_version": __version__,
                "router": self.router.name,
                "router_settings": self.router.to_json(),
                "base": self._base.describe(),
                "plugins": entries,
                "details": self.details,
                "weights": self.router.to_json().get("weights"),
                "dp": {
                    "post_processing": True,
                    "per_plugin": [{"site": e["site"], "dp": e["dp"]} for e in entries],
                    "note": "each plugin keeps its own site's record; the router is fitted on DP synthetic data only",
                },
            }
            tensors = self.router.tensors()
            if tensors:
                save_file(tensors, str(tmp / "router.safetensors"))
                meta["router_sha256"] = sha256_file(tmp / "router.safetensors")
            atomic_write_json(tmp / "mixture.json", meta)
        return out


def read_mixture_meta(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_dir():
        raise ForgeFileError(
            f"mixture {p} is not a directory", fix="give the directory written by `forge merge mixture`", code="mixture.not_a_directory"
        )
    meta = read_json_file(p / "mixture.json", "mixture description")
    if not isinstance(meta, dict) or meta.get("format") != MIXTURE_FORMAT:
        raise ForgeDataError(
            f"{p / 'mixture.json'} is not a {MIXTURE_FORMAT} description",
            fix="give a directory written by `forge merge mixture`",
            code="mixture.bad_meta",
        )
    if not isinstance(meta.get("plugins"), list) or not meta["plugins"]:
        raise ForgeDataError(f"{p / 'mixture.json'} lists no plugins", fix="write the mixture again", code="mixture.bad_meta")
    ROUTERS.get(str(meta.get("router")))
    for e in meta["plugins"]:
        rel = Path(str(e.get("path", "")))
        if rel.is_absolute() or ".." in rel.parts:
            raise ForgeDataError(
                f"mixture plugin path {rel} leaves the mixture directory", fix="write the mixture again", code="mixture.bad_meta"
            )
    return meta


def load_mixture(path: str | os.PathLike, base=None) -> Mixture:
    """Read a mixture directory: every plugin is loaded (and checked) with ``load_plugin``."""
    from ..plugins.plugin import load_plugin
    from ..plugins.record import read_plugin

    p = Path(path)
    meta = read_mixture_meta(p)
    plugins = []
    for e in meta["plugins"]:
        d = p / e["path"]
        record = read_plugin(d, base=base)  # the gateway: forge.json, adapter digest, finite weights, base
        if record.adapter_sha256 != e.get("digest"):
            raise ForgeDataError(
                f"mixture plugin {d} does not match the digest in mixture.json",
                fix="the mixture was changed; write it again",
                code="mixture.tampered",
            )
        plugins.append(load_plugin(record, base))
        base = base or plugins[-1].base
    router = ROUTERS.get(str(meta["router"])).from_saved(p, meta, len(plugins))
    return Mixture(plugins, router, base, details=meta.get("details") or {})


# --------------------------------------------------------------------------- fitting routers


def tune_static_weights(
    plugins: Sequence, X: np.ndarray, y: np.ndarray, *, budget: int = 40, l1: float = 0.05, seed: int = 0
) -> tuple[list[float], dict]:
    """MedForge/LoraHub static weights: NGOpt on the mixture's cross-entropy + L1."""
    from .fusion.sequential import minimise_scalars

    comp = np.stack([p.predict_proba(X) for p in plugins])  # (J, n, C)
    picked = comp[:, np.arange(len(y)), y]  # (J, n)

    def objective(x: np.ndarray) -> float:
        w = np.clip(x, 0.0, None)
        if w.sum() <= 1e-9:
            return 1e12
        p = (w / w.sum()) @ picked
        return float(-np.log(np.maximum(p, 1e-300)).mean() + l1 * np.mean(np.abs(x)))

    x, value = minimise_scalars(objective, len(plugins), budget=budget, init=0.5, bound=1.5, lower=0.0, seed=seed)
    w = np.clip(x, 0.0, None)
    w = w / w.sum() if w.sum() > 1e-9 else np.full(len(plugins), 1.0 / len(plugins))
    return [float(v) for v in w], {"tuned": True, "budget": budget, "objective": value, "seed": seed}


def fit_gate(
    plugins: Sequence,
    base,
    X: np.ndarray,
    y: np.ndarray,
    *,
    space: str = "auto",
    epochs: int = 300,
    lr: float = 0.05,
    l2: float = 1e-3,
    seed: int = 0,
) -> GateRouter:
    """Fit a linear softmax gate by minimising the mixture NLL on ``(X, y)`` (full batch Adam)."""
    return GateRouter(space=space, epochs=epochs, lr=lr, l2=l2, seed=seed).fit(plugins, X, y, base=base)


def check_router_request(router: str, weights, tune_on) -> type[Router]:
    """The registered router class of that name, after checking that the request fits it."""
    cls = ROUTERS.get(router)
    if cls.needs_data and tune_on is None:
        raise ForgeValueError(
            f"the {router} router is fitted on data and got none",
            fix="give synthetic data with --tune-on (forge synth)",
            code="merge.needs_tuning_data",
        )
    if weights is not None and not cls.takes_weights():
        raise ForgeValueError(f"the {router} router chooses its own weights", fix="drop --weights", code="merge.bad_weights")
    return cls


def build_mixture(
    plugin_dirs: Sequence[str | os.PathLike],
    *,
    router: str = "static",
    weights: Sequence[float] | None = None,
    tune_on: str | os.PathLike | None = None,
    seed: int = 0,
    budget: int = 40,
    base=None,
) -> Mixture:
    """Load plugins and build a mixture with the named router. Each plugin folder is read
    once, by the gateway (:func:`forge_secure.merge.io.read_inputs`), and loaded from its record."""
    from ..plugins.plugin import load_plugin
    from .io import read_inputs

    router_cls = check_router_request(router, weights, tune_on)
    files = read_inputs(plugin_dirs, base)
    plugins = []
    for rec in files:
        plugins.append(load_plugin(rec, base))
        base = base or plugins[-1].base
    synth = None
    if tune_on is not None:
        from ..privacy.synthetic import load_synthetic

        synth = load_synthetic(tune_on).dataset
        if synth.n_classes != base.n_classes:
            raise ForgeDataError(
                f"synthetic data has {synth.n_classes} classes, the plugins {base.n_classes}",
                fix="make synthetic data for this task",
                code="merge.different_classes",
            )
    r = router_cls(**{k: v for k, v in {"weights": weights, "seed": seed, "budget": budget}.items() if k in router_cls._get_param_names()})
    r.fit(
        plugins,
        None if synth is None else synth.X,
        None if synth is None else synth.y,
        base=base,
        records=files,
        source=None if tune_on is None else str(tune_on),
    )
    return Mixture(plugins, r, base, dict(r.details_))


def mixture_merge(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    router: str = "static",
    weights=None,
    tune_on=None,
    key=None,
    roster=None,
    seed: int = 0,
    budget: int = 40,
) -> Path:
    """Build a mixture from plugin directories or sealed bundles and save it at ``out``."""
    from .io import check_merge_request, open_inputs

    if len(inputs) < 2:
        raise ForgeValueError(
            f"a mixture needs at least two plugins, got {len(inputs)}", fix="give two or more plugins", code="merge.too_few"
        )
    check_router_request(router, weights, tune_on)
    check_merge_request(inputs, out, weights)  # before any sealed bundle is opened (and recorded as seen)
    if tune_on is not None:
        from ..privacy.synthetic import load_synthetic

        load_synthetic(tune_on)
    with open_inputs(inputs, key=key, roster=roster) as dirs:
        mix = build_mixture(dirs, router=router, weights=weights, tune_on=tune_on, seed=seed, budget=budget)
        return mix.save(out)
