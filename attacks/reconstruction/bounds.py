"""Reconstruction robustness (ReRo) bounds: how often *any* reconstruction attack can succeed
against a differentially private release, given the attack's baseline success ``kappa``.

* Balle, Cherubin, Hayes, "Reconstructing Training Data with Informed Adversaries" (IEEE S&P
  2022) and Hayes, Mahloujifar, Balle, "Bounding Training Data Reconstruction in DP-SGD"
  (NeurIPS 2023): an (eps, delta)-DP mechanism is (kappa, e^eps kappa + delta)-ReRo, i.e. an
  attack whose success without the target's data is ``kappa`` succeeds with probability at most
  ``e^eps kappa + delta`` against the release.
* Hayes et al. 2023, Theorem 2 (DP-SGD with Poisson sample rate q, noise multiplier sigma and
  T steps): success <= sup{P(S) : Q(S) <= kappa}, with P the T-fold product of the mixture
  (1 - q) N(0, sigma^2) + q N(1, sigma^2) and Q the T-fold product of N(0, sigma^2). By
  Neyman-Pearson the supremum is attained by the set where the log-likelihood ratio
  log dP/dQ exceeds its (1 - kappa) quantile under Q; both the quantile and P(S) are
  estimated here by Monte Carlo with a seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from forge_secure.errors import ForgeValueError


def _check_kappa(kappa: float) -> None:
    if not (isinstance(kappa, (int, float)) and 0.0 < kappa <= 1.0 and math.isfinite(kappa)):
        raise ForgeValueError(
            f"baseline success kappa must lie in (0, 1], got {kappa!r}",
            fix="pass the prior's success probability, e.g. 1/n for n candidates",
            code="recon.kappa",
        )


def rero_bound_dp(epsilon: float, delta: float, kappa: float) -> float:
    """Success bound of any reconstruction attack on an (eps, delta)-DP release:
    ``min(1, e^eps * kappa + delta)`` (Balle et al. 2022, Hayes et al. 2023)."""
    _check_kappa(kappa)
    if not (epsilon >= 0) or not (0.0 <= delta <= 1.0):
        raise ForgeValueError(
            f"need epsilon >= 0 and 0 <= delta <= 1, got epsilon={epsilon!r}, delta={delta!r}",
            fix="pass the plugin's recorded (epsilon, delta)",
            code="recon.dp_params",
        )
    if math.isinf(epsilon):
        return 1.0
    return float(min(1.0, math.exp(epsilon) * kappa + delta))


@dataclass(frozen=True)
class ReRoBound:
    """A Monte Carlo ReRo bound for DP-SGD, with its Monte Carlo standard error."""

    bound: float
    mc_stderr: float
    kappa: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    samples: int
    seed: int
    method: str = "dpsgd-monte-carlo (Hayes et al. 2023, Thm 2)"

    def to_dict(self) -> dict:
        return asdict(self)


def _llr(x: np.ndarray, q: float, sigma: float) -> np.ndarray:
    """Sum over steps of log[(1 - q) + q exp((2 x - 1) / (2 sigma^2))], the log-likelihood ratio
    of the mixture P against Q for each row of ``x`` (shape (m, T)), computed stably."""
    z = (2.0 * x - 1.0) / (2.0 * sigma * sigma)
    if q >= 1.0:
        return z.sum(axis=1)
    a = np.log1p(-q)
    b = math.log(q) + z
    return np.logaddexp(a, b).sum(axis=1)


def rero_bound_dpsgd(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    kappa: float,
    *,
    samples: int = 200_000,
    seed: int = 0,
    chunk: int = 20_000,
) -> ReRoBound:
    """Hayes et al. 2023 ReRo bound for DP-SGD, by Monte Carlo on the log-likelihood ratio.

    ``samples`` draws from Q fix the (1 - kappa) quantile tau of the LLR (the Neyman-Pearson
    set S = {LLR > tau} with Q(S) = kappa); ``samples`` draws from P then estimate P(S) as a
    plain frequency (importance weighting the Q draws instead is badly heavy-tailed when P
    and Q are far apart, i.e. at low noise). The binomial standard error is returned too.
    Without noise (sigma = 0) the bound is 1.
    """
    _check_kappa(kappa)
    if not (0.0 < sample_rate <= 1.0) or int(steps) != steps or steps < 1:
        raise ForgeValueError(
            f"need 0 < sample_rate <= 1 and steps >= 1, got sample_rate={sample_rate!r}, steps={steps!r}",
            fix="pass the plugin's recorded DP-SGD settings",
            code="recon.dp_params",
        )
    if noise_multiplier is None or not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ForgeValueError(
            f"noise multiplier must be a finite number >= 0, got {noise_multiplier!r}",
            fix="pass the plugin's recorded noise multiplier (0 for no DP)",
            code="recon.dp_params",
        )
    if samples < 1000:
        raise ForgeValueError(f"need at least 1000 Monte Carlo samples, got {samples}", fix="raise --samples", code="recon.samples")
    steps = int(steps)
    if noise_multiplier == 0 or kappa >= 1.0:
        return ReRoBound(1.0, 0.0, kappa, float(noise_multiplier), float(sample_rate), steps, 0, seed)
    rng = np.random.default_rng(seed)
    sigma = float(noise_multiplier)
    llr_q = np.empty(samples)
    llr_p = np.empty(samples)
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        llr_q[start : start + m] = _llr(rng.normal(0.0, sigma, size=(m, steps)), sample_rate, sigma)
        shift = (rng.random((m, steps)) < sample_rate).astype(np.float64)
        llr_p[start : start + m] = _llr(rng.normal(0.0, sigma, size=(m, steps)) + shift, sample_rate, sigma)
    tau = float(np.quantile(llr_q, 1.0 - kappa, method="higher"))
    p = float((llr_p > tau).mean())
    se = math.sqrt(max(p * (1.0 - p), 1.0 / samples) / samples)
    # The Neyman-Pearson set can only raise success above the prior: P(S) >= Q(S) = kappa.
    bound = float(min(1.0, max(p, kappa)))
    return ReRoBound(bound, min(se, 1.0), float(kappa), sigma, float(sample_rate), steps, samples, seed)


def rero_bound_from_meta(dp: dict, kappa: float, *, samples: int = 200_000, seed: int = 0) -> dict:
    """The ReRo bounds for a plugin's recorded DP block (``forge.json["dp"]``): the DP-SGD
    Monte Carlo bound from (noise multiplier, sample rate, steps) and the generic
    e^eps kappa + delta bound from (epsilon, delta). Without DP both are 1."""
    if not isinstance(dp, dict) or not dp.get("enabled"):
        return {"kappa": kappa, "dpsgd": 1.0, "epsilon_delta": 1.0, "bound": 1.0, "note": "plugin trained without DP: no bound"}
    try:
        sigma = float(dp["noise_multiplier"])
        q = float(dp["sample_rate"])
        steps = int(dp["steps"])
        eps = float(dp["epsilon"])
        delta = float(dp["delta"])
    except (KeyError, TypeError, ValueError) as e:
        raise ForgeValueError(
            f"the plugin's DP record is incomplete or malformed ({e.__class__.__name__}: {e})",
            fix="the forge.json 'dp' block needs noise_multiplier, sample_rate, steps, epsilon and delta",
            code="recon.dp_record",
        ) from None
    mc = rero_bound_dpsgd(sigma, q, steps, kappa, samples=samples, seed=seed)
    generic = rero_bound_dp(eps, delta, kappa)
    return {
        "kappa": kappa,
        "dpsgd": mc.bound,
        "dpsgd_mc_stderr": mc.mc_stderr,
        "epsilon_delta": generic,
        "bound": min(mc.bound, generic),
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": steps,
        "epsilon": eps,
        "delta": delta,
        "method": mc.method,
    }


__all__ = ["ReRoBound", "rero_bound_dp", "rero_bound_dpsgd", "rero_bound_from_meta"]
