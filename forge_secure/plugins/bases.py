"""Base models: the frozen networks that plugins adapt, loaded from files and named by digest.

A base is an artifact, not a recipe: the sites of a consortium must hold byte-identical
bases or their plugins do not merge, and floating-point training differs between CPUs.
Nothing is trained when a base is loaded.

Identity: the base digest
-------------------------
Every base, bundled or a local directory, is identified by the digest of **the files that
define it**::

    manifest = "".join(f"{sha256(file)}  {relative_path}\\n" for each defining file, sorted by path)
    digest   = sha256(manifest.encode("utf-8"))            # lowercase hex

The manifest is exactly what ``sha256sum`` prints (two spaces, then the path), so in a base
directory ``sha256sum base.json model.safetensors | sha256sum`` gives the digest. Paths are
relative to the base directory, with ``/`` separators, sorted by code point. The defining
files are:

- a forge base directory (``base.json`` + ``model.safetensors``; the bundled bases and what
  ``tools/make_bases.py --out DIR`` writes): those two files;
- a Hugging Face model directory (``config.json``): ``config.json``, every ``*.safetensors``
  and ``*.safetensors.index.json``, and the tokenizer files present among
  :data:`HF_TOKENIZER_FILES` (a text plugin means something only with the tokenizer that made
  its token ids). READMEs, licences and other files do not count.

The digest is what ``forge.json`` records as ``base.digest``; loading a plugin, merging,
decrypting an aggregate and every attack check it against the base they are given.

Bundled bases
-------------
``tabular-mlp`` and ``vit-tiny`` ship inside the package under
``forge_secure/plugins/assets/<name>/`` as forge base directories. Their digests are pinned
in :data:`SHIPPED`; a file that is missing, truncated or altered is refused with a
:class:`~forge_secure.errors.ForgeIntegrityError` (code ``base.asset_missing`` or
``base.digest_mismatch``). ``tools/make_bases.py`` produced them (the recipe is in
:mod:`.base_builders`); other builder settings (another ``seed``, ``hidden`` size, image
size, ...) are not shipped: build them once with that script into a directory and use the
directory as the base, which every site then copies byte for byte.

``base.json`` (``format: forge-base/1``) names the architecture and its constructor
arguments (``config``), the data kind, class count, record shape, LoRA targets (``null``:
the attention q/v projections, found by name), the builder ``settings`` (recorded in
``forge.json``) and provenance (``pretraining``, ``built_with``).

Hugging Face directories
------------------------
``from_pretrained(path, local_files_only=True)``, safetensors weights only, with a stored
classification head (a fresh random head would differ on every load). LoRA targets the
attention q/v projections, found by name. Models are wrapped so that ``forward(x)``
returns the logits tensor.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ForgeDataError, ForgeFileError, ForgeIntegrityError, ForgeValueError
from ..fileio import sha256_bytes, sha256_file
from ..registry import Registry
from .base_architectures import (
    ARCHITECTURES,  # noqa: F401 - re-exported
    QV_NAMES,  # noqa: F401 - re-exported
    HFClassifier,
    TabularMLP,  # noqa: F401 - re-exported
    _freeze,
    attention_qv_targets,
    build_architecture,
    vit_config,  # noqa: F401 - re-exported
)

GRID = 2.0**-16  # the bundled bases' weights are multiples of this
BASE_FORMAT = "forge-base/1"
BASE_FILE = "base.json"
WEIGHTS_FILE = "model.safetensors"
ASSETS = Path(__file__).resolve().parent / "assets"

# The digests of the bundled bases (see the module docstring). Changing a shipped file
# changes its digest, and every plugin trained on the old one stops loading.
SHIPPED = {
    "tabular-mlp": "9d7df87e53cf8a5f080f557cf6ef532edc44d3acdd6978ac14fb94370d8d8b3f",
    "vit-tiny": "fdd903fd2589821741bde06138197190e468afb1b56f20d095521701d21685e0",
}

# The tabular base sees only the ten "standard error" features of the breast-cancer data
# (columns 10-19); its fc1 weights for the other twenty are exactly zero. A plugin's fc1
# update B A (A spans all 30 inputs) is what brings the mean and worst-case features in.
TABULAR_BASE_FEATURES = tuple(range(10, 20))

HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


@dataclass(frozen=True, eq=False)
class Base:
    """A frozen base model and its identity."""

    name: str
    model: nn.Module
    digest: str
    target_modules: tuple[str, ...]
    kind: str
    n_classes: int
    input_shape: tuple[int, ...] = ()  # shape of one record, e.g. (30,) or (1, 8, 8); () if unknown
    settings: dict = field(default_factory=dict)  # builder settings (recorded in forge.json)

    def describe(self) -> dict:
        return {"name": self.name, "digest": self.digest, "settings": dict(self.settings)}


# --------------------------------------------------------------------------- digests


def manifest_digest(file_hashes: dict[str, str]) -> str:
    """The base digest from ``{relative path: sha256 hex}`` (see the module docstring)."""
    manifest = "".join(f"{file_hashes[rel]}  {rel}\n" for rel in sorted(file_hashes))
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def defining_files(folder: Path) -> list[str]:
    """The relative paths of the files that define the base in ``folder``."""
    if (folder / BASE_FILE).is_file():
        return [BASE_FILE, WEIGHTS_FILE]
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return [
        n
        for n in names
        if n == "config.json" or n.endswith(".safetensors") or n.endswith(".safetensors.index.json") or n in HF_TOKENIZER_FILES
    ]


def directory_digest(folder: str | Path, names: list[str] | None = None) -> tuple[str, dict[str, str]]:
    """``(digest, {relative path: sha256})`` of a base directory's defining files."""
    folder = Path(folder)
    names = defining_files(folder) if names is None else names
    hashes = {rel: sha256_file(folder / rel) for rel in names}
    return manifest_digest(hashes), hashes


