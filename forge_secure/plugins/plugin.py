"""The plugin directory: a PEFT adapter directory plus ``forge.json``.

::

    plugin/
      adapter_config.json          PEFT's LoraConfig
      adapter_model.safetensors    the LoRA tensors (PEFT names), safetensors only
      forge.json                   format forge-plugin/1 (schema in schema.py)

``peft.PeftModel.from_pretrained(fresh_copy(base).model, plugin_dir)`` loads it as it is.
``forge.json`` records the base model's name and sha256, the LoRA and training settings,
the DP record, the training-set commitment, and (added by :func:`save_plugin`) the sha256
of ``adapter_model.safetensors`` so that a tampered or truncated adapter is refused.
Saving is atomic (the directory appears complete or not at all) and never overwrites an
existing plugin; loading validates every file before anything is used. Nothing is
unpickled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ForgeDataError, ForgeFileError, ForgeIntegrityError, ForgeValueError
from ..fileio import atomic_directory, atomic_write_json, read_json_file, sha256_file
from .bases import Base, fresh_copy, load_base
from .schema import FORMAT, PLUGIN_SCHEMA

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
META_FILE = "forge.json"
PLUGIN_FILES = (CONFIG_FILE, ADAPTER_FILE, META_FILE)


@dataclass
class Plugin:
    """A base model with one LoRA adapter applied, and its ``forge.json``."""

    path: Path | None
    model: Any  # peft.PeftModel, eval()
    base: Base
    meta: dict
    #: the randomness secret of the run that trained it, in memory only (set by train_plugin,
    #: for the replay envelope); never written next to the plugin
    secret: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def site(self) -> str:
        return self.meta.get("site", "")

    @property
    def epsilon(self) -> float:
        return meta_epsilon(self.meta)

    def logits(self, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Logits as float64 ``(n, C)``, computed in batches without gradients."""
        X = np.asarray(X, dtype=np.float32)
        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                out.append(self.model(torch.tensor(X[start : start + batch_size])).double().numpy())
        if not out:
            return np.zeros((0, self.base.n_classes), dtype=np.float64)
        return np.concatenate(out)

    def predict_proba(self, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Class probabilities (max-shifted softmax in float64), ``(n, C)``."""
        z = self.logits(X, batch_size)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA tensors under their PEFT names (as in ``adapter_model.safetensors``)."""
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def digest(self) -> str | None:
        """sha256 of the adapter file (None for a plugin not saved yet)."""
        return adapter_digest(self.path) if self.path else None


def meta_epsilon(meta: dict) -> float:
    """``dp.epsilon`` as a float (``"inf"`` -> ``math.inf``)."""
    eps = meta.get("dp", {}).get("epsilon", "inf")
    return math.inf if eps == "inf" else float(eps)


def _jsonable(obj: Any) -> Any:
    """Non-finite floats become the strings "inf" / "-inf" / "nan"; numpy scalars become Python."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    return obj


def new_meta(*, site: str, base: Base, lora: dict, dp: dict, kind: str = "trained", training: dict | None = None,
             data: dict | None = None, parents: list | None = None, merge: dict | None = None, **extra: Any) -> dict:
    """A ``forge.json`` dict with the format, toolkit version and base identity filled in."""
    meta = {
        "format": FORMAT,
        "toolkit_version": __version__,
        "site": site,
        "kind": kind,
        "base": base.describe(),
        "lora": dict(lora),
        "dp": dict(dp),
        "parents": list(parents or []),
        "merge": merge,
    }
    if training is not None:
        meta["training"] = dict(training)
    if data is not None:
        meta["data"] = dict(data)
    meta.update(extra)
    return _jsonable(meta)


def validate_meta(meta: Any, where: str = "forge.json") -> dict:
    """Check a forge.json dict: the format version first, then the schema."""
    import jsonschema

    if not isinstance(meta, dict):
        raise ForgeDataError(f"{where} holds a {type(meta).__name__}, not an object", fix="restore the plugin from a good copy",
                             code="plugin.meta_invalid")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise ForgeDataError(
            f"{where} has format {fmt!r}; this toolkit reads {FORMAT!r}",
            fix="retrain or convert the plugin with a matching forge-secure version",
            code="plugin.format",
        )
    validator = jsonschema.Draft202012Validator(PLUGIN_SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(meta))
    if error is not None:
        at = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ForgeDataError(f"{where} is invalid at {at}: {error.message}", fix="restore the plugin from a good copy",
                             code="plugin.meta_invalid")
    return meta


def is_plugin_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / f).exists() for f in PLUGIN_FILES)


def save_plugin(model, meta: dict, out_dir: str | Path) -> Path:
    """Write ``model`` (a ``peft.PeftModel``) and ``meta`` as a plugin directory, atomically.

    Refuses a directory that already holds a plugin (or any other non-empty directory).
    Adds ``meta["adapter"] = {"sha256": ...}``. Returns the path.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    if not isinstance(model, PeftModel):
        raise ForgeValueError(f"save_plugin needs a peft.PeftModel, got {type(model).__name__}", code="plugin.not_peft")
    if is_plugin_dir(out_dir):
        raise ForgeFileError(f"{out_dir} already holds a plugin", fix="choose a new --out directory or remove the old plugin",
                             code="plugin.exists")
    from peft import get_peft_model_state_dict

    for name, t in get_peft_model_state_dict(model).items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ForgeValueError(f"adapter tensor {name} holds NaN or infinite values; nothing was written",
                                  fix="lower the learning rate or check the merge inputs", code="plugin.not_finite")
    meta = _jsonable(dict(meta))
    meta.setdefault("format", FORMAT)
    meta.setdefault("toolkit_version", __version__)
    meta.pop("adapter", None)
    validate_meta(meta, where=f"forge.json for {out_dir}")
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for extra in tmp.iterdir():  # PEFT also writes a model card; the plugin is exactly three files
            if extra.name not in (CONFIG_FILE, ADAPTER_FILE) and extra.is_file():
                extra.unlink()
        if not (tmp / ADAPTER_FILE).is_file():
            raise ForgeValueError("PEFT wrote no adapter_model.safetensors", code="plugin.save_failed")
        meta["adapter"] = {"sha256": sha256_file(tmp / ADAPTER_FILE)}
        atomic_write_json(tmp / META_FILE, meta)
    return out_dir


def adapter_digest(path: str | Path) -> str:
    """sha256 of a plugin's ``adapter_model.safetensors``."""
    f = Path(path) / ADAPTER_FILE
    if not f.is_file():
        raise ForgeFileError(f"{f} does not exist", fix="give a plugin directory written by forge train", code="plugin.no_adapter")
    return sha256_file(f)


def read_meta(path: str | Path) -> dict:
    """Read and validate ``forge.json`` of a plugin directory (no weights are loaded)."""
    path = Path(path)
    if not path.exists():
        raise ForgeFileError(f"plugin directory {path} does not exist", fix="check the path", code="plugin.missing")
    if not path.is_dir():
        raise ForgeFileError(f"{path} is not a plugin directory", fix="give the directory that holds forge.json", code="plugin.not_directory")
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise ForgeFileError(f"{path} has no {META_FILE}, so it is not a forge plugin", fix="give a directory written by forge train",
                             code="plugin.no_meta")
    return validate_meta(read_json_file(meta_path, "plugin metadata"), where=str(meta_path))


def load_plugin(path: str | Path, base: Base | None = None) -> Plugin:
    """Load a plugin directory after checking every part of it.

    Checks, in order: the directory and ``forge.json`` (format, schema), the adapter config,
    the adapter file's sha256 against forge.json, that the safetensors file parses, the base
    model's digest against forge.json, and that the adapter tensors fit the base.
    """
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    cfg = read_json_file(path / CONFIG_FILE, "adapter config")
    if not isinstance(cfg, dict) or "peft_type" not in cfg:
        raise ForgeDataError(f"{path / CONFIG_FILE} is not a PEFT adapter config", fix="restore the plugin from a good copy",
                             code="plugin.config_invalid")
    digest = adapter_digest(path)
    recorded = meta.get("adapter", {}).get("sha256")
    if recorded is not None and recorded != digest:
        raise ForgeIntegrityError(
            f"{path / ADAPTER_FILE} has sha256 {digest[:16]}..., forge.json records {recorded[:16]}... (truncated or tampered)",
            fix="restore the plugin from a good copy or its sealed bundle",
            code="plugin.adapter_digest",
        )
    try:
        tensors = load_file(str(path / ADAPTER_FILE))
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
        raise ForgeIntegrityError(
            f"{path / ADAPTER_FILE} is not a readable safetensors file ({e.__class__.__name__}: {str(e)[:120]})",
            fix="restore the plugin from a good copy; it may be truncated",
            code="plugin.adapter_corrupt",
        ) from None
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ForgeIntegrityError(f"{path / ADAPTER_FILE} tensor {name} holds NaN or infinite values",
                                      fix="retrain or re-merge the plugin", code="plugin.not_finite")
    if base is None:
        base = load_base(meta["base"]["name"], **_builder_settings(meta))
    if base.digest != meta["base"]["digest"]:
        raise ForgeIntegrityError(
            f"plugin {path} was trained on base {meta['base']['name']} with digest {meta['base']['digest'][:16]}..., "
            f"but the base here has digest {base.digest[:16]}...",
            fix="use the same base model version the plugin was trained on",
            code="plugin.base_mismatch",
        )
    try:
        model = PeftModel.from_pretrained(fresh_copy(base), str(path))
    except Exception as e:  # shape mismatches (RuntimeError), unknown targets (ValueError), ...
        raise ForgeIntegrityError(
            f"the adapter in {path} does not fit base {base.name} ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})",
            fix="use the base the plugin was trained on, or restore the plugin from a good copy",
            code="plugin.adapter_mismatch",
        ) from None
    loaded = set(get_peft_model_state_dict(model))
    if loaded != set(tensors):
        raise ForgeIntegrityError(
            f"the adapter in {path} holds tensors {sorted(set(tensors) - loaded)[:3]} the model lacks, "
            f"or lacks {sorted(loaded - set(tensors))[:3]}",
            fix="restore the plugin from a good copy",
            code="plugin.adapter_mismatch",
        )
    model.eval()
    return Plugin(path, model, base, meta)


def _builder_settings(meta: dict) -> dict:
    """Builder keyword arguments recorded for a built-in base (empty for HF directories)."""
    from .bases import BASES

    name = meta["base"]["name"]
    return dict(meta["base"].get("settings") or {}) if name in BASES else {}
