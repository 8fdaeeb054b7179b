"""Fixtures of the reconstruction tests: real plugins trained by forge_secure.privacy.train_plugin
on the bundled breast-cancer data (with and without DP), and a small LoRA image model on the
8x8 digits."""

from __future__ import annotations

import numpy as np
import peft
import pytest
import torch
from torch import nn

from forge_secure.plugins import bundled_image_splits, load_plugin
from forge_secure.privacy import TrainConfig, train_plugin


@pytest.fixture(scope="session")
def tabular_plugins(tmp_path_factory):
    """``{"nodp": Plugin, "dp": Plugin}`` trained on bundled site-1 (the DP one with sigma = 1)."""
    from forge_secure.plugins import load_data

    root = tmp_path_factory.mktemp("recon-plugins")
    data = load_data("bundled:site-1")
    out = {}
    for name, cfg in (("nodp", TrainConfig(no_dp=True, epochs=10)), ("dp", TrainConfig(noise_multiplier=1.0, epochs=10))):
        train_plugin(cfg, data, site="site-1", out=root / name)
        out[name] = load_plugin(root / name)
    return out


class SmallCNN(nn.Module):
    """conv 3x3 (1 -> 8) -> ReLU -> fc (512 -> 32) -> ReLU -> head (32 -> 10), for 8x8 digits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(512, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


@pytest.fixture(scope="session")
def digits_lora():
    """A small CNN pretrained on the public digits split, with a LoRA plugin (conv and fc)
    trained on site-1: ``(peft_model, splits)``. Seeded."""
    splits = bundled_image_splits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SmallCNN()
        X, y = torch.tensor(splits.public.X), torch.tensor(splits.public.y)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X), y).backward()
            opt.step()
        pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["conv", "fc"]))
        train = splits.sites[0].train()
        X, y = torch.tensor(train.X), torch.tensor(train.y)
        opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], 0.1)
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(pm(X), y).backward()
            opt.step()
    pm.eval()
    return pm, splits


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
