"""Fixtures for the plugin-core tests (homes and caches: tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import randomise_lora_B


@pytest.fixture(scope="session")
def tabular_base():
    from forge_secure.plugins.bases import load_base

    return load_base("tabular-mlp")


def _make_lora_model(base, rank=4, seed=0, targets=None):
    """A real PEFT LoRA model on ``base`` with seeded non-zero B (so it changes outputs)."""
    from peft import LoraConfig, get_peft_model

    from forge_secure.plugins.bases import fresh_copy

    torch.manual_seed(seed)
    model = get_peft_model(fresh_copy(base), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets or base.target_modules)))
    return randomise_lora_B(model, seed, 0.5)


def _make_meta(base, site="site-1", rank=4, **over):
    from forge_secure.plugins.plugin import new_meta

    meta = new_meta(
        site=site,
        base=base,
        lora={"rank": rank, "alpha": 2 * rank, "targets": list(base.target_modules), "ffa": False, "dropout": 0.0},
        training={"epochs": 1, "batch_size": 8, "lr": 0.05, "optimizer": "sgd", "seed": 0},
        dp={"enabled": False, "epsilon": float("inf"), "delta": None},
        data={
            "name": "breast-cancer/site-1/train",
            "kind": "tabular",
            "rows": 10,
            "n_classes": 2,
            "membership": {"include_prob": 0.5, "pool_rows": 20, "seed_sha256": "0" * 64},
            "canaries": {"count": 0, "seed_sha256": None},
        },
    )
    meta.update(over)
    return meta


@pytest.fixture
def make_lora_model():
    return _make_lora_model


@pytest.fixture
def make_meta():
    return _make_meta
