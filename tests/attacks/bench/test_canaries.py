"""Canaries in the bench grid: a no-DP cell shows leakage whose 95 % interval excludes 0, a DP
cell at epsilon 1 stays below its claim, every bound carries its ceiling, and the terminal
table fits 100 columns (real Opacus / PEFT training on the image base, no mocks)."""

from __future__ import annotations

import json
import math

import pytest

from attacks.bench import config_from_dict, report
from attacks.bench.report import read_csv
from attacks.bench.runner import run_bench
from attacks.metrics import clopper_pearson_epsilon_ceiling, one_run_epsilon, one_run_epsilon_ceiling

# the default grid's recipe (image base, 60 epochs of Adam, 64 canaries per site), one seed,
# one LoRA kind, the single-site model and the attack that needs no reference models
IMAGE = {
    "bench": {"seeds": [0]},
    "data": {"source": "bundled-digits", "n_sites": 3},
    "training": {"base": "vit-tiny", "epochs": 60, "batch_size": 32, "lr": 0.01, "optimizer": "adam"},
    "canaries": {"count": 64},
    "grid": {"epsilon": [1, "inf"], "rank": [8], "lora": ["lora"], "merge": ["none"], "attack": ["recon"]},
    "run": {"workers": 1},
}
# the same on the tabular base (about a second of training): Adam learns every inserted
# canary, and a held-back one matches its random binary label about half the time
TABULAR = {
    **IMAGE,
    "data": {"source": "bundled", "n_sites": 3},
    "training": {"base": "tabular-mlp", "epochs": 20, "batch_size": 32, "lr": 0.01, "optimizer": "adam"},
}
RECIPES = {"tabular": TABULAR, "image": pytest.param(IMAGE, marks=pytest.mark.slow)}


