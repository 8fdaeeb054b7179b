"""The bench's on-disk cache: one JSON result per (cell, seed), NumPy arrays per stage, and
plugin directories, each under its sha256 content key (see :mod:`attacks.bench.grid`).

Every write is atomic (temp file + rename), so an interrupted run leaves only whole
entries behind and resumes from them. Arrays are stored with ``np.savez`` and read with
``allow_pickle=False``; plugins as safetensors directories. A damaged entry (truncated,
not JSON, wrong key) is treated as missing and recomputed, never trusted.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from forge_secure.fileio import atomic_output, atomic_write_json
from forge_secure.home import cache_dir

RESULT_FORMAT = "forge-bench-cell/1"


class BenchCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir("bench")
        self.root.mkdir(parents=True, exist_ok=True)

    # -- per-cell results ---------------------------------------------------------------
    def _result_path(self, key: str) -> Path:
        return self.root / "cells" / key[:2] / f"{key}.json"

    def load_result(self, key: str) -> dict[str, Any] | None:
        path = self._result_path(key)
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError, IsADirectoryError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT or doc.get("key") != key or not isinstance(doc.get("row"), dict):
            return None
        return doc

    def store_result(self, key: str, row: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        path = self._result_path(key)
        atomic_write_json(path, {"format": RESULT_FORMAT, "key": key, "row": row, **(extra or {})})
        return path

    def has_result(self, key: str) -> bool:
        return self.load_result(key) is not None

    # -- arrays per stage ---------------------------------------------------------------
    def _array_path(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / f"{key}.npz"

    def load_arrays(self, stage: str, key: str) -> dict[str, np.ndarray] | None:
        path = self._array_path(stage, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # truncated or not an npz: recompute
            return None

    def store_arrays(self, stage: str, key: str, **arrays: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # mypy matches the **dict against numpy stub keyword allow_pickle: bool
        with atomic_output(self._array_path(stage, key)) as f:
            f.write(buf.getvalue())

    # -- plugin directories -------------------------------------------------------------
    def plugin_dir(self, key: str, name: str) -> Path:
        return self.root / "plugins" / key[:2] / key / name

    def discard_plugin(self, key: str, name: str) -> None:
        shutil.rmtree(self.plugin_dir(key, name), ignore_errors=True)

    def lock(self, key: str) -> FileLock:
        d = self.root / "locks"
        d.mkdir(parents=True, exist_ok=True)
        return FileLock(str(d / f"{key}.lock"))
