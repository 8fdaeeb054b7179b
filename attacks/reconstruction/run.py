"""The three reconstruction attacks run end to end on a plugin, each returning one results
dictionary (empirical success with its interval, the random baseline, the ReRo bound, the
settings), registered by name in :data:`RECONSTRUCTION_ATTACKS` for the ``forge attack recon`` command.

- ``gradient``: invert one plugin update (one local SGD step on a batch of records, or, for
  a DP plugin, one noisy DP-SGD gradient simulated with the plugin's noise multiplier and
  clipping norm). The bound is for that one release: (sigma, q = 1, T = 1), kappa the
  baseline's success probability.
- ``informed``: the informed adversary's game with the plugin's DP-SGD recipe; bound for the
  recipe's (sigma, q, T) at kappa = 1/n.
- ``canary``: retrain with the plugin's recipe on the data with canaries inserted, rank them.

A merged plugin (``"kind": "merged"``) records no DP-SGD recipe; each attack then takes
``recipe=`` (a parent site plugin's directory, as ``forge attack mia --recipe``): the gradient
attack inverts one update of the merged model's trainable tensors with the recipe's DP
setting, the informed game runs the recipe site's DP-SGD and releases the merge with the
other parents fixed (mode ``model``, the site's ReRo bound: the merge is post-processing of
the site's release; ``ties``, ``dare`` and ``sequential`` merges are redone from every parent,
given as ``parents=``, see :mod:`.merged`), the canary test retrains with the recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forge_secure.errors import ForgeValueError
from forge_secure.registry import Registry

from . import plots
from .bounds import rero_bound_dp, rero_bound_dpsgd
from .canary import CanaryConfig, CanaryExposure, base_logits_fn
from .gradients import DPSetting, gradient_from_update, noisy_dp_gradient, one_step_update, to_tensor
from .informed import INFORMED_MODES, InformedAdversary, InformedConfig, MergeRelease
from .inversions import INVERSIONS
from .labels import LABEL_MODES
from .measures import DEFAULT_TOLERANCE
from .merged import REDO_METHODS
from .target import check_data, lora_functional, merge_redo, recipe_record, resolve_recipe
from .target import target_record as target_record  # re-exported: the CLI reads it from here

RECONSTRUCTION_ATTACKS: Registry[Callable[..., dict]] = Registry("reconstruction attack")


@dataclass
class ReconSettings:
    """Settings shared by the attacks (each uses the ones it needs). Validated on construction."""

    trials: int = 10
    seed: int = 0
    batch_size: int = 1
    steps: int | None = None  # inversion steps (default: 1,500 tabular, 2,000 images)
    restarts: int | None = None  # inversion restarts (default: 8 tabular, 4 images)
    labels: str = "given"
    tolerance: float = DEFAULT_TOLERANCE
    dp: str = "plugin"  # gradient attack: "plugin" (noise as recorded) or "none" (the update without noise)
    candidates: int = 10
    mode: str = "gradients"
    repetitions: tuple[int, ...] = (0, 1, 2, 4, 8)
    canaries_per_repetition: int = 4
    canary_candidates: int = 100
    bound_samples: int = 100_000
    plot_records: int = 3

    def __post_init__(self) -> None:
        def pos(name: str) -> None:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ForgeValueError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}", code="recon.settings")

        for name in (
            "trials",
            "batch_size",
            "steps",
            "restarts",
            "candidates",
            "canaries_per_repetition",
            "canary_candidates",
            "bound_samples",
        ):
            pos(name)
        if self.labels not in LABEL_MODES:
            raise ForgeValueError(f"unknown label mode {self.labels!r}", fix=f"use one of: {', '.join(LABEL_MODES)}", code="recon.settings")
        if self.mode not in INFORMED_MODES:
            raise ForgeValueError(
                f"unknown informed mode {self.mode!r}", fix=f"use one of: {', '.join(INFORMED_MODES)}", code="recon.settings"
            )
        if self.dp not in ("plugin", "none"):
            raise ForgeValueError(f"unknown dp setting {self.dp!r}", fix="use plugin or none", code="recon.settings")
        if not (0 < self.tolerance):
            raise ForgeValueError(f"tolerance must be > 0, got {self.tolerance!r}", code="recon.settings")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ForgeValueError(f"seed must be a non-negative integer, got {self.seed!r}", code="recon.settings")
        self.repetitions = tuple(self.repetitions)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["repetitions"] = list(self.repetitions)
        return d


# --------------------------------------------------------------------------- gradient inversion
@RECONSTRUCTION_ATTACKS.register("gradient")
def run_gradient(
    plugin,
    data,
    prior,
    settings: ReconSettings,
    *,
    plot: str | Path | None = None,
    categorical: tuple[tuple[int, ...], ...] = (),
    recipe: str | Path | None = None,
    **_: Any,
) -> dict:
    """Invert ``settings.trials`` updates, each one local step on ``batch_size`` records of
    ``data``; ``prior`` is the attacker's population data (bounds, starting points, baseline).
    For a merged plugin, ``recipe`` (a parent site plugin) gives the DP setting and learning
    rate; the update is one of the merged model's trainable tensors."""
    check_data(plugin, data)
    check_data(plugin, prior, "population prior")
    if data.kind not in INVERSIONS:  # text: token ids are discrete, a continuous inversion would report a meaningless figure
        raise ForgeValueError(
            f"gradient inversion works on {' and '.join(INVERSIONS.names())} records, {data.name!r} holds {data.kind} "
            "records (discrete token ids)",
            fix="attack a text plugin with --kind informed or --kind canary",
            code="recon.kind",
        )
    s = settings
    meta, rdir, index = resolve_recipe(plugin, recipe)
    fn = lora_functional(plugin)
    lr = float((meta.get("training") or {}).get("lr") or 0.05)
    dp = DPSetting.from_meta(meta.get("dp") or {}) if s.dp == "plugin" else None
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31 - 1)))
    need = s.trials * s.batch_size
    if need > len(data):
        raise ForgeValueError(
            f"{s.trials} trials of {s.batch_size} record(s) need {need} records, {data.name!r} holds {len(data)}",
            fix="lower --trials or --batch-size, or give more data",
            code="recon.data_small",
        )
    order = rng.permutation(len(data))[:need].reshape(s.trials, s.batch_size)
    inversion = INVERSIONS.get(data.kind)(s, fn, data, prior, categorical)
    attack, cfg = inversion.attack, inversion.config
    recs, truths, labels_ok = [], [], 0
    started = time.perf_counter()
    for t in range(s.trials):
        idx = order[t]
        x = to_tensor(data.X[idx], fn.dtype)
        y = torch.tensor(data.y[idx], dtype=torch.long)
        if dp is None:
            g = gradient_from_update(one_step_update(fn, x, y, lr), lr)
        else:
            g = noisy_dp_gradient(fn, x, y, dp, generator=gen)
        given = data.y[idx] if s.labels == "given" else None
        r = attack.reconstruct(g, s.batch_size, given, n_classes=plugin.base.n_classes, seed=rng)
        recs.append(r.records)
        truths.append(np.asarray(data.X[idx], dtype=np.float64))
        labels_ok += int(np.array_equal(np.sort(r.labels), np.sort(data.y[idx])))
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "kind": "gradient",
        "observed": ("one noisy DP-SGD gradient (plugin's noise multiplier and clipping norm)" if dp else f"one local SGD step (lr {lr})")
        + (
            f" of the merged model's trainable tensors, with the DP setting and lr of site {meta.get('site')}'s recipe"
            if index is not None
            else ""
        ),
        "seconds": seconds,
        "seconds_per_record": seconds / need,
        "labels_recovered": {"rate": labels_ok / s.trials, "mode": s.labels},
        "recipe": recipe_record(plugin, meta, rdir, index),
        "settings": {**s.to_dict(), "inversion": cfg.to_dict(), "lr": lr, "dp": asdict(dp) if dp else None},
    }
    out.update(inversion.outcome(plugin, recs, truths, prior, dp, s, plot))
    return out


