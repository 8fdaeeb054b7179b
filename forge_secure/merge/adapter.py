"""LoRA adapter tensors as plain data, the common currency of every merge.

A :class:`LoraAdapter` is the ``{name: tensor}`` state of one PEFT LoRA adapter (the names
``get_peft_model_state_dict`` writes, e.g. ``base_model.model.fc1.lora_A.weight``) together
with the few settings that give it meaning: the rank ``r``, ``lora_alpha`` and whether
rsLoRA scaling is used. PEFT applies ``W = W0 + s * B @ A`` with ``s = alpha / r``
(``alpha / sqrt(r)`` with rsLoRA; Kalajdzievski 2023).

Every merge checks its inputs and its result here: matching targets and shapes, finite
values (:func:`check_finite`), and the FFA-LoRA property (all ``A`` equal; Sun et al. 2024,
"Improving LoRA in privacy-preserving federated learning").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ForgeDataError, ForgeValueError

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True, eq=False)
class LoraAdapter:
    """One LoRA adapter: PEFT-named tensors plus rank, alpha and the FFA flag."""

    state: Mapping[str, torch.Tensor]
    rank: int
    alpha: float
    rslora: bool = False
    ffa: bool = False
    name: str = "adapter"
    modules: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ForgeValueError(
                f"LoRA rank of {self.name} must be a positive integer, got {self.rank!r}",
                fix="fix `r` in adapter_config.json",
                code="merge.bad_rank",
            )
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ForgeValueError(
                f"lora_alpha of {self.name} must be a positive number, got {self.alpha!r}",
                fix="fix `lora_alpha` in adapter_config.json",
                code="merge.bad_alpha",
            )
        object.__setattr__(self, "modules", lora_modules(self.state, self.name))
        for module, (ka, kb) in self.modules.items():
            a, b = self.state[ka], self.state[kb]
            if a.shape[0] != self.rank or b.shape[1] != self.rank:
                raise ForgeDataError(
                    f"{self.name}: module {module} has A {tuple(a.shape)} and B {tuple(b.shape)}, not rank {self.rank}",
                    fix="per-module ranks (rank_pattern) are not supported by merges; retrain with one rank",
                    code="merge.bad_rank",
                )

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def A(self, module: str) -> torch.Tensor:
        return self.state[self.modules[module][0]]

    def B(self, module: str) -> torch.Tensor:
        return self.state[self.modules[module][1]]

    def delta(self, module: str) -> torch.Tensor:
        """The update ``s * B @ A`` of one target module, in float64."""
        return self.scaling * (self.B(module).double() @ self.A(module).double())

    def deltas(self) -> dict[str, torch.Tensor]:
        return {m: self.delta(m) for m in self.modules}

    def n_parameters(self) -> int:
        return sum(int(t.numel()) for t in self.state.values())

    def with_state(
        self,
        state: Mapping[str, torch.Tensor],
        *,
        rank: int | None = None,
        alpha: float | None = None,
        ffa: bool | None = None,
        name: str | None = None,
    ) -> LoraAdapter:
        return LoraAdapter(
            state=dict(state),
            rank=self.rank if rank is None else rank,
            alpha=self.alpha if alpha is None else alpha,
            rslora=self.rslora,
            ffa=self.ffa if ffa is None else ffa,
            name=self.name if name is None else name,
        )


def lora_modules(state: Mapping[str, torch.Tensor], name: str = "adapter") -> dict[str, tuple[str, str]]:
    """Pair the ``lora_A`` / ``lora_B`` tensors by target module: ``{module: (key_A, key_B)}``."""
    if not isinstance(state, Mapping) or not state:
        raise ForgeDataError(f"{name} holds no LoRA tensors", fix="give a LoRA adapter saved by PEFT", code="merge.empty_adapter")
    pairs: dict[str, dict[str, str]] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        if not m:
            raise ForgeDataError(
                f"{name}: tensor {key!r} is not a LoRA A/B weight",
                fix="merges take plain LoRA adapters (no biases, DoRA magnitudes or modules_to_save)",
                code="merge.unsupported_tensor",
            )
        if not isinstance(value, torch.Tensor) or value.ndim != 2:
            raise ForgeDataError(
                f"{name}: tensor {key!r} is not a 2-D tensor",
                fix="only LoRA on linear layers can be merged",
                code="merge.unsupported_tensor",
            )
        pairs.setdefault(m["module"], {})[m["which"]] = key
    out = {}
    for module, d in sorted(pairs.items()):
        if set(d) != {"A", "B"}:
            missing = "lora_B" if "A" in d else "lora_A"
            raise ForgeDataError(
                f"{name}: module {module} has no {missing} tensor",
                fix="the adapter file is incomplete; use the plugin as trained",
                code="merge.incomplete_adapter",
            )
        out[module] = (d["A"], d["B"])
    return out


def module_path(module: str) -> str:
    """The base model's module name of a PEFT module key (``base_model.model.fc1`` -> ``fc1``)."""
    return module[len(PEFT_PREFIX) :] if module.startswith(PEFT_PREFIX) else module


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`ForgeDataError` naming the first tensor holding NaN or infinity."""
    for key, t in state.items():
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ForgeDataError(
                f"{what}: tensor {key} holds {bad} NaN or infinite value(s)",
                fix="check the inputs and weights of the merge; nothing was written",
                code="merge.not_finite",
            )


def check_compatible(adapters: Sequence[LoraAdapter], *, same_rank: bool = False, need_ffa: bool | None = None) -> None:
    """Refuse adapters that cannot be merged: different target modules or shapes, different
    ranks (when ``same_rank``), or a mix of FFA and plain LoRA (``need_ffa`` True/False)."""
    if len(adapters) < 1:
        raise ForgeValueError("a merge needs at least one adapter", fix="give one or more plugins", code="merge.no_inputs")
    if need_ffa is not None:
        kinds = {ad.name: ad.ffa for ad in adapters}
        if need_ffa and not all(kinds.values()):
            plain = [n for n, f in kinds.items() if not f]
            mixed = "a mixture of FFA and plain LoRA" if any(kinds.values()) else "plain LoRA"
            raise ForgeDataError(
                f"{mixed} where the method needs FFA-LoRA only (plain: {', '.join(plain)})",
                fix="train every plugin with FFA-LoRA (--ffa, the same ffa_seed), or use the 'exact' method",
                code="merge.mixed_ffa",
            )
    first = adapters[0]
    for ad in adapters:
        check_finite(ad.state, ad.name)
        if set(ad.modules) != set(first.modules):
            raise ForgeDataError(
                f"{ad.name} targets {sorted(map(module_path, ad.modules))}, {first.name} targets {sorted(map(module_path, first.modules))}",
                fix="merge only plugins trained on the same LoRA target modules",
                code="merge.different_targets",
            )
        for m in first.modules:
            if ad.A(m).shape[1] != first.A(m).shape[1] or ad.B(m).shape[0] != first.B(m).shape[0]:
                raise ForgeDataError(
                    f"{ad.name}: module {module_path(m)} has other layer sizes than {first.name}",
                    fix="merge only plugins of the same base model",
                    code="merge.different_shapes",
                )
        if same_rank and ad.rank != first.rank:
            raise ForgeDataError(
                f"{ad.name} has rank {ad.rank} but {first.name} has rank {first.rank}",
                fix="this method adds the factors themselves and needs one rank; use the 'exact' method, or retrain with one rank",
                code="merge.different_ranks",
            )
    if need_ffa:
        check_shared_a(adapters)


def check_shared_a(adapters: Sequence[LoraAdapter]) -> None:
    """FFA-LoRA plugins must share the very same frozen ``A`` (same base digest and seed)."""
    first = adapters[0]
    for ad in adapters[1:]:
        for m in first.modules:
            if ad.A(m).shape != first.A(m).shape or not torch.equal(ad.A(m), first.A(m)):
                raise ForgeDataError(
                    f"{ad.name} and {first.name} are FFA-LoRA plugins with different frozen A at {module_path(m)}",
                    fix="FFA plugins must share base digest, rank and ffa_seed; retrain with the consortium's seed",
                    code="merge.different_ffa_a",
                )


def normalise_weights(weights: Sequence[float] | None, n: int, *, allow_negative: bool = False) -> list[float]:
    """Check ``weights`` (one finite number per adapter, positive sum) and scale them to sum 1.
    ``None`` gives equal weights."""
    if n < 1:
        raise ForgeValueError("a merge needs at least one adapter", fix="give one or more plugins", code="merge.no_inputs")
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ForgeValueError(f"{len(w)} weights for {n} plugins", fix="give exactly one weight per plugin", code="merge.bad_weights")
    if not all(math.isfinite(x) for x in w):
        raise ForgeValueError(f"weights {w} are not all finite", fix="give finite numbers", code="merge.bad_weights")
    if not allow_negative and any(x < 0 for x in w):
        raise ForgeValueError(
            f"weights {w} include a negative value", fix="give non-negative weights, e.g. training-set sizes", code="merge.bad_weights"
        )
    total = sum(w)
    if not total > 0:
        raise ForgeValueError(f"weights {w} sum to {total}", fix="give weights with a positive sum", code="merge.bad_weights")
    return [x / total for x in w]
