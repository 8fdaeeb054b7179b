"""The LOSS attack (Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing the
Connection to Overfitting"): members tend to have lower loss, so the score is the negative
cross-entropy of the target model on the record. Needs no reference models; the threshold
(Yeom et al. use the average training loss) is left to the metrics, which sweep it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import MEMBERSHIP_ATTACKS, MembershipAttack
from .stats import cross_entropy


@dataclass(frozen=True)
class LossConfig:
    """No settings: the score is -loss."""


@MEMBERSHIP_ATTACKS.register("loss")
class LossAttack(MembershipAttack):
    name = "loss"
    Config = LossConfig

    def _fit(self, ref, labels, in_mask, population) -> None:
        return None

    def _score(self, target, labels, population_target) -> np.ndarray:
        return -cross_entropy(target, labels)
