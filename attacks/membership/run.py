"""One membership-inference run end to end, and its results file.

:func:`run_mia` loads the target (plugin, merged plugin or Mixture), the candidate records
with their membership labels, and the population data; trains or loads the reference
models; scores every candidate with the chosen attack; and computes the metrics with
intervals and the empirical epsilon beside the claimed one. The returned dict is the
results file (:func:`write_results`), from which reports can be rebuilt without rerunning.

The results file (its format, schema, reading, writing and summary) is :mod:`.results`;
its names are re-exported here.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forge_secure import __version__
from forge_secure.errors import ForgeConfigError, ForgeValueError

from ..references import train_references
from .base import MEMBERSHIP_ATTACKS, TooFewReferences, make_attack
from .evaluate import empirical_epsilon, measure  # noqa: F401  (empirical_epsilon: re-exported)
from .results import RESULTS_FORMAT, results_jsonable
from .results import RESULTS_SCHEMA as RESULTS_SCHEMA  # re-exported: the results file lives in .results
from .results import load_results as load_results
from .results import summary_lines as summary_lines
from .results import validate_results as validate_results
from .results import write_results as write_results
from .signals import Signals
from .target import AttackTarget, load_target


@dataclass(frozen=True)
class MiaSettings:
    """Settings of one run; validated on construction.

    The default attack and variant (LiRA online, per-record variance, 16 references) were
    chosen by measurement: at 16 references it had the highest ROC AUC averaged over three
    targets, on the selection seed and again on fresh references
    (``benchmarks/bench_default_attack.py``, docs/benchmarks.md "default-attack"); the
    differences between the leading variants are within their bootstrap intervals.
    """

    attack: str = "lira"
    references: int = 16
    online: bool = True
    fixed_variance: bool = False
    rmia_a: float | None = None
    gamma: float = 1.0
    temperature: float = 2.0
    seed: int = 0
    n_boot: int = 1000
    confidence: float = 0.95
    p_target: float = 0.05
    audit_fraction: float = 0.1

    def __post_init__(self) -> None:
        MEMBERSHIP_ATTACKS.get(self.attack)  # unknown names list the registered ones
        if not isinstance(self.references, int) or isinstance(self.references, bool) or not 0 <= self.references <= 4096:
            raise ForgeConfigError(
                f"references={self.references!r} must be an integer from 0 to 4096",
                fix="use e.g. --references 16",
                code="attack.references",
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ForgeConfigError(f"seed={self.seed!r} must be a non-negative integer", code="attack.seed")
        if not isinstance(self.n_boot, int) or self.n_boot < 10:
            raise ForgeConfigError(f"n_boot={self.n_boot!r} must be an integer >= 10", code="attack.n_boot")
        for name in ("confidence", "p_target"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ForgeConfigError(f"{name}={v!r} must be in (0, 1)", code="attack.settings")
        if not 0 < self.audit_fraction <= 0.5:
            raise ForgeConfigError(f"audit_fraction={self.audit_fraction!r} must be in (0, 0.5]", code="attack.settings")
        self.make_attack()  # validates the attack's own settings

    def make_attack(self):
        """The registered attack, given those of these settings that are its parameters."""
        shared = {
            "online": self.online,
            "fixed_variance": self.fixed_variance,
            "a": self.rmia_a,
            "gamma": self.gamma,
            "temperature": self.temperature,
        }
        params = MEMBERSHIP_ATTACKS.get(self.attack)._get_param_names()
        return make_attack(self.attack, **{k: v for k, v in shared.items() if k in params})


@dataclass(frozen=True)
class Candidates:
    """Candidate records, their membership labels (1 = member) and where the labels came from."""

    data: Any  # forge_secure.plugins.data.Dataset
    labels: np.ndarray
    coin_flip: bool
    provenance: dict


def _commitment_check(meta: dict, seed: int, n: int) -> bool:
    """Compare a membership seed and pool size with the target's recorded commitment."""
    from forge_secure.plugins.data import seed_sha256

    record = (meta.get("data") or {}).get("membership") or {}
    if not record:
        return False
    if record.get("seed_sha256") and record["seed_sha256"] != seed_sha256(seed):
        raise ForgeValueError(
            "the membership seed does not match the target's forge.json commitment (sha256 of the seed differs)",
            fix="give the seed the site used (--membership-seed) and the same candidate pool the target was drawn from",
            code="attack.membership_mismatch",
        )
    if record.get("pool_rows") is not None and int(record["pool_rows"]) != n:
        raise ForgeValueError(
            f"the candidate data has {n} records but the target's training set was drawn from a pool of {record['pool_rows']}",
            fix="give the site's whole candidate pool (e.g. bundled:site-1)",
            code="attack.membership_mismatch",
        )
    return True


