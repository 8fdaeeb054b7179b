"""Success measures for reconstructions, each beside a random baseline from the population prior.

Tabular (TabLeak, Vero et al. 2023): reconstructions are paired with the true records by the
Hungarian method (``scipy.optimize.linear_sum_assignment``), then judged per logical feature
(categorical exact; continuous within ``tolerance`` times the feature's standard deviation)
and per whole record (every feature right). The baseline draws records from the population
prior and applies the same matching and judgement.

Images (Geiping et al. 2020; Wang et al. 2004 for SSIM): MSE, PSNR, SSIM, and
nearest-neighbour identifiability (is the true record the closest one to the reconstruction
among the true record and a pool of population records?).

Rates carry exact Clopper-Pearson intervals (``attacks.metrics.clopper_pearson``). The
per-feature interval treats the features as independent trials; the whole-record interval
is over records, which are independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import linear_sum_assignment

from attacks.metrics import clopper_pearson
from forge_secure.errors import ForgeDataError

from .features import FeatureSpec

DEFAULT_TOLERANCE = 0.25  # continuous features: within 0.25 standard deviations of the truth


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[1:] != b.shape[1:]:
        raise ForgeDataError(
            f"{what}: reconstructions of shape {a.shape[1:]} do not match records of shape {b.shape[1:]}",
            fix="compare records of the same layout",
            code="recon.shape",
        )
    return a, b


# --------------------------------------------------------------------------- tabular
def feature_hits(recon: np.ndarray, truth: np.ndarray, spec: FeatureSpec, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """Boolean (n, n_features): is each logical feature of ``recon[i]`` right for ``truth[i]``?"""
    recon, truth = _check_pair(recon, truth, "feature_hits")
    dr, dt = spec.decode(recon), spec.decode(truth)
    k = len(spec.continuous)
    std = np.asarray(spec.std)[list(spec.continuous)]
    hits_cont = np.abs(dr[:, :k] - dt[:, :k]) <= tolerance * std
    hits_cat = dr[:, k:] == dt[:, k:]
    return np.concatenate([hits_cont, hits_cat], axis=1)


def match_records(recon: np.ndarray, truth: np.ndarray, spec: FeatureSpec, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """Permutation ``p`` such that ``recon[p[i]]`` is paired with ``truth[i]``: the Hungarian
    assignment that maximises the number of right features (ties broken by the standardised
    distance)."""
    recon, truth = _check_pair(recon, truth, "match_records")
    if len(recon) != len(truth):
        raise ForgeDataError(f"{len(recon)} reconstructions for {len(truth)} records", code="recon.shape")
    n = len(truth)
    hits = np.zeros((n, n))
    dist = np.zeros((n, n))
    std = np.asarray(spec.std)
    for j in range(n):
        rep = np.repeat(recon[j : j + 1], n, axis=0)
        hits[:, j] = feature_hits(rep, truth, spec, tolerance).sum(axis=1)
        dist[:, j] = np.sqrt((((rep - truth) / std) ** 2).mean(axis=1))
    cost = -hits + 1e-3 * dist / (1.0 + dist.max())
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(n, dtype=int)
    perm[rows] = cols
    return perm


def _rate(successes: int, trials: int, confidence: float) -> dict:
    lo, hi = clopper_pearson(int(successes), int(trials), confidence)
    return {"rate": successes / trials if trials else float("nan"), "successes": int(successes), "trials": int(trials), "ci": [lo, hi]}


def tabular_success(
    recon: np.ndarray | Sequence[np.ndarray],
    truth: np.ndarray | Sequence[np.ndarray],
    spec: FeatureSpec,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    confidence: float = 0.95,
) -> dict:
    """Per-feature accuracy and whole-record rate after Hungarian matching, with intervals.
    ``recon`` and ``truth`` may be lists of batches (one per attacked update)."""
    recs = recon if isinstance(recon, (list, tuple)) else [recon]
    truths = truth if isinstance(truth, (list, tuple)) else [truth]
    all_hits = []
    for r, t in zip(recs, truths, strict=True):
        perm = match_records(r, t, spec, tolerance)
        all_hits.append(feature_hits(np.asarray(r)[perm], t, spec, tolerance))
    hits = np.concatenate(all_hits, axis=0)
    out = {
        "feature_accuracy": _rate(int(hits.sum()), hits.size, confidence),
        "record_rate": _rate(int(hits.all(axis=1).sum()), len(hits), confidence),
        "per_feature": dict(zip(spec.feature_names(), map(float, hits.mean(axis=0)), strict=True)),
        "tolerance_std": tolerance,
        "confidence": confidence,
    }
    return out


def tabular_baseline(
    truth: np.ndarray | list,
    prior: np.ndarray,
    spec: FeatureSpec,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    confidence: float = 0.95,
    draws: int = 20,
    seed: int | np.random.Generator = 0,
) -> dict:
    """The random baseline: for every attacked batch, ``draws`` times draw as many records
    from the population ``prior`` as the batch holds, match them with the same Hungarian
    method and judge them the same way."""
    rng = _rng(seed)
    prior = np.asarray(prior, dtype=np.float64)
    truths = truth if isinstance(truth, (list, tuple)) else [truth]
    recs, tts = [], []
    for t in truths:
        for _ in range(draws):
            recs.append(prior[rng.integers(0, len(prior), size=len(t))])
            tts.append(np.asarray(t))
    out = tabular_success(recs, tts, spec, tolerance=tolerance, confidence=confidence)
    out["draws"] = draws
    return out


# --------------------------------------------------------------------------- images
def mse(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image mean squared error."""
    recon, truth = _check_pair(recon, truth, "mse")
    return ((recon - truth) ** 2).reshape(len(truth), -1).mean(axis=1)


