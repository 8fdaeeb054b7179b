"""Membership-inference attacks (LOSS, reference, LiRA, RMIA) and empirical epsilon.

Estimators: ``make_attack(name, **settings).fit(references...).score(target_logits)``;
the registry :data:`MEMBERSHIP_ATTACKS` lists them by name. End-to-end runs on plugins (reference
training, metrics, results JSON) are in :mod:`attacks.membership.run`; :func:`rescore` re-derives any attack's scores and metrics
from the per-record signals a results file keeps (:mod:`attacks.membership.rescoring`).
"""

from .base import MEMBERSHIP_ATTACKS, MembershipAttack, TooFewReferences, make_attack
from .rescoring import rescore
from .stats import logit_confidence

__all__ = ["MEMBERSHIP_ATTACKS", "MembershipAttack", "TooFewReferences", "make_attack", "logit_confidence", "rescore"]
