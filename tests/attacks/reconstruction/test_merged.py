"""Reconstruction attacks on merged plugins (`--recipe`): real DP site plugins, real merges by
forge_secure.merge.fusion_merge, the informed game that re-releases the merge, and the
clean error without a recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attacks.reconstruction.bounds import rero_bound_dpsgd
from attacks.reconstruction.informed import MergeRelease
from attacks.reconstruction.run import ReconSettings, lora_functional, resolve_recipe, run_canary, run_gradient, run_informed
from forge_secure.errors import ForgeValueError
from forge_secure.plugins import load_data, load_plugin
from tests.conftest import assert_clean_error


@pytest.fixture(scope="module")
def merged_dirs(tmp_path_factory):
    """Two FFA DP site plugins (sigma 1, bundled site-1 and site-2) and their ``ffa`` and
    ``exact`` merges."""
    from forge_secure.merge import fusion_merge
    from forge_secure.privacy import TrainConfig, train_plugin

    root = tmp_path_factory.mktemp("recon-merged")
    for site in ("site-1", "site-2"):
        train_plugin(
            TrainConfig(noise_multiplier=1.0, epochs=3, ffa=True, seed=0), load_data(f"bundled:{site}"), site=site, out=root / site
        )
    fusion_merge([root / "site-1", root / "site-2"], root / "ffa", method="ffa")
    fusion_merge([root / "site-1", root / "site-2"], root / "exact", method="exact")
    return root


@pytest.mark.parametrize("method", ["ffa", "exact"])
def test_merge_release_at_the_start_is_the_merged_plugin(merged_dirs, method):
    merged = load_plugin(merged_dirs / method)
    site = load_plugin(merged_dirs / "site-2", base=merged.base)
    fn = lora_functional(site)
    rmeta, _, index = resolve_recipe(merged, merged_dirs / "site-2")
    assert index == 1 and rmeta["site"] == "site-2"
    lora = rmeta["lora"]
    rel = MergeRelease(
        lora_functional(merged),
        merged.meta["merge"]["weights"][index],
        fn.params,
        scaling=lora["alpha"] / lora["rank"],
        method=method,
        site_frozen=fn.frozen,
    )
    start = rel(fn.params)
    for n, p in rel.fn.params.items():
        assert torch.allclose(start[n], p)
    # a change of the site's tensors moves the released merge
    moved = rel({n: p + 0.1 for n, p in fn.params.items()})
    assert any(not torch.allclose(moved[n], rel.fn.params[n]) for n in moved)


def test_informed_on_a_merge_stays_within_the_site_bound(merged_dirs):
    merged = load_plugin(merged_dirs / "ffa")
    data, prior = load_data("bundled:site-1/train"), load_data("bundled:public")
    s = ReconSettings(trials=20, seed=0, candidates=10, bound_samples=4000)
    res = run_informed(merged, data, prior, s, recipe=merged_dirs / "site-1")
    site_dp = json.loads((merged_dirs / "site-1" / "forge.json").read_text())["dp"]
    assert res["mode"] == "model" and "merged plugin" in res["observed"]
    assert res["recipe"]["site"] == "site-1" and res["recipe"]["parent_index"] == 0
    assert res["recipe"]["merge_weight"] == pytest.approx(merged.meta["merge"]["weights"][0])
    b = res["bound"]
    assert (b["noise_multiplier"], b["sample_rate"], b["steps"]) == (
        pytest.approx(site_dp["noise_multiplier"]),
        pytest.approx(site_dp["sample_rate"]),
        site_dp["steps"],
    )
    assert "post-processing" in b["applies_to"]
    ref = rero_bound_dpsgd(site_dp["noise_multiplier"], site_dp["sample_rate"], site_dp["steps"], 0.1, samples=4000, seed=0)
    assert b["bound"] == pytest.approx(ref.bound)
    lo, hi = res["success"]["ci"]
    assert res["within_bound"] and lo <= b["bound"] + 3 * b["mc_stderr"]
    assert res["trials"] == 20 and 0 <= lo <= res["success"]["rate"] <= hi <= 1


def test_a_merge_without_recipe_names_its_parents(merged_dirs):
    merged = load_plugin(merged_dirs / "ffa")
    data, prior = load_data("bundled:site-1/train"), load_data("bundled:public")
    for run in (run_informed, run_gradient, run_canary):
        with pytest.raises(ForgeValueError) as e:
            run(merged, data, prior, ReconSettings(trials=2, bound_samples=1000))
        assert e.value.code == "recon.needs_recipe"
        assert "--recipe" in str(e.value) and "site-1, site-2" in str(e.value)
    with pytest.raises(ForgeValueError) as e:  # a merge is no recipe
        resolve_recipe(merged, merged_dirs / "exact")
    assert e.value.code == "recon.recipe_kind"


def test_cli_merged_without_recipe_is_a_clean_error(forge_cli, merged_dirs, tmp_path):
    r = forge_cli("attack", "recon", "--target", merged_dirs / "ffa", "--kind", "informed", "--out", tmp_path / "r.json")
    assert_clean_error(r, "merged plugin", "--recipe", "site-1", "site-2")
    assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_cli_informed_on_a_merge_with_recipe(forge_cli, merged_dirs, tmp_path):
    out = tmp_path / "r.json"
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        merged_dirs / "exact",
        "--kind",
        "informed",
        "--recipe",
        merged_dirs / "site-2",
        "--trials",
        "10",
        "--bound-samples",
        "2000",
        "--out",
        out,
    )
    assert r.code == 0, r
    res = json.loads(out.read_text())
    assert res["mode"] == "model" and res["recipe"]["site"] == "site-2" and "concatenated" in res["observed"]
    assert "site-2/train" in res["data"]["name"]  # default data: the recipe site's training set
    assert res["within_bound"]


def test_gradient_and_canary_on_a_merge_with_recipe(merged_dirs):
    merged = load_plugin(merged_dirs / "ffa")
    holdout, prior, train = load_data("bundled:site-1/holdout"), load_data("bundled:public"), load_data("bundled:site-1/train")
    s = ReconSettings(
        trials=2, steps=40, restarts=2, bound_samples=2000, repetitions=(0, 4), canaries_per_repetition=2, canary_candidates=10
    )
    g = run_gradient(merged, holdout, prior, s, recipe=merged_dirs / "site-1")
    dp = json.loads((merged_dirs / "site-1" / "forge.json").read_text())["dp"]
    assert g["settings"]["dp"]["noise_multiplier"] == pytest.approx(dp["noise_multiplier"])
    assert "merged model" in g["observed"] and g["recipe"]["site"] == "site-1"
    assert g["bound"]["feature_accuracy"]["bound"] <= 1
    c = run_canary(merged, train, prior, s, recipe=merged_dirs / "site-1")
    assert c["recipe"]["site"] == "site-1" and c["bound"]["noise_multiplier"] == pytest.approx(dp["noise_multiplier"])
    assert np.isfinite(c["success"]["by_repetition"][-1]["mean_exposure_bits"])


def test_mixture_target_attacks_the_named_component(forge_inproc, merged_dirs, tmp_path):
    """A Mixture keeps every site's plugin unchanged: `--component SITE` attacks that one;
    without it, or with an unknown site, a clean error lists the components."""
    from forge_secure.merge.mixture import build_mixture

    mix = build_mixture([merged_dirs / "site-1", merged_dirs / "site-2"], router="static", weights=[0.5, 0.5]).save(tmp_path / "mix")
    out = tmp_path / "r.json"
    r = forge_inproc(
        "attack",
        "recon",
        "--target",
        mix,
        "--component",
        "site-2",
        "--kind",
        "informed",
        "--trials",
        "4",
        "--bound-samples",
        "1000",
        "--out",
        out,
    )
    assert r.code == 0, r
    res = json.loads(out.read_text())
    assert res["target"]["mixture"] == {"path": str(mix), "component": "site-2"} and res["target"]["site"] == "site-2"
    assert "site-2/train" in res["data"]["name"]
    for extra, words in (((), ["Mixture of site-1, site-2", "--component"]), (("--component", "site-9"), ["site-9", "site-1, site-2"])):
        bad = tmp_path / "bad.json"
        r = forge_inproc("attack", "recon", "--target", mix, *extra, "--kind", "informed", "--out", bad)
        assert_clean_error(r, *words)
        assert not bad.exists()
    r = forge_inproc(
        "attack", "recon", "--target", merged_dirs / "site-1", "--component", "site-1", "--kind", "informed", "--out", tmp_path / "c.json"
    )
    assert_clean_error(r, "no mixture.json", "drop --component")
    (mix / "mixture.json").write_text("{not json")
    r = forge_inproc("attack", "recon", "--target", mix, "--component", "site-1", "--kind", "informed", "--out", tmp_path / "d.json")
    assert_clean_error(r, "mixture.json")