def weights_bytes(model: nn.Module) -> bytes:
    """The safetensors bytes of a model's state dict (CPU, contiguous): what a forge base stores."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return save(state)


def weights_digest(model: nn.Module) -> str:
    """sha256 of :func:`weights_bytes` (the weights file of a forge base directory)."""
    return sha256_bytes(weights_bytes(model))


# --------------------------------------------------------------------------- forge base directories


def _read_defining(folder: Path, names: list[str], what: str, missing_error) -> dict[str, bytes]:
    files = {}
    for rel in names:
        try:
            files[rel] = (folder / rel).read_bytes()
        except FileNotFoundError:
            raise missing_error(rel) from None
        except OSError as e:
            raise ForgeFileError(
                f"cannot read {folder / rel} ({e.strerror or e})", fix=f"restore {what} from a good copy", code="base.unreadable"
            ) from None
    return files


def _load_forge_dir(folder: Path, name: str, expected: str | None, fix: str) -> Base:
    """Load a forge base directory; ``expected`` is the pinned digest of a bundled base."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    def missing(rel: str):
        if expected is not None:
            return ForgeIntegrityError(f"bundled base {name} is incomplete: {folder / rel} is missing", fix=fix, code="base.asset_missing")
        return ForgeFileError(f"base directory {folder} has no {rel}", fix=fix, code="base.missing_file")

    files = _read_defining(folder, [BASE_FILE, WEIGHTS_FILE], f"base {name}", missing)
    digest = manifest_digest({rel: sha256_bytes(data) for rel, data in files.items()})
    if expected is not None and digest != expected:
        raise ForgeIntegrityError(
            f"bundled base {name} in {folder} has digest {digest[:16]}..., not the pinned {expected[:16]}... "
            "(a file is altered or truncated)",
            fix=fix,
            code="base.digest_mismatch",
        )
    try:
        record = json.loads(files[BASE_FILE].decode("utf-8"))
        if not isinstance(record, dict) or record.get("format") != BASE_FORMAT:
            raise ValueError(f"format is not {BASE_FORMAT}")
        architecture, config = record["architecture"], record["config"]
        kind, n_classes, shape = str(record["kind"]), int(record["n_classes"]), tuple(int(d) for d in record["input_shape"])
        targets, settings = record.get("targets"), dict(record.get("settings") or {})
        if not isinstance(config, dict):
            raise ValueError("config is not an object")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ForgeDataError(
            f"{folder / BASE_FILE} is not a {BASE_FORMAT} record ({e.__class__.__name__}: {e})", fix=fix, code="base.bad_config"
        ) from None
    with torch.random.fork_rng(devices=[]):  # constructors draw from the global RNG: leave it untouched
        torch.manual_seed(0)
        try:
            model = build_architecture(architecture, config)
        except TypeError as e:
            raise ForgeDataError(f"{folder / BASE_FILE} has a bad {architecture} config ({e})", fix=fix, code="base.bad_config") from None
    try:
        model.load_state_dict(load(files[WEIGHTS_FILE]), strict=True)
    except (SafetensorError, RuntimeError, ValueError) as e:
        raise ForgeDataError(
            f"the weights in {folder / WEIGHTS_FILE} do not load ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})",
            fix=fix,
            code="base.bad_weights",
        ) from None
    model = _freeze(model)
    targets = tuple(targets) if targets else attention_qv_targets(model)
    return Base(name, model, digest, targets, kind, n_classes, shape, settings)