def resolve_candidates(
    spec: str,
    *,
    meta: dict,
    membership_seed: int | None = None,
    nonmembers: str | None = None,
    label_column: str | None = None,
    check_data=None,
) -> Candidates:
    """The candidate records and labels.

    - ``nonmembers`` given: ``spec`` holds the members and ``nonmembers`` the non-members
      (membership not by coin flips: the one-run audit does not apply);
    - ``bundled:site-N`` (or ``/pool``, ``/train``, ``/holdout``): that site's whole pool,
      labelled by the site's coin flips (or ``membership_seed``);
    - any other data: the pool the site drew its training set from, labelled by
      ``draw_membership(n, membership_seed, include_prob)``.
    The seed is checked against the target's commitment (sha256 of the seed, pool size),
    after ``check_data(dataset)`` (e.g. the column check) has accepted the records.
    """
    from forge_secure.plugins.data import draw_membership, is_bundled, load_data, resolve_bundled, seed_sha256

    if nonmembers is not None:
        members, non = load_data(spec, label_column=label_column), load_data(nonmembers, label_column=label_column)
        if check_data is not None:
            check_data(members)
            check_data(non)
        data = members.concat(non, name=f"{members.name} + {non.name}")
        labels = np.r_[np.ones(len(members), np.int64), np.zeros(len(non), np.int64)]
        return Candidates(
            data, labels, False, {"source": "explicit", "members": members.name, "non_members": non.name, "commitment_checked": False}
        )
    record = (meta.get("data") or {}).get("membership") or {}
    if is_bundled(spec):
        _, shard, part = resolve_bundled(spec)
        if shard is None or part == "test":
            raise ForgeValueError(
                f"{spec} holds no candidate records (members and non-members of a site)",
                fix="give a site's pool, e.g. --data bundled:site-1",
                code="attack.candidates",
            )
        data = shard.pool
        seed = shard.membership_seed if membership_seed is None else membership_seed
        include_prob = shard.include_prob
    else:
        data = load_data(spec, label_column=label_column)
        if membership_seed is None:
            raise ForgeValueError(
                f"the membership of the records in {spec} is unknown",
                fix="give the site's --membership-seed (the pool's coin flips), or the non-members with --nonmembers",
                code="attack.membership_missing",
            )
        seed = membership_seed
        include_prob = float(record.get("include_prob", 0.5))
    if check_data is not None:
        check_data(data)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ForgeValueError(f"membership seed {seed!r} must be a non-negative integer", code="attack.membership_seed")
    checked = _commitment_check(meta, int(seed), len(data))
    labels = draw_membership(len(data), int(seed), include_prob).astype(np.int64)
    return Candidates(
        data,
        labels,
        abs(include_prob - 0.5) < 1e-12,
        {"source": "seed", "include_prob": include_prob, "seed_sha256": seed_sha256(int(seed)), "commitment_checked": checked},
    )


def _check_columns(target: AttackTarget, data, what: str) -> None:
    """The one data-compatibility check (codes ``data.*``), against the target's base."""
    from forge_secure.plugins.sources import check_compatible

    check_compatible(target.base, data, what)


