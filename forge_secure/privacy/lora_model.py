"""The trainable model of a run (:func:`build_lora_model`): a fresh copy of the base wrapped
with a PEFT LoRA adapter, B = 0 and A derived deterministically (FFA: from the base digest and
``ffa_seed``, then frozen; standard LoRA: from the training seed)."""

from __future__ import annotations

import warnings

import torch

from ..errors import ForgeValueError
from .config import TrainConfig
from .ffa import ffa_matrix, lora_init_matrix, lora_layers, lora_weight, matrix_shape


def build_lora_model(base, config: TrainConfig, targets: tuple[str, ...] | None = None):
    """``base`` (a fresh copy) wrapped with a PEFT LoRA adapter: B = 0, A derived
    deterministically (FFA: from the base digest and ``ffa_seed``, then frozen; standard:
    from the training seed). The global torch RNG is left untouched."""
    from peft import LoraConfig, get_peft_model

    from ..plugins.bases import fresh_copy

    targets = tuple(targets or config.targets or base.target_modules)
    module = fresh_copy(base)
    for p in module.parameters():
        p.requires_grad_(False)
    lcfg = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # PEFT annotates lora_alpha as int; it only divides it by r
        target_modules=list(targets),
        lora_dropout=config.dropout,
        bias="none",
    )
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = get_peft_model(module, lcfg)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ForgeValueError(
            f"LoRA targets {list(targets)} do not fit base {base.name} ({str(e).splitlines()[0][:120]})",
            fix=f"name Linear modules of the base, e.g. {', '.join(names[:8])}",
            code="train.targets",
        ) from None
    with torch.no_grad():
        for name, layer in lora_layers(model):
            A, B = lora_weight(layer, "lora_A"), lora_weight(layer, "lora_B")
            make = ffa_matrix if config.ffa else lora_init_matrix
            seed = config.ffa_seed if config.ffa else config.seed
            A.copy_(make(base.digest, seed, name, matrix_shape(name, A)))
            B.zero_()
            A.requires_grad_(not config.ffa)
            B.requires_grad_(True)
    model.eval()  # the base stays in eval mode (no batch statistics mixing records)
    if config.dropout > 0:
        for _, layer in lora_layers(model):
            layer.lora_dropout["default"].train()
    return model, targets
