"""Reading plugins for a merge and writing merged plugins.

:func:`read_plugin_files` reads a plugin directory's three files directly (adapter config,
``adapter_model.safetensors``, ``forge.json``) into a :class:`PluginFiles` with a
:class:`~forge_secure.merge.adapter.LoraAdapter`, with a clear error for every kind of
broken, truncated or foreign input. :func:`open_inputs` accepts plugin directories and
sealed ``.forge`` bundles (opened with :func:`forge_secure.crypto.open_bundle`).
:func:`write_merged_plugin` builds the PEFT model of a merge result and saves it through
:func:`forge_secure.plugins.plugin.save_plugin`, with the lineage in ``forge.json``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..errors import ForgeDataError, ForgeFileError, ForgeIntegrityError, ForgeValueError
from ..fileio import read_json_file, scratch_directory, sha256_file
from .adapter import LoraAdapter, check_finite

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORGE_JSON = "forge.json"
PLUGIN_FORMAT = "forge-plugin/1"


@dataclass(frozen=True, eq=False)
class PluginFiles:
    """A plugin directory as read for a merge."""

    path: Path
    config: dict  # adapter_config.json
    meta: dict  # forge.json
    adapter: LoraAdapter
    digest: str  # sha256 of adapter_model.safetensors

    @property
    def site(self) -> str:
        return str(self.meta.get("site", "?"))

    @property
    def base_digest(self) -> str:
        return str(self.meta.get("base", {}).get("digest", ""))

    @property
    def rows(self) -> int | None:
        rows = self.meta.get("data", {}).get("rows")
        return int(rows) if isinstance(rows, int) and not isinstance(rows, bool) else None


def load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise ForgeFileError(f"{what} has no {path.name}", fix="give a complete plugin directory", code="plugin.missing_weights")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ForgeDataError(f"{path} is not a readable safetensors file ({e})", fix="the file is truncated or of the wrong type; use the plugin as trained", code="plugin.bad_weights") from None


def read_plugin_files(path: str | os.PathLike) -> PluginFiles:
    """Read a plugin directory; errors name the file and the fix."""
    p = Path(path)
    if not p.exists():
        raise ForgeFileError(f"plugin {p} does not exist", fix="check the path", code="file.missing")
    if not p.is_dir():
        raise ForgeFileError(f"plugin {p} is not a directory", fix="give a plugin directory or a sealed .forge bundle", code="plugin.not_a_directory")
    from ..plugins.plugin import read_meta

    if not (p / FORGE_JSON).exists() and (p / "mixture.json").exists():
        raise ForgeDataError(f"{p} is a mixture, not a plugin", fix="give plugin directories (a mixture's plugins are in its plugins/ folder)", code="merge.wrong_type")
    if (p / FORGE_JSON).exists():
        raw = read_json_file(p / FORGE_JSON, "plugin metadata")
        if isinstance(raw, dict) and str(raw.get("format", "")).startswith("forge-he-"):
            raise ForgeDataError(f"{p} is an encrypted {raw.get('kind')}, not a plugin", fix="use `forge he aggregate` / `forge he decrypt` for encrypted contributions", code="merge.wrong_type")
    meta = read_meta(p)
    config = read_json_file(p / ADAPTER_CONFIG, "adapter config")
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise ForgeDataError(f"{p / ADAPTER_CONFIG} is not a PEFT LoRA config", fix="merges take LoRA plugins", code="plugin.bad_config")
    for unsupported in ("use_dora", "fan_in_fan_out"):
        if config.get(unsupported):
            raise ForgeDataError(f"{p.name}: {unsupported} adapters cannot be merged", fix="use plain LoRA", code="plugin.unsupported")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ForgeDataError(f"{p.name}: per-module ranks (rank_pattern/alpha_pattern) cannot be merged", fix="train with one rank for every module", code="plugin.unsupported")
    digest = sha256_file(p / ADAPTER_WEIGHTS) if (p / ADAPTER_WEIGHTS).is_file() else None
    recorded = (meta.get("adapter") or {}).get("sha256")
    if digest and recorded and digest != recorded:
        raise ForgeIntegrityError(f"{p / ADAPTER_WEIGHTS} does not match the sha256 in forge.json (truncated or tampered)", fix="restore the plugin from a good copy or its sealed bundle", code="plugin.adapter_digest")
    state = load_safetensors(p / ADAPTER_WEIGHTS, f"plugin {p}")
    try:
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
    except (KeyError, TypeError, ValueError):
        raise ForgeDataError(f"{p / ADAPTER_CONFIG} has no valid r / lora_alpha", fix="use the plugin as trained", code="plugin.bad_config") from None
    lora: dict = meta["lora"] if isinstance(meta.get("lora"), dict) else {}
    adapter = LoraAdapter(state=state, rank=rank, alpha=alpha, rslora=bool(config.get("use_rslora")), ffa=bool(lora.get("ffa")), name=f"{meta.get('site', p.name)} ({p.name})")
    check_finite(adapter.state, f"plugin {p}")
    assert digest is not None  # load_safetensors refused a missing adapter file
    return PluginFiles(p, config, meta, adapter, digest)


def check_same_base(plugins: Sequence[PluginFiles]) -> str:
    """All plugins must adapt the same base model (same weights digest)."""
    digests = {pl.base_digest for pl in plugins}
    if len(digests) != 1 or "" in digests:
        listing = ", ".join(f"{pl.path.name}: {pl.base_digest[:12] or 'none'}" for pl in plugins)
        raise ForgeDataError(f"plugins were trained on different base models ({listing})", fix="merge only plugins of one base model version (same digest)", code="merge.different_bases")
    return digests.pop()


def default_weights(plugins: Sequence[PluginFiles]) -> list[float]:
    """Training-set sizes from each plugin's forge.json (``data.rows``)."""
    rows = [pl.rows for pl in plugins]
    if any(r is None or r < 1 for r in rows):
        missing = [pl.path.name for pl, r in zip(plugins, rows, strict=True) if r is None or r < 1]
        raise ForgeDataError(f"no training-set size recorded in {', '.join(missing)}", fix="give --weights explicitly", code="merge.no_rows")
    return [float(r or 0) for r in rows]  # (each r >= 1 here)


