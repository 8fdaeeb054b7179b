"""Tables and plots of the bench, on hand-made result rows."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy import stats

from attacks.bench import plots, report


def rows() -> list[dict]:
    out = []
    rng = np.random.default_rng(0)
    for eps in (1.0, 8.0, math.inf):
        for merge in ("none", "exact"):
            for seed in (0, 1, 2):
                acc = 0.8 + 0.01 * seed + (0.05 if merge == "exact" else 0.0)
                for attack in ("lira", "rmia"):
                    emp = 0.2 * seed if math.isfinite(eps) else 2.0
                    out.append(
                        {
                            "epsilon": eps,
                            "rank": 4,
                            "lora": "ffa",
                            "merge": merge,
                            "attack": attack,
                            "seed": seed,
                            "claimed_epsilon": eps,
                            "delta": 1e-3,
                            "accountant": "prv",
                            "accuracy": acc,
                            "utility_auc": 0.9,
                            "attack_auc": 0.5 + rng.uniform(0, 0.1),
                            "tpr_at_1pct_fpr": 0.02 * seed,
                            "fpr_reached_1pct": 0.0,
                            "tpr_at_0.1pct_fpr": 0.0,
                            # one run above its claim: a bug the outputs must flag
                            "empirical_epsilon": 1.5 if (eps == 1.0 and seed == 2 and attack == "lira" and merge == "none") else emp,
                            "above_claim": eps == 1.0 and seed == 2 and attack == "lira" and merge == "none",
                            "n_members": 50,
                            "n_nonmembers": 50,
                            "references": 4,
                            "recon_success": math.nan,
                            "recon_low": math.nan,
                            "recon_high": math.nan,
                            "recon_baseline": math.nan,
                            "recon_bound": math.nan,
                            "seconds": 1.0,
                            "cell_key": f"k{len(out)}",
                        }
                    )
    return out


def test_t_interval_matches_the_formula():
    v = [0.81, 0.84, 0.79, 0.86]
    n, mean, half = report.t_interval(v, 0.95)
    assert n == 4 and mean == pytest.approx(np.mean(v))
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2)
    # one value: a mean without an invented interval; NaN and inf values are left out
    assert report.t_interval([0.5], 0.95)[2] != report.t_interval([0.5], 0.95)[2]  # NaN
    assert report.t_interval([0.5, math.nan, math.inf], 0.95)[:2] == (1, 0.5)
    assert report.t_interval([], 0.95)[0] == 0


def test_csv_round_trip_and_summary(tmp_path):
    r = rows()
    report.write_csv(r, tmp_path / "results.csv")
    back = report.read_csv(tmp_path / "results.csv")
    assert len(back) == len(r)
    assert list(back[0]) == list(report.COLUMNS)
    assert back[-1]["epsilon"] == math.inf and back[0]["epsilon"] == 1.0
    assert math.isnan(back[0]["recon_success"])
    assert sum(b["above_claim"] for b in back) == 1
    summary = report.summarize(back, 0.95)
    assert len(summary) == 3 * 2 * 2  # one entry per cell
    e = next(s for s in summary if s["epsilon"] == 1.0 and s["merge"] == "exact" and s["attack"] == "lira")
    assert e["seeds"] == 3
    n, mean, half = e["accuracy"]
    assert n == 3 and mean == pytest.approx(0.86)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std([0.85, 0.86, 0.87], ddof=1) / math.sqrt(3))
    md = report.markdown(summary, 0.95, 3)
    assert "n = 3" in md and "t interval" in md.replace("-", " ") and "| ∞ |" in md
    assert md.count("\n|") == len(summary) + 2  # heading, rule, one line per cell
    assert "| ∞ | - | - | leaks | 0 |" in md  # claimed epsilon without DP, no canaries, a bound above 0
    html = report.html(summary, 0.95, 3, title="t<b>", plots=["plots/x.png"], flagged=["lira <bug>"], meta={"seeds": "0, 1, 2"})
    assert "<b>" not in html.split("<body>")[1].split("<table>")[0]  # escaped
    assert "lira &lt;bug&gt;" in html and 'src="plots/x.png"' in html


def test_plots_are_written_and_flag_points_above_the_diagonal(tmp_path):
    written = plots.write_plots(rows(), tmp_path, 0.95)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{stem}.{ext}" for stem in plots.PLOTS for ext in ("png", "svg"))
    for p in written:
        assert p.stat().st_size > 1000
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            ET.parse(p)  # well-formed SVG
    svg = (tmp_path / "empirical_vs_claimed.svg").read_text()
    assert "BUG" in svg and "lira none ffa s2" in svg
    assert len(plots.flagged_rows(rows())) == 1


def test_plots_without_membership_rows(tmp_path):
    r = [dict(x, attack="recon", empirical_epsilon=math.nan, tpr_at_1pct_fpr=math.nan, above_claim=False) for x in rows()]
    written = plots.write_plots(r, tmp_path, 0.95)
    assert len(written) == 6
    assert "no membership attack" in (tmp_path / "empirical_vs_claimed.svg").read_text()


def _canary_rows() -> list[dict]:
    """rows() with a canary audit: no DP leaks (28 of 32 right), DP stays at chance."""
    from attacks.metrics import one_run_epsilon, one_run_epsilon_ceiling

    out = []
    for r in rows():
        nodp = math.isinf(r["epsilon"])
        v = 28 if nodp else 16
        delta = 0.0 if nodp else 1e-3
        out.append(
            dict(
                r,
                above_claim=False,
                empirical_ceiling=1.9,
                canary_m=64,
                canary_guesses=32,
                canary_correct=v,
                canary_epsilon=one_run_epsilon(32, v, 64, delta=delta),
                canary_ceiling=one_run_epsilon_ceiling(32, m=64, delta=delta),
                canary_acc_in=0.6 if nodp else 0.1,
                canary_acc_out=0.1,
                canary_above_claim=False,
            )
        )
    return out


def test_the_ceiling_is_drawn_and_claims_above_it_are_hollow(tmp_path):
    written = plots.write_plots(_canary_rows(), tmp_path, 0.95)
    assert len(written) == 6
    svg = (tmp_path / "empirical_vs_claimed.svg").read_text()
    for words in (
        "ceiling: perfect attack, threshold",
        "ceiling: perfect attack, pooled one-run",
        "one-run bound pooled over seeds",
        "cannot tell (claim above ceiling)",
    ):
        assert words in svg, words
    assert "BUG" not in svg


def test_summary_with_canaries_pools_the_seeds_and_says_cannot_tell(tmp_path):
    summary = report.summarize(_canary_rows(), 0.95)
    head, body = report.table_rows(summary)
    cols = {h: i for i, h in enumerate(head)}
    for line, e in zip(body, summary, strict=True):
        if math.isinf(e["epsilon"]):
            assert e["pooled"]["v"] == 3 * 28 and e["verdict"] == "leaks"
            assert float(line[cols["one-run eps (LB) pooled over seeds (right / guesses)"]].split()[0]) > 1.0
        elif e["epsilon"] == 8.0:  # above every ceiling (about 1.9, 2.3 and 3.4 pooled)
            assert line[cols["threshold eps (LB)"]] == "cannot tell" and e["verdict"] == "cannot tell"
        else:
            assert e["verdict"] == "consistent" and line[cols["threshold eps (LB)"]] != "cannot tell"
    # the terminal table: the few columns that matter, under 100 characters wide
    from rich.console import Console

    from forge_secure.cli.bench import TERMINAL_WIDTH, terminal_table

    console = Console(width=250, record=True, color_system=None)
    console.print(terminal_table(summary, title="forge bench (36 runs)"))
    lines = console.export_text().splitlines()
    assert max(len(x.rstrip()) for x in lines) <= TERMINAL_WIDTH
    assert any("cannot tell" in x for x in lines) and any("leaks" in x for x in lines)
    # the HTML page holds its plots itself
    plots.write_plots(_canary_rows(), tmp_path / "plots", 0.95)
    page = report.html(summary, 0.95, 3, title="t", plots=["plots/empirical_vs_claimed.png"], flagged=[], meta={}, embed_root=tmp_path)
    assert 'src="data:image/png;base64,iVBOR' in page
