"""Attack metrics as plain functions over scores and labels.

Convention everywhere: label 1 = member (the positive class), higher score = more
likely a member.
"""

from __future__ import annotations

from scipy.stats import binomtest


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
