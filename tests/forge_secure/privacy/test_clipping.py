"""Closed-form LoRA per-sample norms and clipping against Opacus's hooks-mode reference."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from forge_secure.errors import ForgeValueError
from forge_secure.privacy import TrainConfig, build_lora_model
from forge_secure.privacy.clipping import LoraClipper


def _opacus_reference(model, X, y, max_grad_norm):
    """Per-sample gradient norms and the clipped sum from Opacus's GradSampleModule (hooks)
    and DPOptimizer.clip_and_accumulate."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    ref = copy.deepcopy(model)
    ref.train()  # Opacus captures activations only in training mode (all dropout here is 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm = GradSampleModule(ref, batch_first=True, loss_reduction="sum")
    params = [p for p in ref.parameters() if p.requires_grad]
    opt = DPOptimizer(
        torch.optim.SGD(params, lr=0.1), noise_multiplier=0.0, max_grad_norm=max_grad_norm, expected_batch_size=len(X), loss_reduction="sum"
    )
    F.cross_entropy(gsm(X), y, reduction="sum").backward()
    norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in opt.grad_samples], dim=1).norm(2, dim=1)
    opt.clip_and_accumulate()
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    clipped = {n: p.summed_grad.detach().clone() for n, p in zip(names, params, strict=True)}
    gsm._close()
    return norms, clipped


def _ours(model, X, y, max_grad_norm):
    clipper = LoraClipper(model)
    norms = clipper.clip_backward(F.cross_entropy(model(X), y, reduction="sum"), max_grad_norm)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    clipper.remove()
    return norms, grads


@pytest.mark.parametrize("ffa", [False, True])
def test_tabular_norms_and_clipping_match_opacus(tab_base, tab_train, ffa, randomise_B):
    model, _ = build_lora_model(tab_base, TrainConfig(no_dp=True, ffa=ffa, seed=3))
    randomise_B(model, 1)  # B = 0 at init would make grad_A vanish: test the general case
    X, y = torch.tensor(tab_train.X[:40]), torch.tensor(tab_train.y[:40])
    ref_norms, ref_grads = _opacus_reference(model, X, y, 0.5)
    norms, grads = _ours(model, X, y, 0.5)
    assert torch.allclose(norms, ref_norms, rtol=1e-5, atol=1e-5), (norms - ref_norms).abs().max()
    assert set(grads) == set(ref_grads)
    assert (norms > 0.5).any() and (norms < 0.5).any()  # both clipped and unclipped samples
    for n in grads:
        assert torch.allclose(grads[n], ref_grads[n], rtol=1e-5, atol=1e-5), n
    if ffa:
        assert not any("lora_A" in n for n in grads)


def test_sequence_norms_match_opacus(randomise_B):
    """vit-tiny: LoRA on attention q/v sees 17 positions per image (ghost-norm case)."""
    from forge_secure.plugins import bundled_image_splits, load_base

    base = load_base("vit-tiny")
    data = bundled_image_splits().sites[0].pool
    model, _ = build_lora_model(base, TrainConfig(no_dp=True, seed=1))
    randomise_B(model, 2)
    X, y = torch.tensor(data.X[:12]), torch.tensor(data.y[:12])
    ref_norms, ref_grads = _opacus_reference(model, X, y, 1.0)
    norms, grads = _ours(model, X, y, 1.0)
    assert torch.allclose(norms, ref_norms, rtol=1e-5, atol=1e-5), (norms - ref_norms).abs().max()
    for n in grads:
        assert torch.allclose(grads[n], ref_grads[n], rtol=1e-5, atol=1e-5), n


def test_clipper_refuses_non_lora_training(tab_base):
    model, _ = build_lora_model(tab_base, TrainConfig(no_dp=True))
    model.base_model.model.head.weight.requires_grad_(True)
    with pytest.raises(ForgeValueError) as e:
        LoraClipper(model)
    assert e.value.code == "dp.not_lora_only" and "head" in str(e.value)


def test_clipper_remove_restores_forward(tab_base, tab_train):
    model, _ = build_lora_model(tab_base, TrainConfig(no_dp=True))
    X = torch.tensor(tab_train.X[:5])
    with torch.no_grad():
        before = model(X)
    clipper = LoraClipper(model)
    clipper.remove()
    with torch.no_grad():
        assert torch.equal(model(X), before)
    assert not any("forward" in m.__dict__ for m in model.modules())
