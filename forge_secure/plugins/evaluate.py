"""How good a plugin is, and what it is: accuracy and ROC AUC with intervals on a data set
(``forge eval``, the test split reported by ``forge train`` and ``forge demo``), and the
checked record of a plugin directory (``forge plugin show``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .bases import Base
    from .data import Dataset
    from .plugin import Plugin

#: rows per forward pass of the base model when it is scored alone
BASE_BATCH = 512


def auc_of_resamples(y: np.ndarray, score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Binary ROC AUC of every resample ``idx[b]`` (rows of indices), vectorised: the
    Mann-Whitney U statistic over n1 n0 from scipy's average ranks (ties count 1/2).
    NaN where a resample holds one class only."""
    from scipy.stats import rankdata

    yy, ss = np.asarray(y)[idx].astype(bool), np.asarray(score)[idx]
    ranks = rankdata(ss, axis=1)
    n1 = yy.sum(1)
    n0 = yy.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), ((ranks * yy).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0), np.nan)


def bootstrap_auc_ci(y: np.ndarray, score: np.ndarray, seed: int, n_boot: int = 1000) -> list[float] | None:
    """95 % percentile-bootstrap interval of the binary ROC AUC (resampling rows)."""
    rng = np.random.default_rng(seed)
    auc = auc_of_resamples(y, score, rng.integers(0, len(y), size=(n_boot, len(y))))
    auc = auc[~np.isnan(auc)]
    if not len(auc):
        return None
    return [float(np.percentile(auc, 2.5)), float(np.percentile(auc, 97.5))]


def evaluate(plugin: Any, data: Dataset, seed: int = 0) -> dict:
    """Accuracy (Clopper-Pearson 95 % interval) and ROC AUC of ``plugin`` (anything with
    ``predict_proba``) on ``data`` (scikit-learn; one-vs-rest macro average over the classes
    present for more than two classes). For two classes the AUC gets a 95 % percentile-bootstrap
    interval."""
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    proba = plugin.predict_proba(data.X)
    y = data.y
    n = len(y)
    correct = int((proba.argmax(1) == y).sum())
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="exact") if n else None
    present = np.unique(y)
    result: dict[str, Any] = {
        "rows": n,
        "accuracy": correct / n if n else float("nan"),
        "accuracy_ci95": [float(ci.low), float(ci.high)] if ci else None,
        "roc_auc": float("nan"),
        "roc_auc_ci95": None,
        "classes_present": [int(c) for c in present],
    }
    if len(present) < 2:
        return result
    if proba.shape[1] == 2:
        result["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
        result["roc_auc_ci95"] = bootstrap_auc_ci(y, proba[:, 1], seed)
    else:
        result["roc_auc"] = float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    return result


def base_accuracy(base: Base, data: Dataset) -> float:
    """Accuracy of the base model alone on ``data`` (NaN on an empty set)."""
    import torch

    if not len(data):
        return float("nan")
    with torch.no_grad():
        pred = np.concatenate(
            [base.model(torch.tensor(data.X[i : i + BASE_BATCH])).argmax(1).numpy() for i in range(0, len(data), BASE_BATCH)]
        )
    return float((pred == data.y).mean())


def evaluation_data(spec: str, *, label_column: str | None = None) -> Dataset:
    """The data ``forge eval`` scores on: a bundled site's test split (``bundled:site-1``; a
    part named after ``/`` as given), a ``.npz``'s test split (unless ``:train``/``:val`` is
    named), or a CSV as it is."""
    from .data import is_bundled, load_data, resolve_bundled

    spec = str(spec)
    if is_bundled(spec):
        _, shard, _ = resolve_bundled(spec)
        return load_data(spec if "/" in spec.split(":", 1)[1] or shard is None else spec + "/test")
    if spec.endswith(".npz"):
        return load_data(spec + ":test")
    return load_data(spec, label_column=label_column)


def _base(name: str | None) -> Base | None:
    from .bases import load_base

    return load_base(name) if name else None


def evaluate_plugin(path: str | Path, data_spec: str, *, label_column: str | None = None, seed: int = 0, base: str | None = None) -> dict:
    """``forge eval``: the plugin at ``path`` (checked; ``base`` names its base model when it is not
    where forge.json says) scored on :func:`evaluation_data` of ``data_spec``, beside the base alone."""
    from .plugin import load_plugin
    from .sources import check_compatible

    plugin = load_plugin(path, base=_base(base))
    data = evaluation_data(data_spec, label_column=label_column)
    check_compatible(plugin.base, data)
    result = evaluate(plugin, data, seed=seed)
    result["base_accuracy"] = base_accuracy(plugin.base, data)
    result.update({"plugin": str(path), "data": data.name, "site": plugin.site, "epsilon": plugin.meta["dp"]["epsilon"]})
    return result


def describe_plugin(path: str | Path, *, base: str | None = None) -> dict:
    """``forge plugin show``: the plugin at ``path`` after every check of :func:`load_plugin`
    (forge.json, the adapter file and its digest, the base digest), with its adapter's digest and
    parameter count."""
    from .plugin import adapter_digest, load_plugin

    plugin: Plugin = load_plugin(path, base=_base(base))
    return {
        "plugin": str(path),
        "verified": True,
        "adapter_sha256": adapter_digest(path),
        "adapter_parameters": sum(int(t.numel()) for t in plugin.adapter_state().values()),
        "meta": plugin.meta,
    }