# --------------------------------------------------------------------------- informed adversary
RESULTS_FORMAT = "forge-recon-results/1"
"""Format tag of an informed-adversary results file, as the audit reads it."""


@RECONSTRUCTION_ATTACKS.register("informed")
def run_informed(
    plugin,
    data,
    prior,
    settings: ReconSettings,
    *,
    plot: str | Path | None = None,
    recipe: str | Path | None = None,
    parents: Sequence[str | Path] | None = None,
    **_: Any,
) -> dict:
    """The informed adversary with the plugin's DP-SGD recipe: ``data`` holds the known records
    (all the training set but the target), candidates come from ``prior``.

    For a merged plugin, ``recipe`` is a parent site plugin: the game runs that site's DP-SGD
    (from the site's plugin, on the known records plus the target), releases the merge with
    the other parents fixed, and the attacker sees only that merged model (mode ``model``);
    the bound is the site's (sigma, q, T), since the merge is post-processing of its release.
    ``ties``, ``dare`` and ``sequential`` merges are redone from every parent
    (:mod:`.merged`): ``parents`` are the other parents' plugin directories; the adversary
    scores each candidate by the distance between the released merge and the merge of its
    expected run (:func:`.informed.expected_run`)."""
    check_data(plugin, data)
    check_data(plugin, prior, "population prior")
    s = settings
    meta, rdir, index = resolve_recipe(plugin, recipe)
    merged = index is not None
    release = None
    if index is not None:
        assert rdir is not None  # resolve_recipe gives a merged plugin's recipe directory with its index
        from forge_secure.plugins import load_plugin

        site_plugin = load_plugin(rdir, base=plugin.base)
        fn = lora_functional(site_plugin)
        weights = (plugin.meta.get("merge") or {}).get("weights")
        if not isinstance(weights, list) or len(weights) <= index:
            raise ForgeValueError(
                f"the merged plugin {plugin.path} records no merge weight for parent {index} (site {meta.get('site')})",
                fix="attack a merge written by forge merge or forge he",
                code="recon.merge_weight",
            )
        lora = meta.get("lora") or {}
        rank, alpha = int(lora.get("rank") or 8), float(lora.get("alpha") or 16)
        scaling = alpha / (rank**0.5 if lora.get("rslora") else rank)
        method = str((plugin.meta.get("merge") or {}).get("method"))
        if method in REDO_METHODS:
            release = merge_redo(plugin, rdir, index, fn, parents)
        else:
            release = MergeRelease(
                lora_functional(plugin), float(weights[index]), fn.params, scaling=scaling, method=method, site_frozen=fn.frozen
            )
        cfg = InformedConfig.from_meta(meta, candidates=s.candidates, mode="model", bound_samples=s.bound_samples)
    else:
        fn = lora_functional(plugin)
        cfg = InformedConfig.from_meta(meta, candidates=s.candidates, mode=s.mode, bound_samples=s.bound_samples)
    rows = int((meta.get("data") or {}).get("rows") or len(data))
    known = data.subset(np.arange(min(len(data), max(1, rows - 1))))
    started = time.perf_counter()
    res = InformedAdversary(cfg).fit(fn, known.X, known.y, release=release).run(prior.X, prior.y, s.trials, seed=s.seed)
    seconds = time.perf_counter() - started
    dp = meta.get("dp") or {}
    generic = None
    if dp.get("enabled"):
        generic = rero_bound_dp(float(dp["epsilon"]), float(dp["delta"]), 1.0 / cfg.candidates)
    redo = getattr(release, "score_space", None) is not None
    if release is not None:  # merged: the attack ran against the re-released merge
        if redo:
            how = (
                f"(the {release.method} merge redone from all {len(release.parents)} parents with its recorded settings; "
                "candidates scored by the distance between the released merge and the merge of each candidate's expected run, "
                "in the merged updates s B A)"
            )
        elif release.blocks is None:
            how = f"(merged tensors + weight {release.weight:.4g} x the site's change)"
        else:
            how = "(the site's block of the concatenated merge replaced by its new tensors)"
        observed = (
            f"only the merged plugin, re-released after site {meta.get('site')} ran DP-SGD with its recipe on the known "
            f"records plus the target (from its own plugin) and the merge was redone with the other parents fixed " + how
        )
        applies = (
            f"site {meta.get('site')}'s DP-SGD release (sigma, q, T of its recipe): the merge is post-processing of it, "
            "so the site's ReRo bound holds for the merged model"
        )
    else:
        observed = "every noisy gradient of the run" if cfg.mode == "gradients" else "the final plugin only"
        applies = "the plugin's DP-SGD release (sigma, q, T of its recipe)"
    out = {
        "format": RESULTS_FORMAT,
        "kind": "informed",
        # the figures the audit's reconstruction check reads (audits/README.md)
        "successes": res["success"]["successes"],
        "trials": res["success"]["trials"],
        "kappa": res["baseline"],
        "observed": observed,
        "mode": cfg.mode,
        "recipe": recipe_record(plugin, meta, rdir, index),
        "merge_redo": release.record() if redo and release is not None else None,
        "success": res["success"],
        "baseline": res["baseline"],
        "bound": {**res["bound"], "epsilon_delta_bound": generic, "applies_to": applies},
        "within_bound": res["within_bound"],
        "headline": {
            "metric": "target identified among candidates",
            "rate": res["success"]["rate"],
            "ci": res["success"]["ci"],
            "baseline": res["baseline"],
            "bound": res["bound"]["bound"],
        },
        "seconds": seconds,
        "settings": {**s.to_dict(), "game": res["settings"], "known_records": len(known)},
    }
    if plot:
        plots.bars_figure(
            [f"sigma {cfg.noise_multiplier:g}"],
            [res["success"]["rate"]],
            [res["success"]["ci"][0]],
            [res["success"]["ci"][1]],
            res["baseline"],
            [res["bound"]["bound"]],
            plot,
            f"informed adversary ({cfg.mode}{', merged' if merged else ''}), {s.trials} trials",
            "target identified",
        )
    return out


