"""Fixtures for the merge tests: the real tabular base and real PEFT plugin directories
saved with the plugin core's ``save_plugin`` (random seeded LoRA tensors; training is
exercised where utility matters)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def base():
    from forge_secure.plugins.bases import load_base

    return load_base("tabular-mlp")


@pytest.fixture(scope="module")
def make_plugin(base):
    """``make_plugin(out, seed, ffa=False, rank=4, rows=50, site="site-1", epsilon=3.0)``."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from forge_secure.plugins.bases import fresh_copy
    from forge_secure.plugins.plugin import new_meta, save_plugin

    def make(out, seed, *, ffa=False, rank=4, rows=50, site="site-1", epsilon=3.0, scale=0.3, the_base=None):
        b = the_base or base
        torch.manual_seed(seed)
        model = get_peft_model(
            fresh_copy(b), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["fc1", "fc2"], init_lora_weights=False)
        )
        state = get_peft_model_state_dict(model)
        g = torch.Generator().manual_seed(seed)
        ga = torch.Generator().manual_seed(1234)
        new = {}
        for k in sorted(state):
            if ".lora_A." in k:
                new[k] = torch.randn(state[k].shape, generator=ga if ffa else g) / state[k].shape[1] ** 0.5
            else:
                new[k] = torch.randn(state[k].shape, generator=g) * scale
        set_peft_model_state_dict(model, new)
        meta = new_meta(
            site=site,
            base=b,
            lora={
                "rank": rank,
                "alpha": 2 * rank,
                "targets": ["fc1", "fc2"],
                "ffa": ffa,
                "ffa_seed": 1234 if ffa else None,
                "dropout": 0.0,
            },
            dp={
                "enabled": True,
                "epsilon": epsilon,
                "delta": 1e-5,
                "noise_multiplier": 1.0,
                "sample_rate": 0.25,
                "steps": 10,
                "max_grad_norm": 1.0,
                "accountant": "prv",
            },
            training={"epochs": 1, "batch_size": 16, "lr": 0.1, "optimizer": "sgd", "seed": seed},
            data={"name": f"bundled:{site}", "kind": "tabular", "rows": rows, "n_classes": 2},
        )
        return save_plugin(model, meta, out)

    return make
