"""The attacked plugin as the reconstruction attacks see it: the data check, its record in a
results file, the DP-SGD recipe an attack uses (a merged plugin's parent site plugin, see
:func:`resolve_recipe`), its trainable functional, and the redo of a ties/dare/sequential
merge from every parent (:mod:`.merged`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from forge_secure.errors import ForgeDataError, ForgeValueError

from .gradients import LoraFunctional


def check_data(plugin, data, what: str = "data") -> None:
    """The records must fit the plugin's base (the one data-compatibility check, codes
    ``data.*``), and a game needs at least two of them."""
    from forge_secure.plugins.sources import check_compatible

    check_compatible(plugin.base, data, what)
    if len(data) < 2:
        raise ForgeDataError(f"{what} {data.name!r} holds {len(data)} record(s)", fix="give at least two records", code="recon.data_small")


def target_record(plugin) -> dict:
    meta = plugin.meta
    return {
        "path": str(plugin.path) if plugin.path else None,
        "site": meta.get("site"),
        "base": meta.get("base", {}).get("name"),
        "adapter_sha256": (meta.get("adapter") or {}).get("sha256"),
        "dp": meta.get("dp"),
        "lora": meta.get("lora"),
    }


def _parent_sites(meta: dict) -> list[str]:
    return [str(p.get("site")) for p in (meta.get("parents") or []) if isinstance(p, dict) and p.get("site")]


def resolve_recipe(plugin, recipe: str | Path | None) -> tuple[dict, Path | None, int | None]:
    """``(recipe_meta, recipe_dir, parent_index)``: the DP-SGD recipe an attack on ``plugin``
    uses. A trained plugin is its own recipe unless ``recipe`` is given; a merged plugin needs
    ``recipe``, the directory (or forge.json) of one of its parent site plugins."""
    from forge_secure.plugins import read_plugin

    meta = plugin.meta
    merged = meta.get("kind") == "merged"
    if recipe is None:
        if merged:
            sites = _parent_sites(meta) or ["(none recorded)"]
            raise ForgeValueError(
                f"{plugin.path or 'the target'} is a merged plugin of sites {', '.join(sites)}; its forge.json holds no DP-SGD recipe",
                fix=f"pass --recipe with the plugin directory of one of its parents ({', '.join(sites)})",
                code="recon.needs_recipe",
            )
        return meta, None, None
    rdir = Path(recipe)
    if rdir.name == "forge.json" and rdir.is_file():
        rdir = rdir.parent
    rmeta = read_plugin(rdir, base=plugin.base, weights=False).meta  # another base: plugin.base_mismatch
    if rmeta.get("kind") != "trained":
        raise ForgeValueError(
            f"the recipe plugin {rdir} is a {rmeta.get('kind')} plugin, not a site plugin trained with DP-SGD",
            fix="give a parent site plugin's directory as --recipe",
            code="recon.recipe_kind",
        )
    if not merged:
        return rmeta, rdir, None
    parents = [p for p in (meta.get("parents") or []) if isinstance(p, dict)]
    digest = (rmeta.get("adapter") or {}).get("sha256")
    index = next((i for i, p in enumerate(parents) if digest and p.get("digest") == digest), None)
    if index is None:  # digests hidden (ffa-ckks --hide-digest): match by site
        same = [i for i, p in enumerate(parents) if p.get("site") == rmeta.get("site") and not p.get("digest")]
        index = same[0] if len(same) == 1 else None
    if index is None:
        sites = _parent_sites(meta) or ["(none recorded)"]
        raise ForgeValueError(
            f"the recipe plugin {rdir} (site {rmeta.get('site')}) is not a parent of the merged plugin {plugin.path}",
            fix=f"pass --recipe with one of its parents ({', '.join(sites)})",
            code="recon.recipe_not_parent",
        )
    return rmeta, rdir, index


def recipe_record(plugin, rmeta: dict, rdir: Path | None, index: int | None) -> dict | None:
    if rdir is None:
        return None
    rec = {
        "path": str(rdir),
        "site": rmeta.get("site"),
        "adapter_sha256": (rmeta.get("adapter") or {}).get("sha256"),
        "dp": rmeta.get("dp"),
    }
    if index is not None:
        rec["parent_index"] = index
        weights = (plugin.meta.get("merge") or {}).get("weights")
        rec["merge_weight"] = weights[index] if isinstance(weights, list) and index < len(weights) else None
    return rec


def lora_functional(plugin) -> LoraFunctional:
    ffa = bool((plugin.meta.get("lora") or {}).get("ffa"))
    return LoraFunctional(plugin.model, ffa=ffa)


def merge_redo(plugin, rdir: Path, index: int, fn: LoraFunctional, parents: Sequence[str | Path] | None):
    """The :class:`~attacks.reconstruction.merged.MergeRedo` of a ties/dare/sequential merge:
    the recipe site's plugin and the other parents (``parents``) read with the merge's own
    reader (clean errors for missing, truncated or tampered plugins), matched by digest."""
    from forge_secure.plugins import read_plugin

    from .merged import MergeRedo, order_parents

    if plugin.path is None:
        raise ForgeValueError(
            "the merged plugin has no directory to read its adapter from", fix="load it with load_plugin(DIR)", code="recon.merge_redo"
        )
    merged_files = read_plugin(plugin.path, base=plugin.base)
    recipe_files = read_plugin(rdir, base=plugin.base)
    given = [read_plugin(p, base=plugin.base) for p in (parents or [])]
    ordered = order_parents(plugin.meta, recipe_files, given)
    return MergeRedo(merged_files, ordered, index, fn)
