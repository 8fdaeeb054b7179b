"""A small grid end to end on real Opacus / PEFT training, real merges and real attacks;
resuming and changed settings recompute only what they must (counted)."""

from __future__ import annotations

import copy
import json
import math

import pytest

from attacks.bench import config_from_dict
from attacks.bench import grid as G
from attacks.bench.cache import BenchCache
from attacks.bench.report import COLUMNS, read_csv
from attacks.bench.runner import run_bench

SMALL = {
    "bench": {"seeds": [0, 1]},
    "data": {"n_sites": 2},
    "training": {"epochs": 2, "batch_size": 16, "lr": 0.1, "accountant": "rdp"},
    "grid": {"epsilon": [8, "inf"], "rank": [2], "lora": ["ffa"], "merge": ["none", "exact"], "attack": ["lira", "rmia", "recon"]},
    "attack": {"lira": {"references": 2}, "rmia": {"references": 2, "population": 60}, "recon": {"trials": 30, "prior": 4}},
    "run": {"workers": 1},
}
N_RUNS = 2 * 1 * 1 * 2 * 3 * 2  # epsilon x rank x lora x merge x attack x seeds


def test_small_grid_end_to_end_then_resume_change_repair_and_cli(tmp_path, forge_cli):
    """One test, so that the shared cache is built once and used in order even when the
    suite runs under pytest-xdist (tests of one module may land on different workers)."""
    root = tmp_path / "bench"
    cfg = config_from_dict(copy.deepcopy(SMALL))
    result = run_bench(cfg, root / "out", cache_root=root / "cache", workers=1)
    first = (root, cfg, result)
    _check_first_run(first)
    _check_cell_keys(first)
    _check_resume(first, tmp_path / "resume")
    _check_changed_setting(first, tmp_path / "changed")
    _check_repair(first, tmp_path / "repair")
    _check_cli(first, forge_cli, tmp_path / "cli")


def _check_first_run(first):
    root, cfg, result = first
    out = root / "out"
    assert result.computed == N_RUNS and result.cached == 0
    # per (epsilon, seed): 2 target site plugins + 2 references x 2 sites
    assert result.trained == 2 * 2 * (2 + 2 * 2)
    rows = read_csv(out / "results.csv")
    assert len(rows) == N_RUNS and set(rows[0]) == set(COLUMNS)
    assert {(r["epsilon"], r["merge"], r["attack"], r["seed"]) for r in rows} == {
        (e, m, a, s) for e in (8.0, math.inf) for m in ("none", "exact") for a in ("lira", "rmia", "recon") for s in (0, 1)
    }
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["utility_auc"] <= 1.0
        if math.isinf(r["epsilon"]):
            assert math.isinf(r["claimed_epsilon"])
        else:  # the accountant's epsilon for a target of 8
            assert 0 < r["claimed_epsilon"] <= 8.0 + 1e-6
        if r["attack"] == "recon":
            assert 0.0 <= r["recon_low"] <= r["recon_success"] <= r["recon_high"] <= 1.0
            assert r["recon_baseline"] == pytest.approx(0.25)
            assert r["recon_baseline"] <= r["recon_bound"] <= 1.0
            assert math.isnan(r["attack_auc"])
        else:
            assert 0.0 <= r["attack_auc"] <= 1.0 and 0.0 <= r["tpr_at_1pct_fpr"] <= 1.0
            assert r["fpr_reached_1pct"] <= 0.01
            assert r["empirical_epsilon"] >= 0.0
            assert r["above_claim"] == (r["empirical_epsilon"] > r["claimed_epsilon"])
            assert r["n_members"] > 5 and r["n_nonmembers"] > 5 and r["references"] == 2
    # the merged model is scored on the union of both sites' pools, the single plugin on one
    sizes = {(r["merge"], r["n_members"] + r["n_nonmembers"]) for r in rows if r["attack"] == "lira" and r["seed"] == 0}
    assert len({n for m, n in sizes if m == "none"}) == 1 and max(n for m, n in sizes if m == "exact") > max(
        n for m, n in sizes if m == "none"
    )
    md = (out / "summary.md").read_text()
    assert "n = 2" in md and md.count("\n| ") == N_RUNS // 2 + 1
    assert "<table>" in (out / "summary.html").read_text()
    for stem in ("utility_vs_epsilon", "tpr_vs_epsilon", "empirical_vs_claimed"):
        assert (out / "plots" / f"{stem}.png").stat().st_size > 1000
        assert (out / "plots" / f"{stem}.svg").stat().st_size > 1000
    log = json.loads((out / "bench.json").read_text())
    assert log["computed"] == N_RUNS and log["rows"] == N_RUNS


def _check_resume(first, tmp_path):
    root, cfg, result = first
    cache = BenchCache(root / "cache")
    keys = [r["cell_key"] for r in result.rows]
    # an interrupted run: three cells never finished, one result file was cut short
    lost = keys[:3]
    for k in lost:
        cache._result_path(k).unlink()
    cache._result_path(keys[5]).write_text('{"format": "forge-bench-cell/1", "key": ')
    again = run_bench(cfg, tmp_path / "out2", cache_root=root / "cache", workers=1)
    assert again.computed == 4 and again.cached == N_RUNS - 4
    assert again.trained == 0  # the plugins and reference models were cached
    before = {r["cell_key"]: r for r in result.rows}
    for r in again.rows:
        b = before[r["cell_key"]]
        for col in ("accuracy", "attack_auc", "empirical_epsilon", "recon_success"):
            assert (math.isnan(b[col]) and math.isnan(r[col])) or b[col] == pytest.approx(r[col]), col  # deterministic
    # a complete cache: nothing runs, and the same --out (a bench output) is replaced
    third = run_bench(cfg, tmp_path / "out2", cache_root=root / "cache", workers=1)
    assert third.computed == 0 and third.trained == 0 and len(third.rows) == N_RUNS


