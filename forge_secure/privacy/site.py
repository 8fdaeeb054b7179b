"""A site's training run, end to end (what ``forge train`` and ``forge demo`` call): resolve the
data and the base, insert the auditor's canaries, check and charge the budget ledger, train with
a fresh secret, write the plugin, and seal the replay envelope to the auditor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ForgeFileError, ForgeValueError

if TYPE_CHECKING:
    from ..plugins.plugin import Plugin
    from ..plugins.sources import TrainingData


@dataclass(frozen=True, eq=False)
class SiteRun:
    plugin: Plugin  # its secret is dropped once the envelope is sealed
    training: TrainingData
    envelope: Path | None  # the replay envelope, when an auditor was given
    canaries: dict | None  # the grant inserted: {"grant_id", "count", "digest"}


def check_out(out: Path) -> None:
    """Refuse an output directory that would be refused at the end, before any work."""
    from ..plugins.plugin import is_plugin_dir
    from .replay import envelope_path

    if is_plugin_dir(out):
        raise ForgeFileError(
            f"{out} already holds a plugin", fix="choose a new --out directory or remove the old plugin", code="plugin.exists"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ForgeFileError(f"{out} already exists and is not an empty directory", fix="choose a new --out directory", code="file.exists")
    if envelope_path(out).exists():
        raise ForgeFileError(
            f"{envelope_path(out)} already exists", fix="choose a new --out directory or move the old envelope", code="file.exists"
        )


def train_site(
    *,
    site: str,
    data_spec: str,
    base_name: str,
    out: Path,
    label_column: str | None = None,
    budget: float | None = None,
    ledger_root: Path | None = None,
    membership_seed: int | None = None,
    include_prob: float = 0.5,
    canary_grant: Path | None = None,
    grant_key=None,
    roster=None,
    auditor=None,
    signer=None,
    passphrase: bytes | None = None,
    **config_kwargs,
) -> SiteRun:
    """Train ``site``'s plugin into ``out``.

    ``canary_grant`` (with the site's ``grant_key`` = decryption key and the ``roster``): the
    auditor's sealed canaries, appended to the training set. ``auditor`` (a public key or its
    ``public.json``, with the site's ``signer``): seal the replay envelope beside the plugin.
    Everything that can be refused (output, base, data, grant, keys, budget) is checked before
    training starts."""
    from ..crypto.keys import PrivateKey, PublicKey, load_public_key, load_signing_key
    from ..plugins.bases import BASES, load_base
    from ..plugins.sources import base_kwargs_for, check_compatible, prepare_training_data
    from . import Ledger, TrainConfig, train_plugin
    from .canaries import open_grant
    from .replay import build_recipe, envelope_path, write_replay_envelope

    out = Path(out)
    check_out(out)
    if base_name not in BASES and not Path(base_name).is_dir():
        load_base(base_name)  # an unknown name or a missing directory: refused before the data is read
    if auditor is not None:
        if signer is None:
            raise ForgeValueError(
                "a replay envelope is signed by the site", fix="give --signer keys/<site>/signing.key", code="replay.no_signer"
            )
        auditor = auditor if isinstance(auditor, PublicKey) else load_public_key(auditor)
        signer = signer if isinstance(signer, PrivateKey) else load_signing_key(signer, passphrase)
    td = prepare_training_data(data_spec, label_column=label_column, membership_seed=membership_seed, include_prob=include_prob)
    if td.site is not None and td.site != site:
        raise ForgeValueError(
            f"--data {data_spec} is the training set of {td.site}, but --site is {site}",
            fix=f"use --site {td.site}, or --data {data_spec.split(':')[0]}:{site}",
            code="train.site_mismatch",
        )
    data, canaries = td.data, None
    if canary_grant is not None:
        if grant_key is None or roster is None:
            raise ForgeValueError(
                "opening a canary grant needs the site's decryption key and the roster",
                fix="give --grant-key keys/<site>/decryption.key and --roster roster.json",
                code="canaries.grant_key",
            )
        meta, cset = open_grant(canary_grant, key=grant_key, roster=roster, passphrase=passphrase)
        if meta.get("site") != site:
            raise ForgeValueError(
                f"canary grant {canary_grant} is for {meta.get('site')}, not {site}",
                fix="use the grant the auditor issued to this site",
                code="canaries.wrong_site",
            )
        data = data.concat(cset, name=data.name)
        canaries = {"grant_id": meta["grant_id"], "count": len(cset), "digest": cset.digest()}
    base = load_base(base_name, **base_kwargs_for(base_name, data))
    check_compatible(base, data)
    config = TrainConfig(base=base_name, **{k: v for k, v in config_kwargs.items() if v is not None})
    ledger = None
    if not config.no_dp or budget is not None:
        ledger = Ledger.open(site, td.ledger_dataset, budget, root=ledger_root)
    commitment = dict(td.commitment)
    commitment["canaries"] = (
        {"count": canaries["count"], "issuer": "auditor", "grant_id": canaries["grant_id"]} if canaries else {"count": 0}
    )
    plugin = train_plugin(config, data, site=site, base=base, ledger=ledger, commitment=commitment, out=out)
    envelope = None
    if auditor is not None:
        source = {"spec": data_spec, "label_column": label_column, "membership_seed": membership_seed, "include_prob": include_prob}
        recipe = build_recipe(plugin, config, source=source, data=data, canaries=canaries)
        envelope = write_replay_envelope(recipe, signer=signer, auditor=auditor, out=envelope_path(out), roster=roster)
    plugin.secret = None  # the envelope holds it now; nothing else does
    return SiteRun(plugin, td, envelope, canaries)


def run_summary(run: SiteRun, *, site: str, out: Path) -> dict:
    """What ``forge train`` reports of ``site``'s ``run`` (its plugin written to ``out``): the plugin's
    record, and accuracy and ROC AUC on the site's test split when the data has one."""
    from ..plugins.evaluate import evaluate

    meta = run.plugin.meta
    summary = {
        "plugin": str(out),
        "site": site,
        "base": meta["base"],
        "rows": meta.get("data", {}).get("rows"),
        "dp": meta["dp"],
        "lora": meta["lora"],
        "training": meta.get("training"),
        "data": meta.get("data"),
        "adapter_sha256": meta.get("adapter", {}).get("sha256"),
        "replay_envelope": str(run.envelope) if run.envelope else None,
        "canaries": run.canaries,
    }
    if run.training.test is not None:
        summary["test"] = evaluate(run.plugin, run.training.test)
    return summary


def train_site_summary(*, site: str, out: Path, **kwargs) -> dict:
    """:func:`train_site`, then its :func:`run_summary` (``forge train``)."""
    return run_summary(train_site(site=site, out=out, **kwargs), site=site, out=out)
