"""Re-deriving privacy figures from recorded mechanism parameters.

An audit never takes a claimed epsilon on trust: it recomputes it from the history of
Gaussian-mechanism steps ``[(noise_multiplier, sample_rate, steps), ...]`` with a privacy
accountant. Accountants (Opacus): PRV (Gopi, Lee, Wutschitz 2021, "Numerical Composition of
Differential Privacy"), RDP (Mironov 2017; conversion of Balle et al. 2020, Thm 21) and GDP
(Dong, Roth, Su 2019; may under-estimate). The figure always records which accountant made it.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable

from forge_secure.errors import ForgeDataError

ACCOUNTANTS = ("prv", "rdp", "gdp")


@functools.lru_cache(maxsize=256)
def _compute(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> tuple[float, str]:
    """Cached: plugins of one training recipe share their history, and PRV takes seconds.
    PRV refuses epsilons beyond its reliable range; the figure then comes from RDP (an upper
    bound, looser) and says so."""
    from forge_secure.errors import ForgeValueError
    from forge_secure.privacy.accountants import compute_epsilon  # A2's front end to the Opacus accountants

    try:
        return float(compute_epsilon([tuple(h) for h in history], delta, accountant)), accountant
    except ForgeValueError as e:
        if accountant == "prv" and e.code in ("dp.prv_range", "dp.accountant_failed"):
            return float(compute_epsilon([tuple(h) for h in history], delta, "rdp")), "rdp"
        raise


def rederive_epsilon(history: Iterable[tuple[float, float, int]], delta: float, accountant: str = "prv") -> float:
    """Epsilon of the composed ``history`` at ``delta``, recomputed with ``accountant``."""
    return rederive(history, delta, accountant)[0]


def rederive(history: Iterable[tuple[float, float, int]], delta: float, accountant: str = "prv") -> tuple[float, str]:
    """``(epsilon, accountant actually used)`` of the composed ``history`` at ``delta``.

    An empty history spends nothing (0). A step with noise multiplier 0 is not private (inf).
    """
    hist = [(float(s), float(q), int(t)) for s, q, t in history]
    for sigma, q, steps in hist:
        if not (0.0 < q <= 1.0) or steps < 0 or sigma < 0 or not math.isfinite(sigma):
            raise ForgeDataError(
                f"recorded mechanism (noise_multiplier={sigma}, sample_rate={q}, steps={steps}) is not valid",
                fix="the record is corrupt or was edited; re-train or restore the original manifest",
                code="audit.dp_record",
            )
    if not (0.0 < delta < 1.0):
        raise ForgeDataError(
            f"recorded delta {delta!r} is not in (0, 1)", fix="the record is corrupt or was edited", code="audit.dp_record"
        )
    hist = [h for h in hist if h[2] > 0]
    if not hist:
        return 0.0, accountant
    if any(sigma == 0.0 for sigma, _, _ in hist):
        return math.inf, accountant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDP's "experimental" warning; the accountant is recorded
        return _compute(tuple(hist), float(delta), accountant)
