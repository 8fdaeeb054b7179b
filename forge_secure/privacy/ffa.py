"""Deterministic LoRA ``A`` matrices: FFA-LoRA's frozen, public A, and seeded standard init.

FFA-LoRA (Sun, Qin, Li & Ding, "Improving LoRA in privacy-preserving federated learning",
ICLR 2024) freezes the randomly initialised ``A`` and trains only ``B`` (which starts at
zero). When every site derives the *same* A from public inputs, the merged update is
linear in B (``sum_i w_i B_i A``), which is what homomorphic Fusion needs.

Here A is derived from the base model's sha256 digest, a public integer seed and the
module name, by SHAKE-256 in counter mode -- no pseudo-random generator whose stream could
differ between library versions or machines:

    u = SHAKE256("forge-ffa-A/1" | digest | seed | module)  read as little-endian uint32 / 2**32
    A = (2 u - 1) / sqrt(in_features)          # PEFT/PyTorch's default LoRA-A range (Kaiming uniform, a = sqrt 5)

The same construction with the *training* seed (domain ``forge-lora-A/1``) initialises A
for standard LoRA, so training is reproducible without touching the global torch RNG.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ForgeValueError

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer

FFA_DOMAIN = "forge-ffa-A/1"
LORA_DOMAIN = "forge-lora-A/1"


def derive_matrix(domain: str, digest: str, seed: int, module: str, shape: tuple[int, int]) -> torch.Tensor:
    """A float32 ``(rank, in_features)`` matrix, uniform in +-1/sqrt(in_features), fully
    determined by its arguments (SHAKE-256 counter mode)."""
    rank, fan_in = int(shape[0]), int(shape[1])
    label = "\x00".join((domain, str(digest), str(int(seed)), str(module))).encode("utf-8")
    raw = hashlib.shake_256(label).digest(4 * rank * fan_in)
    u = np.frombuffer(raw, dtype="<u4").astype(np.float64) / 2.0**32
    bound = 1.0 / math.sqrt(fan_in)
    a = ((2.0 * u - 1.0) * bound).reshape(rank, fan_in).astype(np.float32)
    return torch.from_numpy(a)


def ffa_matrix(base_digest: str, ffa_seed: int, module: str, shape: tuple[int, int]) -> torch.Tensor:
    """The frozen FFA-LoRA ``A`` of one module (``module`` is its name in the base model,
    e.g. ``"fc1"`` or ``"hf.vit.encoder.layer.0.attention.attention.query"``)."""
    return derive_matrix(FFA_DOMAIN, base_digest, ffa_seed, module, shape)


def lora_init_matrix(base_digest: str, seed: int, module: str, shape: tuple[int, int]) -> torch.Tensor:
    """The seeded initial ``A`` of standard (trained-A) LoRA."""
    return derive_matrix(LORA_DOMAIN, base_digest, seed, module, shape)


def base_module_name(peft_module_name: str) -> str:
    """The base-model name of a module inside a ``PeftModel`` (strips ``base_model.model.``)."""
    prefix = "base_model.model."
    return peft_module_name[len(prefix) :] if peft_module_name.startswith(prefix) else peft_module_name


def lora_layers(model: torch.nn.Module, adapter: str = "default") -> list[tuple[str, LoraLayer]]:
    """``(base module name, PEFT LoRA layer)`` for every LoRA layer carrying ``adapter``."""
    from peft.tuners.lora import LoraLayer

    out: list[tuple[str, LoraLayer]] = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_A", {}):
            out.append((base_module_name(name), module))
    return out


def lora_weight(layer: LoraLayer, which: str, adapter: str = "default") -> torch.Tensor:
    """The weight of ``layer``'s ``lora_A`` or ``lora_B`` (``which``) module for ``adapter``."""
    weight = getattr(layer, which)[adapter].weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{which}[{adapter!r}] of {type(layer).__name__} has no weight tensor")
    return weight


def matrix_shape(name: str, weight: torch.Tensor) -> tuple[int, int]:
    """``(rank, in_features)`` of a LoRA ``A`` weight; only Linear layers carry one."""
    if weight.dim() != 2:
        raise ForgeValueError(
            f"LoRA target {name} is not a Linear layer (its A weight has shape {tuple(weight.shape)})",
            fix="target Linear modules only",
            code="train.targets",
        )
    return int(weight.shape[0]), int(weight.shape[1])


def expected_ffa_state(model: torch.nn.Module, base_digest: str, ffa_seed: int, adapter: str = "default") -> dict[str, torch.Tensor]:
    """``{base module name: A}`` that an FFA plugin on this model must hold."""
    return {
        name: ffa_matrix(base_digest, ffa_seed, name, matrix_shape(name, lora_weight(layer, "lora_A", adapter)))
        for name, layer in lora_layers(model, adapter)
    }