def run_mia(
    target: str | Path,
    data: str,
    *,
    settings: MiaSettings | None = None,
    population: str | None = "auto",
    membership_seed: int | None = None,
    nonmembers: str | None = None,
    base: str | None = None,
    recipe: str | Path | None = None,
    component: str | None = None,
    label_column: str | None = None,
    workers: int | None = None,
    ray: str | None = None,
    cache: bool = True,
    canary_seed: int | None = None,
    use_canaries: bool = True,
    batch: bool | None = None,
) -> dict:
    """Run one attack and return the results dict (see the module docstring).

    ``population="auto"`` uses the bundled public split when the candidates are bundled,
    and none otherwise; ``None`` or ``"none"`` disables it. ``recipe`` is a plugin directory
    whose recipe trains the references (needed for merged plugins without their own).

    Canaries: when the target was trained with ``--canaries M`` and the canary seed is
    known (``canary_seed``, or the default seed ``forge train`` derives from the site and
    training seed, recognised by its sha256 in forge.json), the M canaries are regenerated
    and added to the candidates with their coin-flip labels (``is_canary`` marks them), and
    the one-run audit is also run on the canaries alone.
    """
    from forge_secure.plugins.data import is_bundled, load_data, seed_sha256
    from forge_secure.plugins.record import read_plugin

    settings = settings or MiaSettings()
    attack = settings.make_attack()
    need = attack.min_references()
    if settings.references < need:
        raise TooFewReferences(
            f"attack {settings.attack!r} ({attack._variant()}) needs at least {need} reference models, got {settings.references}",
            fix=f"use --references {need} or more"
            + (", or --fixed-variance" if settings.attack == "lira" and not settings.fixed_variance else ""),
        )
    seed_sha = seed_sha256(membership_seed) if isinstance(membership_seed, int) and membership_seed >= 0 else None
    if seed_sha is None and is_bundled(data):
        from forge_secure.plugins.data import resolve_bundled

        _, shard, _ = resolve_bundled(data)
        seed_sha = seed_sha256(shard.membership_seed) if shard is not None else None
    tgt = load_target(target, base=base, component=component, membership_seed_sha256=seed_sha)
    cands = resolve_candidates(
        data,
        meta=tgt.meta,
        membership_seed=membership_seed,
        nonmembers=nonmembers,
        label_column=label_column,
        check_data=lambda d: _check_columns(tgt, d, "candidate data"),
    )
    canary_block, cands = _with_canaries(tgt.meta, cands, canary_seed, use_canaries)
    if population == "auto":
        population = (
            "bundled:public"
            if is_bundled(data) and data.startswith("bundled:")
            else ("bundled-digits:public" if is_bundled(data) else None)
        )
    pop = None
    if population not in (None, "none"):
        pop = load_data(population, label_column=label_column)
        _check_columns(tgt, pop, "population data")
    if attack.needs_population and pop is None:
        raise ForgeValueError(
            f"attack {settings.attack!r} needs population data",
            fix="give --population (e.g. bundled:public)",
            code="attack.population_missing",
        )
    # a recipe plugin of another base than the target's: plugin.base_mismatch, as everywhere
    recipe_meta = read_plugin(recipe, base=tgt.base, weights=False).meta if recipe is not None else tgt.meta

    refs = None
    n_refs = settings.references if need > 0 else 0
    if n_refs:
        refs = train_references(
            recipe_meta,
            cands.data,
            pop,
            count=n_refs,
            seed=settings.seed,
            online=settings.online,
            workers=workers,
            ray=ray,
            cache=cache,
            base_digest=tgt.base.digest,
            mixture=tgt.mixture_context(),
            batch=batch,
        )
    t_logits = np.asarray(tgt.logits(cands.data.X), dtype=np.float64)
    pop_t_logits = np.asarray(tgt.logits(pop.X), dtype=np.float64) if pop is not None else None
    n, C = t_logits.shape
    signals = Signals(
        target_logits=t_logits,
        class_labels=cands.data.y,
        membership=cands.labels,
        is_canary=np.asarray(cands.provenance.get("is_canary", np.zeros(len(cands.labels), bool)), dtype=bool),
        reference_logits=refs.candidate_logits if refs is not None else np.zeros((0, n, C)),
        reference_in_mask=refs.in_mask if refs is not None else np.zeros((0, n), bool),
        population_target_logits=pop_t_logits,
        population_labels=pop.y if pop is not None else None,
        population_reference_logits=(refs.population_logits if refs is not None else np.zeros((0, len(pop), C)))
        if pop is not None
        else None,
        population_in_mask=(refs.population_in_mask if refs is not None else np.zeros((0, len(pop)), bool)) if pop is not None else None,
        online=settings.online,
        seed=settings.seed,
    )
    measured = measure(signals, settings, claimed=tgt.claimed_epsilon, coin_flip=cands.coin_flip, canary_block=canary_block)
    results = {
        "format": RESULTS_FORMAT,
        "kind": "membership",
        "toolkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "attack": settings.attack,
        "settings": {**measured["settings"], "workers": workers, "ray": ray},
        "target": tgt.describe(),
        "data": {
            "candidates": {"name": cands.data.name, "digest": cands.data.digest(), "rows": len(cands.data)},
            "population": None if pop is None else {"name": pop.name, "digest": pop.digest(), "rows": len(pop)},
        },
        "membership": {k: v for k, v in cands.provenance.items() if k != "is_canary"},
        "is_canary": measured["is_canary"],
        "coin_flip": cands.coin_flip,
        "scores": measured["scores"],
        "labels": measured["labels"],
        "references": refs.summary() if refs is not None else {"count": 0, "note": f"attack {settings.attack!r} uses no reference models"},
        "metrics": measured["metrics"],
        "claimed_epsilon": tgt.claimed_epsilon,
        "empirical_epsilon": measured["empirical_epsilon"],
        "canaries": measured["canaries"],
        "signals": signals.to_json(),
    }
    return results_jsonable(results)


