"""The tabular fast path: clipped sums in one flat buffer, noised and scaled by
``step_flat``, against Opacus's own optimizer path on the same clipped gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from forge_secure.privacy import TrainConfig, build_lora_model
from forge_secure.privacy.clipping import LoraClipper
from forge_secure.privacy.randomness import NOISE, NoiseSource, SecretStream, fresh_secret
from forge_secure.privacy.train import ClippedGradDPOptimizer, TrainingRun, plan_privacy


def _setup(tab_base, tab_train, randomise_B, sigma, secret=None, divisor=1.0):
    model, _ = build_lora_model(tab_base, TrainConfig(no_dp=True, seed=3))
    randomise_B(model, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = ClippedGradDPOptimizer(
        torch.optim.SGD(params, lr=0.1), noise_multiplier=sigma, max_grad_norm=0.5, expected_batch_size=20.0, loss_reduction="mean"
    )
    opt.noise_source = NoiseSource(SecretStream(secret or fresh_secret(), NOISE))
    clipper = LoraClipper(model)
    clipper.flat_divisor = divisor
    X, y = torch.tensor(tab_train.X[:24]), torch.tensor(tab_train.y[:24])
    clipper.clip_backward(F.cross_entropy(model(X), y, reduction="sum"), 0.5)
    return model, params, opt, clipper


def test_flat_step_equals_opacus_path_without_noise(tab_base, tab_train, randomise_B):
    """sigma = 0: the flat step and Opacus's accumulate/add_noise/scale_grad path move the
    weights identically."""
    m1, p1, opt1, c1 = _setup(tab_base, tab_train, randomise_B, 0.0)
    m2, p2, opt2, c2 = _setup(tab_base, tab_train, randomise_B, 0.0)
    assert c1.flat_grad is not None
    assert all(p.grad.untyped_storage().data_ptr() == c1.flat_grad.untyped_storage().data_ptr() for p in p1)
    for p in p2:  # detach the second model's gradients from its flat buffer: Opacus's own path
        p.grad = p.grad.clone()
    opt1.step_flat(c1.flat_grad)
    opt2.step()
    for a, b in zip(p1, p2, strict=True):
        assert torch.allclose(a, b, atol=1e-7), (a - b).abs().max()


@pytest.mark.parametrize("divisor", [1.0, 20.0])
def test_flat_step_and_opacus_path_draw_the_same_secret_noise(tab_base, tab_train, randomise_B, divisor):
    """sigma > 0 and one secret: both paths take the same numbers from the noise stream, so a
    replay reproduces a run whichever path it takes; the clipper dividing the sums by the
    expected batch size (20 here, TrainingRun's setting) changes nothing but rounding."""
    secret = fresh_secret()
    m1, p1, opt1, c1 = _setup(tab_base, tab_train, randomise_B, 1.5, secret, divisor)
    m2, p2, opt2, c2 = _setup(tab_base, tab_train, randomise_B, 1.5, secret)
    for p in p2:
        p.grad = p.grad.clone()
    opt1.step_flat(c1.flat_grad)
    opt2.step()
    for a, b in zip(p1, p2, strict=True):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    _, p3, opt3, c3 = _setup(tab_base, tab_train, randomise_B, 1.5, divisor=divisor)  # another secret: other noise
    opt3.step_flat(c3.flat_grad)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(p1, p3, strict=True))


@pytest.mark.parametrize("divisor", [1.0, 20.0])
def test_flat_step_noise_has_the_dp_sgd_scale(tab_base, tab_train, randomise_B, divisor):
    """The noise added is N(0, (sigma C)^2) per coordinate, divided by the expected batch size."""
    _, params, opt, clipper = _setup(tab_base, tab_train, randomise_B, 2.0, divisor=divisor)
    clean = clipper.flat_grad.clone() * divisor / 20.0
    saved = [p.detach().clone() for p in params]
    opt.original_optimizer.param_groups[0]["lr"] = 0.0  # look at the gradient, not the step
    opt.step_flat(clipper.flat_grad)
    noise = (clipper.flat_grad - clean).numpy()
    want = 2.0 * 0.5 / 20.0
    assert noise.size > 1000
    assert abs(noise.std() / want - 1) < 0.08 and abs(noise.mean()) < 4 * want / noise.size**0.5
    for p, s in zip(params, saved, strict=True):
        assert torch.equal(p, s)


def test_flat_step_refuses_sums_divided_by_anything_but_the_expected_batch_size(tab_base, tab_train, randomise_B):
    _, _, opt, clipper = _setup(tab_base, tab_train, randomise_B, 1.0, divisor=7.0)
    with pytest.raises(RuntimeError, match="divided by 7"):
        opt.step_flat(clipper.flat_grad)


def test_flat_step_refuses_to_noise_twice(tab_base, tab_train, randomise_B):
    _, _, opt, clipper = _setup(tab_base, tab_train, randomise_B, 1.0)
    opt.step_flat(clipper.flat_grad)
    with pytest.raises(ValueError, match="cleared"):
        opt.step_flat(clipper.flat_grad)


def test_training_run_uses_the_flat_path_and_counts_every_step(tab_base, tab_train):
    cfg = TrainConfig(noise_multiplier=1.0, batch_size=16, epochs=2, accountant="rdp")
    model, _ = build_lora_model(tab_base, cfg)
    X, y = torch.tensor(tab_train.X), torch.tensor(tab_train.y)
    plan = plan_privacy(cfg, len(X))
    run = TrainingRun(model, X, y, cfg, plan, secret=fresh_secret())
    run.epoch()
    run.epoch()
    assert run.clipper.flat_grad is not None
    assert run.clipper.flat_divisor == run.optimizer.expected_batch_size  # the division folded into the clip factors
    assert run.steps_done == 2 * plan.steps_per_epoch
    assert run.history == [(1.0, plan.sample_rate, 2 * plan.steps_per_epoch)]
    assert all(torch.isfinite(p).all() for p in model.parameters())
