"""Reference-calibrated loss (Watson et al. 2022, "On the Importance of Difficulty
Calibration in Membership Inference Attacks"): the target's loss on a record minus the
average loss of reference models that were *not* trained on it, so that records that are
hard for every model are not mistaken for non-members. Score = -(loss_target - mean
loss_OUT); higher = member."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import MEMBERSHIP_ATTACKS, MembershipAttack
from .stats import cross_entropy


@dataclass(frozen=True)
class CalibratedConfig:
    """No settings: calibrates with the mean OUT-reference loss."""


@MEMBERSHIP_ATTACKS.register("reference")
class ReferenceCalibratedAttack(MembershipAttack):
    name = "reference"
    Config = CalibratedConfig

    def min_references(self) -> int:
        return 1

    def _fit(self, ref, labels, in_mask, population) -> None:
        out = ~in_mask
        self._require_per_record(out.sum(0), 1, "OUT", "use more --references (at least 2)")
        losses = cross_entropy(ref, labels)  # (R, n)
        self.reference_loss_ = np.where(out, losses, 0.0).sum(0) / out.sum(0)

    def _score(self, target, labels, population_target) -> np.ndarray:
        return -(cross_entropy(target, labels) - self.reference_loss_)
