"""The membership-inference results file: its format and JSON Schema, and the one place that
writes, reads and checks it (:func:`write_results`, :func:`load_results`,
:func:`validate_results`), with the CLI's summary lines.

Results file (format ``forge-mia-results/1``, JSON; ``"inf"`` stands for infinity)::

    format            "forge-mia-results/1"
    kind              "membership"
    toolkit_version   str
    created           ISO-8601 UTC time
    attack            "lira" | "rmia" | "loss" | "reference"
    settings          the attack's settings (as used: e.g. RMIA's tuned "a_used") and the run's
                      (references, online, seed, n_boot, confidence, ...)
    target            {"path", "kind": "plugin"|"merged"|"mixture", "site", "base": {"name",
                      "digest"}, "adapter_digest", ...}
    data              {"candidates": {"name", "digest", "rows"}, "population": {...} | null}
    membership        {"source": "seed"|"explicit", "include_prob", "seed_sha256",
                      "commitment_checked": bool}
    coin_flip         true when membership came from independent fair coin flips (one-run
                      audit valid)
    scores            [float] one per candidate, higher = member
    labels            [0|1]   1 = member (the positive class)
    references        {"count", "mode", "seed", "cached", "trained", "in_per_candidate",
                      "cache_keys"}
    metrics           attacks.metrics.attack_metrics(...): "auc" {"value", "ci"},
                      "tpr_at_fpr" [{"target_fpr", "tpr", "fpr_reached", "min_resolvable_fpr",
                      "threshold", "ci"}], "balanced_accuracy", "members", "non_members", ...
    claimed_epsilon   {"epsilon": float|"inf", "delta", "accountant", "dp_enabled"}
    empirical_epsilon {"clopper_pearson": {...split bound...}, "one_run": {...}|null,
                      "one_run_canaries": {...}|null, "epsilon_lb": max of the bounds,
                      "claimed": same as claimed_epsilon.epsilon, "exceeds_claim": bool}
    is_canary         [bool] per candidate: true for the target's canaries (added to the
                      candidates when their seed is known; their labels are their coin flips)
    canaries          null (no canaries), or {"count", "used", "included", "seed_sha256",
                      "metrics_records_only": metrics without the canaries}
    signals           the per-record signals the scores were computed from, with their
                      digests (:mod:`attacks.membership.signals`); ``rescore`` recomputes
                      any attack's scores and metrics from them without training

:data:`RESULTS_SCHEMA` is the JSON Schema that :func:`load_results` checks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.fileio import atomic_write_json, read_json_file
from forge_secure.numbers import encode

RESULTS_FORMAT = "forge-mia-results/1"

_NUM_OR_INF = {"anyOf": [{"type": "number"}, {"enum": ["inf", "-inf", "nan"]}]}
RESULTS_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": [
        "format",
        "kind",
        "attack",
        "settings",
        "target",
        "scores",
        "labels",
        "metrics",
        "claimed_epsilon",
        "empirical_epsilon",
        "membership",
        "coin_flip",
    ],
    "properties": {
        "format": {"const": RESULTS_FORMAT},
        "kind": {"const": "membership"},
        "attack": {"type": "string"},
        "settings": {"type": "object"},
        "target": {"type": "object", "required": ["path", "kind"]},
        "scores": {"type": "array", "items": {"type": "number"}, "minItems": 2},
        "labels": {"type": "array", "items": {"enum": [0, 1]}, "minItems": 2},
        "metrics": {"type": "object", "required": ["auc", "tpr_at_fpr"]},
        "claimed_epsilon": {"type": "object", "required": ["epsilon"], "properties": {"epsilon": _NUM_OR_INF}},
        "empirical_epsilon": {"type": "object", "required": ["epsilon_lb", "clopper_pearson"]},
        "membership": {"type": "object"},
        "coin_flip": {"type": "boolean"},
        "signals": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["format", "digests", "digest"]}]},
    },
}


def results_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON: numpy arrays and scalars as Python values, non-finite floats as
    ``"inf"``, ``"-inf"``, ``"nan"``."""
    if isinstance(obj, dict):
        return {str(k): results_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [results_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return results_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return encode(obj)
    return obj


def write_results(results: dict, path: str | Path) -> Path:
    """Write a results dict atomically as JSON (infinities as "inf")."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ForgeValueError(f"--out {path} is a directory", fix="give a file name such as results.json", code="attack.out")
    validate_results(results_jsonable(results), str(path))
    atomic_write_json(path, results_jsonable(results))
    return path


def validate_results(data: Any, where: str = "results") -> dict:
    import jsonschema

    if not isinstance(data, dict):
        raise ForgeDataError(
            f"{where} holds a {type(data).__name__}, not a results object",
            fix="give a file written by forge attack mia",
            code="attack.results_invalid",
        )
    if data.get("format") != RESULTS_FORMAT:
        raise ForgeDataError(
            f"{where} has format {data.get('format')!r}, expected {RESULTS_FORMAT!r}",
            fix="give a file written by forge attack mia",
            code="attack.results_format",
        )
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(RESULTS_SCHEMA).iter_errors(data))
    if error is not None:
        at = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ForgeDataError(
            f"{where} is invalid at {at}: {error.message[:200]}",
            fix="rerun forge attack mia; the file may be damaged",
            code="attack.results_invalid",
        )
    if len(data["scores"]) != len(data["labels"]):
        raise ForgeDataError(
            f"{where} has {len(data['scores'])} scores but {len(data['labels'])} labels",
            fix="rerun forge attack mia; the file may be damaged",
            code="attack.results_invalid",
        )
    return data


def load_results(path: str | Path) -> dict:
    """Read and check a results file (format, schema, one label per score)."""
    return validate_results(read_json_file(path, "attack results"), str(path))


def summary_lines(results: dict) -> list[str]:
    """A few human-readable lines for the CLI."""
    m, e = results["metrics"], results["empirical_epsilon"]
    auc = m["auc"]
    lines = [
        f"attack {results['attack']} on {results['target']['path']} ({results['target']['kind']}); "
        f"{m['members']} members, {m['non_members']} non-members; {results['references'].get('count', 0)} reference models",
        f"ROC AUC {auc['value']:.3f} (95% CI {auc['ci'][0]:.3f}-{auc['ci'][1]:.3f})",
    ]
    for r in m["tpr_at_fpr"]:
        lines.append(
            f"TPR at {100 * r['target_fpr']:g}% FPR: {100 * r['tpr']:.1f}% (CI {100 * r['ci'][0]:.1f}-{100 * r['ci'][1]:.1f}%), "
            f"FPR reached {100 * r['fpr_reached']:.2f}%"
            + (" (below 1/N: not resolvable)" if r["min_resolvable_fpr"] > r["target_fpr"] else "")
        )
    one = e.get("one_run")
    lines.append(
        f"empirical epsilon lower bound {e['epsilon_lb']:.3f} (Clopper-Pearson {e['clopper_pearson']['epsilon_lb']:.3f}"
        + (f", one-run {one['epsilon_lb']:.3f}" if one else "")
        + ") vs claimed epsilon "
        + (f"{e['claimed']:.3f}" if isinstance(e["claimed"], float) else str(e["claimed"]))
        + ("  ** EXCEEDS THE CLAIM **" if e.get("exceeds_claim") else "")
    )
    return lines
