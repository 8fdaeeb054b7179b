"""LiRA, the likelihood-ratio attack of Carlini et al. 2022 ("Membership Inference Attacks
From First Principles", IEEE S&P), Sec. 4 and Algorithm 1.

Statistic: the logit-scaled confidence phi = log(p_y / (1 - p_y)) of each model on each
record (:func:`attacks.membership.stats.logit_confidence`, stable in float64). For each
record the reference models trained on it (IN) and not trained on it (OUT) give two
samples of phi, modelled as Gaussians with means taken as the *medians* of the samples.

- online: score = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2);
- offline: only the OUT Gaussian, the paper's one-sided test; score =
  log Phi((phi - mu_out) / s_out) = log(1 - P[Z > phi]), Z ~ N(mu_out, s_out^2);
- ``fixed_variance=False``: s_in, s_out per record (needs >= 2 IN / OUT references per
  record); ``True``: one global s_in and one global s_out, the standard deviation of all IN
  (resp. OUT) statistics as in the paper's code, better with few references.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from forge_secure.errors import ForgeConfigError

from .base import MEMBERSHIP_ATTACKS, MembershipAttack
from .stats import logit_confidence

_STD_FLOOR = 1e-6  # identical reference statistics would give a zero-width Gaussian


@dataclass(frozen=True)
class LiraConfig:
    online: bool = True
    fixed_variance: bool = False

    def __post_init__(self):
        for k in ("online", "fixed_variance"):
            if not isinstance(getattr(self, k), bool):
                raise ForgeConfigError(f"LiRA setting {k}={getattr(self, k)!r} must be true or false", code="attack.settings")


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.nanmedian(np.where(mask, values, np.nan), axis=0)


def _masked_std(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.nanstd(np.where(mask, values, np.nan), axis=0)


@MEMBERSHIP_ATTACKS.register("lira")
class LiraAttack(MembershipAttack):
    name = "lira"
    Config = LiraConfig

    def min_references(self) -> int:
        per_kind = 1 if self.config.fixed_variance else 2
        return 2 * per_kind if self.config.online else per_kind

    def _fit(self, ref, labels, in_mask, population) -> None:
        phi = logit_confidence(ref, labels)  # (R, n)
        out = ~in_mask
        need = 1 if self.config.fixed_variance else 2
        fix = "use more --references" + ("" if self.config.fixed_variance else ", or --fixed-variance")
        self._require_per_record(out.sum(0), need, "OUT", fix)
        self.mu_out_ = _masked_median(phi, out)
        if self.config.fixed_variance:
            self.s_out_ = np.full(phi.shape[1], max(float(np.std(phi[out])), _STD_FLOOR))
        else:
            self.s_out_ = np.maximum(_masked_std(phi, out), _STD_FLOOR)
        if self.config.online:
            self._require_per_record(in_mask.sum(0), need, "IN", fix)
            self.mu_in_ = _masked_median(phi, in_mask)
            if self.config.fixed_variance:
                self.s_in_ = np.full(phi.shape[1], max(float(np.std(phi[in_mask])), _STD_FLOOR))
            else:
                self.s_in_ = np.maximum(_masked_std(phi, in_mask), _STD_FLOOR)

    def _score(self, target, labels, population_target) -> np.ndarray:
        phi = logit_confidence(target, labels)
        if self.config.online:
            return norm.logpdf(phi, self.mu_in_, self.s_in_) - norm.logpdf(phi, self.mu_out_, self.s_out_)
        return norm.logcdf((phi - self.mu_out_) / self.s_out_)
