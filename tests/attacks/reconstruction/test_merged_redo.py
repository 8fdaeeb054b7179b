"""The informed adversary on TIES, DARE and sequential merges: the merge redone from every
parent (real plugins from train_plugin, real merges from fusion_merge, the merge code itself
called on tensors), its success beside 1/n and the site's ReRo bound, and clean errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from attacks.reconstruction.merged import MergeRedo, order_parents
from attacks.reconstruction.run import ReconSettings, lora_functional, resolve_recipe, run_informed
from forge_secure.errors import ForgeError, ForgeValueError
from forge_secure.plugins import load_data, load_plugin, make_canaries
from forge_secure.plugins.record import read_plugin
from forge_secure.privacy.randomness import seed_from_label
from tests.conftest import assert_clean_error

METHODS = ("ties", "dare", "sequential")


@pytest.fixture(scope="module")
def redo_dirs(tmp_path_factory):
    """Plain-LoRA site plugins of site-1 and site-2 without DP and with sigma 1, DP synthetic
    tuning data, and their ties, dare and sequential merges: ``root/{method}-{nodp|dp}``."""
    from forge_secure.merge import fusion_merge
    from forge_secure.plugins.bases import load_base
    from forge_secure.privacy import TrainConfig, train_plugin
    from forge_secure.privacy.synthetic import SynthConfig, make_synthetic, save_synthetic

    root = tmp_path_factory.mktemp("recon-redo")
    for site in ("site-1", "site-2"):
        data = load_data(f"bundled:{site}")
        # the attacker's own experiment: reproducible randomness (a secret derived from a public label)
        train_plugin(
            TrainConfig(no_dp=True, epochs=3, seed=0),
            data,
            site=site,
            out=root / f"{site}-nodp",
            secret=seed_from_label(f"test-merged-redo-{site}-nodp", 0),
        )
        train_plugin(
            TrainConfig(noise_multiplier=1.0, epochs=3, seed=0),
            data,
            site=site,
            out=root / f"{site}-dp",
            secret=seed_from_label(f"test-merged-redo-{site}-dp", 0),
        )
    synth = make_synthetic(
        load_base("tabular-mlp"), load_data("bundled:site-1"), SynthConfig(noise_multiplier=2.0, per_class=20), site="site-1"
    )
    save_synthetic(synth, root / "synth.npz")
    for dp in ("nodp", "dp"):
        for m in METHODS:
            fusion_merge(
                [root / f"site-1-{dp}", root / f"site-2-{dp}"],
                root / f"{m}-{dp}",
                method=m,
                tune_on=root / "synth.npz" if m == "sequential" else None,
            )
    return root


def _redo(root, method, dp="nodp", given=None):
    merged = load_plugin(root / f"{method}-{dp}")
    rmeta, rdir, index = resolve_recipe(merged, root / f"site-1-{dp}")
    fn = lora_functional(load_plugin(rdir, base=merged.base))
    parents = order_parents(merged.meta, read_plugin(rdir), [read_plugin(p) for p in (given or [root / f"site-2-{dp}"])])
    return MergeRedo(read_plugin(root / f"{method}-{dp}"), parents, index, fn), fn


@pytest.mark.parametrize("method", METHODS)
def test_the_redo_gives_the_released_merge_and_follows_the_site(redo_dirs, method):
    redo, fn = _redo(redo_dirs, method, given=[redo_dirs / "site-2-nodp", redo_dirs / "site-1-nodp"])  # any order
    assert redo.redo_error < 1e-6 and [p.site for p in redo.parents] == ["site-1", "site-2"] and redo.index == 0
    moved = redo.deltas({n: p + 0.05 * torch.sign(p) for n, p in fn.params.items()})
    assert redo.distance(moved, redo.observed) > 1e-6 * redo.distance(redo.observed, {m: 0 * d for m, d in redo.observed.items()})
    rec = redo.record()
    assert rec["method"] == method and rec["parents"] == ["site-1", "site-2"]


def test_ties_is_not_linear_in_the_site_so_it_must_be_redone(redo_dirs):
    """Half a change does not give half the merged change under TIES (trim and sign election):
    the reason the informed game redoes the merge instead of adding a weighted change."""
    redo, fn = _redo(redo_dirs, "ties")
    rng = torch.Generator().manual_seed(0)
    change = {n: 0.2 * torch.randn(p.shape, generator=rng, dtype=p.dtype) for n, p in fn.params.items()}
    full = redo.deltas({n: fn.params[n] + change[n] for n in change})
    half = redo.deltas({n: fn.params[n] + 0.5 * change[n] for n in change})
    lin = {m: 0.5 * (full[m] + redo.observed[m]) for m in full}
    assert redo.distance(half, lin) > 1e-6


def test_without_dp_the_attack_beats_chance_on_a_ties_merge(redo_dirs):
    """No DP: the site's change survives TIES's trimming; the target is found clearly above 1/n
    (the Clopper-Pearson lower limit above 0.1). Prior: out-of-distribution records with
    random labels, as in test_informed (in-distribution records carry tiny gradients)."""
    data = load_data("bundled:site-1")
    prior = make_canaries(200, data, 1)
    res = run_informed(
        load_plugin(redo_dirs / "ties-nodp"),
        data,
        prior,
        ReconSettings(trials=24, seed=0, bound_samples=2000),
        recipe=redo_dirs / "site-1-nodp",
        parents=[redo_dirs / "site-2-nodp"],
    )
    assert res["mode"] == "model" and "ties merge redone" in res["observed"]
    assert res["merge_redo"]["method"] == "ties" and res["merge_redo"]["redo_relative_error"] < 1e-6
    assert res["success"]["ci"][0] > 0.1, res["success"]
    assert res["bound"]["bound"] == 1.0  # no DP, no bound


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dare", "sequential"])
def test_without_dp_the_attack_beats_chance_on_dare_and_sequential(redo_dirs, method):
    data = load_data("bundled:site-1")
    prior = make_canaries(200, data, 1)
    res = run_informed(
        load_plugin(redo_dirs / f"{method}-nodp"),
        data,
        prior,
        ReconSettings(trials=30, seed=1, bound_samples=2000),
        recipe=redo_dirs / "site-1-nodp",
        parents=[redo_dirs / "site-2-nodp"],
    )
    assert res["success"]["ci"][0] > 0.1, res["success"]


@pytest.mark.parametrize("method", METHODS)
def test_with_dp_the_attack_stays_within_the_site_bound(redo_dirs, method):
    data, prior = load_data("bundled:site-1"), make_canaries(200, load_data("bundled:site-1"), 1)
    res = run_informed(
        load_plugin(redo_dirs / f"{method}-dp"),
        data,
        prior,
        ReconSettings(trials=8, seed=0, bound_samples=4000),
        recipe=redo_dirs / "site-1-dp",
        parents=[redo_dirs / "site-2-dp"],
    )
    site_dp = json.loads((redo_dirs / "site-1-dp" / "forge.json").read_text())["dp"]
    b = res["bound"]
    assert (b["noise_multiplier"], b["steps"]) == (pytest.approx(site_dp["noise_multiplier"]), site_dp["steps"])
    assert b["bound"] < 1 and "post-processing" in b["applies_to"]
    assert res["within_bound"] and res["success"]["ci"][0] <= b["bound"] + 3 * b["mc_stderr"]


def test_library_errors(redo_dirs, tmp_path):
    merged = load_plugin(redo_dirs / "ties-dp")
    data, prior = load_data("bundled:site-1"), load_data("bundled:public")
    s = ReconSettings(trials=2, bound_samples=1000)
    with pytest.raises(ForgeValueError) as e:  # the other parent is missing
        run_informed(merged, data, prior, s, recipe=redo_dirs / "site-1-dp")
    assert e.value.code == "recon.needs_parents" and "site-2" in str(e.value) and "--parents" in str(e.value)
    with pytest.raises(ForgeValueError) as e:  # a plugin that is not a parent
        run_informed(merged, data, prior, s, recipe=redo_dirs / "site-1-dp", parents=[redo_dirs / "site-2-nodp"])
    assert e.value.code == "recon.parent_unknown"
    # an edited recipe in the merged forge.json: the redo no longer gives the merged plugin
    edited = tmp_path / "edited"
    shutil.copytree(redo_dirs / "ties-dp", edited)
    meta = json.loads((edited / "forge.json").read_text())
    meta["merge"]["details"]["density"] = 0.9
    (edited / "forge.json").write_text(json.dumps(meta))
    with pytest.raises(ForgeValueError) as e:
        run_informed(load_plugin(edited), data, prior, s, recipe=redo_dirs / "site-1-dp", parents=[redo_dirs / "site-2-dp"])
    assert e.value.code == "recon.merge_redo" and "does not give the merged plugin" in str(e.value)
    del meta["merge"]["details"]["density"]
    (edited / "forge.json").write_text(json.dumps(meta))
    with pytest.raises(ForgeValueError) as e:
        run_informed(load_plugin(edited), data, prior, s, recipe=redo_dirs / "site-1-dp", parents=[redo_dirs / "site-2-dp"])
    assert e.value.code == "recon.merge_record"


def test_cli_informed_on_a_ties_merge(forge_cli, redo_dirs, tmp_path):
    out = tmp_path / "r.json"
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        redo_dirs / "ties-dp",
        "--kind",
        "informed",
        "--recipe",
        redo_dirs / "site-1-dp",
        "--parents",
        redo_dirs / "site-2-dp",
        "--trials",
        "3",
        "--bound-samples",
        "2000",
        "--out",
        out,
    )
    assert r.code == 0, r
    res = json.loads(out.read_text())
    assert res["merge_redo"]["parents"] == ["site-1", "site-2"] and res["within_bound"] and res["trials"] == 3


def _truncated(redo_dirs, tmp_path):
    d = tmp_path / "trunc"
    shutil.copytree(redo_dirs / "site-2-dp", d)
    w = d / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    return d


def _tampered(redo_dirs, tmp_path):
    d = tmp_path / "tampered"
    shutil.copytree(redo_dirs / "site-2-dp", d)
    w = d / "adapter_model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-3] ^= 0xFF
    w.write_bytes(bytes(raw))
    return d


def _a_file(redo_dirs, tmp_path):
    f = tmp_path / "plugin.txt"
    f.write_text("not a plugin")
    return f


BAD_PARENTS = [
    (_truncated, ("safetensors",)),
    (_tampered, ("sha256",)),
    (_a_file, ("not a directory",)),
    (lambda root, tmp: root / "site-2-nodp", ("not a parent",)),
]


@pytest.mark.parametrize("make,words", BAD_PARENTS, ids=["truncated", "tampered", "file", "foreign"])
def test_bad_parents_are_clean_errors(redo_dirs, tmp_path, make, words):
    merged = load_plugin(redo_dirs / "dare-dp")
    with pytest.raises(ForgeError) as e:
        run_informed(
            merged,
            load_data("bundled:site-1"),
            load_data("bundled:public"),
            ReconSettings(trials=2, bound_samples=1000),
            recipe=redo_dirs / "site-1-dp",
            parents=[make(redo_dirs, tmp_path)],
        )
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize(
    "make,words",
    [(lambda root, tmp: None, ("site-2", "--parents")), pytest.param(_tampered, ("sha256",), marks=pytest.mark.slow)],
    ids=["missing", "tampered"],
)
def test_cli_bad_parents_are_clean_errors(forge_cli, redo_dirs, tmp_path, make, words):
    out = tmp_path / "r.json"
    bad = make(redo_dirs, tmp_path)
    extra = ["--parents", bad] if bad is not None else []
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        redo_dirs / "dare-dp",
        "--kind",
        "informed",
        "--recipe",
        redo_dirs / "site-1-dp",
        *extra,
        "--trials",
        "2",
        "--bound-samples",
        "1000",
        "--out",
        out,
    )
    assert_clean_error(r, *words)
    assert not out.exists()


def test_parents_only_for_the_informed_attack(forge_cli, redo_dirs, tmp_path):
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        redo_dirs / "ties-dp",
        "--kind",
        "canary",
        "--recipe",
        redo_dirs / "site-1-dp",
        "--parents",
        redo_dirs / "site-2-dp",
        "--out",
        tmp_path / "r.json",
    )
    assert_clean_error(r, "--parents", "informed")
