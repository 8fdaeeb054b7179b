"""The one gateway into a plugin folder: :func:`read_plugin` returns a frozen, typed
:class:`PluginRecord` after every check, and :func:`read_manifest` is the one place that
parses a folder's ``forge.json``.

Every part of the toolkit that takes a plugin folder (loading, sealing, opening, merging,
mixtures, both attack suites, the audit's evidence and provenance) comes through here, so
the same fault gets the same error class and code wherever it is found:

=============================================  ==========================  ======================
fault                                          code                        class
=============================================  ==========================  ======================
the path does not exist                        ``plugin.missing``          ForgeFileError
the path is a file                             ``plugin.not_directory``    ForgeFileError
no ``forge.json`` (or a mixture's folder)      ``plugin.no_meta``          ForgeFileError
``forge.json`` empty / truncated / not JSON    ``file.empty``,             ForgeDataError
                                               ``file.not_json``
``forge.json`` not an object, or of another    ``plugin.wrong_type``       ForgeDataError
kind (mixture, encrypted contribution, ...)
``forge.json`` of another format version       ``plugin.format``           ForgeDataError
``forge.json`` fails the schema                ``plugin.meta_invalid``     ForgeDataError
``adapter_config.json`` broken / not LoRA      ``plugin.config_invalid``   ForgeDataError
no ``adapter_model.safetensors``               ``plugin.no_adapter``       ForgeFileError
adapter differs from forge.json's sha256       ``plugin.adapter_digest``   ForgeIntegrityError
adapter not a readable safetensors file        ``plugin.adapter_corrupt``  ForgeIntegrityError
adapter holds NaN or infinite values           ``plugin.not_finite``       ForgeIntegrityError
trained on another base (digest differs)       ``plugin.base_mismatch``    ForgeIntegrityError
=============================================  ==========================  ======================

Cheaper variants are parameters of the same function: ``weights=False`` reads and checks
``forge.json`` only (no tensors are loaded; ``adapter_digest=True`` still hashes the adapter
against it); ``schema=False`` (sealing, which carries any forge folder: plugins, encrypted
contributions, grants) checks the parse and, for a plugin, the adapter digest, and leaves the
schema, the weights' values and the base to whoever opens it (through this gateway again).
"""

from __future__ import annotations

import copy
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ForgeDataError, ForgeFileError, ForgeIntegrityError
from ..fileio import read_json_file
from ..numbers import decode
from .plugin_files import ADAPTER_FILE, CONFIG_FILE, MAX_META_BYTES, adapter_sha256, read_adapter, read_config
from .plugin_files import adapter_file as adapter_file  # re-exported: sealing hashes the adapter itself
from .plugin_files import check_adapter_digest as check_adapter_digest
from .schema import FORMAT, PLUGIN_SCHEMA

META_FILE = "forge.json"
PLUGIN_FILES = (CONFIG_FILE, ADAPTER_FILE, META_FILE)
MIXTURE_FILE = "mixture.json"


def _dict_at(d: dict, key: str) -> dict:
    """``d[key]`` if it is a JSON object, else an empty one."""
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def _list_at(d: dict, key: str) -> list:
    """``d[key]`` if it is a JSON array, else an empty one."""
    v = d.get(key)
    return v if isinstance(v, list) else []


def _str_at(d: dict, key: str) -> str | None:
    """``d[key]`` if it is a string, else None."""
    v = d.get(key)
    return v if isinstance(v, str) else None


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class DPRecord:
    """The DP record of ``forge.json`` (``dp``), typed; ``epsilon`` is ``math.inf`` without DP."""

    enabled: bool
    epsilon: float
    delta: float | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    max_grad_norm: float | None = None
    accountant: str | None = None
    post_processing: bool = False

    @classmethod
    def from_meta(cls, dp: Any) -> DPRecord:
        dp = dp if isinstance(dp, dict) else {}

        def num(key):
            try:
                return None if dp.get(key) is None else decode(dp[key])
            except ValueError:
                return None

        eps = num("epsilon")
        steps = dp.get("steps")
        return cls(
            enabled=dp.get("enabled") is True,
            epsilon=math.inf if eps is None else eps,
            delta=num("delta"),
            noise_multiplier=num("noise_multiplier"),
            sample_rate=num("sample_rate"),
            steps=steps if isinstance(steps, int) and not isinstance(steps, bool) else None,
            max_grad_norm=num("max_grad_norm"),
            accountant=_str_at(dp, "accountant"),
            post_processing=dp.get("post_processing") is True,
        )


