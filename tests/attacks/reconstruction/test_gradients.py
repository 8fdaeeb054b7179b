"""The plugin as a function of its LoRA tensors: per-sample gradients against Opacus, the
B = 0 property of fresh LoRA, updates and noisy DP gradients."""

from __future__ import annotations

import numpy as np
import peft
import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from attacks.reconstruction.gradients import (
    DPSetting,
    LoraFunctional,
    clip_per_sample,
    gradient_from_update,
    noisy_dp_gradient,
    one_step_update,
)
from forge_secure.errors import ForgeValueError


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x)))


def lora(init_b_zero: bool):
    torch.manual_seed(0)
    pm = peft.get_peft_model(MLP(), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["fc1", "head"], init_lora_weights=init_b_zero))
    return pm


def test_per_sample_gradients_match_opacus():
    pm = lora(False)
    fn = LoraFunctional(pm, dtype=torch.float32)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1, 0])
    ours = fn.per_sample_grads(x, y)
    gsm = GradSampleModule(pm, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    for name, p in gsm.named_parameters():
        clean = name.removeprefix("_module.")
        if clean in ours:
            torch.testing.assert_close(ours[clean], p.grad_sample, rtol=1e-4, atol=1e-6)
    assert set(ours) == {n for n, p in pm.named_parameters() if p.requires_grad}


def test_fresh_lora_reveals_only_a_projection():
    pm = lora(True)  # B = 0
    fn = LoraFunctional(pm)
    x = torch.randn(1, 6, dtype=torch.float64)
    g = fn.batch_grad(x, torch.tensor([1]))
    a_name = next(n for n in fn.names if "fc1.lora_A" in n)
    b_name = next(n for n in fn.names if "fc1.lora_B" in n)
    assert torch.count_nonzero(g[a_name]) == 0
    ax = (fn.params[a_name] @ x[0]).numpy()
    rows = g[b_name].numpy()
    for row in rows[np.abs(rows).sum(axis=1) > 0]:
        assert abs(abs(np.dot(row, ax)) / (np.linalg.norm(row) * np.linalg.norm(ax)) - 1) < 1e-9


def test_trained_lora_grad_a_rows_lie_along_the_input():
    fn = LoraFunctional(lora(False))
    x = torch.randn(1, 6, dtype=torch.float64)
    g = fn.batch_grad(x, torch.tensor([2]))
    a = g[next(n for n in fn.names if "fc1.lora_A" in n)].numpy()
    xs = x[0].numpy()
    for row in a:
        assert abs(abs(row @ xs) / (np.linalg.norm(row) * np.linalg.norm(xs)) - 1) < 1e-9


def test_ffa_plugins_expose_only_b():
    fn = LoraFunctional(lora(False), ffa=True)
    assert fn.names and all("lora_B" in n for n in fn.names)
    with pytest.raises(ForgeValueError, match="no LoRA"):
        LoraFunctional(MLP())


def test_update_round_trip_and_noisy_gradient():
    fn = LoraFunctional(lora(False))
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    g = fn.batch_grad(x, y)
    back = gradient_from_update(one_step_update(fn, x, y, 0.05), 0.05)
    for n in fn.names:
        torch.testing.assert_close(back[n], g[n])
    # no noise: the mean of the clipped per-sample gradients
    noiseless = noisy_dp_gradient(fn, x, y, DPSetting(0.0, 0.01), generator=torch.Generator().manual_seed(0))
    clipped = clip_per_sample(fn.flatten(fn.per_sample_grads(x, y)), 0.01).mean(dim=0)
    torch.testing.assert_close(fn.flatten(noiseless), clipped)
    assert float(clipped.norm()) <= 0.01 + 1e-9
    noisy = noisy_dp_gradient(fn, x, y, DPSetting(1.0, 0.01), generator=torch.Generator().manual_seed(0))
    again = noisy_dp_gradient(fn, x, y, DPSetting(1.0, 0.01), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fn.flatten(noisy), fn.flatten(again))
    # noise std sigma*C/B per coordinate
    spread = float((fn.flatten(noisy) - clipped).std())
    assert 0.5 * 0.01 / 4 < spread < 2 * 0.01 / 4
    with pytest.raises(ForgeValueError):
        DPSetting(-1.0, 1.0)
    with pytest.raises(ForgeValueError):
        gradient_from_update({}, 0.0)
