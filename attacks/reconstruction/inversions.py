"""How the gradient attack inverts and judges records of each data kind, registered by kind in
:data:`INVERSIONS` (``tabular``: TabLeak-style, :class:`.tabular.TabularInversion`; ``image``:
Inverting Gradients-style, :class:`.image.ImageInversion`). ``run_gradient`` looks the kind up
here; a kind with no entry (token ids of text plugins) has no gradient inversion.

Each entry is a class built from the run's settings that holds the fitted inversion
(``attack``, its settings ``config``) and judges the reconstructions (``outcome``): success
with its interval, the random baseline, the ReRo bound of one observed update and the headline
of the results file, plus the picture when asked for.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from forge_secure.registry import Registry

from . import plots
from .bounds import rero_bound_dpsgd
from .features import FeatureSpec
from .gradients import DPSetting, LoraFunctional
from .image import ImageInversion
from .measures import (
    feature_hits,
    image_baseline,
    image_success,
    match_images,
    match_records,
    tabular_baseline,
    tabular_success,
)
from .tabular import TabularInversion

INVERSIONS: Registry[type[Inversion]] = Registry("inversion data kind")


def rate_bound(dp: DPSetting | None, kappa: float, samples: int, seed: int) -> dict:
    """ReRo bound for one observed noisy gradient of a batch holding the target (q = 1, T = 1)."""
    kappa = float(min(1.0, max(kappa, 1e-12)))
    if dp is None:
        return {"bound": 1.0, "kappa": kappa, "note": "no noise: no bound"}
    b = rero_bound_dpsgd(dp.noise_multiplier, 1.0, 1, kappa, samples=samples, seed=seed)
    return {
        "bound": b.bound,
        "mc_stderr": b.mc_stderr,
        "kappa": kappa,
        "noise_multiplier": dp.noise_multiplier,
        "sample_rate": 1.0,
        "steps": 1,
        "method": b.method + ", one observed step",
    }


class Inversion(abc.ABC):
    """One data kind's inversion, fitted to the attacked plugin (``attack``), and its judge."""

    attack: Any

    @abc.abstractmethod
    def __init__(self, settings, fn: LoraFunctional, data, prior, categorical: Sequence[Sequence[int]] = ()):
        """Fit the kind's inversion attack (``self.attack``) to ``fn`` with ``settings``."""

    @property
    def config(self):
        return self.attack.config

    @abc.abstractmethod
    def outcome(
        self, plugin, recs: list[np.ndarray], truths: list[np.ndarray], prior, dp: DPSetting | None, settings, plot: str | Path | None
    ) -> dict:
        """Success, baseline, bound and headline of the reconstructions ``recs`` of ``truths``."""


@INVERSIONS.register("image")
class ImageKind(Inversion):
    def __init__(self, settings, fn, data, prior, categorical=()):
        s = settings
        self.attack = ImageInversion(steps=s.steps or 2000, restarts=s.restarts or 4, labels=s.labels).fit(fn, tuple(data.shape))

    def outcome(self, plugin, recs, truths, prior, dp, settings, plot):
        s = settings
        pool = prior.X[np.random.default_rng(s.seed + 1).permutation(len(prior))[:100]]
        succ = image_success(recs, truths, pool)
        base = image_baseline(truths, prior.X, pool, seed=s.seed)
        ident = succ["nn_identification"]
        out = {
            "success": succ,
            "baseline": base,
            "bound": {
                "nn_identification": rate_bound(dp, base["nn_identification"]["ci"][1] or 1.0 / (len(pool) + 1), s.bound_samples, s.seed)
            },
            "headline": {
                "metric": "nearest-neighbour identification",
                "rate": ident["rate"],
                "ci": ident["ci"],
                "baseline": base["nn_identification"]["rate"],
                "psnr_db": succ["psnr_db"]["mean"],
                "baseline_psnr_db": base["psnr_db"]["mean"],
            },
        }
        if plot:
            k = min(8, len(recs))
            plots.image_figure(
                np.concatenate(truths[:k]),
                np.concatenate([r[match_images(r, t)] for r, t in zip(recs[:k], truths[:k], strict=True)]),
                plot,
                f"gradient inversion of {plugin.base.name} plugin updates "
                f"(PSNR {succ['psnr_db']['mean']:.1f} dB, baseline {base['psnr_db']['mean']:.1f} dB)",
            )
        return out


@INVERSIONS.register("tabular")
class TabularKind(Inversion):
    def __init__(self, settings, fn, data, prior, categorical=()):
        s = settings
        self.spec = FeatureSpec.from_prior(prior.X, categorical, names=tuple(data.feature_names) or ())
        self.attack = TabularInversion(steps=s.steps or 1500, restarts=s.restarts or 8, labels=s.labels).fit(fn, self.spec, prior.X)

    def outcome(self, plugin, recs, truths, prior, dp, settings, plot):
        s, spec = settings, self.spec
        succ = tabular_success(recs, truths, spec, tolerance=s.tolerance)
        base = tabular_baseline(truths, prior.X, spec, tolerance=s.tolerance, seed=s.seed)
        fa, ra = succ["feature_accuracy"], succ["record_rate"]
        # kappa: the baseline's upper confidence limit, so that the bound is not understated
        out = {
            "success": succ,
            "baseline": base,
            "bound": {
                "feature_accuracy": rate_bound(dp, base["feature_accuracy"]["ci"][1], s.bound_samples, s.seed),
                "record_rate": rate_bound(dp, base["record_rate"]["ci"][1], s.bound_samples, s.seed),
            },
            "headline": {
                "metric": "feature accuracy",
                "rate": fa["rate"],
                "ci": fa["ci"],
                "baseline": base["feature_accuracy"]["rate"],
                "record_rate": ra["rate"],
                "record_ci": ra["ci"],
            },
        }
        k = min(s.plot_records, len(recs))
        t_all = np.concatenate(truths[:k])[: s.plot_records]
        r_all = np.concatenate([r[match_records(r, t, spec, s.tolerance)] for r, t in zip(recs[:k], truths[:k], strict=True)])[
            : s.plot_records
        ]
        hits = feature_hits(r_all, t_all, spec, s.tolerance)
        names = spec.feature_names()
        out["table_markdown"] = plots.markdown_table(names, spec.decode(t_all), spec.decode(r_all), hits, s.plot_records)
        if plot:
            plots.tabular_figure(
                names,
                spec.decode(t_all),
                spec.decode(r_all),
                hits,
                plot,
                f"gradient inversion of {plugin.base.name} plugin updates: feature accuracy {fa['rate']:.0%} "
                f"(baseline {base['feature_accuracy']['rate']:.0%})",
                s.plot_records,
            )
        return out
