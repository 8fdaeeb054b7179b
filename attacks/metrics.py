"""Attack metrics as plain functions over scores and labels.

Convention everywhere: label 1 = member (the positive class), higher score = more
likely a member.

What is here:

- ROC curve and AUC (``sklearn.metrics.roc_curve`` / ``roc_auc_score``);
- TPR at a fixed low FPR *together with the FPR actually reached* (Carlini et al. 2022,
  "Membership Inference Attacks From First Principles", argue for the low-FPR regime;
  AUC alone hides the tail);
- balanced accuracy at the best threshold;
- seeded bootstrap confidence intervals for any of these (Efron 1979, percentile method), and
  the toolkit's one interval method for AUC and for TPR at a fixed FPR.

The empirical epsilon lower bounds and what a sample can show live in :mod:`attacks.epsilon`;
their names are still importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score, roc_curve

from forge_secure.errors import ForgeValueError

DEFAULT_FPRS = (0.001, 0.01)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion.

    Uses ``scipy.stats.binomtest(...).proportion_ci(method="exact")``; returns
    ``(low, high)``, with ``(0.0, 1.0)`` when ``trials == 0``.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


# --------------------------------------------------------------------------- input checks


def _check_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ForgeValueError(
            f"scores and labels differ in length ({s.size} vs {y.size})",
            fix="pass one score per labelled record",
            code="metrics.shape",
        )
    if not np.all(np.isin(y, (0, 1))):
        raise ForgeValueError(
            f"labels must be 0 (non-member) or 1 (member), found {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}",
            fix="encode members as 1 and non-members as 0",
            code="metrics.labels",
        )
    y = y.astype(np.int64)
    if y.sum() == 0 or y.sum() == y.size:
        raise ForgeValueError(
            f"labels hold only one class ({int(y.sum())} members of {y.size} records)",
            fix="give both members and non-members",
            code="metrics.one_class",
        )
    if not np.all(np.isfinite(s)):
        raise ForgeValueError(
            f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite",
            fix="check the attack's inputs (logits) for NaN/inf",
            code="metrics.nonfinite",
        )
    return s, y


# --------------------------------------------------------------------------- ROC metrics


def roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` from ``sklearn.metrics.roc_curve`` (members positive)."""
    s, y = _check_scores_labels(scores, labels)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thr


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); 0.5 is chance."""
    s, y = _check_scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


@dataclass(frozen=True)
class TprAtFpr:
    """TPR at the largest achieved FPR not above ``target_fpr``.

    ``fpr_reached`` is that achieved FPR (0 when even the strictest threshold has false
    positives at this sample size, in which case ``tpr`` is the TPR at FPR 0, possibly 0).
    ``min_resolvable_fpr`` = 1/N: below it a target FPR cannot be measured honestly.
    """

    target_fpr: float
    tpr: float
    fpr_reached: float
    threshold: float
    min_resolvable_fpr: float

    def to_dict(self) -> dict:
        return asdict(self)


def tpr_at_fpr(scores, labels, target_fpr: float) -> TprAtFpr:
    """TPR at fixed FPR, reporting the FPR actually reached (Carlini et al. 2022, Sec. 4)."""
    if not (0.0 <= target_fpr <= 1.0):
        raise ForgeValueError(f"target FPR {target_fpr!r} is outside [0, 1]", fix="use e.g. 0.001 or 0.01", code="metrics.fpr")
    fpr, tpr, thr = roc(scores, labels)
    n_neg = int((np.asarray(labels).reshape(-1) == 0).sum())
    ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
    # roc_curve's fpr is non-decreasing; the last admissible point has the largest FPR and,
    # among equal FPRs, the largest TPR.
    i = int(ok[-1])
    return TprAtFpr(
        target_fpr=float(target_fpr),
        tpr=float(tpr[i]),
        fpr_reached=float(fpr[i]),
        threshold=float(thr[i]),
        min_resolvable_fpr=1.0 / n_neg,
    )


def balanced_accuracy(scores, labels, threshold: float | None = None) -> tuple[float, float]:
    """Balanced accuracy ``(TPR + TNR) / 2`` of the rule "member if score >= threshold".

    With ``threshold=None`` the best threshold on these same records is used (an
    optimistic figure: say so when reporting it). Returns ``(accuracy, threshold)``.
    """
    s, y = _check_scores_labels(scores, labels)
    if threshold is None:
        fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
        j = int(np.argmax(tpr - fpr))
        return float((tpr[j] + 1.0 - fpr[j]) / 2.0), float(thr[j])
    pred = s >= threshold
    tpr = pred[y == 1].mean()
    tnr = (~pred[y == 0]).mean()
    return float((tpr + tnr) / 2.0), float(threshold)


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    scores,
    labels,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron 1979) of ``statistic(scores, labels)``.

    Resamples members and non-members separately (stratified), so every replicate has both
    classes and the class balance of the sample. Seeded: the same inputs and seed give the
    same interval.
    """
    s, y = _check_scores_labels(scores, labels)
    if n_boot < 10:
        raise ForgeValueError(f"n_boot={n_boot} is too small", fix="use at least 10 (1000 is usual)", code="metrics.n_boot")
    if not (0.0 < confidence < 1.0):
        raise ForgeValueError(f"confidence {confidence!r} is not in (0, 1)", fix="use e.g. 0.95", code="metrics.confidence")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        values[b] = statistic(s[idx], y[idx])
    lo, hi = np.quantile(values, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def auc_interval(
    scores, labels, *, n_boot: int = 1000, confidence: float = 0.95, seed: int | np.random.Generator = 0
) -> tuple[float, float]:
    """Stratified percentile-bootstrap interval of the ROC AUC: members and non-members are
    resampled separately (``scipy.stats.bootstrap`` over the two samples), and each replicate's
    AUC is the Mann-Whitney statistic U / (P N), vectorised. The one AUC interval of the toolkit:
    attack results and the audit both use it, so the same scores, settings and seed give the
    same interval."""
    from scipy.stats import bootstrap, mannwhitneyu

    s, y = _check_scores_labels(scores, labels)
    if n_boot < 10:
        raise ForgeValueError(f"n_boot={n_boot} is too small", fix="use at least 10 (1000 is usual)", code="metrics.n_boot")
    if not (0.0 < confidence < 1.0):
        raise ForgeValueError(f"confidence {confidence!r} is not in (0, 1)", fix="use e.g. 0.95", code="metrics.confidence")
    pos, neg = s[y == 1], s[y == 0]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if pos.size < 2 or neg.size < 2:  # scipy's bootstrap needs two observations per sample
        return bootstrap_ci(roc_auc, s, y, n_boot=n_boot, confidence=confidence, seed=rng)

    def stat(a, b, axis=-1):
        return mannwhitneyu(a, b, axis=axis).statistic / (a.shape[axis] * b.shape[axis])

    ci = bootstrap(
        (pos, neg),
        stat,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=confidence,
        method="percentile",
        random_state=rng,
        batch=max(1, n_boot // 4),
    ).confidence_interval
    return float(ci.low), float(ci.high)


def tpr_at_fpr_interval(scores, labels, target_fpr: float, confidence: float = 0.95) -> dict:
    """TPR at ``target_fpr`` (:func:`tpr_at_fpr`, the FPR actually reached kept) with its
    Clopper-Pearson interval. The threshold depends on non-member scores only, so given it the
    true positives are Binomial(P, TPR(t)) and the interval is exact; ``fpr_hi`` is the
    Clopper-Pearson upper bound on the true FPR at that threshold (a TPR is *established* at the
    target FPR only when ``fpr_hi`` <= target). The one TPR interval of the toolkit."""
    s, y = _check_scores_labels(scores, labels)
    point = tpr_at_fpr(s, y, target_fpr)
    pos, neg = s[y == 1], s[y == 0]
    tp, fp = int((pos >= point.threshold).sum()), int((neg >= point.threshold).sum())
    return {
        **point.to_dict(),
        "ci": list(clopper_pearson(tp, int(pos.size), confidence)),
        "false_positives": fp,
        "fpr_hi": clopper_pearson(fp, int(neg.size), confidence)[1],
    }


def attack_metrics(
    scores,
    labels,
    *,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Every headline metric with its interval, as a JSON-ready dict: AUC with
    :func:`auc_interval`, TPR at each FPR with :func:`tpr_at_fpr_interval`, balanced accuracy
    with :func:`bootstrap_ci`.

    ``{"members": P, "non_members": N, "auc": {"value", "ci"}, "tpr_at_fpr": [{"target_fpr",
    "tpr", "fpr_reached", "min_resolvable_fpr", "ci", "false_positives", "fpr_hi"}], "balanced_accuracy": {"value",
    "threshold", "ci", "note"}, "confidence": 0.95, "n_boot": 1000, "seed": 0}``.
    """
    s, y = _check_scores_labels(scores, labels)
    rng = np.random.default_rng(seed)
    out: dict = {
        "members": int(y.sum()),
        "non_members": int((y == 0).sum()),
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
        "positive_class": "member",
    }
    out["auc"] = {"value": roc_auc(s, y), "ci": list(auc_interval(s, y, n_boot=n_boot, confidence=confidence, seed=rng))}
    out["tpr_at_fpr"] = [tpr_at_fpr_interval(s, y, f, confidence) for f in fprs]
    acc, thr = balanced_accuracy(s, y)
    out["balanced_accuracy"] = {
        "value": acc,
        "threshold": thr,
        "ci": list(bootstrap_ci(lambda a, b: balanced_accuracy(a, b)[0], s, y, n_boot=n_boot, confidence=confidence, seed=rng)),
        "note": "threshold chosen on the same records (optimistic)",
    }
    return out


_EPSILON_NAMES = (
    "epsilon_from_rates",
    "clopper_pearson_epsilon",
    "split_clopper_pearson_epsilon",
    "one_run_p_value",
    "one_run_epsilon",
    "one_run_audit",
    "one_run_epsilon_ceiling",
    "clopper_pearson_epsilon_ceiling",
    "one_run_guesses_needed",
)


def __getattr__(name: str):
    """The empirical-epsilon functions moved to :mod:`attacks.epsilon`; ``attacks.metrics.X``
    and ``from attacks.metrics import X`` keep working."""
    if name in _EPSILON_NAMES:
        from . import epsilon

        return getattr(epsilon, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
