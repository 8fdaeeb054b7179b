"""ROC plots: PNG and SVG, atomic, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.plots import plot_roc
from forge_secure.errors import ForgeValueError


def _curves():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    return {"lira": (rng.normal(size=400) + y, y), "loss": (rng.normal(size=400) + 0.3 * y, y)}


def test_png_and_svg(tmp_path):
    png = plot_roc(_curves(), tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = plot_roc(_curves(), tmp_path / "sub" / "roc.svg")
    text = svg.read_text()
    assert "<svg" in text and "log-log ROC" in text
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["roc.svg"]  # no temp files left


def test_bad_plot_requests(tmp_path):
    with pytest.raises(ForgeValueError, match=r"\.png"):
        plot_roc(_curves(), tmp_path / "roc.jpg")
    with pytest.raises(ForgeValueError, match="no ROC curves"):
        plot_roc({}, tmp_path / "roc.png")
    with pytest.raises(ForgeValueError, match="one class"):
        plot_roc({"x": ([0.1, 0.2], [1, 1])}, tmp_path / "roc.png")
    assert list(tmp_path.iterdir()) == []