def _with_canaries(meta: dict, cands: Candidates, canary_seed: int | None, use: bool) -> tuple[dict | None, Candidates]:
    """Add the target's canaries (regenerated from their seed) to the candidates."""
    from forge_secure.plugins.data import seed_sha256
    from forge_secure.plugins.sources import canary_set, default_canary_seed

    record = (meta.get("data") or {}).get("canaries") or {}
    count = int(record.get("count") or 0)
    if not count or not use:
        if canary_seed is not None and not count:
            raise ForgeValueError(
                "a canary seed was given but the target was trained without canaries", fix="drop --canary-seed", code="attack.no_canaries"
            )
        return ({"count": count, "used": False, "note": "not used"} if count else None), cands
    recorded = record.get("seed_sha256")
    if canary_seed is not None:
        if seed_sha256(canary_seed) != recorded:
            raise ForgeValueError(
                "the canary seed does not match the target's forge.json commitment",
                fix="give the --canary-seed used for forge train --canaries",
                code="attack.canary_mismatch",
            )
        seed = canary_seed
    else:
        guess = default_canary_seed(str(meta.get("site", "")), int((meta.get("training") or {}).get("seed", 0)))
        if seed_sha256(guess) != recorded:
            return {"count": count, "used": False, "note": "canary seed unknown: give --canary-seed to use the canaries"}, cands
        seed = guess
    canaries, included = canary_set(count, cands.data, seed)
    data = cands.data.concat(canaries, name=cands.data.name + f" + {count} canaries")
    labels = np.r_[cands.labels, included.astype(np.int64)]
    provenance = {**cands.provenance, "canaries": count, "is_canary": np.r_[np.zeros(len(cands.data), bool), np.ones(count, bool)]}
    block = {
        "count": count,
        "used": True,
        "included": int(included.sum()),
        "seed_sha256": recorded,
        "include_prob": record.get("include_prob", 0.5),
    }
    return block, Candidates(data, labels, cands.coin_flip and abs(float(record.get("include_prob", 0.5)) - 0.5) < 1e-12, provenance)
