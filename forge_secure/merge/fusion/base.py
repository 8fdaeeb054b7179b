"""The registry of Fusion methods and the result every one of them returns.

Each method lives in its own module (as PEFT keeps one module per tuner) and registers a
function ``fuse(adapters, weights, **options) -> FusionResult`` under its name in
:data:`FUSIONS`; :func:`forge_secure.merge.fusion.fuse` dispatches by name, so error
messages list the allowed names from the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ...registry import Registry
from ..adapter import LoraAdapter


@dataclass(frozen=True)
class FusionMethod:
    """A registered Fusion method: its function and what it needs from its inputs."""

    name: str
    fuse: Callable[..., FusionResult]
    needs_ffa: bool = False  # only FFA-LoRA plugins (shared A)
    same_rank: bool = False  # adds factors, so one rank
    needs_loss: bool = False  # tunes scalars on (synthetic) data
    description: str = ""


@dataclass(frozen=True, eq=False)
class FusionResult:
    """The merged adapter, the per-plugin weights actually applied, and method details
    (tuned scalars, seeds, truncation error, ...) for ``forge.json``."""

    adapter: LoraAdapter
    method: str
    weights: list[float]
    details: dict = field(default_factory=dict)


FUSIONS: Registry[FusionMethod] = Registry("fusion method")


def register(method: FusionMethod) -> FusionMethod:
    FUSIONS.add(method.name, method)
    return method
