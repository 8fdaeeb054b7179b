"""Fusion methods over real PEFT adapter tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.merge.adapter import LoraAdapter, normalise_weights
from forge_secure.merge.evaluate import adapted_logits, make_loss
from forge_secure.merge.fusion import FUSIONS, fuse, tune_weights

from ._helpers import TinyMLP, peft_adapter, toy_data


def weighted_deltas(adapters, weights):
    return {m: sum(w * ad.delta(m) for w, ad in zip(weights, adapters, strict=True)) for m in adapters[0].modules}


def test_exact_merge_equals_weighted_sum_of_updates():
    ads = [peft_adapter(1, rank=2, alpha=4), peft_adapter(2, rank=3, alpha=3), peft_adapter(3, rank=2, alpha=8)]
    res = fuse("exact", ads, [66, 40, 94])
    w = normalise_weights([66, 40, 94], 3)
    want = weighted_deltas(ads, w)
    assert res.adapter.rank == 7 and res.adapter.scaling == pytest.approx(1.0)
    for m, d in want.items():
        torch.testing.assert_close(res.adapter.delta(m), d, rtol=1e-5, atol=1e-6)
    assert res.weights == pytest.approx(w)


def test_naive_factor_average_is_not_the_update_average():
    ads = [peft_adapter(1), peft_adapter(2)]
    naive = {k: (ads[0].state[k] + ads[1].state[k]) / 2 for k in ads[0].state}
    naive_ad = ads[0].with_state(naive)
    want = weighted_deltas(ads, [0.5, 0.5])
    m = next(iter(want))
    rel = float((naive_ad.delta(m) - want[m]).norm() / want[m].norm())
    assert rel > 0.3  # the cross terms the exact merges avoid


def test_ffa_average_is_exact_and_keeps_rank():
    ads = [peft_adapter(s, shared_a_seed=7) for s in (1, 2, 3)]
    res = fuse("ffa", ads, [1, 2, 3])
    want = weighted_deltas(ads, normalise_weights([1, 2, 3], 3))
    assert res.adapter.rank == 2 and res.adapter.ffa
    for m, d in want.items():
        torch.testing.assert_close(res.adapter.delta(m), d, rtol=1e-5, atol=1e-6)


def test_ffa_refuses_plain_lora_mixture():
    ads = [peft_adapter(1, shared_a_seed=7), peft_adapter(2)]
    with pytest.raises(ForgeDataError, match="mixture of FFA and plain LoRA") as e:
        fuse("ffa", ads)
    assert e.value.code == "merge.mixed_ffa"


def test_ffa_refuses_different_frozen_a():
    ads = [peft_adapter(1, shared_a_seed=7), peft_adapter(2, shared_a_seed=8)]
    with pytest.raises(ForgeDataError, match="different frozen A"):
        fuse("ffa", ads)


@pytest.mark.parametrize("method", ["ties", "dare"])
def test_sparse_merges_with_density_one_equal_the_average(method):
    ads = [peft_adapter(s, shared_a_seed=7) for s in (1, 2)]
    res = fuse(method, ads, [1, 1], density=1.0)
    want = weighted_deltas(ads, [0.5, 0.5])
    if method == "dare":  # keep everything -> plain weighted sum
        for m, d in want.items():
            torch.testing.assert_close(res.adapter.delta(m), d, rtol=1e-5, atol=1e-6)
    assert res.adapter.ffa and res.adapter.rank == 2


def test_ties_elects_signs_and_trims():
    ads = [peft_adapter(s, shared_a_seed=7) for s in (1, 2, 3)]
    res = fuse("ties", ads, density=0.3)
    for m in ads[0].modules:
        B = res.adapter.B(m)
        Bs = torch.stack([ad.B(m) for ad in ads])
        nz = B != 0
        # every kept entry is the mean of inputs of one sign, so it lies within their range
        assert (B[nz] <= Bs.max(0).values[nz] + 1e-6).all() and (B[nz] >= Bs.min(0).values[nz] - 1e-6).all()
        assert nz.float().mean() <= 0.3 * 3 + 1e-6


def test_ties_on_independent_adapters_factors_back_exactly_at_full_rank():
    ads = [peft_adapter(1), peft_adapter(2)]
    res = fuse("ties", ads, density=1.0)
    want = weighted_deltas(ads, [0.5, 0.5])  # density 1 and same-sign entries: the average where signs agree
    assert res.details["svd_relative_truncation_error"] < 1e-6
    for m in want:
        assert torch.isfinite(res.adapter.delta(m)).all()


def test_dare_is_seeded():
    ads = [peft_adapter(s) for s in (1, 2)]
    a = fuse("dare", ads, density=0.5, seed=3).adapter
    b = fuse("dare", ads, density=0.5, seed=3).adapter
    c = fuse("dare", ads, density=0.5, seed=4).adapter
    m = next(iter(ads[0].modules))
    torch.testing.assert_close(a.delta(m), b.delta(m))
    assert not torch.allclose(a.delta(m), c.delta(m))


def test_sequential_medforge_tunes_and_is_seeded():
    model = TinyMLP()
    X, y = toy_data(120)
    loss = make_loss(model, X, y)
    ads = [peft_adapter(s) for s in (1, 2, 3)]
    r1 = fuse("sequential", ads, loss_fn=loss, budget=12, seed=0)
    r2 = fuse("sequential", ads, loss_fn=loss, budget=12, seed=0)
    assert len(r1.details["steps"]) == 2
    assert r1.weights == pytest.approx(r2.weights)
    for st in r1.details["steps"]:
        assert -1.5 <= st["alpha"] <= 1.5 and -1.5 <= st["beta"] <= 1.5
    # the recorded weights reproduce the factors: A' = sum c_i A_i
    k = next(iter(ads[0].state))
    torch.testing.assert_close(
        r1.adapter.state[k].double(), sum(c * ad.state[k].double() for c, ad in zip(r1.weights, ads, strict=True)), rtol=1e-5, atol=1e-6
    )


def test_sequential_needs_tuning_data_and_one_rank():
    with pytest.raises(ForgeValueError, match="tune-on"):
        fuse("sequential", [peft_adapter(1), peft_adapter(2)])
    loss = make_loss(TinyMLP(), *toy_data(20))
    with pytest.raises(ForgeDataError, match="rank") as e:
        fuse("sequential", [peft_adapter(1, rank=2), peft_adapter(2, rank=3)], loss_fn=loss)
    assert e.value.code == "merge.different_ranks"


def test_tuned_weights_do_not_lose_to_equal_weights_on_tuning_data():
    model = TinyMLP()
    X, y = toy_data(150)
    loss = make_loss(model, X, y)
    ads = [peft_adapter(s, shared_a_seed=7) for s in (1, 2, 3)]
    w, info = tune_weights("ffa", ads, loss, budget=20, seed=0)
    assert sum(w) == pytest.approx(1.0) and all(v >= 0 for v in w)
    tuned = loss(fuse("ffa", ads, w).adapter)
    equal = loss(fuse("ffa", ads).adapter)
    assert tuned <= equal + 0.05 * 0.5 + 1e-9  # the L1 term is part of what was minimised


def test_nan_inputs_and_bad_weights_are_refused():
    ad = peft_adapter(1)
    bad = {k: v.clone() for k, v in ad.state.items()}
    k = next(iter(bad))
    bad[k][0, 0] = float("nan")
    with pytest.raises(ForgeDataError, match="NaN") as e:
        fuse("exact", [ad, ad.with_state(bad, name="broken")])
    assert e.value.code == "merge.not_finite"
    with pytest.raises(ForgeValueError, match="weights"):
        fuse("exact", [ad, ad], [1.0])
    with pytest.raises(ForgeValueError, match="negative"):
        fuse("exact", [ad, ad], [1.0, -1.0])
    with pytest.raises(ForgeValueError, match="sum"):
        fuse("exact", [ad, ad], [0.0, 0.0])
    with pytest.raises(ForgeValueError, match="finite"):
        fuse("exact", [ad, ad], [1.0, float("inf")])


def test_overflowing_merge_is_caught_before_writing():
    ad = peft_adapter(1)
    big = {k: v / v.abs().max() * 1e38 for k, v in ad.state.items()}
    huge = LoraAdapter(state=big, rank=2, alpha=400.0, name="huge")  # finite input, scaling 200
    with pytest.raises(ForgeDataError, match="merged adapter.*infinite"):
        fuse("exact", [huge, huge])


def test_unknown_method_lists_registry_names():
    with pytest.raises(ForgeValueError) as e:
        fuse("average", [peft_adapter(1)])
    for name in FUSIONS.names():
        assert name in str(e.value)


def test_different_targets_and_shapes_are_refused():
    a = peft_adapter(1)
    b = a.with_state({k: v for k, v in a.state.items() if "fc2" not in k}, name="other")
    with pytest.raises(ForgeDataError, match="targets"):
        fuse("exact", [a, b])
    c = a.with_state({k: (v[:, :3] if "fc1.lora_A" in k else v) for k, v in a.state.items()}, name="smaller")
    with pytest.raises(ForgeDataError, match="layer sizes"):
        fuse("exact", [a, c])


def test_adapter_validation():
    a = peft_adapter(1)
    with pytest.raises(ForgeDataError, match="not a LoRA"):
        LoraAdapter(state={**a.state, "base_model.model.fc1.bias": torch.zeros(3)}, rank=2, alpha=4)
    with pytest.raises(ForgeDataError, match="no lora_B"):
        LoraAdapter(state={k: v for k, v in a.state.items() if "fc1.lora_B" not in k}, rank=2, alpha=4)
    with pytest.raises(ForgeValueError, match="rank"):
        LoraAdapter(state=a.state, rank=0, alpha=4)
    with pytest.raises(ForgeDataError, match="not rank 3"):
        LoraAdapter(state=a.state, rank=3, alpha=4)


def test_functional_evaluation_matches_peft_forward():
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    ad = peft_adapter(5)
    X, _ = toy_data(30)
    pm = get_peft_model(TinyMLP(), LoraConfig(r=2, lora_alpha=4, target_modules=["fc1", "fc2"]))
    set_peft_model_state_dict(pm, dict(ad.state))
    pm.eval()
    with torch.no_grad():
        ref = pm(torch.as_tensor(X)).double().numpy()
    np.testing.assert_allclose(adapted_logits(TinyMLP(), ad, X), ref, rtol=1e-5, atol=1e-5)