def _asset_fix(name: str) -> str:
    return (
        f"reinstall forge-secure (pip install --force-reinstall forge-secure), or restore forge_secure/plugins/assets/{name}/ "
        "from the repository (git checkout -- forge_secure/plugins/assets)"
    )


def load_shipped(name: str, **settings) -> Base:
    """A bundled base from the package's assets, checked against its pinned digest.

    ``settings`` are accepted only when they equal the shipped ones (``forge.json`` records
    them and plugin loading passes them back); other settings need a base built with
    ``tools/make_bases.py`` into a directory.
    """
    if name not in SHIPPED:
        raise ForgeValueError(f"unknown base model {name!r}", fix=f"use one of: {', '.join(sorted(SHIPPED))}", code="base.unknown")
    with _lock:
        base = _memo.get(name)
    if base is None:
        base = _load_forge_dir(ASSETS / name, name, SHIPPED[name], _asset_fix(name))
        with _lock:
            base = _memo.setdefault(name, base)
    unknown = sorted(set(settings) - set(base.settings))
    if unknown:
        raise ForgeValueError(
            f"base {name} has no setting {', '.join(unknown)}",
            fix=f"its settings are {', '.join(sorted(base.settings))}",
            code="base.settings",
        )
    other = {k: v for k, v in settings.items() if not _same_setting(v, base.settings[k])}
    if other:
        told = " ".join(f"{k}={v!r}" for k, v in sorted(other.items()))
        raise ForgeValueError(
            f"the bundled {name} is built with {', '.join(f'{k}={base.settings[k]!r}' for k in sorted(other))}; {told} is not shipped, "
            "and nothing is trained when a base is loaded",
            fix=f"build it once with: python tools/make_bases.py {name} "
            + " ".join(f"--set {k}={v}" for k, v in sorted(other.items()))
            + " --out DIR, copy DIR to every site and use it as the base (--base DIR)",
            code="base.not_shipped",
        )
    return base


def _same_setting(given, shipped) -> bool:
    if isinstance(given, bool) or isinstance(shipped, bool):
        return given is shipped
    if isinstance(given, (int, float)) and isinstance(shipped, (int, float)):
        return float(given) == float(shipped)
    return given == shipped


# --------------------------------------------------------------------------- Hugging Face models


