"""The readers of a plugin folder's two PEFT files, ``adapter_config.json`` and
``adapter_model.safetensors``, with the errors of the table in :mod:`.record` (whose
:func:`~.record.read_plugin` is the gateway that calls them; nothing else reads these files,
except sealing, which hashes the adapter in its own pass and checks it with
:func:`check_adapter_digest`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ForgeDataError, ForgeFileError, ForgeIntegrityError
from ..fileio import read_json_file, sha256_file

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
MAX_META_BYTES = 4 << 20  # forge.json with a deep merge lineage stays far below this


def read_config(path: Path) -> dict:
    f = path / CONFIG_FILE
    if not f.is_file():
        raise ForgeDataError(f"{path} has no {CONFIG_FILE}", fix="restore the plugin from a good copy", code="plugin.config_invalid")
    try:
        cfg = read_json_file(f, "adapter config", max_bytes=MAX_META_BYTES)
    except ForgeDataError as e:
        raise ForgeDataError(
            f"{f} is not a PEFT adapter config ({e})", fix="restore the plugin from a good copy", code="plugin.config_invalid"
        ) from None
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "")).upper() != "LORA":
        raise ForgeDataError(
            f"{f} is not a PEFT adapter config for LoRA", fix="restore the plugin from a good copy", code="plugin.config_invalid"
        )
    return cfg


def adapter_file(path: str | os.PathLike[str]) -> Path:
    """The adapter file of plugin folder ``path`` (``plugin.no_adapter`` when there is none)."""
    f = Path(path) / ADAPTER_FILE
    if not f.is_file():
        raise ForgeFileError(
            f"{path} has no {ADAPTER_FILE}", fix="give a complete plugin directory written by forge train", code="plugin.no_adapter"
        )
    return f


def check_adapter_digest(path: str | os.PathLike[str], recorded: str | None, digest: str) -> str:
    """``digest`` (the sha256 of plugin folder ``path``'s adapter file, hashed by the caller, e.g.
    while sealing it) must be the one forge.json records, when it records one
    (``plugin.adapter_digest``)."""
    f = Path(path) / ADAPTER_FILE
    if recorded is not None and recorded != digest:
        raise ForgeIntegrityError(
            f"{f} has sha256 {digest[:16]}..., not the adapter digest forge.json records ({recorded[:16]}...): truncated or tampered",
            fix="restore the plugin from a good copy or its sealed bundle",
            code="plugin.adapter_digest",
        )
    return digest


def adapter_sha256(path: Path, recorded: str | None) -> str:
    """sha256 of the adapter file, which must be the one forge.json records (when it records one)."""
    return check_adapter_digest(path, recorded, sha256_file(adapter_file(path)))


def read_adapter(path: Path, recorded: str | None) -> tuple[str, dict]:
    """(sha256, tensors) of the adapter file, checked against the recorded sha256 and for finite values."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    f = path / ADAPTER_FILE
    digest = adapter_sha256(path, recorded)
    try:
        tensors = load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # bad header, short file, wrong type
        raise ForgeIntegrityError(
            f"{f} is not a readable safetensors file ({e.__class__.__name__}: {str(e)[:120]})",
            fix="restore the plugin from a good copy; it may be truncated or of the wrong type",
            code="plugin.adapter_corrupt",
        ) from None
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ForgeIntegrityError(
                f"{f} tensor {name} holds NaN or infinite values", fix="retrain or re-merge the plugin", code="plugin.not_finite"
            )
    return digest, tensors