def check_signed_site(plugin_dir: Path, signed_site: str, bundle: Path) -> None:
    """The site named in an opened bundle's ``forge.json`` must be the site whose roster key
    signed it: otherwise one site could pass its plugin off as another's, and the merge's
    lineage and per-site DP records would name the wrong author. Merged plugins (``kind:
    merged``, sealed by whoever merged them) carry their authors in their parents instead."""
    meta = read_json_file(plugin_dir / FORGE_JSON, f"forge.json in {bundle}") if (plugin_dir / FORGE_JSON).is_file() else None
    if not isinstance(meta, dict) or meta.get("kind") == "merged":
        return
    if meta.get("site") != signed_site:
        raise ForgeIntegrityError(
            f"{bundle} is signed by {signed_site}'s key but its forge.json names site {meta.get('site')!r}",
            fix=f"do not merge it; ask {signed_site} to seal its own plugin (a site may only submit plugins in its own name)",
            code="merge.site_mismatch",
        )


def check_merge_request(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, weights: Sequence[float] | None) -> None:
    """Cheap checks of a merge's own arguments, run before any sealed bundle is opened:
    opening records a bundle in the replay store, so a merge that failed afterwards on a
    typo would leave the bundles impossible to merge again."""
    from .adapter import normalise_weights

    if weights is not None:
        normalise_weights(weights, len(inputs))
    o = Path(out)
    if o.exists() and not o.is_dir():
        raise ForgeFileError(f"--out {o} exists and is a file", fix="give a new directory for the merge", code="file.not_a_directory")
    if o.is_dir() and any(o.iterdir()):
        raise ForgeFileError(f"--out {o} already exists and is not empty", fix="choose a new --out directory or remove the old one", code="file.exists")


@contextlib.contextmanager
def open_inputs(paths: Sequence[str | os.PathLike], *, key=None, roster=None,
                work_dir: str | os.PathLike | None = None) -> Iterator[list[Path]]:
    """Yield plugin directories for ``paths``: directories as they are, ``.forge`` bundles
    opened (verified, then decrypted) into a scratch directory removed afterwards.

    The scratch directory follows the partial-output convention
    (:func:`forge_secure.fileio.scratch_directory`): ``.forge-partial.merge-inputs.*.part``,
    mode 0700, in ``work_dir`` (default ``FORGE_HOME/partial``), flock-ed while the merge
    runs; one that a killed merge left (decrypted plugins) is removed by the next command
    that makes a scratch directory there or opens a bundle."""
    inputs = [Path(p) for p in paths]
    if not inputs:
        raise ForgeValueError("no plugins given", fix="give plugin directories or sealed .forge bundles", code="merge.no_inputs")
    with scratch_directory("merge-inputs", work_dir) as tmp:
        out = []
        for i, p in enumerate(inputs):
            if p.is_file() and p.suffix == ".forge":
                if key is None or roster is None:
                    raise ForgeValueError(f"{p} is a sealed bundle", fix="give --key (your private key) and --roster to open it", code="merge.bundle_needs_key")
                from ..crypto import bundle as crypto_bundle

                target = Path(tmp) / f"input-{i}"
                opened = crypto_bundle.open_bundle(p, key, roster, target)
                check_signed_site(target, opened.verified.site, p)
                out.append(target)
            else:
                out.append(p)
        yield out