@dataclass(frozen=True)
class DataShape:
    """What ``forge.json`` says of the training data (``data``)."""

    name: str | None = None
    kind: str | None = None
    rows: int | None = None
    n_classes: int | None = None

    @classmethod
    def from_meta(cls, data: Any) -> DataShape:
        data = data if isinstance(data, dict) else {}

        def integer(key):
            v = data.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        return cls(
            name=_str_at(data, "name"),
            kind=_str_at(data, "kind"),
            rows=integer("rows"),
            n_classes=integer("n_classes"),
        )


@dataclass(frozen=True)
class Lineage:
    """A merged plugin's parents (recursively, as recorded) and its merge method and weights."""

    parents: tuple[dict, ...] = ()
    method: str | None = None
    weights: tuple[float, ...] = ()

    @classmethod
    def from_meta(cls, meta: dict) -> Lineage:
        parents = _list_at(meta, "parents")
        merge = _dict_at(meta, "merge")
        weights = _list_at(merge, "weights")
        try:
            w = tuple(decode(x) for x in weights)
        except ValueError:
            w = ()
        return cls(
            tuple(copy.deepcopy(p) for p in parents if isinstance(p, dict)),
            _str_at(merge, "method"),
            w,
        )


@dataclass(frozen=True, eq=False)
class PluginRecord:
    """A plugin folder as the gateway read and checked it.

    ``meta`` is ``forge.json`` as parsed (the typed fields below are read from it once);
    ``config`` and ``tensors`` (the LoRA tensors under their PEFT names) are set when the
    weights were read (``weights=True``). ``base_checked`` says whether the base digest was
    compared (with the base given, or the digest of a shipped or local base directory).
    """

    path: Path
    meta: dict = field(repr=False)
    format: str
    kind: str
    site: str
    base_name: str
    base_digest: str
    base_settings: dict = field(repr=False)
    lora: dict = field(repr=False)
    dp: DPRecord
    data: DataShape
    lineage: Lineage = field(repr=False)
    recorded_adapter_sha256: str | None
    adapter_sha256: str | None = None
    config: dict | None = field(default=None, repr=False)
    tensors: dict | None = field(default=None, repr=False)
    base_checked: bool = False

    @property
    def epsilon(self) -> float:
        return self.dp.epsilon

    @property
    def digest(self) -> str | None:
        """sha256 of ``adapter_model.safetensors`` (computed, or the recorded one without weights)."""
        return self.adapter_sha256 or self.recorded_adapter_sha256

    @property
    def rows(self) -> int | None:
        return self.data.rows

    @property
    def is_plugin(self) -> bool:
        return self.format == FORMAT

    @functools.cached_property
    def adapter(self):
        """The tensors as a :class:`forge_secure.merge.adapter.LoraAdapter` (what merges take)."""
        from ..merge.adapter import LoraAdapter, check_finite

        if self.tensors is None or self.config is None:
            raise ForgeDataError(
                f"plugin {self.path} was read without its weights", fix="read it with read_plugin(path)", code="plugin.no_weights_read"
            )
        for unsupported in ("use_dora", "fan_in_fan_out"):
            if self.config.get(unsupported):
                raise ForgeDataError(
                    f"{self.path.name}: {unsupported} adapters cannot be merged", fix="use plain LoRA", code="merge.unsupported"
                )
        if self.config.get("rank_pattern") or self.config.get("alpha_pattern"):
            raise ForgeDataError(
                f"{self.path.name}: per-module ranks (rank_pattern/alpha_pattern) cannot be merged",
                fix="train with one rank for every module",
                code="merge.unsupported",
            )
        try:
            rank, alpha = int(self.config["r"]), float(self.config["lora_alpha"])
        except (KeyError, TypeError, ValueError):
            raise ForgeDataError(
                f"{self.path / CONFIG_FILE} has no valid r / lora_alpha", fix="use the plugin as trained", code="plugin.config_invalid"
            ) from None
        adapter = LoraAdapter(
            state=self.tensors,
            rank=rank,
            alpha=alpha,
            rslora=bool(self.config.get("use_rslora")),
            ffa=bool(self.lora.get("ffa")),
            name=f"{self.site or self.path.name} ({self.path.name})",
        )
        check_finite(adapter.state, f"plugin {self.path}")
        return adapter


