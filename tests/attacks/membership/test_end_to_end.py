"""End to end on real plugins (real PEFT, real Opacus): attack power, chance level under DP,
the empirical epsilon against the claim, the reference cache, and the Ray path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attacks.membership.run import MiaSettings, load_results, run_mia, write_results
from attacks.references import train_references
from forge_secure.errors import ForgeDataError, ForgeValueError


def _tpr_at(results, fpr):
    return next(r for r in results["metrics"]["tpr_at_fpr"] if r["target_fpr"] == fpr)


@pytest.mark.slow
def test_overfit_plugin_leaks_membership(overfit_plugin, tmp_path):
    """LiRA and RMIA on a non-DP plugin trained until it overfits: AUC > 0.6, TPR at 1 % FPR > 1 %."""
    common = dict(references=16, seed=0, n_boot=200)
    lira = run_mia(overfit_plugin, "bundled:site-1", settings=MiaSettings(attack="lira", fixed_variance=True, **common), workers=1)
    rmia = run_mia(overfit_plugin, "bundled:site-1", settings=MiaSettings(attack="rmia", **common), workers=1)
    assert rmia["references"]["cached"] == 16  # same recipe, data and seed: LiRA's references reused
    assert lira["canaries"]["used"] is True  # the target's 40 canaries are among the candidates
    for res in (lira, rmia):
        assert res["metrics"]["auc"]["value"] > 0.6, res["metrics"]["auc"]
        assert _tpr_at(res, 0.01)["tpr"] > 0.01
        assert _tpr_at(res, 0.01)["fpr_reached"] <= 0.01
        assert res["claimed_epsilon"]["epsilon"] == "inf"
        assert res["coin_flip"] is True and res["membership"]["commitment_checked"] is True
        assert len(res["scores"]) == len(res["labels"]) == res["data"]["candidates"]["rows"]
    # the results file round-trips and carries everything needed to rebuild the figures
    path = write_results(lira, tmp_path / "r.json")
    back = load_results(path)
    from attacks.metrics import roc_auc

    assert roc_auc(back["scores"], back["labels"]) == pytest.approx(lira["metrics"]["auc"]["value"])


@pytest.mark.slow
def test_dp_eps1_plugin_stays_near_chance(dp_plugin):
    res = run_mia(
        dp_plugin, "bundled:site-1", settings=MiaSettings(attack="lira", references=4, fixed_variance=True, n_boot=300), workers=1
    )
    auc = res["metrics"]["auc"]
    assert auc["ci"][0] <= 0.5 <= auc["ci"][1] or abs(auc["value"] - 0.5) < 0.1, auc
    claimed = res["claimed_epsilon"]["epsilon"]
    assert isinstance(claimed, float) and claimed <= 1.0 + 1e-6
    assert res["empirical_epsilon"]["epsilon_lb"] <= claimed
    assert res["empirical_epsilon"]["exceeds_claim"] is False


@pytest.mark.slow
def test_empirical_epsilon_never_exceeds_claim_across_dp_runs(train, tmp_path):
    """Several DP plugins (different seeds and budgets): the lower bound stays below the claim."""
    for seed, eps in ((1, 1.0), (2, 2.0), (3, 4.0)):
        d = train(tmp_path / f"p{seed}", seed=seed, target_epsilon=eps, delta=1e-3, epochs=10, batch_size=16, lr=0.1, rank=4, alpha=8)
        for attack in ("loss", "lira"):
            res = run_mia(
                d,
                "bundled:site-1",
                settings=MiaSettings(attack=attack, references=4, fixed_variance=True, n_boot=100, seed=seed),
                workers=1,
            )
            emp = res["empirical_epsilon"]
            assert emp["epsilon_lb"] <= res["claimed_epsilon"]["epsilon"], (seed, eps, attack, emp)


def test_reference_cache_is_invalidated_by_any_change(small_plugin, mia_home, tmp_path):
    from forge_secure.plugins import load_data
    from forge_secure.plugins.record import read_plugin

    meta = read_plugin(small_plugin, weights=False).meta
    cands = load_data("bundled:site-1/pool")
    pop = load_data("bundled:public")
    root = tmp_path / "cache"
    kw = dict(count=2, seed=5, workers=1, cache_root=root)
    first = train_references(meta, cands, pop, **kw)
    assert (first.trained, first.cached) == (2, 0)
    again = train_references(meta, cands, pop, **kw)
    assert (again.trained, again.cached) == (0, 2)
    np.testing.assert_array_equal(first.candidate_logits, again.candidate_logits)
    # a changed recipe, data set, seed or mode never reuses the entries
    changed_meta = json.loads(json.dumps(meta))
    changed_meta["training"]["lr"] = 0.07
    assert train_references(changed_meta, cands, pop, **kw).cached == 0
    assert train_references(meta, cands.subset(np.arange(len(cands) - 1)), pop, **kw).cached == 0
    assert train_references(meta, cands, pop.subset(np.arange(len(pop) - 1)), **kw).cached == 0
    assert train_references(meta, cands, pop, **{**kw, "seed": 6}).cached == 0
    # a damaged entry is retrained, not trusted
    victim = root / f"{again.keys[0]}.safetensors"
    victim.write_bytes(victim.read_bytes()[:100])
    redo = train_references(meta, cands, pop, **kw)
    assert redo.trained >= 1 and redo.cached >= 1


@pytest.mark.slow
def test_worker_processes_match_in_process_training(small_plugin, tmp_path):
    from forge_secure.plugins import load_data
    from forge_secure.plugins.record import read_plugin

    meta = read_plugin(small_plugin, weights=False).meta
    cands, pop = load_data("bundled:site-1/pool"), load_data("bundled:public")
    a = train_references(meta, cands, pop, count=2, seed=3, workers=1, cache=False)
    b = train_references(meta, cands, pop, count=2, seed=3, workers=2, cache=False)
    np.testing.assert_allclose(a.candidate_logits, b.candidate_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_references_on_local_ray(small_plugin, tmp_path):
    from forge_secure.plugins import load_data
    from forge_secure.plugins.record import read_plugin

    meta = read_plugin(small_plugin, weights=False).meta
    cands, pop = load_data("bundled:site-1/pool"), load_data("bundled:public")
    local = train_references(meta, cands, pop, count=2, seed=4, workers=1, cache=False)
    on_ray = train_references(meta, cands, pop, count=2, seed=4, workers=2, ray="auto", cache=False)
    np.testing.assert_allclose(local.candidate_logits, on_ray.candidate_logits, rtol=1e-5, atol=1e-6)


def test_bad_inputs_to_run_mia(small_plugin, tmp_path):
    overfit_plugin = small_plugin
    from attacks.membership.base import TooFewReferences

    with pytest.raises(TooFewReferences, match="at least 4"):
        run_mia(overfit_plugin, "bundled:site-1", settings=MiaSettings(attack="lira", references=2))
    with pytest.raises(ForgeValueError, match="commitment"):  # site-2's pool is not what the target was drawn from
        run_mia(overfit_plugin, "bundled:site-2", settings=MiaSettings(attack="loss"))
    with pytest.raises(ForgeValueError, match="commitment"):
        run_mia(overfit_plugin, "bundled:site-1", membership_seed=12345, settings=MiaSettings(attack="loss"))
    with pytest.raises(ForgeValueError, match="no candidate records"):
        run_mia(overfit_plugin, "bundled:public", settings=MiaSettings(attack="loss"))
    csv = tmp_path / "wrong.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ForgeDataError, match="columns"):
        run_mia(overfit_plugin, str(csv), membership_seed=1, settings=MiaSettings(attack="loss"))
    with pytest.raises(ForgeValueError, match="membership"):
        run_mia(overfit_plugin, str(csv), settings=MiaSettings(attack="loss"))
    with pytest.raises(ForgeValueError, match="population"):
        run_mia(overfit_plugin, "bundled:site-1", population="none", settings=MiaSettings(attack="rmia", references=2))


@pytest.mark.slow
def test_mixture_target(small_plugin, train, tmp_path):
    """A Mixture directory is attacked through its component trained on the candidates;
    references are the same Mixture with that component replaced."""
    from forge_secure.merge.mixture import build_mixture

    other = train(tmp_path / "site2", site="site-2", no_dp=True, epochs=3, batch_size=16, lr=0.05, rank=4, alpha=8)
    mix_dir = build_mixture([small_plugin, other], router="static", weights=[0.5, 0.5]).save(tmp_path / "mix")
    res = run_mia(mix_dir, "bundled:site-1", settings=MiaSettings(attack="lira", references=2, fixed_variance=True, n_boot=50), workers=1)
    assert res["target"]["kind"] == "mixture" and res["target"]["component"] == "site-1"
    assert res["membership"]["commitment_checked"] is True
    assert np.all(np.isfinite(res["scores"])) and res["references"]["trained"] == 2
    # site-2's candidates pick the other component
    res2 = run_mia(mix_dir, "bundled:site-2", settings=MiaSettings(attack="loss", n_boot=50))
    assert res2["target"]["component"] == "site-2"
