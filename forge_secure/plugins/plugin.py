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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ForgeFileError, ForgeIntegrityError, ForgeValueError
from ..fileio import atomic_directory, atomic_write_json, sha256_file
from ..numbers import jsonable
from .bases import Base, fresh_copy, load_base
from .record import ADAPTER_FILE, CONFIG_FILE, META_FILE, PLUGIN_FILES, PluginRecord, check_base, meta_epsilon, read_plugin, validate_meta
from .schema import FORMAT

__all__ = [
    "ADAPTER_FILE",
    "CONFIG_FILE",
    "META_FILE",
    "PLUGIN_FILES",
    "Plugin",
    "adapter_digest",
    "is_plugin_dir",
    "load_plugin",
    "meta_epsilon",
    "new_meta",
    "save_plugin",
    "validate_meta",
]


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
    #: what the gateway read and checked (None for a plugin made in memory and not saved yet)
    record: PluginRecord | None = field(default=None, repr=False, compare=False)

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
        if self.record is not None and self.record.adapter_sha256:
            return self.record.adapter_sha256
        return adapter_digest(self.path) if self.path else None


def new_meta(
    *,
    site: str,
    base: Base,
    lora: dict,
    dp: dict,
    kind: str = "trained",
    training: dict | None = None,
    data: dict | None = None,
    parents: list | None = None,
    merge: dict | None = None,
    **extra: Any,
) -> dict:
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
    return jsonable(meta)


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
        raise ForgeFileError(
            f"{out_dir} already holds a plugin", fix="choose a new --out directory or remove the old plugin", code="plugin.exists"
        )
    from peft import get_peft_model_state_dict

    for name, t in get_peft_model_state_dict(model).items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ForgeValueError(
                f"adapter tensor {name} holds NaN or infinite values; nothing was written",
                fix="lower the learning rate or check the merge inputs",
                code="plugin.not_finite",
            )
    meta = jsonable(dict(meta))
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


def load_plugin(path, base: Base | None = None) -> Plugin:
    """Load a plugin (a directory, or the :class:`~.record.PluginRecord` that
    :func:`~.record.read_plugin` returned for it) as a PEFT model on its base.

    Every check of the folder is the gateway's (:func:`~.record.read_plugin`: forge.json
    schema, adapter config, adapter sha256, safetensors parse, finite values, base digest);
    this adds only that the adapter tensors fit the base.
    """
    from peft import PeftModel, get_peft_model_state_dict

    if isinstance(path, PluginRecord) and path.tensors is not None and path.meta.get("format") == FORMAT:
        record = path
        if base is not None:
            check_base(record, base.digest, base.name, where=str(record.path))
    else:
        if isinstance(path, PluginRecord):  # read without its weights: read again, fully
            path = path.path
        record = read_plugin(path, base=base, verify_base=False)  # without a base, it is loaded and checked below
    path = record.path
    meta = record.meta
    if base is None:
        base = load_base(record.base_name, **_builder_settings(record))
        check_base(record, base.digest, base.name, where=str(path))
    try:
        model = PeftModel.from_pretrained(fresh_copy(base), str(path))
    except Exception as e:  # shape mismatches (RuntimeError), unknown targets (ValueError), ...
        raise ForgeIntegrityError(
            f"the adapter in {path} does not fit base {base.name} ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})",
            fix="use the base the plugin was trained on, or restore the plugin from a good copy",
            code="plugin.adapter_mismatch",
        ) from None
    loaded = set(get_peft_model_state_dict(model))
    tensors = set(record.tensors or {})
    if loaded != tensors:
        raise ForgeIntegrityError(
            f"the adapter in {path} holds tensors {sorted(tensors - loaded)[:3]} the model lacks, or lacks {sorted(loaded - tensors)[:3]}",
            fix="restore the plugin from a good copy",
            code="plugin.adapter_mismatch",
        )
    model.eval()
    return Plugin(path, model, base, meta, record=record)


def _builder_settings(record: PluginRecord) -> dict:
    """Builder keyword arguments recorded for a built-in base (empty for base directories)."""
    from .bases import BASES

    return dict(record.base_settings) if record.base_name in BASES else {}
