"""The training recipe of a plugin: :class:`TrainConfig`, validated on construction."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ForgeConfigError, ForgeDataError
from ..registry import Registry
from .accountants import ACCOUNTANTS

#: optimisers by name: ``(torch optimiser class name, fixed keyword arguments)``
OPTIMIZERS: Registry[tuple[str, dict]] = Registry("optimizer")
OPTIMIZERS.add("sgd", ("SGD", {"momentum": 0.9}))
OPTIMIZERS.add("adam", ("Adam", {}))


def _bad(field: str, value: Any, need: str, fix: str | None = None) -> ForgeConfigError:
    return ForgeConfigError(
        f"training setting {field} = {value!r} {need}", fix=fix or f"give {field} {need.replace('must be ', '')}", code="train.config"
    )


def _int(field: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _bad(field, value, f"must be an integer >= {low}")
    return int(value)


def _pos(field: str, value: Any, *, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or (value < 0 if allow_zero else value <= 0)
    ):
        raise _bad(field, value, "must be a finite number " + (">= 0" if allow_zero else "> 0"))
    return float(value)


@dataclass
class TrainConfig:
    """How to train one plugin (everything but the randomness secret). Exactly one of ``noise_multiplier``, ``target_epsilon``
    (calibrated) or ``no_dp=True`` must be given: training without DP is never a default.

    ``delta`` defaults to ``min(1e-5, 1 / n^2)`` for a training set of n records and must stay
    below ``1 / n``. ``targets`` defaults to the base's LoRA targets. ``alpha`` is LoRA's
    scale numerator (scaling ``alpha / rank``).
    """

    base: str = "tabular-mlp"
    rank: int = 8
    alpha: float = 16
    ffa: bool = False
    ffa_seed: int = 0
    targets: tuple[str, ...] | None = None
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    no_dp: bool = False
    optimizer: str = "sgd"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base:
            raise _bad("base", self.base, "must be a base model name or path")
        self.rank = _int("rank", self.rank, 1)
        self.alpha = _pos("alpha", self.alpha)
        self.ffa = bool(self.ffa)
        self.ffa_seed = _int("ffa_seed", self.ffa_seed, 0)
        if self.targets is not None:
            if isinstance(self.targets, str):
                self.targets = tuple(t.strip() for t in self.targets.split(",") if t.strip())
            self.targets = tuple(self.targets)
            if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
                raise _bad("targets", self.targets, "must be a non-empty list of module names")
        self.epochs = _int("epochs", self.epochs, 1)
        self.batch_size = _int("batch_size", self.batch_size, 1)
        self.lr = _pos("lr", self.lr)
        self.seed = _int("seed", self.seed, 0)
        self.max_grad_norm = _pos("max_grad_norm", self.max_grad_norm)
        ACCOUNTANTS.get(self.accountant)
        OPTIMIZERS.get(self.optimizer)
        self.dropout = _pos("dropout", self.dropout, allow_zero=True)
        if self.dropout >= 1:
            raise _bad("dropout", self.dropout, "must be below 1")
        self.no_dp = bool(self.no_dp)
        chosen = [
            name for name, v in (("noise_multiplier", self.noise_multiplier), ("target_epsilon", self.target_epsilon)) if v is not None
        ] + (["no_dp"] if self.no_dp else [])
        if len(chosen) != 1:
            raise ForgeConfigError(
                "choose exactly one privacy setting: a noise multiplier, a target epsilon, or no DP"
                + (f" (got {', '.join(chosen)})" if chosen else " (none given)"),
                fix="give --noise-multiplier X, or --epsilon E, or --no-dp (training without DP must be explicit)",
                code="train.privacy_choice",
            )
        if self.noise_multiplier is not None:
            self.noise_multiplier = _pos("noise_multiplier", self.noise_multiplier)
        if self.target_epsilon is not None:
            self.target_epsilon = _pos("target_epsilon", self.target_epsilon)
        if self.delta is not None:
            self.delta = _pos("delta", self.delta)
            if self.delta >= 1:
                raise _bad("delta", self.delta, "must be below 1 (and below 1/n)")

    @property
    def dp(self) -> bool:
        return not self.no_dp

    def lora_record(self, targets: tuple[str, ...]) -> dict:
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "targets": list(targets),
            "ffa": self.ffa,
            "ffa_seed": self.ffa_seed if self.ffa else None,
            "dropout": self.dropout,
        }

    def training_record(self) -> dict:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "seed": self.seed,
            "sampling": "poisson",
            "target_epsilon": self.target_epsilon,
        }

    @classmethod
    def from_meta(cls, meta: dict) -> TrainConfig:
        """The recipe of an existing plugin (its ``forge.json``), e.g. to train reference
        models for a membership attack. The recorded noise multiplier is reused as it is
        (no recalibration), so a reference trained on as many records has the same
        (sigma, q, steps) as the target. Change the seed with ``dataclasses.replace``."""
        try:
            lora, training, dp = meta["lora"], meta["training"], meta["dp"]
            kwargs: dict[str, Any] = dict(
                base=meta["base"]["name"],
                rank=lora["rank"],
                alpha=lora["alpha"],
                ffa=lora["ffa"],
                ffa_seed=lora.get("ffa_seed") or 0,
                targets=tuple(lora["targets"]),
                dropout=lora.get("dropout", 0.0) or 0.0,
                epochs=training["epochs"],
                batch_size=training["batch_size"],
                lr=training["lr"],
                seed=training.get("seed", 0),
                optimizer=training.get("optimizer", "sgd"),
            )
            if dp["enabled"]:
                kwargs.update(
                    noise_multiplier=dp["noise_multiplier"],
                    delta=dp.get("delta"),
                    max_grad_norm=dp["max_grad_norm"],
                    accountant=dp.get("accountant") or "prv",
                )
            else:
                kwargs["no_dp"] = True
                if dp.get("max_grad_norm") is not None:
                    kwargs["max_grad_norm"] = dp["max_grad_norm"]
        except (KeyError, TypeError) as e:
            raise ForgeDataError(
                f"forge.json has no training recipe ({e.__class__.__name__}: {e})",
                fix="give the forge.json of a trained (not merged) plugin",
                code="train.no_recipe",
            ) from None
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
