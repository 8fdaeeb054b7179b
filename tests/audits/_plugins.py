"""Plugin folders as the audit tests need them (real safetensors LoRA weights and a
self-consistent forge.json), importable by any test (a conftest is not)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from forge_secure.fileio import sha256_file
from forge_secure.plugins.bases import SHIPPED

BASE_DIGEST = SHIPPED["tabular-mlp"]  # the evidence is read through the plugins' gateway, which checks the base digest


def plugin_meta(site: str, *, dp: dict | None = None, rows: int = 400, kind: str = "trained", parents=None, merge=None) -> dict:
    if dp is None:
        dp = {
            "enabled": True,
            "noise_multiplier": 1.1,
            "sample_rate": 0.08,
            "steps": 65,
            "max_grad_norm": 1.0,
            "accountant": "prv",
            "epsilon": 4.0,
            "delta": 1e-5,
        }
    return {
        "format": "forge-plugin/1",
        "toolkit_version": "0.1.0",
        "site": site,
        "kind": kind,
        "base": {"name": "tabular-mlp", "digest": BASE_DIGEST},
        "lora": {"rank": 4, "alpha": 8, "targets": ["fc1"], "ffa": True, "ffa_seed": 0, "dropout": 0.0},
        "training": {"epochs": 5, "batch_size": 32, "lr": 0.05, "optimizer": "sgd", "seed": 0},
        "dp": dp,
        "data": {
            "name": f"bundled:{site}",
            "kind": "tabular",
            "rows": rows,
            "n_classes": 2,
            "membership": {"include_prob": 0.5, "pool_rows": 2 * rows, "seed_sha256": "0" * 64},
            "canaries": {"count": 0, "seed_sha256": None},
        },
        "parents": parents or [],
        "merge": merge,
    }


def write_plugin(out: Path, meta: dict, seed: int) -> Path:
    """A plugin directory with real safetensors LoRA weights (PEFT names) and forge.json."""
    g = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True)
    tensors = {
        "base_model.model.fc1.lora_A.weight": torch.randn(4, 30, generator=g),
        "base_model.model.fc1.lora_B.weight": torch.randn(64, 4, generator=g) * 0.01,
    }
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["fc1"]}))
    meta = copy.deepcopy(meta)
    meta["adapter"] = {"sha256": sha256_file(out / "adapter_model.safetensors")}
    (out / "forge.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out
