"""Small real PEFT adapters on a tiny MLP, for the merge tests (no mocks)."""

from __future__ import annotations

import numpy as np
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

from forge_secure.merge.adapter import LoraAdapter


class TinyMLP(torch.nn.Module):
    def __init__(self, d_in=6, hidden=10, n_classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = torch.nn.Linear(d_in, hidden)
        self.fc2 = torch.nn.Linear(hidden, n_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def peft_adapter(
    seed: int, rank: int = 2, alpha: float = 4.0, *, shared_a_seed: int | None = None, name: str | None = None, base_seed: int = 0
) -> LoraAdapter:
    """A real PEFT LoRA adapter with seeded random A and B (FFA when ``shared_a_seed``)."""
    torch.manual_seed(seed)
    model = get_peft_model(
        TinyMLP(seed=base_seed), LoraConfig(r=rank, lora_alpha=alpha, target_modules=["fc1", "fc2"], init_lora_weights=False)
    )
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    if shared_a_seed is not None:
        g = torch.Generator().manual_seed(shared_a_seed)
        for k in sorted(state):
            if ".lora_A." in k:
                state[k] = torch.randn(state[k].shape, generator=g) * 0.3
    return LoraAdapter(state=state, rank=rank, alpha=alpha, ffa=shared_a_seed is not None, name=name or f"plugin-{seed}")


def toy_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1).astype(np.int64)
    return X, y
