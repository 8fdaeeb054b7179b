"""Where forge-secure keeps per-user state (budget ledgers, replay stores, caches).

``FORGE_HOME`` overrides the default ``~/.forge-secure``; tests point it at a temporary
directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def forge_home() -> Path:
    root = Path(os.environ.get("FORGE_HOME") or Path.home() / ".forge-secure")
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(kind: str) -> Path:
    d = forge_home() / "cache" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d
