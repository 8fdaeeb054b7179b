"""The bench's three plots (matplotlib, Agg backend; each saved as PNG and SVG):

* utility (accuracy on the union test set) against epsilon;
* membership-attack TPR at 1 % FPR against epsilon;
* the empirical epsilon lower bound against the claimed epsilon, with the diagonal drawn:
  a point above it means the measured leakage exceeds what the DP guarantee allows, i.e. a
  bug (Jagielski et al. 2020; Nasr et al. 2021). Such points are drawn in red and labelled.

Epsilon = infinity (no DP) is drawn at the right end of the log axis, labelled "∞".
Error bars are the Student-t intervals across seeds of :func:`attacks.bench.report.t_interval`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from forge_secure.fileio import atomic_output  # noqa: E402

from .report import t_interval  # noqa: E402

PLOTS = ("utility_vs_epsilon", "tpr_vs_epsilon", "empirical_vs_claimed")


def _x_mapper(eps_values: Sequence[float]):
    finite = sorted({e for e in eps_values if math.isfinite(e)})
    inf_at = (finite[-1] * 4.0) if finite else 1.0
    ticks = finite + ([inf_at] if any(math.isinf(e) for e in eps_values) else [])
    labels = [f"{e:g}" for e in finite] + (["∞"] if len(ticks) > len(finite) else [])

    def to_x(e: float) -> float:
        return inf_at if math.isinf(e) else e

    return to_x, ticks, labels, bool(finite)


def _style_x(ax, ticks, labels, log: bool) -> None:
    if log:
        ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.minorticks_off()
    ax.set_xlabel("epsilon (claimed budget per site; ∞ = no DP)")


def _save(fig, stem: Path) -> list[Path]:
    written = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        with atomic_output(path) as f:
            fig.savefig(f, format=ext, dpi=120, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def _lines(rows, series_cols, value_col, confidence, dedupe_cols=None):
    """{series label: [(epsilon, mean, half)]}, one point per epsilon, across seeds."""
    series: dict[str, dict[float, list[float]]] = {}
    seen = set()
    for r in rows:
        if dedupe_cols:
            k = tuple(r[c] for c in dedupe_cols)
            if k in seen:
                continue
            seen.add(k)
        v = r.get(value_col)
        if v is None or not math.isfinite(v):
            continue
        label = " ".join(f"{r[c]}" if c != "rank" else f"r={r[c]}" for c in series_cols)
        series.setdefault(label, {}).setdefault(r["epsilon"], []).append(v)
    out = {}
    for label, by_eps in sorted(series.items()):
        pts = []
        for eps in sorted(by_eps):
            n, mean, half = t_interval(by_eps[eps], confidence)
            pts.append((eps, mean, 0.0 if math.isnan(half) else half))
        out[label] = pts
    return out


def _line_plot(rows, stem: Path, *, series_cols, value_col, ylabel, title, confidence, dedupe_cols=None, ylim=None) -> list[Path]:
    to_x, ticks, labels, log = _x_mapper([r["epsilon"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lines = _lines(rows, series_cols, value_col, confidence, dedupe_cols)
    for label, pts in lines.items():
        ax.errorbar([to_x(e) for e, _, _ in pts], [m for _, m, _ in pts], yerr=[h for _, _, h in pts], marker="o", capsize=3, label=label)
    if not lines:
        ax.text(0.5, 0.5, "no finite values in this grid", ha="center", va="center", transform=ax.transAxes)
    _style_x(ax, ticks, labels, log)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, stem)


def plot_utility(rows, stem: Path, confidence: float = 0.95) -> list[Path]:
    return _line_plot(
        rows,
        stem,
        series_cols=("merge", "lora", "rank"),
        value_col="accuracy",
        ylabel="accuracy on the union test set",
        title=f"Utility against epsilon (mean, {confidence:.0%} t-interval over seeds)",
        confidence=confidence,
        dedupe_cols=("epsilon", "rank", "lora", "merge", "seed"),
        ylim=(0.0, 1.02),
    )


def plot_tpr(rows, stem: Path, confidence: float = 0.95) -> list[Path]:
    mia = [r for r in rows if r.get("tpr_at_1pct_fpr") is not None and math.isfinite(r.get("tpr_at_1pct_fpr", math.nan))]
    return _line_plot(
        mia or rows,
        stem,
        series_cols=("attack", "merge", "lora", "rank"),
        value_col="tpr_at_1pct_fpr",
        ylabel="TPR at 1% FPR (members positive)",
        title="Membership attack TPR at 1% FPR against epsilon",
        confidence=confidence,
        ylim=(-0.02, 1.02),
    )


def flagged_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("above_claim")]


def plot_empirical(rows, stem: Path) -> list[Path]:
    pts = [r for r in rows if r.get("empirical_epsilon") is not None and math.isfinite(r.get("empirical_epsilon", math.nan))]
    claimed = [r.get("claimed_epsilon", r["epsilon"]) for r in pts] or [r["epsilon"] for r in rows]
    # ticks at the grid's epsilons (round numbers); points at the accountant's claims (<= them)
    to_x, ticks, labels, log = _x_mapper([r["epsilon"] for r in rows] + claimed)
    grid_eps = sorted({r["epsilon"] for r in rows})
    ticks = [to_x(e) for e in grid_eps]
    labels = ["∞" if math.isinf(e) else f"{e:g}" for e in grid_eps]
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    finite = [c for c in claimed if math.isfinite(c)]
    if finite:
        lo, hi = min(finite) / 1.5, max(finite) * 1.5
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="empirical = claimed (points above: bugs)")
    ok = [r for r in pts if not r.get("above_claim")]
    bad = [r for r in pts if r.get("above_claim")]
    if ok:
        ax.scatter([to_x(r["claimed_epsilon"]) for r in ok], [r["empirical_epsilon"] for r in ok], s=22, alpha=0.7, label="lower bound (per cell and seed)")
    if bad:
        ax.scatter([to_x(r["claimed_epsilon"]) for r in bad], [r["empirical_epsilon"] for r in bad], s=40, color="red", marker="x", label="above the claim: BUG")
        for r in bad:
            ax.annotate(f"{r['attack']} {r['merge']} {r['lora']} s{r['seed']}", (to_x(r["claimed_epsilon"]), r["empirical_epsilon"]), fontsize=6, color="red")
    if not pts:
        ax.text(0.5, 0.5, "no membership attack in this grid", ha="center", va="center", transform=ax.transAxes)
    if log:
        ax.set_yscale("symlog", linthresh=0.1)
    _style_x(ax, ticks, labels, log)
    ax.set_xlabel("claimed epsilon (accountant; ∞ = no DP)")
    ax.set_ylabel("empirical epsilon lower bound")
    ax.set_title("Measured leakage against the DP claim")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, stem)


def write_plots(rows, out_dir: Path, confidence: float = 0.95) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    written += plot_utility(rows, out_dir / PLOTS[0], confidence)
    written += plot_tpr(rows, out_dir / PLOTS[1], confidence)
    written += plot_empirical(rows, out_dir / PLOTS[2])
    return written