def lineage_entry(pl_meta: dict, digest: str) -> dict:
    """A parent as recorded in a merged plugin's forge.json (recursively, so the whole tree
    travels with the plugin and `forge lineage` needs no other files)."""
    entry = {
        "digest": digest,
        "site": pl_meta.get("site"),
        "kind": pl_meta.get("kind", "trained"),
        "dp": copy.deepcopy(pl_meta.get("dp")),
        "rows": (pl_meta.get("data") or {}).get("rows"),
    }
    if pl_meta.get("merge"):
        entry["merge"] = copy.deepcopy(pl_meta["merge"])
    if pl_meta.get("parents"):
        entry["parents"] = copy.deepcopy(pl_meta["parents"])
    return entry


def merged_dp_record(parents: Sequence[dict]) -> dict:
    """A merge is post-processing: each site's guarantee is its own plugin's. The record
    lists the per-site epsilons, and the largest as a conservative single figure."""
    per = []
    for p in parents:
        dp = p.get("dp") or {}
        per.append({"site": p.get("site"), "digest": p.get("digest"), "enabled": dp.get("enabled"), "epsilon": dp.get("epsilon"),
                    "delta": dp.get("delta"), "accountant": dp.get("accountant")})

    def eps(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("inf")

    worst = max((eps(x["epsilon"]) for x in per), default=float("inf"))
    all_dp = all(x.get("enabled") for x in per)
    return {
        "enabled": all_dp,
        "post_processing": True,
        "epsilon": "inf" if worst == float("inf") else worst,
        "per_parent": per,
        "note": "a merge is post-processing; each site's record is that of its own plugin",
    }


def build_peft_model(base, adapter: LoraAdapter, template_config: dict):
    """A PEFT model of ``base`` with ``adapter`` loaded, the config adjusted to the merged
    rank and alpha (so PEFT's scaling is the merge's)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from ..plugins.bases import fresh_copy
    from .adapter import module_path

    targets = sorted({module_path(m).split(".")[-1] for m in adapter.modules})
    cfg_targets = template_config.get("target_modules") or targets
    config = LoraConfig(
        r=adapter.rank,
        lora_alpha=adapter.alpha,  # type: ignore[arg-type]  # PEFT annotates lora_alpha as int; it only divides it by r
        target_modules=cfg_targets if isinstance(cfg_targets, (list, str)) else sorted(cfg_targets),
        lora_dropout=0.0,
        use_rslora=adapter.rslora,
        bias="none",
        init_lora_weights=False,
    )
    model = get_peft_model(fresh_copy(base), config)
    result = set_peft_model_state_dict(model, dict(adapter.state))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ForgeDataError(f"merged tensors {unexpected[:3]} do not fit the base model", fix="use the base model the plugins were trained on", code="merge.base_mismatch")
    model.eval()
    return model


def write_merged_plugin(base, adapter: LoraAdapter, *, parents: Sequence[dict], method: str, weights: Sequence[float], details: dict,
                        template_meta: dict, template_config: dict, out: str | os.PathLike, site: str = "merged") -> Path:
    """Check the merge result for NaN/inf and write it as a PEFT-loadable plugin directory
    whose forge.json says ``kind: merged`` with its parents, the method and the weights."""
    from ..plugins.plugin import new_meta, save_plugin
    from .adapter import module_path

    check_finite(adapter.state, "the merged adapter")
    if base.digest != (template_meta.get("base") or {}).get("digest"):
        raise ForgeDataError(f"base {base.name} ({base.digest[:12]}...) is not the plugins' base", fix="use the base model version the plugins were trained on", code="merge.different_bases")
    model = build_peft_model(base, adapter, template_config)
    lora = dict(template_meta.get("lora") or {})
    lora.update({"rank": adapter.rank, "alpha": adapter.alpha, "ffa": bool(adapter.ffa)})
    lora.setdefault("targets", sorted({module_path(m).split(".")[-1] for m in adapter.modules}))
    if not adapter.ffa:
        lora.pop("ffa_seed", None)
    tdata = template_meta.get("data") or {}
    data = {"name": "merge of " + ", ".join(str(p.get("site")) for p in parents), "rows": sum(int(p.get("rows") or 0) for p in parents)}
    if tdata.get("kind"):
        data["kind"] = tdata["kind"]
    if isinstance(tdata.get("n_classes"), int):
        data["n_classes"] = tdata["n_classes"]
    meta = new_meta(site=site, base=base, lora=lora, dp=merged_dp_record(parents), kind="merged", data=data, parents=list(parents),
                    merge={"method": method, "weights": [float(w) for w in weights], "details": details})
    return save_plugin(model, meta, Path(out))
