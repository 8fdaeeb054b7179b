"""Membership-inference attacks (LOSS, reference, LiRA, RMIA) and empirical epsilon.

Estimators: ``make_attack(name, **settings).fit(references...).score(target_logits)``;
the registry :data:`ATTACKS` lists them by name. End-to-end runs on plugins (reference
training, metrics, results JSON) are in :mod:`attacks.membership.run`.
"""

from .base import ATTACKS, MembershipAttack, TooFewReferences, make_attack
from .stats import logit_confidence

__all__ = ["ATTACKS", "MembershipAttack", "TooFewReferences", "make_attack", "logit_confidence"]
