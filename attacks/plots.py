"""ROC plots for membership attacks: linear and log-log, PNG or SVG (matplotlib, Agg).

The log-log panel is the one to read (Carlini et al. 2022, Sec. 3.3): it shows the
low-FPR tail where an attack is confident, which the linear panel and the AUC hide.
The chance line is the diagonal TPR = FPR in both panels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from forge_secure.errors import ForgeValueError
from forge_secure.fileio import atomic_output

FORMATS = ("png", "svg")


def _format_of(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ForgeValueError(
            f"cannot write a plot to {path}: unknown image type {path.suffix or '(none)'!r}",
            fix=f"end the file name with one of: {', '.join('.' + f for f in FORMATS)}",
            code="plot.format",
        )
    return fmt


def plot_roc(
    curves: Mapping[str, tuple[Sequence[float], Sequence[int]]],
    out: str | Path,
    *,
    title: str = "Membership inference ROC (member = positive)",
) -> Path:
    """Write a two-panel ROC figure (linear and log-log) for one or more attacks.

    ``curves`` maps a legend label to ``(scores, labels)``. The file type comes from the
    suffix of ``out`` (``.png`` or ``.svg``); the file is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from .metrics import roc, roc_auc

    out = Path(out)
    fmt = _format_of(out)
    if not curves:
        raise ForgeValueError("no ROC curves to plot", fix="pass at least one (scores, labels) pair", code="plot.empty")
    fig = Figure(figsize=(10, 4.5))
    ax_lin, ax_log = fig.subplots(1, 2)
    floor = 1.0
    for label, (scores, labels) in curves.items():
        fpr, tpr, _ = roc(scores, labels)
        auc = roc_auc(scores, labels)
        n_neg = int((np.asarray(labels) == 0).sum())
        floor = min(floor, 1.0 / max(n_neg, 1))
        ax_lin.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        ax_log.step(np.maximum(fpr, 1e-5), np.maximum(tpr, 1e-5), where="post", label=label)
    grid = np.linspace(0, 1, 101)
    ax_lin.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax_lin.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1), title="ROC")
    lo = max(min(floor / 2, 1e-3), 1e-5)
    g = np.logspace(np.log10(lo), 0, 100)
    ax_log.plot(g, g, "k--", lw=0.8, label="chance")
    ax_log.set_xscale("log")
    ax_log.set_yscale("log")
    ax_log.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(lo, 1), ylim=(lo, 1), title="log-log ROC")
    ax_log.axvline(floor, color="grey", lw=0.6, ls=":")
    ax_log.text(floor, lo * 1.3, " 1/N", color="grey", fontsize=8)
    for ax in (ax_lin, ax_log):
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(out) as f:
        fig.savefig(f, format=fmt, dpi=120)
    return out
