"""Differential privacy: DP-SGD training of plugins on Opacus, accountants, the budget ledger.

- :mod:`.accountants`: ``compute_epsilon``, ``calibrate_noise_multiplier``, the ``ACCOUNTANTS``
  registry (``prv`` default, ``rdp``, ``gdp``).
- :mod:`.config`: ``TrainConfig`` (validated; ``from_meta`` for a plugin's recipe).
- :mod:`.train`: ``train_plugin`` (LoRA / FFA-LoRA, DP-SGD or an explicit no-DP run).
- :mod:`.clipping`: closed-form per-sample clipping of LoRA gradients.
- :mod:`.ffa`: the deterministic FFA-LoRA ``A`` matrices.
- :mod:`.ledger`: ``Ledger``, the per-site append-only budget ledger.
- :mod:`.synthetic`: DP synthetic data for tuning merge weights.
"""

from .accountants import ACCOUNTANTS, calibrate_noise_multiplier, compute_epsilon, default_delta
from .config import OPTIMIZERS, TrainConfig
from .ffa import ffa_matrix
from .ledger import Ledger
from .train import DPPlan, build_lora_model, plan_privacy, train_plugin

__all__ = [
    "ACCOUNTANTS",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "default_delta",
    "OPTIMIZERS",
    "TrainConfig",
    "ffa_matrix",
    "Ledger",
    "DPPlan",
    "build_lora_model",
    "plan_privacy",
    "train_plugin",
]
