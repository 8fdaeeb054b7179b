"""The same grid gives the same results in local worker processes and on a local Ray."""

from __future__ import annotations

import math

import pytest

from attacks.bench import config_from_dict
from attacks.bench.runner import run_bench

TINY = {
    "bench": {"seeds": [0, 1]},
    "data": {"n_sites": 2},
    "training": {"epochs": 1, "batch_size": 16},
    "grid": {"epsilon": ["inf"], "rank": [2], "lora": ["ffa"], "merge": ["none"], "attack": ["lira"]},
    "attack": {"lira": {"references": 2}},
}


def _same(a, b):
    assert [r["cell_key"] for r in a.rows] == [r["cell_key"] for r in b.rows]
    for x, y in zip(a.rows, b.rows, strict=True):
        for col in ("accuracy", "attack_auc", "empirical_epsilon"):
            assert x[col] == pytest.approx(y[col]) or (math.isnan(x[col]) and math.isnan(y[col]))


@pytest.mark.slow
def test_worker_processes_match_in_process(tmp_path):
    cfg = config_from_dict(TINY)
    one = run_bench(cfg, tmp_path / "o1", cache_root=tmp_path / "c1", workers=1)
    two = run_bench(cfg, tmp_path / "o2", cache_root=tmp_path / "c2", workers=2)
    assert one.computed == two.computed == 2
    _same(one, two)


@pytest.mark.slow
def test_ray_path_on_a_local_ray(tmp_path):
    cfg = config_from_dict(TINY)
    local = run_bench(cfg, tmp_path / "o1", cache_root=tmp_path / "c1", workers=1)
    on_ray = run_bench(cfg, tmp_path / "o2", cache_root=tmp_path / "c2", workers=2, ray="auto")
    assert on_ray.computed == 2 and on_ray.trained == local.trained
    _same(local, on_ray)
    # resumed on Ray: nothing to recompute
    again = run_bench(cfg, tmp_path / "o2", cache_root=tmp_path / "c2", workers=2, ray="auto")
    assert again.computed == 0


def test_unreachable_ray_address_is_a_clean_error(forge_cli, tmp_path):
    cfg = tmp_path / "b.toml"
    cfg.write_text(
        '[bench]\nseeds = [0]\n[grid]\nepsilon = ["inf"]\nrank = [2]\nlora = ["ffa"]\nmerge = ["none"]\nattack = ["lira"]\n'
        "[attack.lira]\nreferences = 2\n"
    )
    result = forge_cli("bench", "--config", cfg, "--out", tmp_path / "out", "--ray", "127.0.0.1:1", "--cache", tmp_path / "cache")
    assert result.code == 2, result
    assert "Traceback" not in result.err and "ray" in result.err.lower()
    assert not (tmp_path / "out").exists()
