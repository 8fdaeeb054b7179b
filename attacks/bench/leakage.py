"""What the empirical columns of a cell can and cannot say, across its seeds.

* The ceiling: every empirical epsilon carries the largest bound a perfect attack could
  demonstrate on its sample (:func:`attacks.metrics.clopper_pearson_epsilon_ceiling` for the
  threshold-based bound on its evaluation half; :func:`attacks.metrics.one_run_epsilon_ceiling`
  for the one-run audit on the canaries). A finite claim above the ceiling can be neither
  confirmed nor contradicted by that sample: the tables say "cannot tell", never 0.
* The pooled one-run audit: the seeds of a cell are independent trainings on independent
  canary draws, and each canary enters one training only, so the seeds together are one
  mechanism that is (epsilon, delta)-DP in every canary (parallel composition). Each seed's
  guesses are fixed by that seed's own policy (top and bottom fractions of its scores), so
  summing guesses ``r``, correct guesses ``v`` and canaries ``m`` over the seeds is a valid
  one-run audit (Steinke, Nasr, Jagielski 2023, Thm 3.1) with a higher ceiling than any seed.
* The verdict of a cell: ``BUG`` (a bound above the claim), ``leaks`` (no DP and a bound above
  0), ``cannot tell`` (a finite claim above every ceiling), ``consistent`` (a sample that could
  have contradicted the claim did not), ``no leak seen`` (no DP, every bound 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CANNOT_TELL = "cannot tell"


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]


def pooled_one_run(rows: Sequence[dict[str, Any]], p_target: float = 0.05) -> dict[str, float] | None:
    """The one-run audit pooled over the seeds of one cell: ``{"epsilon_lb", "ceiling", "r",
    "v", "m", "delta"}``, or None when the rows hold no canary audit."""
    from attacks.metrics import one_run_epsilon, one_run_epsilon_ceiling

    audited = [r for r in rows if _finite([r.get("canary_m")]) and int(r["canary_m"]) > 0]
    if not audited:
        return None
    r = sum(int(x["canary_guesses"]) for x in audited)
    v = sum(int(x["canary_correct"]) for x in audited)
    m = sum(int(x["canary_m"]) for x in audited)
    delta = max(_finite([x.get("delta") for x in audited]) or [0.0])
    return {
        "epsilon_lb": one_run_epsilon(r, v, m, delta=delta, p_target=p_target),
        "ceiling": one_run_epsilon_ceiling(r, m=m, delta=delta, p_target=p_target),
        "r": r,
        "v": v,
        "m": m,
        "delta": delta,
        "runs": len(audited),
    }


def claim_of(rows: Sequence[dict[str, Any]]) -> float:
    """The cell's claim: the largest claimed epsilon over its seeds (inf without DP)."""
    claims = [float(r.get("claimed_epsilon", math.inf)) for r in rows]
    claims = [c for c in claims if not math.isnan(c)]
    return max(claims) if claims else math.nan


def cannot_tell(claim: float, ceiling: float) -> bool:
    """A finite claim that no attack on this sample could contradict."""
    return math.isfinite(claim) and math.isfinite(ceiling) and claim > ceiling


def verdict(rows: Sequence[dict[str, Any]], pooled: dict | None) -> str:
    """One word for the cell (see the module docstring)."""
    claim = claim_of(rows)
    if any(r.get("above_claim") for r in rows) or (pooled is not None and pooled["epsilon_lb"] > claim + 1e-9):
        return "BUG"
    bounds = _finite([r.get("empirical_epsilon") for r in rows]) + _finite([r.get("canary_epsilon") for r in rows])
    if pooled is not None:
        bounds.append(pooled["epsilon_lb"])
    ceilings = _finite([r.get("empirical_ceiling") for r in rows]) + _finite([r.get("canary_ceiling") for r in rows])
    if pooled is not None:
        ceilings.append(pooled["ceiling"])
    if not math.isfinite(claim):
        if not bounds:
            return "-"
        return "leaks" if max(bounds) > 0 else "no leak seen"
    if not ceilings:
        return "-"
    return CANNOT_TELL if cannot_tell(claim, max(ceilings)) else "consistent"