# --------------------------------------------------------------------------- canary exposure
@RECONSTRUCTION_ATTACKS.register("canary")
def run_canary(
    plugin,
    data,
    prior,
    settings: ReconSettings,
    *,
    plot: str | Path | None = None,
    train_fn: Callable | None = None,
    recipe: str | Path | None = None,
    **_: Any,
) -> dict:
    """Retrain with the plugin's recipe (for a merged plugin: ``recipe``, a parent site plugin)
    on ``data`` plus canaries repeated r times; rank them."""
    from forge_secure.plugins import make_canaries

    check_data(plugin, data)
    s = settings
    meta, rdir, index = (plugin.meta, None, None) if train_fn is not None and recipe is None else resolve_recipe(plugin, recipe)
    attack = CanaryExposure(CanaryConfig(s.repetitions, s.canaries_per_repetition, s.canary_candidates)).fit(data, make_canaries, s.seed)
    if train_fn is None:
        from forge_secure.privacy import TrainConfig, train_plugin

        if meta.get("kind") != "trained":
            raise ForgeValueError(
                f"the canary test retrains with the plugin's recipe; {plugin.path} is a {meta.get('kind')} plugin",
                fix="attack a trained plugin, or pass --recipe with a parent site plugin",
                code="recon.no_recipe",
            )
        train_config = replace(TrainConfig.from_meta(meta), seed=s.seed)

        def train_fn(ds):
            return train_plugin(train_config, ds, site="canary-audit", base=plugin.base)

    started = time.perf_counter()
    model = train_fn(attack.training_set_)
    exposures = attack.score(model.logits, base_logits_fn(plugin.base))
    seconds = time.perf_counter() - started
    dp = (getattr(model, "meta", None) or {}).get("dp") or {}
    kappa = 1.0 / s.canary_candidates
    if dp.get("enabled"):
        b = rero_bound_dpsgd(
            float(dp["noise_multiplier"]), float(dp["sample_rate"]), int(dp["steps"]), kappa, samples=s.bound_samples, seed=s.seed
        )
        bound_value = b.bound
        bound = {
            "bound": bound_value,
            "mc_stderr": b.mc_stderr,
            "kappa": kappa,
            "noise_multiplier": b.noise_multiplier,
            "sample_rate": b.sample_rate,
            "steps": b.steps,
            "epsilon": dp.get("epsilon"),
            "applies_to": "r = 1",
        }
    else:
        bound_value = 1.0
        bound = {"bound": bound_value, "kappa": kappa, "note": "trained without DP: no bound"}
    summary = attack.summary(exposures, bound_value)
    top = summary["by_repetition"][-1]
    out = {
        "kind": "canary",
        "observed": (
            "the plugin retrained with its recipe"
            if index is None
            else f"a site plugin retrained with the recipe of site {meta.get('site')} (a parent of the merged target)"
        )
        + " on the data with canaries inserted; candidates ranked by their loss under it minus their loss under the public base",
        "recipe": recipe_record(plugin, meta, rdir, index),
        "success": summary,
        "baseline": {"rank1": kappa, "mean_exposure_bits": summary["chance_exposure_bits"]},
        "bound": bound,
        "headline": {
            "metric": "mean exposure (bits) at the most repetitions",
            "rate": top["rank1"]["rate"],
            "ci": top["rank1"]["ci"],
            "exposure_bits": top["mean_exposure_bits"],
            "baseline": kappa,
            "bound": bound["bound"],
        },
        "seconds": seconds,
        "settings": s.to_dict(),
    }
    if plot:
        plots.bars_figure(
            [f"r={row['repetitions']}" for row in summary["by_repetition"]],
            [row["mean_exposure_bits"] / summary["max_exposure_bits"] for row in summary["by_repetition"]],
            [row["mean_exposure_bits"] / summary["max_exposure_bits"] for row in summary["by_repetition"]],
            [row["mean_exposure_bits"] / summary["max_exposure_bits"] for row in summary["by_repetition"]],
            summary["chance_exposure_bits"] / summary["max_exposure_bits"],
            None,
            plot,
            f"canary exposure (fraction of the {summary['max_exposure_bits']:.1f}-bit maximum)",
            "exposure / max",
        )
    return out
