"""The membership-attack estimator shape and the registry of attacks by name.

Every attack follows scikit-learn's shape (DESIGN.md, "Attacks"):

- settings in ``__init__`` (keywords, or one ``Config`` dataclass), each stored unchanged as
  an attribute and validated by ``Config`` (``attack.config``); learned state ends with an
  underscore (:class:`attacks.estimator.ConfigEstimator`);
- ``fit(reference_logits, labels, in_mask, *, population_reference_logits=None,
  population_labels=None, population_in_mask=None)`` takes the logits of R reference
  models on the n candidate records (shape (R, n, C)) and which records each reference was
  trained on (``in_mask``, bool (R, n)), plus, for attacks that compare against a population
  (RMIA), the references' logits on m population records. A
  :class:`attacks.references.ReferenceSet` (trained or loaded from the cache) can be passed
  in place of the arrays;
- ``score(target_logits, labels, *, population_target_logits=None)`` returns one score per
  candidate, higher = more likely a member (label 1).

Attacks register by name in :data:`MEMBERSHIP_ATTACKS`; :func:`make_attack` builds one from a name and
settings, and unknown names get an error listing the registered ones.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import numpy as np

from forge_secure.errors import ForgeValueError
from forge_secure.registry import Registry

from ..estimator import ConfigEstimator

MEMBERSHIP_ATTACKS: Registry[type[MembershipAttack]] = Registry("membership attack")


class TooFewReferences(ForgeValueError):
    """The chosen attack variant needs more reference models than were given."""

    default_code = "attack.too_few_references"


class MembershipAttack(ConfigEstimator, abc.ABC):
    """Base class. Subclasses set ``name``, ``Config`` and implement ``_fit`` / ``_score``.

    ``make_attack("lira", online=False)`` or ``LiraAttack(online=False)``: each setting is an
    attribute (``attack.online``), ``get_params`` / ``set_params`` work, and what ``fit``
    learns ends with an underscore (``mu_out_``, ``labels_``), so ``check_is_fitted`` tells
    a fitted attack from a new one.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    needs_population: ClassVar[bool] = False

    # ------------------------------------------------------------------ public API
    def min_references(self) -> int:
        """The smallest total number of reference models this variant can work with."""
        return 0

    def settings(self) -> dict:
        return {"attack": self.name, **dataclasses.asdict(self.config)}

    def fit(
        self,
        reference_logits=None,
        labels=None,
        in_mask=None,
        *,
        population_reference_logits=None,
        population_labels=None,
        population_in_mask=None,
    ) -> MembershipAttack:
        from attacks.references import ReferenceSet  # local: references imports this module's registry users

        self._check_settings()  # the settings' values are checked here (and by make_attack)
        self._clear_fitted()  # a new fit, or a failed one, keeps nothing of an earlier fit

        if isinstance(reference_logits, ReferenceSet):
            refs = reference_logits
            reference_logits, in_mask = refs.candidate_logits, refs.in_mask
            population_reference_logits = refs.population_logits
            population_in_mask = refs.population_in_mask
        if labels is None:
            raise ForgeValueError("fit needs the candidates' labels", code="attack.labels_missing")
        labels = np.asarray(labels)
        n = labels.shape[0]
        if reference_logits is None:
            reference_logits = np.zeros((0, n, 2))
            in_mask = np.zeros((0, n), dtype=bool)
        ref = np.asarray(reference_logits, dtype=np.float64)
        if ref.ndim != 3 or ref.shape[1] != n:
            raise ForgeValueError(
                f"reference logits must have shape (R, {n}, C), got {ref.shape}",
                fix="pass one (n, C) logit matrix per reference model",
                code="attack.reference_shape",
            )
        mask = np.zeros(ref.shape[:2], dtype=bool) if in_mask is None else np.asarray(in_mask)
        if mask.shape != ref.shape[:2] or mask.dtype != bool:
            raise ForgeValueError(
                f"in_mask must be a bool array of shape {ref.shape[:2]}, got {mask.dtype} {mask.shape}",
                code="attack.in_mask_shape",
            )
        if ref.shape[0] < self.min_references():
            raise TooFewReferences(
                f"attack {self.name!r} with {self._variant()} needs at least {self.min_references()} reference models, got {ref.shape[0]}",
                fix=f"use --references {self.min_references()} or more, or a variant that needs fewer",
            )
        population = None
        if self.needs_population:
            if population_reference_logits is None or population_labels is None:
                raise ForgeValueError(
                    f"attack {self.name!r} needs population records and the references' logits on them",
                    fix="give population data (e.g. --population bundled:public)",
                    code="attack.population_missing",
                )
            pl = np.asarray(population_labels)
            pop = np.asarray(population_reference_logits, dtype=np.float64)
            if pop.ndim != 3 or pop.shape[0] != ref.shape[0] or pop.shape[1] != pl.shape[0]:
                raise ForgeValueError(
                    f"population reference logits must have shape ({ref.shape[0]}, {pl.shape[0]}, C), got {pop.shape}",
                    code="attack.population_shape",
                )
            pmask = np.zeros(pop.shape[:2], dtype=bool) if population_in_mask is None else np.asarray(population_in_mask, dtype=bool)
            if pmask.shape != pop.shape[:2]:
                raise ForgeValueError(f"population_in_mask must have shape {pop.shape[:2]}, got {pmask.shape}", code="attack.in_mask_shape")
            population = (pop, pl, pmask)
        try:
            self._fit(ref, labels, mask, population)
        except BaseException:
            self._clear_fitted()  # a failed fit leaves the attack unfitted, not half fitted
            raise
        self.n_records_ = n
        self.labels_ = labels.astype(np.int64)
        return self

    def score(self, target_logits, labels=None, *, population_target_logits=None) -> np.ndarray:
        self._check_fitted(f"attack {self.name!r}")
        t = np.asarray(target_logits, dtype=np.float64)
        labels = self.labels_ if labels is None else np.asarray(labels)
        if t.ndim != 2 or t.shape[0] != self.n_records_ or labels.shape != (self.n_records_,):
            raise ForgeValueError(
                f"target logits must have shape ({self.n_records_}, C) for the {self.n_records_} fitted records, got {t.shape}",
                fix="score the same candidate records the attack was fitted on",
                code="attack.target_shape",
            )
        if self.needs_population and population_target_logits is None:
            raise ForgeValueError(
                f"attack {self.name!r} needs the target's logits on the population records", code="attack.population_missing"
            )
        scores = self._score(
            t, labels, None if population_target_logits is None else np.asarray(population_target_logits, dtype=np.float64)
        )
        return np.asarray(scores, dtype=np.float64)

    # ------------------------------------------------------------------ for subclasses
    def _variant(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.config).items()) or "default settings"

    @abc.abstractmethod
    def _fit(self, ref: np.ndarray, labels: np.ndarray, in_mask: np.ndarray, population) -> None:
        """Learn from the reference models' logits (``ref``) and their membership (``in_mask``)."""

    @abc.abstractmethod
    def _score(self, target: np.ndarray, labels: np.ndarray, population_target) -> np.ndarray:
        """Membership scores of the fitted records (higher = more likely a member)."""

    def _require_per_record(self, counts: np.ndarray, need: int, what: str, fix: str) -> None:
        """Raise :class:`TooFewReferences` when some record has fewer than ``need`` references of a kind."""
        if counts.size and counts.min() < need:
            i = int(np.argmin(counts))
            raise TooFewReferences(
                f"attack {self.name!r} ({self._variant()}) needs at least {need} {what} reference model(s) per record; "
                f"record {i} has {int(counts[i])}",
                fix=fix,
            )


def make_attack(name: str, **settings: Any) -> MembershipAttack:
    """Build a registered attack by name: ``make_attack("lira", online=False)``."""
    attack = MEMBERSHIP_ATTACKS.get(name)(**settings)
    attack._check_settings()  # bad values fail here, before references are trained
    return attack


def _load_builtin() -> None:
    # importing the modules registers them
    from . import calibrated, lira, loss, rmia  # noqa: F401


_load_builtin()
