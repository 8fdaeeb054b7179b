"""Empirical epsilon lower bounds, and the largest epsilon a sample can show.

- the Clopper-Pearson bound from TPR/FPR with the threshold chosen on one half of the records
  and the bound computed on the other (Jagielski et al. 2020, "Auditing Differentially Private
  Machine Learning"; Nasr et al. 2021);
- the one-run audit of Steinke, Nasr and Jagielski (2023), "Privacy Auditing with One (1)
  Training Run", Theorem 3.1 / Algorithm 1;
- the ceilings: what a perfect attack could show on a sample of that size, so that a claim
  above it is reported as "cannot tell", never as a pass.

Convention as in :mod:`attacks.metrics`: label 1 = member, higher score = more likely a member.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from forge_secure.errors import ForgeValueError

from .metrics import _check_scores_labels


def epsilon_from_rates(tpr: float, fpr: float, delta: float = 0.0) -> float:
    """The epsilon implied by one test with these error rates.

    Any test against an (eps, delta)-DP mechanism satisfies TPR <= e^eps FPR + delta and
    TNR <= e^eps FNR + delta (Kairouz et al. 2015), so
    eps >= max{ln((TPR - delta)/FPR), ln((1 - FPR - delta)/(1 - TPR))}. Returns 0 when the
    test is no better than chance and ``inf`` when an error rate is 0 with a useful test.
    """
    best = 0.0
    for num, den in ((tpr - delta, fpr), (1.0 - fpr - delta, 1.0 - tpr)):
        if num <= 0:
            continue
        if den <= 0:
            return math.inf
        best = max(best, math.log(num / den))
    return best


def clopper_pearson_epsilon(tp: int, n_pos: int, fp: int, n_neg: int, *, delta: float = 0.0, alpha: float = 0.05) -> dict:
    """Empirical epsilon lower bound with Clopper-Pearson intervals (Jagielski et al. 2020).

    At confidence 1 - alpha: TPR_lo = Beta^-1(alpha/2; TP, P - TP + 1) (0 if TP = 0),
    FPR_hi = Beta^-1(1 - alpha/2; FP + 1, N - FP) (1 if FP = N); and symmetrically for the
    other tail (TNR_lo, FNR_hi). Returns ``{"epsilon_lb", "tpr_lo", "fpr_hi", ...}``.
    """
    for name, k, n in (("TP", tp, n_pos), ("FP", fp, n_neg)):
        if n <= 0 or k < 0 or k > n:
            raise ForgeValueError(f"need 0 <= {name} <= count and count > 0, got {k}/{n}", code="metrics.counts")
    if not (0 < alpha < 1):
        raise ForgeValueError(f"alpha {alpha!r} is not in (0, 1)", fix="use e.g. 0.05", code="metrics.alpha")

    def lo(k, n):
        return 0.0 if k == 0 else float(beta_dist.ppf(alpha / 2, k, n - k + 1))

    def hi(k, n):
        return 1.0 if k == n else float(beta_dist.ppf(1 - alpha / 2, k + 1, n - k))

    tpr_lo, fpr_hi = lo(tp, n_pos), hi(fp, n_neg)
    tnr_lo, fnr_hi = lo(n_neg - fp, n_neg), hi(n_pos - tp, n_pos)
    eps = 0.0
    if tpr_lo - delta > 0 and fpr_hi > 0:
        eps = max(eps, math.log((tpr_lo - delta) / fpr_hi))
    if tnr_lo - delta > 0 and fnr_hi > 0:
        eps = max(eps, math.log((tnr_lo - delta) / fnr_hi))
    return {
        "epsilon_lb": eps,
        "tpr_lo": tpr_lo,
        "fpr_hi": fpr_hi,
        "tnr_lo": tnr_lo,
        "fnr_hi": fnr_hi,
        "tp": int(tp),
        "fp": int(fp),
        "members": int(n_pos),
        "non_members": int(n_neg),
        "alpha": alpha,
        "delta": delta,
    }


def split_clopper_pearson_epsilon(scores, labels, *, delta: float = 0.0, alpha: float = 0.05, seed: int | np.random.Generator = 0) -> dict:
    """Empirical epsilon with the threshold chosen on one half and the bound on the other.

    Records are split at random (seeded, stratified by label) into a selection half and an
    evaluation half. On the selection half every threshold's Clopper-Pearson bound is
    computed and the best threshold kept; the reported bound is computed on the evaluation
    half with that one threshold, so it is not biased upward by the search (REFERENCES.md,
    "a maximum over thresholds on the same data is biased upward").
    """
    s, y = _check_scores_labels(scores, labels)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sel = np.zeros(s.size, dtype=bool)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        sel[idx[: idx.size // 2]] = True
    ev = ~sel
    if y[sel].sum() == 0 or (y[sel] == 0).sum() == 0 or y[ev].sum() == 0 or (y[ev] == 0).sum() == 0:
        raise ForgeValueError(
            f"too few records to split ({int(y.sum())} members, {int((y == 0).sum())} non-members)",
            fix="give at least 2 members and 2 non-members",
            code="metrics.too_few",
        )

    def counts(ss, yy, t):
        pred = ss >= t
        return int((pred & (yy == 1)).sum()), int((yy == 1).sum()), int((pred & (yy == 0)).sum()), int((yy == 0).sum())

    s_sel, y_sel = s[sel], y[sel]
    candidates = np.unique(s_sel)
    best_t, best_eps = float(candidates[-1]), -1.0
    for t in candidates:
        eps = clopper_pearson_epsilon(*counts(s_sel, y_sel, t), delta=delta, alpha=alpha)["epsilon_lb"]
        if eps > best_eps:
            best_t, best_eps = float(t), eps
    result = clopper_pearson_epsilon(*counts(s[ev], y[ev], best_t), delta=delta, alpha=alpha)
    result.update(
        {
            "method": "clopper-pearson",
            "threshold": best_t,
            "selection_records": int(sel.sum()),
            "evaluation_records": int(ev.sum()),
            "selection_epsilon": max(best_eps, 0.0),
        }
    )
    return result


def one_run_p_value(r: int, v: int, m: int, epsilon: float, delta: float = 0.0) -> float:
    """p-value of the one-run audit (Steinke, Nasr, Jagielski 2023, Thm 3.1 / Prop. 5.7).

    r guesses, v of them correct, m audit examples each included independently with
    probability 1/2. With q = e^eps / (1 + e^eps):
    beta = P[Bin(r, q) >= v]; alpha = max_{i=1..v} (1/i) P[v - i <= Bin(r, q) < v];
    p = beta + alpha * delta * 2m (capped at 1).
    """
    if not (0 <= v <= r <= m) or m <= 0:
        raise ForgeValueError(f"need 0 <= v <= r <= m and m > 0, got v={v}, r={r}, m={m}", code="metrics.one_run_counts")
    if epsilon < 0 or delta < 0:
        raise ForgeValueError(f"epsilon and delta must be >= 0, got {epsilon}, {delta}", code="metrics.one_run_eps")
    q = 1.0 / (1.0 + math.exp(-epsilon)) if epsilon < 700 else 1.0
    beta = float(binom.sf(v - 1, r, q)) if v > 0 else 1.0  # P[Bin >= v]
    alpha = 0.0
    if delta > 0 and v > 0:
        cdf = binom.cdf(np.arange(-1, v), r, q)  # cdf[k+1] = P[Bin <= k], k = -1..v-1
        # P[v - i <= Bin < v] = P[Bin <= v-1] - P[Bin <= v-i-1]
        i = np.arange(1, v + 1)
        mass = cdf[v] - cdf[v - i]
        alpha = float(np.max(mass / i))
    return float(min(1.0, beta + alpha * delta * 2 * m))


def one_run_epsilon(r: int, v: int, m: int, *, delta: float = 0.0, p_target: float = 0.05, tol: float = 1e-6) -> float:
    """eps_LB = sup{eps : p(eps) < p_target} by bisection (Steinke et al. 2023, Alg. 1).

    p(eps) increases with eps, so the set is an interval [0, eps_LB); returns 0 when even
    eps = 0 is not rejected.
    """
    if not (0 < p_target < 1):
        raise ForgeValueError(f"p_target {p_target!r} is not in (0, 1)", fix="use e.g. 0.05", code="metrics.p_target")
    if one_run_p_value(r, v, m, 0.0, delta) >= p_target:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(r, v, m, hi, delta) < p_target:
        hi *= 2.0
        if hi > 200:
            return math.inf
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if one_run_p_value(r, v, m, mid, delta) < p_target:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_audit(
    scores,
    labels,
    *,
    k_plus: int | None = None,
    k_minus: int | None = None,
    delta: float = 0.0,
    p_target: float = 0.05,
) -> dict:
    """The one-run audit on ``m`` records whose membership was drawn by fair coin flips.

    Guess IN for the ``k_plus`` highest scores and OUT for the ``k_minus`` lowest, abstain on
    the rest (Steinke et al. 2023, Alg. 1). The guesses must be fixed without looking at the
    labels; by default a fixed fraction (the top and bottom 10 % of records, at least one
    each) is used, never tuned on this data. Valid only when membership came from
    independent coin flips with probability 1/2.
    """
    s, y = _check_scores_labels(scores, labels)
    m = s.size
    if k_plus is None:
        k_plus = max(1, int(round(0.1 * m)))
    if k_minus is None:
        k_minus = max(1, int(round(0.1 * m)))
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise ForgeValueError(f"k+={k_plus}, k-={k_minus} do not fit {m} records", fix="use k+ + k- <= m", code="metrics.one_run_k")
    order = np.argsort(s, kind="stable")
    guess_in = order[m - k_plus :] if k_plus else np.array([], dtype=int)
    guess_out = order[:k_minus]
    v = int(y[guess_in].sum() + (1 - y[guess_out]).sum())
    r = int(k_plus + k_minus)
    eps = one_run_epsilon(r, v, m, delta=delta, p_target=p_target)
    return {
        "method": "one-run (Steinke, Nasr, Jagielski 2023)",
        "epsilon_lb": eps,
        "m": int(m),
        "guesses": r,
        "correct": v,
        "k_plus": int(k_plus),
        "k_minus": int(k_minus),
        "p_target": p_target,
        "delta": delta,
    }


# --------------------------------------------------------------------------- what a sample can show


def one_run_epsilon_ceiling(r: int, *, m: int | None = None, delta: float = 0.0, p_target: float = 0.05) -> float:
    """The largest epsilon lower bound a one-run audit with ``r`` guesses can ever report.

    Even a perfect attack (all ``r`` guesses right, v = r) cannot show more: with delta = 0
    the bound solves q^r = p_target with q = e^eps / (1 + e^eps), so
    ``eps_max = ln(b / (1 - b))``, ``b = p_target ** (1 / r)`` (Steinke, Nasr, Jagielski 2023,
    Thm 3.1; REFERENCES.md "The ceiling of a one-run audit"). At p_target 0.05: r = 64 -> 3.04,
    256 -> 4.44, 1000 -> 5.81, 4000 -> 7.20. A claim above the ceiling can be neither confirmed
    nor contradicted by that sample.

    Arguments:
        r: number of guesses the audit makes (k+ IN guesses plus k- OUT guesses).
        m: number of audit examples (canaries or coin-flip records) each included with
            probability 1/2, r <= m; default r. Only matters when delta > 0: the delta term
            of the p-value grows with delta * m, so a larger delta or m lowers the ceiling.
        delta: the delta of the (eps, delta) claim being audited.
        p_target: the audit's significance level (1 - confidence), e.g. 0.05.

    Returns 0.0 when ``r == 0`` (no guess shows anything).
    """
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ForgeValueError(
            f"r = {r!r} must be a whole number of guesses >= 0", fix="count the guesses the audit makes", code="metrics.one_run_counts"
        )
    m = int(r) if m is None else m
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < r or m < 0:
        raise ForgeValueError(
            f"m = {m!r} must be a whole number >= r = {r}", fix="give the number of audit examples", code="metrics.one_run_counts"
        )
    if not (0 < p_target < 1):
        raise ForgeValueError(f"p_target {p_target!r} is not in (0, 1)", fix="use e.g. 0.05", code="metrics.p_target")
    if not (0 <= delta < 1):
        raise ForgeValueError(f"delta {delta!r} is not in [0, 1)", fix="give the claim's delta", code="metrics.one_run_eps")
    r = int(r)
    if r == 0:
        return 0.0
    if delta == 0:
        b = p_target ** (1.0 / r)
        return float(math.log(b / (1.0 - b)))
    return float(one_run_epsilon(r, r, max(int(m), 1), delta=delta, p_target=p_target))


def clopper_pearson_epsilon_ceiling(members: int, non_members: int, *, delta: float = 0.0, alpha: float = 0.05) -> float:
    """The largest Clopper-Pearson epsilon lower bound a sample of this size can ever give.

    A perfect test (TP = members, FP = 0) on ``members`` members and ``non_members``
    non-members gives TPR_lo = (alpha/2)^(1/P) and FPR_hi = 1 - (alpha/2)^(1/N), so
    ``eps_max = ln((TPR_lo - delta) / FPR_hi)`` (:func:`clopper_pearson_epsilon`, Jagielski
    et al. 2020). No attack on this sample can demonstrate more.

    Arguments:
        members: members in the sample the bound is computed on (for
            :func:`split_clopper_pearson_epsilon`, the evaluation half: ``P - P // 2``).
        non_members: non-members in that sample (evaluation half: ``N - N // 2``).
        delta: the delta of the (eps, delta) claim being audited.
        alpha: 1 - confidence of the two-sided intervals (alpha / 2 per tail), as in
            :func:`clopper_pearson_epsilon`.
    """
    for name, n in (("members", members), ("non_members", non_members)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ForgeValueError(
                f"{name} = {n!r} must be a whole number >= 1", fix="count the records the bound is computed on", code="metrics.counts"
            )
    return float(clopper_pearson_epsilon(int(members), int(members), 0, int(non_members), delta=delta, alpha=alpha)["epsilon_lb"])


def one_run_guesses_needed(epsilon: float, *, p_target: float = 0.05) -> int:
    """The fewest guesses r with which a perfect one-run audit (delta 0) could demonstrate
    ``epsilon``: the smallest r with ``one_run_epsilon_ceiling(r) >= epsilon``
    (q^r <= p_target, q = e^eps / (1 + e^eps)). What an audit needs to settle a claim."""
    if not (epsilon > 0) or not math.isfinite(epsilon):
        raise ForgeValueError(f"epsilon {epsilon!r} must be finite and > 0", code="metrics.one_run_eps")
    if not (0 < p_target < 1):
        raise ForgeValueError(f"p_target {p_target!r} is not in (0, 1)", fix="use e.g. 0.05", code="metrics.p_target")
    log_q = -math.log1p(math.exp(-epsilon))
    return int(math.ceil(math.log(p_target) / log_q - 1e-12))
