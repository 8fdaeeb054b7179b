"""Reading plugins for a merge and writing merged plugins.

A merge reads its plugins through the one gateway into a plugin folder,
:func:`forge_secure.plugins.read_plugin` (:func:`read_inputs`), whose record carries the
:class:`~forge_secure.merge.adapter.LoraAdapter` the methods take. :func:`open_inputs` accepts plugin directories and
sealed ``.forge`` bundles (opened with :func:`forge_secure.crypto.open_bundle`).
:func:`write_merged_plugin` builds the PEFT model of a merge result and saves it through
:func:`forge_secure.plugins.plugin.save_plugin`, with the lineage in ``forge.json``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import ForgeDataError, ForgeFileError, ForgeIntegrityError, ForgeValueError
from ..fileio import scratch_directory
from ..numbers import decode, encode
from ..plugins.record import PluginRecord, read_manifest, read_plugin
from .adapter import LoraAdapter, check_finite, normalise_weights


def read_inputs(dirs: Sequence[str | os.PathLike], base=None) -> list[PluginRecord]:
    """The merge's plugins through the gateway (:func:`forge_secure.plugins.read_plugin`,
    every check of the folder and its weights), on one base."""
    plugins = [read_plugin(d, base=base) for d in dirs]
    check_same_base(plugins)
    return plugins


def check_same_base(plugins: Sequence[PluginRecord]) -> str:
    """All plugins must adapt the same base model (same weights digest)."""
    digests = {pl.base_digest for pl in plugins}
    if len(digests) != 1 or "" in digests:
        listing = ", ".join(f"{pl.path.name}: {pl.base_digest[:12] or 'none'}" for pl in plugins)
        raise ForgeDataError(
            f"plugins were trained on different base models ({listing})",
            fix="merge only plugins of one base model version (same digest)",
            code="merge.different_bases",
        )
    return digests.pop()


def default_weights(plugins: Sequence[PluginRecord]) -> list[float]:
    """Training-set sizes from each plugin's forge.json (``data.rows``)."""
    rows = [pl.rows for pl in plugins]
    if any(r is None or r < 1 for r in rows):
        missing = [pl.path.name for pl, r in zip(plugins, rows, strict=True) if r is None or r < 1]
        raise ForgeDataError(
            f"no training-set size recorded in {', '.join(missing)}", fix="give --weights explicitly", code="merge.no_rows"
        )
    return [float(r or 0) for r in rows]  # (each r >= 1 here)


def check_signed_site(plugin_dir: Path, signed_site: str, bundle: Path) -> None:
    """The site named in an opened bundle's ``forge.json`` must be the site whose roster key
    signed it: otherwise one site could pass its plugin off as another's, and the merge's
    lineage and per-site DP records would name the wrong author. Merged plugins (``kind:
    merged``, sealed by whoever merged them) carry their authors in their parents instead."""
    meta = read_manifest(plugin_dir)
    if meta.get("kind") == "merged":
        return
    if meta.get("site") != signed_site:
        raise ForgeIntegrityError(
            f"{bundle} is signed by {signed_site}'s key but its forge.json names site {meta.get('site')!r}",
            fix=f"do not merge it; ask {signed_site} to seal its own plugin (a site may only submit plugins in its own name)",
            code="merge.site_mismatch",
        )


def check_merge_request(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, weights: Sequence[float] | None) -> list[float] | None:
    """Cheap checks of a merge's own arguments, run before any sealed bundle is opened:
    opening records a bundle in the replay store, so a merge that failed afterwards on a
    typo would leave the bundles impossible to merge again. Returns the given weights
    normalised (the merge's one normalisation of them), or None."""
    normalised = normalise_weights(weights, len(inputs)) if weights is not None else None
    o = Path(out)
    if o.exists() and not o.is_dir():
        raise ForgeFileError(f"--out {o} exists and is a file", fix="give a new directory for the merge", code="file.not_a_directory")
    if o.is_dir() and any(o.iterdir()):
        raise ForgeFileError(
            f"--out {o} already exists and is not empty", fix="choose a new --out directory or remove the old one", code="file.exists"
        )
    return normalised


@contextlib.contextmanager
def open_inputs(
    paths: Sequence[str | os.PathLike], *, key=None, roster=None, work_dir: str | os.PathLike | None = None
) -> Iterator[list[Path]]:
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
                    raise ForgeValueError(
                        f"{p} is a sealed bundle",
                        fix="give --key (your private key) and --roster to open it",
                        code="merge.bundle_needs_key",
                    )
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
        per.append(
            {
                "site": p.get("site"),
                "digest": p.get("digest"),
                "enabled": dp.get("enabled"),
                "epsilon": dp.get("epsilon"),
                "delta": dp.get("delta"),
                "accountant": dp.get("accountant"),
            }
        )

    def eps(v):
        try:
            return decode(v)
        except ValueError:
            return float("inf")

    worst = max((eps(x["epsilon"]) for x in per), default=float("inf"))
    all_dp = all(x.get("enabled") for x in per)
    return {
        "enabled": all_dp,
        "post_processing": True,
        "epsilon": encode(worst),
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
        raise ForgeDataError(
            f"merged tensors {unexpected[:3]} do not fit the base model",
            fix="use the base model the plugins were trained on",
            code="merge.base_mismatch",
        )
    model.eval()
    return model


def write_merged_plugin(
    base,
    adapter: LoraAdapter,
    *,
    parents: Sequence[dict],
    method: str,
    weights: Sequence[float],
    details: dict,
    template_meta: dict,
    template_config: dict,
    out: str | os.PathLike,
    site: str = "merged",
) -> Path:
    """Check the merge result for NaN/inf and write it as a PEFT-loadable plugin directory
    whose forge.json says ``kind: merged`` with its parents, the method and the weights."""
    from ..plugins.plugin import new_meta, save_plugin
    from .adapter import module_path

    check_finite(adapter.state, "the merged adapter")
    if base.digest != (template_meta.get("base") or {}).get("digest"):
        raise ForgeDataError(
            f"base {base.name} ({base.digest[:12]}...) is not the plugins' base",
            fix="use the base model version the plugins were trained on",
            code="merge.different_bases",
        )
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
    meta = new_meta(
        site=site,
        base=base,
        lora=lora,
        dp=merged_dp_record(parents),
        kind="merged",
        data=data,
        parents=list(parents),
        merge={"method": method, "weights": [float(w) for w in weights], "details": details},
    )
    return save_plugin(model, meta, Path(out))
