"""Re-derive a membership result from the signals its file keeps, without training.

    rescore(results_or_path)                        # the original figures, recomputed
    rescore(results, "rmia")                        # another attack on the same references
    rescore(results, "lira", fixed_variance=True, references=16)   # a variant, the first 16 references

The signals (:mod:`attacks.membership.signals`) are checked against their digests first; an
edited file is refused. The answer has the format of :func:`attacks.membership.run.run_mia`'s
results (so it can be written, plotted, audited and rescored again), with a ``rescored``
entry saying where it came from. The first ``k`` references are exactly those of a run with
``k`` references (reference i's split and seed depend only on the run's seed and i), so
``references=k`` reproduces a smaller run.
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import fields
from pathlib import Path
from typing import Any

from forge_secure import __version__
from forge_secure.errors import ForgeConfigError, ForgeDataError

from .evaluate import measure
from .signals import Signals


def _settings(results: dict, attack: str | None, overrides: dict):
    from .run import MiaSettings

    names = {f.name for f in fields(MiaSettings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ForgeConfigError(
            f"unknown rescore setting(s) {', '.join(unknown)}", fix=f"use: {', '.join(sorted(names - {'attack'}))}", code="attack.settings"
        )
    old = results.get("settings") or {}
    kw = {k: old[k] for k in names if k in old}
    if attack is not None and attack != results.get("attack"):
        # another attack: the run-wide settings stay, the old attack's own ones do not carry over
        kw = {k: v for k, v in kw.items() if k in ("references", "online", "seed", "n_boot", "confidence", "p_target", "audit_fraction")}
    kw["attack"] = attack or results.get("attack")
    kw.update(overrides)
    return MiaSettings(**kw)


def rescore(results: dict | str | Path, attack: str | None = None, **settings: Any) -> dict:
    """Recompute ``attack``'s scores, metrics and empirical epsilon (default: the file's own
    attack and settings) from the per-record signals of a membership results file or dict.
    ``settings`` are :class:`~attacks.membership.run.MiaSettings` fields (``online``,
    ``fixed_variance``, ``rmia_a``, ``gamma``, ``temperature``, ``references``, ``seed``,
    ``n_boot``, ...). Raises ``ForgeDataError`` (code ``attack.signals_tampered``) when the
    signals do not match their digests, ``attack.no_signals`` for a file without them."""
    from .results import load_results, results_jsonable, validate_results

    if isinstance(results, (str, Path)):
        where = str(results)
        results = load_results(results)
    else:
        where = "results"
        results = validate_results(results, where)
    signals = Signals.from_json(results.get("signals"), where)
    if list(signals.membership) != [int(v) for v in results["labels"]]:
        raise ForgeDataError(
            f"{where}: the membership labels differ from those in its signals",
            fix="use the results file as forge attack mia wrote it",
            code="attack.signals_tampered",
        )
    chosen = _settings(results, attack, settings)
    k = chosen.references
    if k > signals.references:
        raise ForgeConfigError(
            f"references={k}, but the file holds the signals of {signals.references} reference models",
            fix=f"use references={signals.references} or fewer",
            code="attack.references",
        )
    used = signals.first(k)
    canary_block = copy.deepcopy(results.get("canaries"))
    if isinstance(canary_block, dict):
        canary_block.pop("metrics_records_only", None)
    measured = measure(used, chosen, claimed=results["claimed_epsilon"], coin_flip=bool(results["coin_flip"]), canary_block=canary_block)
    out = copy.deepcopy(results)
    old_settings = results.get("settings") or {}
    out.update(
        {
            "attack": measured["attack"],
            "settings": {**measured["settings"], "workers": old_settings.get("workers"), "ray": old_settings.get("ray")},
            "scores": measured["scores"],
            "labels": measured["labels"],
            "is_canary": measured["is_canary"],
            "metrics": measured["metrics"],
            "empirical_epsilon": measured["empirical_epsilon"],
            "canaries": measured["canaries"],
            "rescored": {
                "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "toolkit_version": __version__,
                "from_attack": results.get("attack"),
                "from_created": results.get("created"),
                "signals_digest": results["signals"]["digest"],
                "references_used": measured["references_used"],
            },
        }
    )
    refs = dict(results.get("references") or {})
    if measured["references_used"] != refs.get("count"):
        mask = used.reference_in_mask[: measured["references_used"]]
        refs.update(
            count=measured["references_used"],
            cache_keys=list(refs.get("cache_keys", []))[: measured["references_used"]],
            in_per_candidate={"min": int(mask.sum(0).min()) if mask.size else 0, "max": int(mask.sum(0).max()) if mask.size else 0},
        )
        out["references"] = refs
    return results_jsonable(out)
