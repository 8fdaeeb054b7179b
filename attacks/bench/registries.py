"""Names the bench accepts: its attacks (a registry of settings specs) and its merge methods
(``none``, ``mixture`` and every Fusion method registered in :mod:`forge_secure.merge`).

Error messages list the allowed names from these registries, never by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forge_secure.errors import ForgeConfigError
from forge_secure.registry import Registry


@dataclass(frozen=True)
class AttackSpec:
    """The settings one bench attack accepts, with their defaults (types come from them)."""

    name: str
    kind: str  # "membership" | "reconstruction"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, tuple] = field(default_factory=dict)

    def validate(self, settings: Mapping[str, Any], where: str) -> None:
        for key, value in settings.items():
            if key not in self.defaults:
                raise ForgeConfigError(
                    f"bench config [{where}]: unknown key {key!r}",
                    fix=f"use one of: {', '.join(sorted(self.defaults))}",
                    code="bench.config.unknown_key",
                )
            want = type(self.defaults[key])
            ok = isinstance(value, want) and not (isinstance(value, bool) and want is not bool)
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ForgeConfigError(
                    f"bench config [{where}]: {key} must be of type {want.__name__}, got {value!r}",
                    fix=f"write e.g. {key} = {self.defaults[key]!r}".replace("True", "true").replace("False", "false"),
                    code="bench.config.bad_value",
                )
            if key in self.choices and value not in self.choices[key]:
                raise ForgeConfigError(
                    f"bench config [{where}]: {key} = {value!r} is not allowed",
                    fix=f"use one of: {', '.join(map(str, self.choices[key]))}",
                    code="bench.config.bad_value",
                )
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ForgeConfigError(
                    f"bench config [{where}]: {key} must not be negative, got {value!r}",
                    fix=f"set {key} to a value >= 0",
                    code="bench.config.bad_value",
                )
        if "references" in settings and settings["references"] < 1:
            raise ForgeConfigError(
                f"bench config [{where}]: references must be at least 1, got {settings['references']!r}",
                fix="set references = 1 or more",
                code="bench.config.bad_value",
            )


BENCH_ATTACKS: Registry[AttackSpec] = Registry("bench attack")

BENCH_ATTACKS.add(
    "lira",
    AttackSpec(
        "lira",
        "membership",
        # Carlini et al. 2022; few references -> fixed (global) variance is the better choice
        defaults={"references": 4, "online": True, "fixed_variance": True},
    ),
)
BENCH_ATTACKS.add(
    "rmia",
    AttackSpec(
        "rmia",
        "membership",
        # Zarifzadeh et al. 2024; strong with a single reference model (offline, a ~ 0.3)
        defaults={"references": 2, "online": False, "a": 0.3, "gamma": 1.0, "temperature": 2.0, "population": 200},
    ),
)
BENCH_ATTACKS.add(
    "recon",
    AttackSpec(
        "recon",
        "reconstruction",
        # the informed adversary (Balle et al. 2022; Hayes et al. 2023): picks the one
        # unknown training record among a prior of `prior` candidates, `trials` times
        defaults={"trials": 20, "prior": 8},
    ),
)


MERGE_NONE = "none"
MERGE_MIXTURE = "mixture"
LIGHT_MERGES = (MERGE_NONE, MERGE_MIXTURE)


def fusion_registry() -> Registry | None:
    """The Fusion-method registry :data:`forge_secure.merge.fusion.FUSIONS`, or ``None`` if
    it cannot be imported (then only ``none`` and ``mixture`` are offered)."""
    try:
        from forge_secure.merge.fusion import FUSIONS
    except ImportError:
        return None
    return FUSIONS


@functools.lru_cache(maxsize=1)
def merge_registry() -> Registry[str]:
    """``none`` (the first site's plugin alone), ``mixture`` and each Fusion method."""
    reg: Registry[str] = Registry("merge method")
    reg.add(MERGE_NONE, "none")
    reg.add(MERGE_MIXTURE, "mixture")
    fusion = fusion_registry()
    if fusion is not None:
        for name in fusion.names():
            if name not in reg:
                reg.add(name, "fusion")
    return reg
