"""What an attack can target: a plugin directory (trained or merged) or a Mixture directory.

:func:`load_target` returns an :class:`AttackTarget`, a small adapter with one interface
for all three: ``logits(X)`` (float64; for a Mixture the log of its mixture probabilities,
as ``forge_secure.merge.mixture.Mixture.logits`` returns), the recipe its reference models
are trained with, and a description for the results file.

Reference models for a Mixture are Mixtures too: the component trained on the candidates'
site (found by its membership commitment, or named with ``component``) is replaced by the
reference plugin, and the other components and the router are kept (see
:func:`attacks.references.train_one_reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.fileio import sha256_file

MIXTURE_FILE = "mixture.json"


@dataclass
class AttackTarget:
    """A model under attack, whatever its form."""

    path: Path
    kind: str  # "plugin" | "merged" | "mixture"
    model: Any  # Plugin or Mixture: has logits(X)
    base: Any  # forge_secure.plugins.bases.Base
    meta: dict  # forge.json of the plugin (for a mixture: of the attacked component)
    component: int | None = None
    info: dict = field(default_factory=dict)

    def logits(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model.logits(np.asarray(X, dtype=np.float32)), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != len(X) or not np.all(np.isfinite(out)):
            raise ForgeDataError(f"target {self.path} returned unusable logits of shape {out.shape}", code="attack.target_logits")
        return out

    @property
    def claimed_epsilon(self) -> dict:
        dp = self.meta.get("dp") or {}
        return {
            "epsilon": dp.get("epsilon", "inf") if dp.get("enabled", False) else "inf",
            "delta": dp.get("delta"),
            "accountant": dp.get("accountant"),
            "dp_enabled": bool(dp.get("enabled", False)),
        }

    def describe(self) -> dict:
        out = {
            "path": str(self.path),
            "kind": self.kind,
            "site": self.meta.get("site"),
            "base": {"name": self.base.name, "digest": self.base.digest},
            **self.info,
        }
        return out

    def mixture_context(self) -> dict | None:
        """What reference training needs to rebuild a Mixture around a reference plugin."""
        if self.kind != "mixture":
            return None
        assert self.component is not None  # a mixture target is built with its component's index
        return {"path": str(self.path), "component": int(self.component), "sha256": self.info["mixture_sha256"]}


def _load_base(name: str | None):
    if name is None:
        return None
    from forge_secure.plugins.bases import load_base

    return load_base(name)


def load_target(
    path: str | Path, *, base: str | None = None, component: str | None = None, membership_seed_sha256: str | None = None
) -> AttackTarget:
    """Load a plugin or Mixture directory. ``base`` names the base model the caller expects:
    a target trained on another base digest is refused."""
    from forge_secure.plugins.record import check_folder

    path = check_folder(path)  # plugin.missing / plugin.not_directory, as everywhere
    base_obj = _load_base(base)
    if (path / MIXTURE_FILE).exists():
        return _load_mixture_target(path, base_obj, component, membership_seed_sha256)
    from forge_secure.plugins.plugin import load_plugin

    plugin = load_plugin(path, base_obj)  # through the gateway (forge_secure.plugins.read_plugin)
    kind = "merged" if plugin.meta.get("kind") == "merged" else "plugin"
    return AttackTarget(path, kind, plugin, plugin.base, plugin.meta, info={"adapter_digest": plugin.digest()})


def _load_mixture_target(path: Path, base, component: str | None, seed_sha: str | None) -> AttackTarget:
    from forge_secure.merge.mixture import load_mixture

    mixture = load_mixture(path, base)
    sites = [p.site for p in mixture.plugins]
    j: int | None = None
    if component is not None:
        if component not in sites:
            raise ForgeValueError(
                f"the mixture has no component for site {component!r}",
                fix=f"use one of: {', '.join(sites)}",
                code="attack.unknown_component",
            )
        j = sites.index(component)
    elif seed_sha is not None:
        hits = [
            i for i, p in enumerate(mixture.plugins) if ((p.meta.get("data") or {}).get("membership") or {}).get("seed_sha256") == seed_sha
        ]
        j = hits[0] if len(hits) == 1 else None
    if j is None and len(mixture.plugins) == 1:
        j = 0
    if j is None:
        raise ForgeValueError(
            f"cannot tell which of the mixture's plugins ({', '.join(sites)}) was trained on the candidate records",
            fix="name it with --component SITE",
            code="attack.unknown_component",
        )
    plugin = mixture.plugins[j]
    info = {
        "mixture_sha256": sha256_file(path / MIXTURE_FILE),
        "component": sites[j],
        "components": sites,
        "adapter_digest": plugin.digest(),
    }
    return AttackTarget(path, "mixture", mixture, mixture.base, plugin.meta, component=j, info=info)
