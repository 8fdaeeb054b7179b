"""Merging plugins: Fusion (plain functions over adapter tensors), homomorphic Fusion on
TenSEAL CKKS, and Mixture.

- :mod:`.adapter`: :class:`LoraAdapter` and the compatibility / NaN checks;
- :mod:`.fusion`: the registry of Fusion methods (``exact``, ``ffa``, ``sequential``,
  ``ties``, ``dare``) and :func:`fuse`;
- :mod:`.he`: keys, encrypted contributions, aggregation, decryption (k-of-n);
- :mod:`.mixture`: :class:`Mixture`, routers, :func:`load_mixture`;
- :mod:`.recipes`, :func:`mixture_merge`: plugin directories or sealed bundles in, a merged
  plugin or mixture directory out; :mod:`.lineage`: what a merged model contains.
"""

from .adapter import LoraAdapter, check_finite
from .fusion import FUSIONS, FusionResult, fuse, tune_weights
from .lineage import lineage_lines, lineage_tree
from .mixture import ROUTERS, Mixture, build_mixture, load_mixture, mixture_merge
from .recipes import fusion_merge, homomorphic_merge, merge_stage

__all__ = [
    "FUSIONS",
    "ROUTERS",
    "FusionResult",
    "LoraAdapter",
    "Mixture",
    "build_mixture",
    "check_finite",
    "fuse",
    "fusion_merge",
    "homomorphic_merge",
    "merge_stage",
    "lineage_lines",
    "lineage_tree",
    "load_mixture",
    "mixture_merge",
    "tune_weights",
]
