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

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import __version__
from ..errors import ForgeDataError, ForgeFileError, ForgeValueError
from ..fileio import atomic_directory, atomic_write_json, read_json_file, sha256_file
from .adapter import LoraAdapter, module_path
from .routers import ROUTERS as ROUTERS  # re-exported: the routers and their fitting live in .routers
from .routers import GateRouter as GateRouter
from .routers import Router
from .routers import SimilarityRouter as SimilarityRouter
from .routers import StaticRouter as StaticRouter
from .routers import fit_gate as fit_gate
from .routers import tune_static_weights as tune_static_weights

if TYPE_CHECKING:
    from ..plugins.bases import Base

MIXTURE_FORMAT = "forge-mixture/1"


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


# --------------------------------------------------------------------------- router requests, building a mixture


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
