"""Merges end to end: plugin directories or sealed bundles in, one merged plugin out.

These are the library calls behind ``forge merge`` (and the demo's merge stage)::

    from forge_secure.merge import fusion_merge
    fusion_merge(["site-1", "site-2", "site-3"], "merged", method="ffa")           # weights = rows
    fusion_merge(bundles, "merged", method="sequential", tune_on="synth.npz", key=k, roster=r)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ForgeValueError
from ..plugins.record import PluginRecord, check_base, read_plugin
from .adapter import normalise_weights
from .evaluate import make_loss
from .fusion import FUSIONS, tune_weights
from .io import check_merge_request, default_weights, lineage_entry, open_inputs, read_inputs, write_merged_plugin


def base_of(plugin: PluginRecord):
    """The plugins' base model (built-in by name and settings, or a local base directory),
    checked against the digest the plugin records (``plugin.base_mismatch``)."""
    from ..plugins.bases import BASES, load_base

    base = load_base(plugin.base_name, **(plugin.base_settings if plugin.base_name in BASES else {}))
    check_base(plugin, base.digest, base.name, where=str(plugin.path))
    return base


def fusion_merge(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    method: str = "exact",
    weights: Sequence[float] | None = None,
    tune_on: str | os.PathLike | None = None,
    key=None,
    roster=None,
    seed: int = 0,
    density: float = 0.5,
    budget: int = 40,
    rank: int | None = None,
    base=None,
) -> Path:
    """Fuse plugins (directories or ``.forge`` bundles) into one merged plugin at ``out``.

    Weights: ``weights`` if given, else tuned on ``tune_on`` (DP synthetic data) if given,
    else the training-set sizes in each ``forge.json``. ``sequential`` always tunes its own
    scalars and needs ``tune_on``.
    """
    spec = FUSIONS.get(method)  # the merge's one lookup of its method
    if len(inputs) < 2:
        raise ForgeValueError(
            f"a merge needs at least two plugins, got {len(inputs)}",
            fix="give two or more plugin directories or bundles",
            code="merge.too_few",
        )
    # everything that can be checked without the plugins is checked before any bundle is opened;
    # the given weights are normalised here, once
    given = check_merge_request(inputs, out, weights)
    if spec.needs_loss and weights is not None:
        raise ForgeValueError("the sequential merge tunes its own scalars", fix="drop --weights (give --tune-on)", code="merge.bad_weights")
    if spec.needs_loss and tune_on is None:
        raise ForgeValueError(
            "the sequential (MedForge) merge tunes its scalars on data and got none",
            fix="give synthetic tuning data (forge synth, then --tune-on FILE)",
            code="merge.needs_tuning_data",
        )
    synth = None
    if tune_on is not None:
        from ..privacy.synthetic import load_synthetic

        synth = load_synthetic(tune_on)
    with open_inputs(inputs, key=key, roster=roster) as dirs:
        plugins = read_inputs(dirs, base)
        adapters = [p.adapter for p in plugins]
        base = base or base_of(plugins[0])
        loss_fn = None
        if synth is not None:
            loss_fn = make_loss(base.model, synth.dataset.X, synth.dataset.y)
        options = {"seed": seed, "density": density, "rank": rank, "budget": budget, "loss_fn": loss_fn}
        if spec.needs_loss:
            if weights is not None:
                raise ForgeValueError(
                    "the sequential merge tunes its own scalars", fix="drop --weights (give --tune-on)", code="merge.bad_weights"
                )
            w, weight_source = normalise_weights(None, len(adapters)), "tuned (MedForge sequential)"
        elif given is not None:
            w, weight_source = given, "given"
        elif loss_fn is not None:
            w, info = tune_weights(spec, adapters, loss_fn, budget=budget, seed=seed, density=density, rank=rank)
            weight_source = "tuned on synthetic data"
        else:
            w, weight_source = normalise_weights(default_weights(plugins), len(adapters)), "training-set sizes"
        result = spec.fuse(adapters, w, **options)  # w is normalised exactly once, above
        details = dict(result.details, weight_source=weight_source)
        if tune_on is not None:
            details["tuned_on"] = str(tune_on)
        parents = []
        for p in plugins:
            assert p.adapter_sha256 is not None  # read with its weights (p.adapter above): hashed
            parents.append(lineage_entry(p.meta, p.adapter_sha256))
        template_config = plugins[0].config
        assert template_config is not None  # p.adapter above refuses a plugin read without its weights
        return write_merged_plugin(
            base,
            result.adapter,
            parents=parents,
            method=method,
            weights=result.weights,
            details=details,
            template_meta=plugins[0].meta,
            template_config=template_config,
            out=out,
        )


def homomorphic_merge(
    plugin_dirs: Sequence[str | os.PathLike],
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: Sequence[float] | None = None,
    k: int = 2,
    keys: str | os.PathLike | None = None,
) -> Path:
    """The whole CKKS path in one call (for the demo and tests): key generation (unless
    ``keys`` is given), one encrypted contribution per site under the public context, the
    aggregate with the public context only, and the key holder's decryption into ``out``.
    Each role's files go to its own folder under ``workdir``."""
    from .he import aggregate, decrypt_to_plugin, encrypt_plugin, keygen

    work = Path(workdir)
    keys = Path(keys) if keys is not None else keygen(work / "key-holder").path
    if weights is not None and len(weights) != len(plugin_dirs):
        raise ForgeValueError(
            f"{len(weights)} weights for {len(plugin_dirs)} plugins", fix="give one weight per plugin", code="merge.bad_weights"
        )
    contributions = [
        encrypt_plugin(
            p, keys / "public.ctx", work / "sites" / f"contribution-{i + 1}", weight=None if weights is None else weights[i]
        ).path
        for i, p in enumerate(plugin_dirs)
    ]
    aggregate(contributions, keys / "public.ctx", work / "aggregator" / "aggregate")
    # the key holder checks the aggregate against the contributions and decrypts its own sum
    return decrypt_to_plugin(work / "aggregator" / "aggregate", keys, out, k=k, contributions=contributions)


def merge_stage(
    plugin_dirs: Sequence[str | os.PathLike], workdir: str | os.PathLike, *, tune_on: str | os.PathLike | None = None, seed: int = 0
) -> dict[str, Path]:
    """The demo's merge stage: Fusion (exact; FFA and CKKS when every plugin is FFA-LoRA)
    and Mixture (static; gate when synthetic data is given). Returns ``{name: path}``."""
    from .mixture import mixture_merge

    work = Path(workdir)
    out: dict[str, Path] = {"fusion-exact": fusion_merge(plugin_dirs, work / "fusion-exact", method="exact", seed=seed)}
    if all(read_plugin(p, weights=False).lora.get("ffa") for p in plugin_dirs):
        out["fusion-ffa"] = fusion_merge(plugin_dirs, work / "fusion-ffa", method="ffa", seed=seed)
        out["fusion-ckks"] = homomorphic_merge(plugin_dirs, work / "ckks", work / "fusion-ckks")
    out["mixture-static"] = mixture_merge(plugin_dirs, work / "mixture-static", router="static", seed=seed)
    if tune_on is not None:
        out["mixture-gate"] = mixture_merge(plugin_dirs, work / "mixture-gate", router="gate", tune_on=tune_on, seed=seed)
    return out
