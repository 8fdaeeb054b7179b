"""Per-example statistics from logits, computed stably in float64.

- :func:`log_softmax`: max-shifted log-softmax.
- :func:`logit_confidence`: LiRA's logit-scaled confidence (Carlini et al. 2022, "Membership
  Inference Attacks From First Principles", Sec. 4.2 / Eq. 4):
  phi = log(p_y / (1 - p_y)) = log p_y - log sum_{y' != y} p_{y'},
  evaluated from max-shifted logits so it stays finite and exact even when p_y -> 1
  (where ``log(1 - p_y)`` would underflow to ``log 0``).
- :func:`true_class_probability`: p_y with a softmax temperature (RMIA, Zarifzadeh et al.
  2024, use temperature 2 by default).
- :func:`cross_entropy`: the per-example loss of the LOSS attack (Yeom et al. 2018).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from forge_secure.errors import ForgeValueError


def _check(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim < 2:
        raise ForgeValueError(
            f"logits must have a class axis, got shape {z.shape}", fix="pass (..., n, C) logits", code="attack.logits_shape"
        )
    if z.shape[-1] < 2:
        raise ForgeValueError(f"logits have {z.shape[-1]} class, need at least 2", code="attack.logits_shape")
    if y.ndim != 1 or y.shape[0] != z.shape[-2]:
        raise ForgeValueError(
            f"labels of shape {y.shape} do not match logits of shape {z.shape}",
            fix="pass one integer label per record",
            code="attack.labels_shape",
        )
    if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= z.shape[-1])):
        raise ForgeValueError(
            f"labels must be integers in [0, {z.shape[-1] - 1}]",
            fix="check the label column of the candidate data",
            code="attack.labels_range",
        )
    if not np.all(np.isfinite(z)):
        raise ForgeValueError(
            "logits contain NaN or infinity", fix="check the model (it may have diverged)", code="attack.logits_nonfinite"
        )
    return z, y.astype(np.int64)


def log_softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """log softmax(logits / T) along the last axis, float64, max-shifted."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - logsumexp(z, axis=-1, keepdims=True)


def _take(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.take_along_axis(a, np.broadcast_to(y[:, None], a.shape[:-1] + (1,)), axis=-1)[..., 0]


def logit_confidence(logits, labels) -> np.ndarray:
    """phi = log p_y - log sum_{y' != y} p_{y'} for every record (and every leading axis).

    ``logits`` has shape (..., n, C), ``labels`` (n,); returns (..., n) float64.
    Computed as z_y - logsumexp_{y' != y} z_{y'} after the max shift, which equals
    log(p_y / (1 - p_y)) without ever forming 1 - p_y.
    """
    z, y = _check(logits, labels)
    z = z - z.max(axis=-1, keepdims=True)
    zy = _take(z, y)
    mask = np.zeros(z.shape, dtype=bool)
    np.put_along_axis(mask, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), True, axis=-1)
    others = logsumexp(np.where(mask, -np.inf, z), axis=-1)
    return zy - others


def true_class_probability(logits, labels, temperature: float = 1.0) -> np.ndarray:
    """p_y = softmax(logits / T)_y, float64, shape (..., n)."""
    if not temperature > 0:
        raise ForgeValueError(f"temperature {temperature!r} must be > 0", fix="use e.g. 1 or 2", code="attack.temperature")
    z, y = _check(logits, labels)
    return np.exp(_take(log_softmax(z, temperature), y))


def cross_entropy(logits, labels) -> np.ndarray:
    """Per-record cross-entropy -log p_y, float64, shape (..., n)."""
    z, y = _check(logits, labels)
    return -_take(log_softmax(z), y)