def psnr(recon: np.ndarray, truth: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-image peak signal-to-noise ratio in dB: 10 log10(range^2 / MSE) (capped at 100 dB)."""
    m = mse(recon, truth)
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(data_range**2 / np.maximum(m, 1e-10)), 100.0)


def ssim(recon: np.ndarray, truth: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    """Per-image structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004) with a Gaussian
    window of standard deviation ``sigma`` (``scipy.ndimage.gaussian_filter``, reflected
    borders), K1 = 0.01, K2 = 0.03, averaged over pixels and channels. Images are (n, C, H, W)
    or (n, H, W)."""
    recon, truth = _check_pair(recon, truth, "ssim")
    if recon.ndim == 3:
        recon, truth = recon[:, None], truth[:, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = np.empty(len(truth))
    for i in range(len(truth)):
        vals = []
        for ch in range(truth.shape[1]):
            x, y = recon[i, ch], truth[i, ch]
            f = lambda a: gaussian_filter(a, sigma, mode="reflect")  # noqa: E731
            mx, my = f(x), f(y)
            vx = f(x * x) - mx * mx
            vy = f(y * y) - my * my
            cxy = f(x * y) - mx * my
            s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
            vals.append(s.mean())
        out[i] = float(np.mean(vals))
    return out


def match_images(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Hungarian pairing of reconstructed and true images by MSE: ``recon[p[i]]`` ~ ``truth[i]``."""
    recon, truth = _check_pair(recon, truth, "match_images")
    a = recon.reshape(len(recon), -1)
    b = truth.reshape(len(truth), -1)
    cost = ((b[:, None, :] - a[None, :, :]) ** 2).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(truth), dtype=int)
    perm[rows] = cols
    return perm


def nn_identifiable(recon: np.ndarray, truth: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Boolean per image: among ``truth[i]`` and the ``pool`` of population records, is the
    true record the nearest (L2) to ``recon[i]``? Chance level is 1 / (len(pool) + 1)."""
    recon, truth = _check_pair(recon, truth, "nn_identifiable")
    pool = np.asarray(pool, dtype=np.float64).reshape(len(pool), -1)
    r = recon.reshape(len(recon), -1)
    t = truth.reshape(len(truth), -1)
    d_true = ((r - t) ** 2).sum(axis=1)
    d_pool = ((r[:, None, :] - pool[None, :, :]) ** 2).sum(axis=2).min(axis=1) if len(pool) else np.full(len(r), np.inf)
    return d_true < d_pool


def image_success(
    recon: np.ndarray | list,
    truth: np.ndarray | list,
    pool: np.ndarray,
    *,
    data_range: float = 1.0,
    confidence: float = 0.95,
) -> dict:
    """MSE, PSNR, SSIM (means with a normal 95 % interval of the mean) and the
    nearest-neighbour identification rate (Clopper-Pearson) after Hungarian matching."""
    recs = recon if isinstance(recon, (list, tuple)) else [recon]
    truths = truth if isinstance(truth, (list, tuple)) else [truth]
    m, p, s, ident = [], [], [], []
    for r, t in zip(recs, truths, strict=True):
        r, t = np.asarray(r, dtype=np.float64), np.asarray(t, dtype=np.float64)
        r = r[match_images(r, t)]
        m.append(mse(r, t))
        p.append(psnr(r, t, data_range))
        s.append(ssim(r, t, data_range))
        ident.append(nn_identifiable(r, t, pool))
    ident_all = np.concatenate(ident)

    def summary(parts: list) -> dict:
        v = np.concatenate(parts)
        half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        return {"mean": float(v.mean()), "ci": [float(v.mean() - half), float(v.mean() + half)], "n": int(len(v))}

    return {
        "mse": summary(m),
        "psnr_db": summary(p),
        "ssim": summary(s),
        "nn_identification": _rate(int(ident_all.sum()), len(ident_all), confidence),
        "nn_pool_size": int(len(pool)),
        "nn_chance": 1.0 / (len(pool) + 1),
    }


def image_baseline(
    truth: np.ndarray | list,
    prior: np.ndarray,
    pool: np.ndarray,
    *,
    data_range: float = 1.0,
    confidence: float = 0.95,
    draws: int = 5,
    seed: int | np.random.Generator = 0,
) -> dict:
    """Random baseline for images: records drawn from the population ``prior`` in place of
    reconstructions, matched and measured the same way."""
    rng = _rng(seed)
    prior = np.asarray(prior, dtype=np.float64)
    truths = truth if isinstance(truth, (list, tuple)) else [truth]
    recs, tts = [], []
    for t in truths:
        for _ in range(draws):
            recs.append(prior[rng.integers(0, len(prior), size=len(t))])
            tts.append(np.asarray(t))
    out = image_success(recs, tts, pool, data_range=data_range, confidence=confidence)
    out["draws"] = draws
    return out