def _check_changed_setting(first, tmp_path):
    root, cfg, result = first
    doc = copy.deepcopy(SMALL)
    doc["attack"]["rmia"]["gamma"] = 1.5
    doc["grid"]["merge"] = ["exact", "none"]  # order does not matter
    changed = config_from_dict(doc)
    again = run_bench(changed, tmp_path / "out3", cache_root=root / "cache", workers=1)
    assert again.computed == N_RUNS // 3  # the rmia rows only
    assert again.trained == 0
    rmia_keys = {r["cell_key"] for r in again.rows if r["attack"] == "rmia"}
    assert rmia_keys.isdisjoint({r["cell_key"] for r in result.rows})
    # dropping a value of the grid reruns nothing
    doc["grid"]["epsilon"] = ["inf"]
    fewer = run_bench(config_from_dict(doc), tmp_path / "out4", cache_root=root / "cache", workers=1)
    assert fewer.computed == 0 and len(fewer.rows) == N_RUNS // 2


def _check_cell_keys(first):
    root, cfg, result = first
    from attacks.bench.data import load_bench_data

    digest = load_bench_data(cfg.data).digest
    for r in result.rows:
        cell = G.Cell(r["epsilon"], r["rank"], r["lora"], r["merge"], r["attack"])
        assert G.cell_key(cfg, cell, r["seed"], digest) == r["cell_key"]


def _check_cli(first, forge_cli, tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    root, cfg, result = first
    toml = tmp_path / "small.toml"
    toml.write_text(
        """
[bench]
seeds = [0, 1]
[data]
n_sites = 2
[training]
epochs = 2
batch_size = 16
lr = 0.1
accountant = "rdp"
[grid]
epsilon = [8, "inf"]
rank = [2]
lora = ["ffa"]
merge = ["none"]
attack = ["lira"]
[attack.lira]
references = 2
"""
    )
    out = tmp_path / "cli-out"
    res = forge_cli("bench", "--config", toml, "--out", out, "--cache", root / "cache", "--workers", "1")
    assert res.code == 0, res
    assert "0 runs computed, 4 from the cache, 0 plugins trained" in res.out
    assert "results.csv" in res.out and "summary.html" in res.out
    assert (out / "config.toml").read_text() == toml.read_text()
    assert len(read_csv(out / "results.csv")) == 4
    assert json.loads((out / "bench.json").read_text())["cached"] == 4


def _check_repair(first, tmp_path):
    root, cfg, result = first
    from attacks.bench.data import load_bench_data

    cache = BenchCache(root / "cache")
    digest = load_bench_data(cfg.data).digest
    row = next(r for r in result.rows if r["merge"] == "none" and r["attack"] == "lira" and r["seed"] == 0 and math.isfinite(r["epsilon"]))
    cell = G.Cell(row["epsilon"], row["rank"], row["lora"], row["merge"], row["attack"])
    group = G.TrainGroup(cell.epsilon, cell.rank, cell.lora, 0)
    # the cell's result is gone, its model arrays are truncated, its site-1 plugin tampered with
    cache._result_path(row["cell_key"]).unlink()
    npz = cache._array_path("model", G.model_key(cfg, cell, 0, digest))
    npz.write_bytes(npz.read_bytes()[:100])
    weights = cache.plugin_dir(G.train_key(cfg, group, digest), "site-1") / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    again = run_bench(cfg, tmp_path / "out", cache_root=root / "cache", workers=1)
    assert again.computed == 1 and again.trained == 1  # only the damaged plugin is retrained
    redo = next(r for r in again.rows if r["cell_key"] == row["cell_key"])
    assert redo["accuracy"] == pytest.approx(row["accuracy"])  # seeded: the same plugin again
    assert redo["attack_auc"] == pytest.approx(row["attack_auc"])


def test_the_users_csv_data(tmp_path):
    """A researcher's own CSV (here the breast-cancer table written out as a file) is cut
    into a public split and hospital shards like the bundled data."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    table = np.column_stack([raw.data, raw.target])
    header = ",".join([f"f{i}" for i in range(raw.data.shape[1])] + ["diagnosis"])
    csv = tmp_path / "cohort.csv"
    np.savetxt(csv, table, delimiter=",", header=header, comments="", fmt="%.6g")
    toml = tmp_path / "bench.toml"
    toml.write_text(
        '[bench]\nseeds = [0]\n[data]\nsource = "cohort.csv"\nlabel_column = "diagnosis"\nn_sites = 2\n'
        '[training]\nepochs = 1\n[grid]\nepsilon = ["inf"]\nrank = [2]\nlora = ["ffa"]\nmerge = ["none"]\nattack = ["recon"]\n'
        "[attack.recon]\ntrials = 10\nprior = 4\n"
    )
    from attacks.bench import load_config

    cfg = load_config(toml)
    result = run_bench(cfg, tmp_path / "out", cache_root=tmp_path / "cache", workers=1)
    assert result.computed == 1 and result.trained == 1
    row = result.rows[0]
    assert 0.5 <= row["accuracy"] <= 1.0 and row["recon_bound"] == 1.0 and row["recon_baseline"] == 0.25
    # the data digest is part of every key: an edited file is another grid, rerun in full
    from attacks.bench.data import load_bench_data

    before = load_bench_data(cfg.data).digest
    csv.write_text(csv.read_text().replace("\n1", "\n0", 3))
    assert load_bench_data(cfg.data).digest != before
