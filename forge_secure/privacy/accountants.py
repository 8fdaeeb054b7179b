"""Privacy accountants for DP-SGD, on Opacus.

An accountant turns a *history* -- a list of ``(noise_multiplier, sample_rate, steps)``
entries, one per run of the Poisson-subsampled Gaussian mechanism -- into an epsilon at a
given delta. Composing several releases on the same data is concatenating their
histories (sequential composition; Dwork & Roth 2014, Thm 3.16, computed tightly by the
accountants below). A single Gaussian-mechanism release (e.g. noisy class means) is one
step with sample rate 1: ``(sigma, 1.0, 1)``.

Registered accountants (``ACCOUNTANTS``):

- ``prv`` (default): privacy-loss random variables, Gopi, Lee & Wutschitz, "Numerical
  composition of differential privacy", NeurIPS 2021 (Opacus ``PRVAccountant``). Tight,
  but it becomes slow and unreliable for large epsilon (Opacus issues #604, #587), so a
  history whose RDP bound exceeds :data:`PRV_MAX_EPSILON` is refused with the advice to
  use ``rdp``.
- ``rdp``: Renyi DP of the sampled Gaussian mechanism, Mironov 2017 and Mironov, Talwar &
  Zhang 2019, converted to (epsilon, delta) with Balle et al. 2020, Thm 21 (Opacus
  ``RDPAccountant``). Looser than PRV (Opacus #643), always fast.
- ``gdp``: Gaussian DP with the central limit theorem of Dong, Roth & Su 2019 / Bu et al.
  2020 (Opacus ``GaussianAccountant``). **Caveat**: an asymptotic approximation that can
  *under*-estimate epsilon, and it needs one constant (sigma, q) pair, so it cannot compose
  releases with different settings.

Every figure should be stored together with the name of the accountant that produced it.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ForgeValueError
from ..fileio import atomic_write_json
from ..registry import Registry

#: PRV is refused above this epsilon (judged by the cheap RDP upper bound): beyond it the
#: PRV discretisation grows without bound in time and memory (a history with sigma 0.05
#: took more than 4 GB and 5 minutes here), and Opacus #604 reports wrong figures.
PRV_MAX_EPSILON = 50.0

#: Calibration never proposes a noise multiplier outside this range. Above the upper end
#: the noise standard deviation is over 100 times the clipping norm per step: the
#: gradient signal is gone and training is pointless, so the target is called unreachable.
MIN_NOISE_MULTIPLIER = 0.3
MAX_NOISE_MULTIPLIER = 100.0

History = list[tuple[float, float, int]]


@dataclass(frozen=True)
class AccountantSpec:
    name: str
    opacus_name: str
    description: str
    caveat: str | None = None


ACCOUNTANTS: Registry[AccountantSpec] = Registry("accountant")
ACCOUNTANTS.add("prv", AccountantSpec("prv", "prv", "privacy-loss random variables (Gopi et al. 2021); tight"))
ACCOUNTANTS.add("rdp", AccountantSpec("rdp", "rdp", "Renyi DP (Mironov 2017) with the Balle et al. 2020 conversion; looser, fast"))
ACCOUNTANTS.add(
    "gdp",
    AccountantSpec(
        "gdp",
        "gdp",
        "Gaussian DP via the CLT (Dong, Roth & Su 2019)",
        caveat="asymptotic: can under-estimate epsilon; needs one constant noise multiplier and sample rate",
    ),
)


def validate_delta(delta: Any) -> float:
    try:
        d = float(delta)
    except (TypeError, ValueError):
        raise ForgeValueError(f"delta {delta!r} is not a number", fix="give delta as a number in (0, 1)", code="dp.delta") from None
    if not (0.0 < d < 1.0) or math.isnan(d):
        raise ForgeValueError(f"delta {delta!r} is outside (0, 1)", fix="give delta as a number in (0, 1), below 1/n", code="dp.delta")
    return d


def default_delta(n: int) -> float:
    """The default delta for a data set of ``n`` records: ``min(1e-5, 1 / n^2)``.

    Why: an (epsilon, delta)-DP mechanism may publish a whole record outright with
    probability about delta * n, so delta must be far below 1/n, "less than the inverse of
    any polynomial in the size of the database" (Dwork and Roth 2014, "The Algorithmic
    Foundations of Differential Privacy", Sec. 2.3). ``1 / n^2`` is the polynomial rule
    (delta * n = 1/n), and ``1e-5`` is the cap used by DP deep learning since Abadi et al.
    2016 (their delta for MNIST's 60,000 records); for a release of medical records we take
    the smaller of the two, so delta * n <= 1/sqrt(1e5) ~ 0.0032 at every n (at most at
    n ~ 316), within the audit's default bound delta * n <= 0.01 and delta <= 1e-5. At the
    bundled sizes (84-150 records) it is 1e-5. The price is small: epsilon grows roughly
    with sqrt(log(1/delta)).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ForgeValueError(f"cannot choose delta for an empty data set (n = {n})", fix="give a non-empty data set", code="dp.delta")
    return min(1e-5, 1.0 / (float(n) * float(n)))


def validate_history(history: Iterable[Sequence]) -> History:
    """Check and normalise a history to a list of ``(float sigma, float q, int steps)``."""
    out: History = []
    for i, entry in enumerate(history):
        try:
            sigma, q, steps = entry
            sigma_f, q_f = float(sigma), float(q)
        except (TypeError, ValueError):
            raise ForgeValueError(
                f"history entry {i} is {entry!r}, not (noise_multiplier, sample_rate, steps)",
                fix="give each entry as three numbers",
                code="dp.history",
            ) from None
        whole = isinstance(steps, numbers.Integral) or (isinstance(steps, float) and steps.is_integer())
        if isinstance(steps, bool) or not whole:
            raise ForgeValueError(
                f"history entry {i} has steps {steps!r}, not a whole number", fix="give steps as an integer", code="dp.history"
            )
        steps_i = int(steps)
        if not (sigma_f > 0 and math.isfinite(sigma_f)):
            raise ForgeValueError(
                f"history entry {i} has noise multiplier {sigma!r}",
                fix="the noise multiplier must be a positive finite number",
                code="dp.history",
            )
        if not (0 < q_f <= 1):
            raise ForgeValueError(f"history entry {i} has sample rate {q!r}", fix="the sample rate must be in (0, 1]", code="dp.history")
        if steps_i < 1:
            raise ForgeValueError(f"history entry {i} has {steps_i} steps", fix="steps must be at least 1", code="dp.history")
        out.append((sigma_f, q_f, steps_i))
    return out


def _merge(history: History) -> History:
    """Compose identical mechanisms by adding their steps (order does not matter for
    composition), which keeps PRV's convolution small."""
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, steps in history:
        merged[(sigma, q)] = merged.get((sigma, q), 0) + steps
    return [(s, q, t) for (s, q), t in merged.items()]


def _opacus_epsilon(name: str, history: History, delta: float) -> float:
    return _opacus_epsilon_cached(name, tuple(sorted(history)), delta)


@functools.lru_cache(maxsize=1024)
def _opacus_epsilon_cached(name: str, history: tuple, delta: float) -> float:
    """Cached: PRV takes seconds, and plans, records and ledgers ask for the same figures."""
    from opacus.accountants import create_accountant

    with warnings.catch_warnings():
        # GDP warns about under-estimation on creation (recorded as our caveat); RDP warns
        # when the optimal order is at the edge of its grid (the bound is still valid).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        acc = create_accountant(mechanism=ACCOUNTANTS.get(name).opacus_name)
        acc.history = list(history)
        return float(acc.get_epsilon(delta=delta))


def compute_epsilon(history: Iterable[Sequence], delta: float, accountant: str = "prv") -> float:
    """Epsilon at ``delta`` of the composition of every entry in ``history``.

    ``history`` is ``[(noise_multiplier, sample_rate, steps), ...]``; an empty history is
    epsilon 0. Raises :class:`ForgeValueError` for a bad history, an unknown accountant,
    a heterogeneous history under ``gdp`` or a PRV figure outside PRV's reliable range.
    """
    spec = ACCOUNTANTS.get(accountant)
    delta = validate_delta(delta)
    hist = _merge(validate_history(history))
    if not hist:
        return 0.0
    if spec.name == "gdp" and len(hist) > 1:
        raise ForgeValueError(
            f"the gdp accountant cannot compose {len(hist)} releases with different noise multipliers or sample rates",
            fix="use accountant prv (default) or rdp",
            code="dp.accountant_unsupported",
        )
    if spec.name == "prv":
        bound = _opacus_epsilon("rdp", hist, delta)
        if bound > PRV_MAX_EPSILON:
            raise ForgeValueError(
                f"epsilon is about {bound:.4g} (RDP bound), beyond the range where the prv accountant is reliable "
                f"(up to {PRV_MAX_EPSILON:g})",
                fix="use accountant rdp for such large epsilon, or add more noise",
                code="dp.prv_range",
            )
    try:
        eps = _opacus_epsilon(spec.name, hist, delta)
    except (ValueError, FloatingPointError, OverflowError, MemoryError) as e:
        raise ForgeValueError(
            f"the {spec.name} accountant failed on history {hist} at delta {delta:g} ({e.__class__.__name__}: {e})",
            fix="use accountant rdp, or change the noise multiplier / sample rate",
            code="dp.accountant_failed",
        ) from None
    if math.isnan(eps):
        raise ForgeValueError(
            f"the {spec.name} accountant returned NaN for history {hist}", fix="use accountant rdp", code="dp.accountant_failed"
        )
    return eps


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    *,
    prior: Iterable[Sequence] = (),
    rel_tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier (to ``rel_tolerance`` of ``target_epsilon``) whose
    release of ``steps`` steps at ``sample_rate``, composed with ``prior``, has epsilon at
    most ``target_epsilon`` under ``accountant``.

    Brent's method on log(sigma) with the same accountant that will report the figure (as
    Opacus's ``get_noise_multiplier`` bisects, here bounded to
    [:data:`MIN_NOISE_MULTIPLIER`, :data:`MAX_NOISE_MULTIPLIER`]). Results are cached under
    ``cache_dir("dp-calibration")``; a cached value is re-checked with the accountant. The result always
    satisfies ``epsilon <= target``. A target that needs more noise than
    :data:`MAX_NOISE_MULTIPLIER` raises a :class:`ForgeValueError` that says what to change.
    """
    ACCOUNTANTS.get(accountant)
    try:
        target = float(target_epsilon)
    except (TypeError, ValueError):
        raise ForgeValueError(
            f"target epsilon {target_epsilon!r} is not a number", fix="give --epsilon as a positive number", code="dp.epsilon"
        ) from None
    if not (target > 0 and math.isfinite(target)):
        raise ForgeValueError(
            f"target epsilon {target_epsilon!r} must be a positive finite number",
            fix="give --epsilon > 0, or --no-dp to train without DP",
            code="dp.epsilon",
        )
    delta = validate_delta(delta)
    prior_h = validate_history(prior)
    ((_, q, t),) = validate_history([(1.0, sample_rate, steps)])

    if accountant == "prv" and target > PRV_MAX_EPSILON:
        raise ForgeValueError(
            f"target epsilon {target:g} is beyond the range where the prv accountant is reliable (up to {PRV_MAX_EPSILON:g})",
            fix="use accountant rdp, or a smaller target epsilon",
            code="dp.prv_range",
        )

    def eps_at(sigma: float) -> float:
        try:
            return compute_epsilon(prior_h + [(sigma, q, t)], delta, accountant)
        except ForgeValueError as e:
            if e.code != "dp.prv_range":
                raise
            return compute_epsilon(prior_h + [(sigma, q, t)], delta, "rdp")  # > PRV_MAX_EPSILON >= target

    hi = MAX_NOISE_MULTIPLIER
    eps_hi = eps_at(hi)
    if eps_hi > target:
        raise ForgeValueError(
            f"target epsilon {target:g} cannot be reached at delta {delta:.3g} with {t} steps at sample rate {q:.4g}"
            + (f" on top of {len(prior_h)} earlier releases" if prior_h else "")
            + f": even noise multiplier {MAX_NOISE_MULTIPLIER:g} gives epsilon {eps_hi:.4g}",
            fix="raise the target epsilon, train fewer epochs, or use a smaller batch (lower sample rate)",
            code="dp.unreachable",
        )
    lo = MIN_NOISE_MULTIPLIER
    cached = _calibration_cache(target, delta, q, t, accountant, prior_h, rel_tolerance)
    if cached.exists():  # verified, never trusted: the figure must still be within the target
        try:
            sigma = float(json.loads(cached.read_text())["sigma"])
            if lo <= sigma <= hi and (1 - 2 * rel_tolerance) * target <= eps_at(sigma) <= target:
                return sigma
        except (OSError, ValueError, KeyError, TypeError):
            pass
    sigma = _calibrate(eps_at, target, lo, hi, rel_tolerance)
    try:
        atomic_write_json(
            cached,
            {
                "sigma": sigma,
                "target_epsilon": target,
                "delta": delta,
                "sample_rate": q,
                "steps": t,
                "accountant": accountant,
                "prior": prior_h,
            },
        )
    except OSError:
        pass
    return sigma


def _calibration_cache(target, delta, q, t, accountant, prior, tol):
    import opacus

    from ..fileio import sha256_bytes
    from ..home import cache_dir

    key = json.dumps(
        [target, delta, q, t, accountant, prior, tol, MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER, PRV_MAX_EPSILON, opacus.__version__]
    )
    return cache_dir("dp-calibration") / f"{sha256_bytes(key.encode())[:32]}.json"


def _calibrate(eps_at, target: float, lo: float, hi: float, rel_tolerance: float) -> float:
    # Some accountants cannot evaluate very little noise at all (Opacus's GDP solver fails at
    # sigma = MIN_NOISE_MULTIPLIER for common sample rates): epsilon there is far above any
    # target, so the search starts at the smallest sigma the accountant can evaluate (found by
    # steps of 5 %; returning more noise than needed never weakens the guarantee).
    while True:
        try:
            eps_lo = eps_at(lo)
            break
        except ForgeValueError as e:
            if e.code != "dp.accountant_failed" or lo >= hi:
                raise
            lo = min(hi, lo * 1.05)
    if eps_lo <= target:
        return lo
    # epsilon falls smoothly and monotonically in sigma: Brent's method on log(sigma),
    # then step up until the figure is certainly at or below the target.
    from scipy.optimize import brentq

    def f(log_sigma: float) -> float:
        return math.log(eps_at(math.exp(log_sigma))) - math.log(target)

    log_s = brentq(f, math.log(lo), math.log(hi), xtol=rel_tolerance / 4, maxiter=60)
    sigma = math.exp(log_s)
    while eps_at(sigma) > target:
        sigma *= 1 + rel_tolerance / 4
    return min(sigma, hi)
