"""Where forge-secure keeps per-user state (budget ledgers, replay stores, caches).

``FORGE_HOME`` overrides the default ``~/.forge-secure``; tests point it at a temporary
directory. Content-keyed caches (noise calibrations, reference models, bench
cells) live under ``FORGE_HOME/cache`` unless ``FORGE_CACHE`` names another directory; they hold
nothing secret and are safe to share between homes.
"""

from __future__ import annotations

import os
from pathlib import Path


def forge_home() -> Path:
    root = Path(os.environ.get("FORGE_HOME") or Path.home() / ".forge-secure")
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(kind: str) -> Path:
    root = os.environ.get("FORGE_CACHE")
    d = (Path(root) if root else forge_home() / "cache") / kind
    d.mkdir(parents=True, exist_ok=True)
    return d
