"""Draw a finding's :class:`~audits.findings.Plot` data as a PNG with matplotlib (Agg backend,
no display, no global pyplot state). ROC curves are drawn on log-log axes, as Carlini et al.
2022 ("Membership Inference Attacks From First Principles") recommend, so the low-FPR tail
is visible."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .findings import Plot


def _num(v) -> float:
    if isinstance(v, str):
        return float(v)  # "inf" / "nan"
    return float(v)


def _roc(ax, plot: Plot) -> None:
    floor = 1e-4
    for s in plot.series:
        fpr = [max(_num(x), floor) for x in s.get("fpr", [])]
        tpr = [max(_num(x), floor) for x in s.get("tpr", [])]
        ax.plot(fpr, tpr, label=str(s.get("label", "")), linewidth=1.5)
    ax.plot([floor, 1], [floor, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    if plot.limit is not None and math.isfinite(plot.limit):
        ax.axvline(plot.limit, color="#b00020", linestyle=":", linewidth=1, label=plot.limit_label or None)
    ax.set_xlabel(plot.x_label or "false positive rate")
    ax.set_ylabel(plot.y_label or "true positive rate")


def _bars(ax, plot: Plot) -> None:
    labels = [str(s.get("label", "")) for s in plot.series]
    values = [_num(s.get("value", 0.0)) for s in plot.series]
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite + [plot.limit or 0.0, 1e-9]) * 1.25
    shown = [v if math.isfinite(v) else top for v in values]

    def over(s: dict, v: float) -> bool:
        marks = [plot.limit] + [_num(s[k]) for k in ("claimed", "bound") if s.get(k) is not None]
        return any(m is not None and not math.isnan(m) and v > m for m in marks)

    colors = ["#b00020" if over(s, v) else "#1b5e20" for s, v in zip(plot.series, values, strict=True)]
    xs = list(range(len(labels)))
    ax.bar(xs, shown, color=colors, label=plot.y_label or "value")
    for x, v in zip(xs, values, strict=True):
        if not math.isfinite(v):
            ax.text(x, top * 0.95, "inf", ha="center", va="top", color="white", fontweight="bold")
    for key, marker, name in (("claimed", "D", "claimed"), ("bound", "v", "bound")):
        pts = [(x, _num(s[key])) for x, s in zip(xs, plot.series, strict=True) if key in s and s[key] is not None]
        pts = [(x, min(v, top)) for x, v in pts if not math.isnan(v)]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color="black", zorder=3, label=name)
    if plot.limit is not None and math.isfinite(plot.limit):
        ax.axhline(plot.limit, color="#b00020", linestyle="--", linewidth=1, label=plot.limit_label or "limit")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, top)
    ax.set_ylabel(plot.y_label)


_CACHE: dict[str, bytes] = {}


def plot_png(plot: Plot, *, width: float = 5.0, height: float = 3.4, dpi: int = 110) -> bytes:
    """PNG bytes of ``plot``; deterministic for the same data (no timestamp metadata).
    Cached by content, so the HTML and PDF renderers draw each plot once."""
    key = hashlib.sha256(json.dumps([plot.to_dict(), width, height, dpi], sort_keys=True).encode()).hexdigest()
    if key not in _CACHE:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = _draw(plot, width, height, dpi)
    return _CACHE[key]


def _draw(plot: Plot, width: float, height: float, dpi: int) -> bytes:
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    {"roc": _roc, "bars": _bars}[plot.kind](ax, plot)
    ax.set_title(plot.title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="best")
    fig.subplots_adjust(left=0.14, right=0.97, top=0.9, bottom=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def plot_data_uri(plot: Plot) -> str:
    return "data:image/png;base64," + base64.b64encode(plot_png(plot)).decode("ascii")