def load_hf_base(path: str | Path) -> Base:
    """A Hugging Face classification model from a local directory (safetensors only)."""
    path = Path(path)
    if not path.is_dir():
        raise ForgeFileError(
            f"base model directory {path} does not exist", fix="give a local Hugging Face model directory", code="base.missing"
        )
    if not (path / "config.json").is_file():
        raise ForgeFileError(
            f"{path} has no config.json (Hugging Face) or {BASE_FILE} (forge base), so it is not a base directory",
            fix="give a directory written by save_pretrained or by tools/make_bases.py",
            code="base.not_hf",
        )
    if not any(path.glob("*.safetensors")):
        raise ForgeFileError(
            f"{path} holds no .safetensors weights",
            fix="convert the weights to safetensors (pickled weights are refused)",
            code="base.no_safetensors",
        )
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    digest, _ = directory_digest(path)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ForgeDataError(
            f"{path}/config.json cannot be read as a model configuration ({e})",
            fix="restore the directory from a good copy",
            code="base.bad_config",
        ) from None
    hf = None
    for auto in (AutoModelForImageClassification, AutoModelForSequenceClassification):
        try:
            hf, info = auto.from_pretrained(
                path, local_files_only=True, use_safetensors=True, attn_implementation="eager", output_loading_info=True
            )
            break
        except ValueError as e:
            if "Unrecognized configuration class" in str(e):  # not of this model family: try the next
                continue
            raise ForgeDataError(
                f"cannot load the model in {path} ({str(e)[:200]})", fix="restore the directory from a good copy", code="base.bad_weights"
            ) from None
        except Exception as e:  # OSError, RuntimeError, safetensors' own errors for truncated files, ...
            raise ForgeDataError(
                f"cannot load the model in {path} ({e.__class__.__name__}: {str(e)[:200]})",
                fix="restore the directory from a good copy",
                code="base.bad_weights",
            ) from None
    if hf is None:
        raise ForgeValueError(
            f"{path} holds a {config.model_type!r} model, which is not an image or sequence classifier",
            fix="give a model with a classification head",
            code="base.unsupported",
        )
    missing = list(info.get("missing_keys") or [])
    if missing:  # freshly initialised weights would make the model differ on every load
        raise ForgeDataError(
            f"the model in {path} has no stored weights for {', '.join(sorted(missing)[:4])}",
            fix="give a complete classification model (with its trained head) saved by save_pretrained",
            code="base.incomplete",
        )
    if directory_digest(path)[0] != digest:
        raise ForgeFileError(
            f"the files of {path} changed while it was loaded", fix="load it again once nothing writes to it", code="base.changed"
        )
    hf.float()
    model = _freeze(HFClassifier(hf))
    image = model.input_name == "pixel_values"
    shape = (
        (int(getattr(config, "num_channels", 3)), int(config.image_size), int(config.image_size))
        if image and hasattr(config, "image_size")
        else ()
    )
    return Base(
        str(path.resolve()), model, digest, attention_qv_targets(model), "image" if image else "text", int(config.num_labels), shape, {}
    )


# --------------------------------------------------------------------------- entry points

_lock = threading.Lock()
_memo: dict[str, Base] = {}

BASES: Registry = Registry("base model")
for _name in SHIPPED:
    BASES.add(_name, lambda _n=_name, **settings: load_shipped(_n, **settings))


def load_base(name_or_path: str | Path, **kwargs) -> Base:
    """A bundled base by name (``tabular-mlp``, ``vit-tiny``; ``kwargs`` must equal its
    shipped settings) or a base directory by path: a forge base directory (``base.json``,
    written by ``tools/make_bases.py``) or a local Hugging Face model directory. Nothing is
    trained. Directories are remembered in-process only while their defining files are
    unchanged; the model is frozen, so use :func:`fresh_copy` before wrapping it."""
    name = str(name_or_path)
    if name in BASES:
        return load_shipped(name, **kwargs)
    folder = Path(name)
    if not (folder.is_dir() or "/" in name or name.startswith(".")):
        raise ForgeValueError(
            f"unknown base model {name!r}",
            fix=f"use one of: {', '.join(BASES.names())}, or the path of a base directory (forge or Hugging Face)",
            code="base.unknown",
        )
    if kwargs:
        raise ForgeValueError(
            f"settings {sorted(kwargs)} apply only to bundled bases",
            fix="drop them; a directory holds its own settings",
            code="base.settings",
        )
    if not folder.is_dir():
        raise ForgeFileError(f"base model directory {folder} does not exist", fix="give a local base directory", code="base.missing")
    stats = []
    for rel in defining_files(folder):
        try:
            st = (folder / rel).stat()
            stats.append((rel, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((rel, -1, -1))
    memo_key = str(folder.resolve()) + "|" + repr(stats)
    with _lock:
        if memo_key in _memo:
            return _memo[memo_key]
    if (folder / BASE_FILE).is_file():
        base = _load_forge_dir(
            folder, str(folder.resolve()), None, "rebuild it with tools/make_bases.py or copy it again from the consortium"
        )
    else:
        base = load_hf_base(folder)
    with _lock:
        return _memo.setdefault(memo_key, base)


def fresh_copy(base: Base) -> nn.Module:
    """A deep copy of the frozen base model, to wrap with PEFT (the shared one is never changed)."""
    return copy.deepcopy(base.model)
