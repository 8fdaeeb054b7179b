"""Pictures of original and reconstructed records: images side by side, tabular records as a
table (a matplotlib table PNG, and a Markdown table for the results JSON), and success
against epsilon beside the ReRo bound. Written atomically; matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forge_secure.fileio import atomic_output


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    plt = _figure()
    with atomic_output(path) as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def markdown_table(names: list[str], truth: np.ndarray, recon: np.ndarray, hits: np.ndarray, max_records: int = 3) -> str:
    """Markdown: one row per feature, original and reconstructed value per record, a check mark
    when the feature counts as recovered."""
    k = min(max_records, len(truth))
    head = "| feature | " + " | ".join(f"record {i + 1} original | reconstructed" for i in range(k)) + " |"
    sep = "|---|" + "---|---|" * k
    lines = [head, sep]
    for j, name in enumerate(names):
        cells = []
        for i in range(k):
            mark = " ✓" if hits[i, j] else ""
            cells.append(f"{truth[i, j]:.3g} | {recon[i, j]:.3g}{mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tabular_figure(
    names: list[str], truth: np.ndarray, recon: np.ndarray, hits: np.ndarray, path: str | Path, title: str, max_records: int = 3
) -> None:
    """A table PNG of original against reconstructed features; recovered cells in green."""
    plt = _figure()
    k = min(max_records, len(truth))
    cols = []
    for i in range(k):
        cols += [f"#{i + 1} original", f"#{i + 1} reconstructed"]
    cells, colours = [], []
    for j in range(len(names)):
        row, col = [], []
        for i in range(k):
            row += [f"{truth[i, j]:.3g}", f"{recon[i, j]:.3g}"]
            col += ["white", "#c8e6c9" if hits[i, j] else "#ffcdd2"]
        cells.append(row)
        colours.append(col)
    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * k, 0.6 + 0.22 * len(names)))
    ax.axis("off")
    table = ax.table(cellText=cells, cellColours=colours, rowLabels=[n[:28] for n in names], colLabels=cols, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def image_figure(truth: np.ndarray, recon: np.ndarray, path: str | Path, title: str, max_images: int = 8) -> None:
    """Originals on the top row, reconstructions below (images (n, C, H, W) in [0, 1])."""
    plt = _figure()
    k = min(max_images, len(truth))
    fig, axes = plt.subplots(2, k, figsize=(1.3 * k + 0.4, 3.0), squeeze=False)
    for i in range(k):
        for row, imgs in enumerate((truth, recon)):
            img = np.asarray(imgs[i])
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            ax = axes[row, i]
            ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, i].set_title(f"#{i + 1}", fontsize=8)
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("reconstructed", fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def bars_figure(
    labels: list[str],
    rates: list[float],
    lows: list[float],
    highs: list[float],
    baseline: float,
    bounds: list[float] | None,
    path: str | Path,
    title: str,
    ylabel: str,
) -> None:
    """Success rates with intervals, the baseline and the ReRo bound per setting."""
    plt = _figure()
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(labels), 3.2))
    err = np.array([np.array(rates) - np.array(lows), np.array(highs) - np.array(rates)])
    ax.bar(x, rates, yerr=err, capsize=4, color="#90caf9", label="attack (95 % CI)")
    if bounds is not None:
        ax.plot(x, bounds, "k_", markersize=22, mew=2, label="ReRo bound")
    ax.axhline(baseline, color="grey", ls="--", label="baseline")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def epsilon_figure(rows: list[dict], path: str | Path, title: str) -> None:
    """Success against epsilon (log x axis): each attack with its interval, its baseline and
    the ReRo bound. ``rows``: dicts with epsilon, attack, rate, ci, baseline, bound."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for attack in sorted({r["attack"] for r in rows}):
        rs = sorted((r for r in rows if r["attack"] == attack), key=lambda r: r["epsilon"])
        eps = np.array([r["epsilon"] for r in rs])
        rate = np.array([r["rate"] for r in rs])
        lo = np.array([r["ci"][0] for r in rs])
        hi = np.array([r["ci"][1] for r in rs])
        line = ax.errorbar(eps, rate, yerr=[rate - lo, hi - rate], marker="o", capsize=3, label=f"{attack}: attack")
        colour = line[0].get_color()
        ax.plot(eps, [r["bound"] for r in rs], ls="-", color=colour, alpha=0.5, label=f"{attack}: ReRo bound")
        ax.plot(eps, [r["baseline"] for r in rs], ls=":", color=colour, alpha=0.7, label=f"{attack}: baseline")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epsilon (delta fixed)")
    ax.set_ylabel("success rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)
