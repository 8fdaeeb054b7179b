"""The bench's three plots (matplotlib, Agg backend; each saved as PNG and SVG):

* utility (accuracy on the union test set) against epsilon;
* membership-attack TPR at 1 % FPR against epsilon;
* the empirical epsilon lower bounds (threshold-based per attack, one-run on the canaries
  per seed and pooled) against the claimed epsilon, with the diagonal and every sample's
  ceiling drawn: a point above the diagonal means the measured leakage exceeds what the DP
  guarantee allows, i.e. a bug (Jagielski et al. 2020; Nasr et al. 2021), drawn in red and
  labelled; a claim above its ceiling is drawn hollow ("cannot tell").

Epsilon = infinity (no DP) is drawn at the right end of the log axis, labelled "∞".
Error bars are the Student-t intervals across seeds of :func:`attacks.bench.report.t_interval`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def _model_rows(rows) -> list[dict[str, Any]]:
    """One row per model and seed (the canary audit is the same for every attack on it)."""
    seen, out = set(), []
    for r in rows:
        k = (r["epsilon"], r["rank"], r["lora"], r["merge"], r["seed"])
        if k not in seen and r.get("canary_epsilon") is not None and math.isfinite(r.get("canary_epsilon", math.nan)):
            seen.add(k)
            out.append(r)
    return out


def _cells(rows) -> dict[tuple, list[dict[str, Any]]]:
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["epsilon"], r["rank"], r["lora"], r["merge"]), []).append(r)
    return cells


def plot_empirical(rows, stem: Path, p_target: float = 0.05) -> list[Path]:
    """Both empirical bounds against the claim, the diagonal, and each sample's ceiling.

    Per cell and seed: the threshold-based bound of each membership attack (dots) and the
    one-run audit on the canaries (triangles); per cell, the one-run audit pooled over the
    seeds (diamonds). Each sample's ceiling, the largest bound a perfect attack could show,
    is drawn as a horizontal dash at the claim (grey for the threshold bound, orange for the
    pooled one-run audit); a claim to the right of where the diagonal crosses its ceiling
    cannot be tested by that sample (hollow markers: "cannot tell"). Points above the
    diagonal are bugs, drawn as red crosses and labelled."""
    from .leakage import cannot_tell, pooled_one_run

    pts = [r for r in rows if r.get("empirical_epsilon") is not None and math.isfinite(r.get("empirical_epsilon", math.nan))]
    canary = _model_rows(rows)
    claimed = [r.get("claimed_epsilon", r["epsilon"]) for r in pts + canary] or [r["epsilon"] for r in rows]
    to_x, ticks, labels, log = _x_mapper([r["epsilon"] for r in rows] + claimed)
    grid_eps = sorted({r["epsilon"] for r in rows})
    ticks = [to_x(e) for e in grid_eps]
    labels = ["∞" if math.isinf(e) else f"{e:g}" for e in grid_eps]
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    finite = [c for c in claimed if math.isfinite(c)]
    if finite:
        lo, hi = min(finite) / 1.5, max(finite) * 1.5
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="empirical = claimed (points above: bugs)")

    def scatter(items, ycol, ceilcol, marker, color, label):
        told = [r for r in items if not r.get("above_claim") and not cannot_tell(r["claimed_epsilon"], r.get(ceilcol, math.nan))]
        untold = [r for r in items if not r.get("above_claim") and cannot_tell(r["claimed_epsilon"], r.get(ceilcol, math.nan))]
        if told:
            ax.scatter(
                [to_x(r["claimed_epsilon"]) for r in told],
                [r[ycol] for r in told],
                s=22,
                alpha=0.7,
                marker=marker,
                color=color,
                label=label,
            )
        if untold:
            ax.scatter(
                [to_x(r["claimed_epsilon"]) for r in untold],
                [r[ycol] for r in untold],
                s=22,
                marker=marker,
                facecolors="none",
                edgecolors=color,
                label=f"{label}: cannot tell (claim above ceiling)",
            )

    scatter(pts, "empirical_epsilon", "empirical_ceiling", "o", "C0", "threshold bound (per cell, seed)")
    scatter(canary, "canary_epsilon", "canary_ceiling", "^", "C1", "one-run bound on canaries (per seed)")
    # ceilings: one dash per claim and sample kind (the largest over the cell's seeds)
    for items, col, color, name in ((pts, "empirical_ceiling", "grey", "threshold"), (canary, "canary_ceiling", "C1", "one-run per seed")):
        marks: dict[float, float] = {}
        for r in items:
            c = r.get(col)
            if c is not None and math.isfinite(c):
                x = to_x(r["claimed_epsilon"])
                marks[x] = max(marks.get(x, 0.0), c)
        if marks:
            ax.scatter(
                list(marks), list(marks.values()), marker="_", s=420, color=color, linewidths=1.5, label=f"ceiling: perfect attack, {name}"
            )
    pooled = []
    for (_, rank, lora, merge), cell_rows in _cells(canary).items():
        p = pooled_one_run(cell_rows, p_target)
        if p is not None:
            claim = max(r["claimed_epsilon"] for r in cell_rows)
            pooled.append((to_x(claim), p["epsilon_lb"], p["ceiling"], cannot_tell(claim, p["ceiling"])))
            if p["epsilon_lb"] > 0:  # name the cells that leak
                ax.annotate(f" {lora} r={rank} {merge}", (to_x(claim), p["epsilon_lb"]), fontsize=6, color="C3", va="center")
    if pooled:
        ax.scatter(
            [x for x, _, _, u in pooled if not u],
            [y for _, y, _, u in pooled if not u],
            marker="D",
            s=46,
            color="C3",
            edgecolors="k",
            label="one-run bound pooled over seeds",
        )
        if any(u for *_, u in pooled):
            ax.scatter(
                [x for x, _, _, u in pooled if u],
                [y for _, y, _, u in pooled if u],
                marker="D",
                s=46,
                facecolors="none",
                edgecolors="C3",
                label="pooled: cannot tell",
            )
        ax.scatter(
            [x for x, _, _, _ in pooled],
            [c for _, _, c, _ in pooled],
            marker="_",
            s=600,
            color="C3",
            linewidths=2.0,
            label="ceiling: perfect attack, pooled one-run",
        )
    bad = [r for r in pts if r.get("above_claim") and r["empirical_epsilon"] > r["claimed_epsilon"]]
    bad += [r for r in canary if r.get("canary_above_claim")]
    if bad:
        ys = [r["canary_epsilon"] if r.get("canary_above_claim") else r["empirical_epsilon"] for r in bad]
        ax.scatter([to_x(r["claimed_epsilon"]) for r in bad], ys, s=40, color="red", marker="x", label="above the claim: BUG")
        for r, y in zip(bad, ys, strict=True):
            ax.annotate(f"{r['attack']} {r['merge']} {r['lora']} s{r['seed']}", (to_x(r["claimed_epsilon"]), y), fontsize=6, color="red")
    if not pts and not canary:
        ax.text(0.5, 0.5, "no membership attack and no canaries in this grid", ha="center", va="center", transform=ax.transAxes)
    if log:
        ax.set_yscale("symlog", linthresh=0.1)
    _style_x(ax, ticks, labels, log)
    ax.set_xlabel("claimed epsilon (accountant; ∞ = no DP)")
    ax.set_ylabel("empirical epsilon lower bound (95%)")
    ax.set_title("Measured leakage against the DP claim")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # outside the axes, so it hides no point and no ceiling
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return _save(fig, stem)


def write_plots(rows, out_dir: Path, confidence: float = 0.95, p_target: float = 0.05) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    written += plot_utility(rows, out_dir / PLOTS[0], confidence)
    written += plot_tpr(rows, out_dir / PLOTS[1], confidence)
    written += plot_empirical(rows, out_dir / PLOTS[2], p_target)
    return written
