"""Homomorphic Fusion on TenSEAL CKKS: the aggregator sums encrypted FFA-LoRA plugins
without a secret key; the key holder decrypts only the one aggregate of k or more.

Flow: :func:`keygen` (key holder) -> :func:`encrypt_plugin` (each site, public context) ->
:func:`aggregate` (aggregator, public context) -> :func:`decrypt_to_plugin` (key holder).
"""

from .aggregate import AGGREGATE_FORMAT, aggregate
from .contribution import CONTRIBUTION_FORMAT, Contribution, encrypt_plugin
from .decrypt import decrypt_sum, decrypt_to_plugin
from .keys import KeyInfo, fingerprint, keygen, load_public_context, load_secret_context
from .params import HEParams

__all__ = [
    "AGGREGATE_FORMAT",
    "CONTRIBUTION_FORMAT",
    "Contribution",
    "HEParams",
    "KeyInfo",
    "aggregate",
    "decrypt_sum",
    "decrypt_to_plugin",
    "encrypt_plugin",
    "fingerprint",
    "keygen",
    "load_public_context",
    "load_secret_context",
]
