"""Base models, the plugin directory format, and the bundled and user data sets.

See docs/architecture.md ("Plugins") for the contract other packages code against.
"""

from .bases import BASES, Base, fresh_copy, load_base
from .data import (
    BundledSplits,
    Dataset,
    SiteShard,
    bundled_image_splits,
    bundled_splits,
    draw_membership,
    load_data,
    make_canaries,
)
from .plugin import Plugin, adapter_digest, load_plugin, new_meta, read_meta, save_plugin, validate_meta

__all__ = [
    "BASES", "Base", "fresh_copy", "load_base",
    "BundledSplits", "Dataset", "SiteShard", "bundled_image_splits", "bundled_splits", "draw_membership", "load_data",
    "make_canaries",
    "Plugin", "adapter_digest", "load_plugin", "new_meta", "read_meta", "save_plugin", "validate_meta",
]