@pytest.fixture(scope="module", params=list(RECIPES.values()), ids=list(RECIPES))
def small_grid(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-canaries")
    cfg = config_from_dict(request.param)
    result = run_bench(cfg, root / "out", cache_root=root / "cache", workers=1)
    return root, cfg, result


def test_no_dp_leaks_visibly_and_epsilon_1_stays_below_its_claim(small_grid):
    root, cfg, result = small_grid
    rows = {("inf" if math.isinf(r["epsilon"]) else r["epsilon"]): r for r in read_csv(root / "out" / "results.csv")}
    nodp, dp = rows["inf"], rows[1.0]
    for r in (nodp, dp):
        # the model is audited on all 64 canaries of its site, a quarter guessed IN, a quarter OUT
        assert r["canary_m"] == 64 and r["canary_guesses"] == 32
        assert 0 <= r["canary_correct"] <= r["canary_guesses"]
        assert r["canary_epsilon"] == pytest.approx(
            one_run_epsilon(r["canary_guesses"], r["canary_correct"], 64, delta=0.0 if math.isnan(r["delta"]) else r["delta"]), abs=1e-5
        )
    # without noise: the one-sided 95 % interval [bound, inf) excludes 0, and the model learnt
    # its inserted canaries far more often than it guesses the held-back ones' random labels
    assert nodp["canary_epsilon"] > 0.0
    assert nodp["canary_acc_in"] > nodp["canary_acc_out"] + 0.1
    assert nodp["canary_acc_in"] > dp["canary_acc_in"]
    # epsilon 1: below the claim (which the sample could have contradicted: ceiling above 1)
    assert 0 < dp["claimed_epsilon"] <= 1.0 + 1e-6
    assert dp["canary_epsilon"] <= dp["claimed_epsilon"] < dp["canary_ceiling"]
    assert not dp["above_claim"] and not dp["canary_above_claim"] and not result.flagged
    assert nodp["canary_epsilon"] > dp["canary_epsilon"]


def test_the_ceiling_is_computed_and_shown(small_grid):
    root, cfg, result = small_grid
    rows = read_csv(root / "out" / "results.csv")
    for r in rows:
        delta = 0.0 if math.isnan(r["delta"]) else r["delta"]
        assert r["canary_ceiling"] == pytest.approx(one_run_epsilon_ceiling(r["canary_guesses"], m=r["canary_m"], delta=delta))
        assert r["canary_epsilon"] <= r["canary_ceiling"]
    summary = report.summarize(rows, cfg.confidence, cfg.canaries.p_target)
    md = (root / "out" / "summary.md").read_text()
    html = (root / "out" / "summary.html").read_text()
    for e in summary:
        p = e["pooled"]
        assert p is not None and p["m"] == 64 and p["ceiling"] == pytest.approx(e["canary_ceiling"][1])
        assert f"{p['ceiling']:.2f}" in md and f"{p['ceiling']:.2f}" in html
    assert "ceiling" in md and "cannot tell" in md  # the legend explains it
    # the plots are inside the page itself, not links that break when it is moved
    assert html.count('src="data:image/png;base64,') == 3


def test_a_claim_above_the_ceiling_reads_cannot_tell_not_0():
    """Hand-made rows: a claim of 8 on 64 canaries (ceiling about 2.3) cannot be tested."""
    base = {
        "rank": 8,
        "lora": "lora",
        "merge": "none",
        "attack": "lira",
        "delta": 1e-5,
        "accuracy": 0.8,
        "utility_auc": 0.9,
        "attack_auc": 0.5,
        "tpr_at_1pct_fpr": 0.0,
        "empirical_epsilon": 0.0,
        "empirical_ceiling": 2.0,
        "canary_epsilon": 0.0,
        "canary_m": 64,
        "canary_guesses": 32,
        "canary_correct": 16,
        "canary_acc_in": 0.1,
        "canary_acc_out": 0.1,
        "canary_above_claim": False,
        "above_claim": False,
        "recon_success": math.nan,
    }
    rows = []
    for eps in (1.0, 8.0):
        for seed in (0, 1, 2):
            ceiling = one_run_epsilon_ceiling(32, m=64, delta=1e-5)
            rows.append(dict(base, epsilon=eps, claimed_epsilon=eps, seed=seed, canary_ceiling=ceiling))
    summary = report.summarize(rows, 0.95)
    by_eps = {e["epsilon"]: e for e in summary}
    head, body = report.table_rows(summary)
    line = {r[0]: dict(zip(head, r, strict=True)) for r in body}
    assert line["8"]["threshold eps (LB)"] == "cannot tell" and line["8"]["one-run eps (LB) per seed"] == "cannot tell"
    # pooled over the 3 seeds the ceiling rises to about 3.4, still below 8: no column can tell
    assert by_eps[8.0]["pooled"]["ceiling"] < 8.0 and line["8"]["verdict"] == "cannot tell"
    assert line["8"]["one-run eps (LB) pooled over seeds (right / guesses)"] == "cannot tell"
    assert line["1"]["threshold eps (LB)"] == "0.00 ± 0.00" and line["1"]["verdict"] == "consistent"
    # pooled over the seeds: r, v and m add up, and the ceiling rises with them
    p = by_eps[1.0]["pooled"]
    assert (p["r"], p["v"], p["m"]) == (96, 48, 192) and p["ceiling"] > ceiling
    assert p["ceiling"] == pytest.approx(one_run_epsilon_ceiling(96, m=192, delta=1e-5))
    assert clopper_pearson_epsilon_ceiling(50, 50) > 0


@pytest.mark.slow
def test_terminal_table_fits_100_columns(small_grid, forge_cli, tmp_path):
    """The real command (a subprocess with COLUMNS=200): every line of its output fits 100."""
    root, cfg, result = small_grid
    toml = tmp_path / "small.toml"
    doc = cfg.to_dict()
    lines = []
    for table, values in doc.items():
        if table == "attack" or not values:
            continue
        lines.append(f"[{table}]")
        for k, v in values.items():
            if v is None or v == "":
                continue
            lines.append(f"{k} = {json.dumps(v)}")
    toml.write_text("\n".join(lines) + "\n")
    res = forge_cli("bench", "--config", toml, "--out", tmp_path / "out", "--cache", root / "cache", "--workers", "1")
    assert res.code == 0, res
    assert "0 runs computed, 2 from the cache, 0 plugins trained" in res.out
    out = res.out.splitlines()
    assert max(len(x.rstrip()) for x in out) <= 100, "\n".join(out)
    assert "one-run eps" in res.out and "ceiling" in res.out and "summary.md" in res.out
    assert any(x.strip().startswith("∞") and "leaks" in x for x in out)
