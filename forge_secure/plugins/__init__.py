"""Base models, the plugin directory format, and the bundled and user data sets.

See docs/architecture.md ("Plugins") for the contract other packages code against. The one
gateway into a plugin folder is :func:`read_plugin` (:mod:`.record`). Names are imported
lazily (PEP 562), so that reading a plugin's ``forge.json`` (sealing, the hub) does not
import torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "BASES": "bases",
    "Base": "bases",
    "fresh_copy": "bases",
    "load_base": "bases",
    "BundledSplits": "data",
    "Dataset": "data",
    "SiteShard": "data",
    "bundled_image_splits": "data",
    "bundled_splits": "data",
    "draw_membership": "data",
    "load_data": "data",
    "make_canaries": "data",
    "Plugin": "plugin",
    "adapter_digest": "plugin",
    "load_plugin": "plugin",
    "new_meta": "plugin",
    "save_plugin": "plugin",
    "DataShape": "record",
    "DPRecord": "record",
    "Lineage": "record",
    "PluginRecord": "record",
    "meta_epsilon": "record",
    "read_manifest": "record",
    "read_plugin": "record",
    "validate_meta": "record",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