# --------------------------------------------------------------------------- checks


def _meta_where(path: Path) -> str:
    return str(path / META_FILE)


def validate_meta(meta: Any, where: str = "forge.json") -> dict:
    """The schema check of a forge.json dict: an object, the format version, then the schema."""
    import jsonschema

    if not isinstance(meta, dict):
        raise ForgeDataError(
            f"{where} holds a JSON {type(meta).__name__}, not an object",
            fix="restore the plugin from a good copy",
            code="plugin.wrong_type",
        )
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
        raise ForgeDataError(
            f"{where} is invalid at {at}: {error.message}", fix="restore the plugin from a good copy", code="plugin.meta_invalid"
        )
    return meta


def check_folder(path: str | Path) -> Path:
    """A plugin folder's path must exist and be a directory (``plugin.missing``, ``plugin.not_directory``)."""
    path = Path(path)
    if not path.exists():
        raise ForgeFileError(f"plugin directory {path} does not exist", fix="check the path", code="plugin.missing")
    if not path.is_dir():
        raise ForgeFileError(
            f"{path} is not a directory, so not a plugin directory",
            fix="give the directory that holds forge.json",
            code="plugin.not_directory",
        )
    return path


def read_manifest(path: str | Path) -> dict:
    """Parse the ``forge.json`` of a forge folder (any format) into a dict: the one place it is parsed.

    Refuses a missing path, a file, a folder without forge.json (a mixture's folder is named
    as one), an empty, truncated or non-JSON forge.json and one that is not a JSON object."""
    path = check_folder(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        if (path / MIXTURE_FILE).is_file():
            raise ForgeFileError(
                f"{path} is a mixture, not a plugin",
                code="plugin.no_meta",
                fix="give plugin directories (a mixture's plugins are in its plugins/ folder)",
            )
        raise ForgeFileError(
            f"{path} has no {META_FILE}, so it is not a forge plugin",
            code="plugin.no_meta",
            fix="give a plugin directory written by forge train (or forge merge)",
        )
    meta = read_json_file(meta_path, "plugin metadata", max_bytes=MAX_META_BYTES)
    if not isinstance(meta, dict):
        raise ForgeDataError(
            f"{meta_path} holds a JSON {type(meta).__name__}, not an object",
            code="plugin.wrong_type",
            fix="restore the plugin from a good copy or its sealed bundle",
        )
    return meta


def _not_a_plugin(path: Path, meta: dict) -> ForgeDataError:
    fmt = str(meta.get("format", ""))
    if fmt.startswith("forge-he-"):
        return ForgeDataError(
            f"{path} is an encrypted {meta.get('kind')}, not a plugin",
            code="plugin.wrong_type",
            fix="use `forge he aggregate` / `forge he decrypt` for encrypted contributions",
        )
    return ForgeDataError(
        f"{_meta_where(path)} has format {fmt or None!r}; this toolkit reads {FORMAT!r}",
        code="plugin.format",
        fix="retrain or convert the plugin with a matching forge-secure version",
    )


def known_base_digest(name: str) -> str | None:
    """The digest of a base named in forge.json, when it is known without loading it: a
    shipped base's pinned digest, or the digest of a local base directory; else None."""
    from .bases import SHIPPED, directory_digest

    if name in SHIPPED:
        return SHIPPED[name]
    p = Path(name)
    if p.is_dir():
        try:
            return directory_digest(p)[0]
        except (OSError, ValueError, ForgeFileError, ForgeDataError):
            return None
    return None


def check_base(record_or_meta, digest: str, name: str, *, where: str) -> None:
    recorded = record_or_meta.base_digest if isinstance(record_or_meta, PluginRecord) else (record_or_meta.get("base") or {}).get("digest")
    if digest != recorded:
        raise ForgeIntegrityError(
            f"plugin {where} was trained on a base with digest {str(recorded)[:16]}..., but base {name} here has digest {digest[:16]}...",
            fix="use the same base model version the plugin was trained on",
            code="plugin.base_mismatch",
        )


# --------------------------------------------------------------------------- the gateway


def read_plugin(
    path: str | os.PathLike[str],
    *,
    weights: bool = True,
    base=None,
    schema: bool = True,
    verify_base: bool = True,
    adapter_digest: bool = False,
) -> PluginRecord:
    """Read and check a plugin folder; the one way into one (see the module docstring).

    ``weights``: read the adapter config and ``adapter_model.safetensors`` (sha256 against
    forge.json, safetensors parse, finite values); without, forge.json only. ``base``: a
    loaded :class:`~forge_secure.plugins.bases.Base` whose digest must be the recorded one;
    without it the recorded digest is compared with :func:`known_base_digest` when that is
    known (``verify_base=False`` skips it). ``adapter_digest`` (with ``weights=False``): still
    hash the adapter file against forge.json's sha256, without parsing it. ``schema=False``
    (sealing) accepts any forge folder (plugins, encrypted contributions, grants) and checks
    only what it holds."""
    path = Path(path)
    meta = read_manifest(path)
    is_plugin = meta.get("format") == FORMAT
    if schema:
        if not is_plugin:
            raise _not_a_plugin(path, meta)
        validate_meta(meta, where=_meta_where(path))
    base_rec = _dict_at(meta, "base")
    adapter_rec = _dict_at(meta, "adapter")
    recorded = _str_at(adapter_rec, "sha256")
    config = tensors = digest = None
    if weights and is_plugin:
        config = read_config(path)
        digest, tensors = read_adapter(path, recorded)
    elif adapter_digest and is_plugin:
        digest = adapter_sha256(path, recorded)
    base_name = str(base_rec.get("name", ""))
    base_digest = _str_at(base_rec, "digest") or ""
    checked = False
    if base is not None:
        check_base(meta, base.digest, base.name, where=str(path))
        checked = True
    elif verify_base and schema:
        known = known_base_digest(base_name)
        if known is not None:
            check_base(meta, known, base_name, where=str(path))
            checked = True
    lora = _dict_at(meta, "lora")
    return PluginRecord(
        path=path,
        meta=meta,
        format=str(meta.get("format", "")),
        kind=str(meta.get("kind", "")),
        site=str(meta.get("site", "")),
        base_name=base_name,
        base_digest=base_digest,
        base_settings=dict(_dict_at(base_rec, "settings")),
        lora=lora,
        dp=DPRecord.from_meta(meta.get("dp")),
        data=DataShape.from_meta(meta.get("data")),
        lineage=Lineage.from_meta(meta),
        recorded_adapter_sha256=recorded,
        adapter_sha256=digest,
        config=config,
        tensors=tensors,
        base_checked=checked,
    )


def meta_epsilon(meta: dict) -> float:
    """``dp.epsilon`` of a forge.json dict as a float (``"inf"`` -> ``math.inf``)."""
    return DPRecord.from_meta(meta.get("dp") if isinstance(meta, dict) else None).epsilon
