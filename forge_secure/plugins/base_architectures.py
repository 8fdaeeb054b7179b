"""The architectures of forge bases (the modules a base's weights load into), the wrapper that
makes a Hugging Face classifier return logits, and how LoRA finds the attention projections.
:mod:`forge_secure.plugins.bases` loads bases and re-exports these names."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ForgeValueError


class TabularMLP(nn.Module):
    """d_in -> hidden -> hidden -> n_classes multilayer perceptron with named layers fc1, fc2, head."""

    def __init__(self, d_in: int = 30, hidden: int = 64, n_classes: int = 2):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class HFClassifier(nn.Module):
    """Wrap a Hugging Face classifier so that ``forward(x)`` returns the logits tensor.

    Text models take token ids (any dtype: the training loop hands float32 records over)
    and attend to every position that is not the pad id. The padding mask is handed over as
    the additive 4-D mask the eager attention adds to its scores, which transformers uses as
    it is: its own mask builder inspects the mask's values (``mask.all()``), which per-sample
    code under ``torch.func.vmap`` (the reconstruction attacks) cannot do."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf: Any = hf_model  # a transformers PreTrainedModel (called with keyword inputs, returns an output with .logits)
        self.input_name = getattr(hf_model, "main_input_name", "pixel_values")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_name == "input_ids":
            ids = x.long()
            pad = getattr(self.hf.config, "pad_token_id", None)
            if pad is None:
                return self.hf(input_ids=ids).logits
            dtype = self.hf.get_input_embeddings().weight.dtype
            blocked = (ids == pad).to(dtype)[:, None, None, :]  # (n, 1, 1, L): 1 at padding
            return self.hf(input_ids=ids, attention_mask=blocked * torch.finfo(dtype).min).logits
        return self.hf(**{self.input_name: x}).logits


def vit_config(
    image_size: int = 8,
    num_channels: int = 1,
    n_classes: int = 10,
    patch_size: int = 2,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 128,
):
    from transformers import ViTConfig

    return ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=num_channels,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        num_labels=n_classes,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # type: ignore[call-arg]  # num_labels: transformers 5 takes it through **kwargs, which its dataclass signature does not show


def _vit_tiny(config: dict) -> nn.Module:
    from transformers import ViTForImageClassification

    cfg = vit_config(**config)
    cfg._attn_implementation = "eager"
    return HFClassifier(ViTForImageClassification(cfg))


ARCHITECTURES = {"tabular-mlp": lambda config: TabularMLP(**config), "vit-tiny": _vit_tiny}


def build_architecture(architecture: str, config: dict) -> nn.Module:
    """An untrained module of a forge base architecture (its weights come from the base's file)."""
    if architecture not in ARCHITECTURES:
        raise ForgeValueError(
            f"unknown base architecture {architecture!r}", fix=f"use one of: {', '.join(sorted(ARCHITECTURES))}", code="base.unsupported"
        )
    return ARCHITECTURES[architecture](config)


# attention query/value projection names used by common HF architectures (MedForge targets q/v)
QV_NAMES = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"))


def attention_qv_targets(model: nn.Module) -> tuple[str, ...]:
    """The names (last components) of the attention query and value Linear layers."""
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for q, v in QV_NAMES:
        if q in leaves and v in leaves:
            return (q, v)
    raise ForgeValueError(
        "cannot find the attention query/value projections in this model",
        fix="name the LoRA targets explicitly (TrainConfig.targets)",
        code="base.no_targets",
    )


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
