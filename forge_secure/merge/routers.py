"""The routers of a :class:`~forge_secure.merge.mixture.Mixture`, registered by name in
:data:`ROUTERS` (``static``, ``gate``, ``similarity``; see :mod:`.mixture` for what each
computes), each shaped like a scikit-learn estimator."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..errors import ForgeDataError, ForgeValueError
from ..fileio import sha256_file
from ..registry import Registry
from .adapter import normalise_weights
from .evaluate import log_softmax

if TYPE_CHECKING:
    from .mixture import Mixture


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
