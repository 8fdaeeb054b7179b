"""From signals to figures: an attack's scores, the metrics and the empirical epsilon.

:func:`measure` is the one place where a membership result's numbers are computed, from
:class:`~attacks.membership.signals.Signals` alone (no model, no training): ``run_mia``
calls it on the signals it has just produced, and ``rescore`` on the signals kept in a
results file, so both give the same figures from the same signals, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from .. import metrics as M
from .base import TooFewReferences
from .signals import Signals


def _claimed_float(claimed: dict) -> float:
    eps = claimed.get("epsilon", "inf")
    return math.inf if eps == "inf" else float(eps)


def empirical_epsilon(
    scores,
    labels,
    *,
    coin_flip: bool,
    delta: float,
    seed: int,
    p_target: float = 0.05,
    audit_fraction: float = 0.1,
    claimed: dict | None = None,
    canaries: dict | None = None,
) -> dict:
    """Both lower bounds (split Clopper-Pearson; one-run when membership is by coin flips)
    next to the claimed epsilon."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    out: dict = {"clopper_pearson": M.split_clopper_pearson_epsilon(scores, labels, delta=delta, seed=seed)}
    k = max(1, int(round(audit_fraction * len(scores))))
    out["one_run"] = M.one_run_audit(scores, labels, k_plus=k, k_minus=k, delta=delta, p_target=p_target) if coin_flip else None
    out["one_run_note"] = None if coin_flip else "membership was not drawn by independent fair coin flips; the one-run audit does not apply"
    out["one_run_canaries"] = None
    if canaries is not None:
        cs, cl = np.asarray(canaries["scores"], float), np.asarray(canaries["labels"])
        kc = max(1, int(round(audit_fraction * len(cs))))
        out["one_run_canaries"] = M.one_run_audit(cs, cl, k_plus=kc, k_minus=kc, delta=delta, p_target=p_target)
    bounds = [out["clopper_pearson"]["epsilon_lb"]] + [out[k]["epsilon_lb"] for k in ("one_run", "one_run_canaries") if out[k]]
    out["epsilon_lb"] = float(max(bounds))
    claimed = claimed or {"epsilon": "inf"}
    out["claimed"] = claimed.get("epsilon", "inf")
    out["exceeds_claim"] = bool(out["epsilon_lb"] > _claimed_float(claimed))
    out["confidence"] = f"Clopper-Pearson at 95 %; one-run at p < {p_target:g}"
    return out


def measure(signals: Signals, settings, *, claimed: dict, coin_flip: bool, canary_block: dict | None) -> dict:
    """Scores, metrics and empirical epsilon of ``settings.attack`` (a ``MiaSettings``) on
    ``signals``: the ``attack``, ``settings``, ``scores``, ``labels``, ``is_canary``,
    ``metrics``, ``empirical_epsilon`` and ``canaries`` entries of a results file."""
    attack = settings.make_attack()
    need = attack.min_references()
    R = signals.references if need > 0 else 0
    if R < need:
        raise TooFewReferences(
            f"attack {settings.attack!r} ({attack._variant()}) needs at least "
            f"{need} reference models, the signals hold {signals.references}",
            fix="choose an attack variant that needs fewer references, or rerun forge attack mia with more --references",
        )
    y = signals.class_labels
    pop_y = signals.population_labels
    if R:
        attack.fit(signals.first(R).reference_set(), y, population_labels=pop_y)
    else:
        attack.fit(None, y)
    scores = attack.score(signals.target_logits, y, population_target_logits=signals.population_target_logits)
    labels = signals.membership
    metrics = M.attack_metrics(scores, labels, n_boot=settings.n_boot, confidence=settings.confidence, seed=settings.seed)
    delta = float(claimed["delta"]) if claimed.get("delta") not in (None, "inf") else 0.0
    is_canary = signals.is_canary
    canary_scores = {"scores": scores[is_canary], "labels": labels[is_canary]} if is_canary.any() else None
    emp = empirical_epsilon(
        scores,
        labels,
        coin_flip=coin_flip,
        delta=delta,
        seed=settings.seed,
        p_target=settings.p_target,
        audit_fraction=settings.audit_fraction,
        claimed=claimed,
        canaries=canary_scores,
    )
    block = dict(canary_block) if canary_block else canary_block
    if is_canary.any() and block is not None:
        block["metrics_records_only"] = M.attack_metrics(
            scores[~is_canary], labels[~is_canary], n_boot=settings.n_boot, confidence=settings.confidence, seed=settings.seed
        )
    return {
        "attack": settings.attack,
        "settings": {**asdict(settings), **attack.settings(), "references": R},
        "is_canary": is_canary,
        "scores": scores,
        "labels": labels,
        "metrics": metrics,
        "empirical_epsilon": emp,
        "canaries": block,
        "references_used": R,
    }
