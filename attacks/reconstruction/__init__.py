"""Reconstruction attacks (gradient inversion, informed adversary, canary exposure), each set
beside the reconstruction-robustness (ReRo) bound that the plugin's DP guarantee gives.

Estimators (settings in ``__init__``, ``fit(...)``, then ``reconstruct(...)`` / ``score(...)``):

- :class:`TabularInversion` (TabLeak-style) and :class:`ImageInversion` (Inverting
  Gradients-style) invert one plugin update (:mod:`.gradients` says what the attacker sees);
- :class:`InformedAdversary` plays the informed-adversary game of Balle et al. 2022 /
  Hayes et al. 2023 against DP-SGD with the plugin's recipe;
- :class:`CanaryExposure` measures the exposure of Carlini et al. 2019.

Bounds in :mod:`.bounds`, success measures in :mod:`.measures`, end-to-end runs registered
by name in :data:`RECONSTRUCTION_ATTACKS` (``gradient``, ``informed``, ``canary``) in :mod:`.run`, used by
``forge attack recon``.
"""

from .bounds import ReRoBound, rero_bound_dp, rero_bound_dpsgd, rero_bound_from_meta
from .canary import CanaryConfig, CanaryExposure, exposure
from .features import FeatureSpec
from .gradients import DPSetting, LoraFunctional, gradient_from_update, noisy_dp_gradient, one_step_update
from .image import ImageInversion, ImageInversionConfig
from .informed import InformedAdversary, InformedConfig, expected_run, simulate_dpsgd
from .inversions import INVERSIONS
from .measures import image_baseline, image_success, tabular_baseline, tabular_success
from .merged import REDO_METHODS, MergeRedo
from .run import RECONSTRUCTION_ATTACKS, ReconSettings, run_canary, run_gradient, run_informed
from .tabular import Reconstruction, TabularInversion, TabularInversionConfig

__all__ = [
    "INVERSIONS",
    "RECONSTRUCTION_ATTACKS",
    "CanaryConfig",
    "CanaryExposure",
    "DPSetting",
    "FeatureSpec",
    "ImageInversion",
    "ImageInversionConfig",
    "InformedAdversary",
    "InformedConfig",
    "LoraFunctional",
    "MergeRedo",
    "REDO_METHODS",
    "expected_run",
    "ReRoBound",
    "ReconSettings",
    "Reconstruction",
    "TabularInversion",
    "TabularInversionConfig",
    "exposure",
    "gradient_from_update",
    "image_baseline",
    "image_success",
    "noisy_dp_gradient",
    "one_step_update",
    "rero_bound_dp",
    "rero_bound_dpsgd",
    "rero_bound_from_meta",
    "run_canary",
    "run_gradient",
    "run_informed",
    "simulate_dpsgd",
    "tabular_baseline",
    "tabular_success",
]
