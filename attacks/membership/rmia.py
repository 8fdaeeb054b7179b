"""RMIA, the relative membership inference attack of Zarifzadeh, Liu, Mahloujifar and
Shokri 2024 ("Low-Cost High-Power Membership Inference Attacks", ICML), Sec. 3.

For a record x and population records z, the likelihood ratio is

    LR(x, z) = [P(x | theta) / P(x)] / [P(z | theta) / P(z)],

with P(. | theta) the target's softmax probability of the true label (temperature T) and
P(x) its average over reference models. The score is the fraction of population records z
with LR(x, z) >= gamma (higher = member). Records with equal fractions are ordered by
P(x|theta)/P(x) (a tie-break below the 1/m step; it never reorders untied records).

- online: P(x) is the mean over all references (half were trained on x, half not);
- offline: only references not trained on x, with the paper's linear correction
  P(x) ~ 1/2 [(1 + a) P_OUT(x) + (1 - a)], and the same correction on P(z), the mean over
  all references (population records may be IN for some). ``a`` is given, or
  tuned (``a=None``) by using one reference model as a stand-in target on the population
  records (which are IN for some references and OUT for others) and keeping the ``a`` with
  the best AUC, as the paper suggests.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from forge_secure.errors import ForgeConfigError

from .base import MEMBERSHIP_ATTACKS, MembershipAttack, TooFewReferences
from .stats import true_class_probability

A_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


@dataclass(frozen=True)
class RmiaConfig:
    online: bool = True
    a: float | None = None
    gamma: float = 1.0
    temperature: float = 2.0
    max_population: int | None = None

    def __post_init__(self):
        for k in ("a", "gamma", "temperature", "max_population"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise ForgeConfigError(
                    f"RMIA setting {k}={v!r} must be a number", fix=f"give {k} as a number, e.g. {k}=1", code="attack.settings"
                )
        if not isinstance(self.online, bool):
            raise ForgeConfigError(f"RMIA setting online={self.online!r} must be true or false", code="attack.settings")
        if self.a is not None and not (0.0 <= float(self.a) <= 1.0):
            raise ForgeConfigError(
                f"RMIA a={self.a!r} must be in [0, 1]", fix="use e.g. 0.3, or leave it unset to tune it", code="attack.settings"
            )
        if not (float(self.gamma) > 0):
            raise ForgeConfigError(f"RMIA gamma={self.gamma!r} must be > 0", fix="use a value between 1 and 2", code="attack.settings")
        if not (float(self.temperature) > 0):
            raise ForgeConfigError(f"RMIA temperature={self.temperature!r} must be > 0", fix="use e.g. 2", code="attack.settings")
        if self.max_population is not None and int(self.max_population) < 1:
            raise ForgeConfigError(f"RMIA max_population={self.max_population!r} must be >= 1", code="attack.settings")


def _mean_where(p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, p, 0.0).sum(0) / np.maximum(mask.sum(0), 1)


def _fraction_dominated(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """For each x: fraction of z with ratio_x / ratio_z >= gamma, i.e. ratio_z <= ratio_x / gamma."""
    sorted_z = np.sort(ratio_z)
    return np.searchsorted(sorted_z, ratio_x / gamma, side="right") / sorted_z.size


@MEMBERSHIP_ATTACKS.register("rmia")
class RmiaAttack(MembershipAttack):
    name = "rmia"
    Config = RmiaConfig
    needs_population = True

    def min_references(self) -> int:
        if self.config.online:
            return 2
        return 1 if self.config.a is not None else 2

    def _offline_prob(self, p_out: np.ndarray, a: float) -> np.ndarray:
        return 0.5 * ((1.0 + a) * p_out + (1.0 - a))

    def _fit(self, ref, labels, in_mask, population) -> None:
        cfg = self.config
        pop_ref, pop_labels, pop_in = population
        if cfg.max_population is not None and pop_labels.shape[0] > cfg.max_population:
            keep = slice(0, int(cfg.max_population))
            pop_ref, pop_labels, pop_in = pop_ref[:, keep], pop_labels[keep], pop_in[:, keep]
        self.population_slice_ = pop_labels.shape[0]
        p_x = true_class_probability(ref, labels, cfg.temperature)  # (R, n)
        p_z = true_class_probability(pop_ref, pop_labels, cfg.temperature)  # (R, m)
        self.population_labels_ = pop_labels.astype(np.int64)
        if cfg.online:
            self._require_per_record(in_mask.sum(0), 1, "IN", "use more --references (at least 2), or --offline")
            self._require_per_record((~in_mask).sum(0), 1, "OUT", "use more --references (at least 2)")
            self.prob_x_ = p_x.mean(0)
            self.prob_z_ = p_z.mean(0)
            self.a_ = None
            return
        out_x = ~in_mask
        self._require_per_record(out_x.sum(0), 1, "OUT", "use more --references")
        a = cfg.a if cfg.a is not None else self._tune_a(p_z, pop_in)
        self.a_ = float(a)
        self.prob_x_ = self._offline_prob(_mean_where(p_x, out_x), self.a_)
        # population records: the mean over all references, as for any population sample
        self.prob_z_ = self._offline_prob(p_z.mean(0), self.a_)

    def _tune_a(self, p_z: np.ndarray, pop_in: np.ndarray) -> float:
        """Pick ``a`` with one reference as stand-in target on the population records."""
        R = p_z.shape[0]
        for k in range(R):
            others = np.delete(np.arange(R), k)
            usable = (~pop_in[others]).sum(0) >= 1  # records OUT for at least one other reference
            labels = pop_in[k][usable]
            if labels.sum() >= 1 and (~labels).sum() >= 1:
                break
        else:
            raise TooFewReferences(
                "RMIA offline cannot tune a: no reference model can stand in as a target "
                "(it needs population records it was and was not trained on, each OUT for another reference)",
                fix="give a fixed a (e.g. --rmia-a 0.3) or use more --references",
            )
        p_z = p_z[:, usable]
        out = ~pop_in[others][:, usable]
        p_out = _mean_where(p_z[others], out)
        best_a, best_auc = float(A_GRID[0]), -1.0
        for a in A_GRID:
            prob = self._offline_prob(p_out, float(a))
            ratio = p_z[k] / prob
            scores = _fraction_dominated(ratio, ratio, self.config.gamma)
            auc = roc_auc_score(labels.astype(int), scores)
            if auc > best_auc + 1e-12:
                best_a, best_auc = float(a), auc
        self.tuning_auc_ = best_auc
        return best_a

    def _score(self, target, labels, population_target) -> np.ndarray:
        cfg = self.config
        pz_t = population_target[: self.population_slice_]
        if pz_t.shape[0] != self.population_labels_.shape[0]:
            raise ForgeConfigError(
                f"target logits on the population have {pz_t.shape[0]} rows, expected {self.population_labels_.shape[0]}",
                code="attack.population_shape",
            )
        ratio_x = true_class_probability(target, labels, cfg.temperature) / self.prob_x_
        ratio_z = true_class_probability(pz_t, self.population_labels_, cfg.temperature) / self.prob_z_
        score = _fraction_dominated(ratio_x, ratio_z, float(cfg.gamma))
        # The fraction takes only m + 1 values; with a small population many records tie,
        # which leaves the low-FPR end of the ROC undefined. Ties are broken by the ratio
        # P(x|theta)/P(x) itself, scaled below the 1/m step so no untied order changes.
        # (a true-class probability that underflows to 0 gives a ratio of 0: floored at the
        # smallest positive double, so its log is finite and it still ranks lowest)
        log_ratio = np.log(np.maximum(ratio_x, np.finfo(np.float64).tiny))
        tie_break = np.arctan(log_ratio) / np.pi + 0.5  # monotone, in (0, 1)
        return score + tie_break / (2.0 * (ratio_z.size + 1))

    def settings(self) -> dict:
        out = super().settings()
        if getattr(self, "a_", None) is not None:
            out["a_used"] = self.a_
        return out
