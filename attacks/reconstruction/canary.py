"""Canary exposure (Carlini, Liu, Erlingsson, Kos, Song, "The Secret Sharer: Evaluating and
Testing Unintended Memorization in Neural Networks", USENIX Security 2019).

Canaries, out-of-distribution records with random labels (``forge_secure.plugins.make_canaries``),
are inserted into the training set, ``r`` copies each, for several repetition counts ``r``
(``r = 0``: control canaries, drawn but never inserted, whose exposure is the chance level).
After training, each canary is ranked among its candidate set R: itself plus ``|R| - 1``
fresh records from the same canary distribution that were never inserted, by the trained
model's loss (lowest first). Exposure = log2 |R| - log2 rank, in bits: about log2(e) = 1.44
bits on average for a model that learnt nothing about the canary, log2 |R| when it sits at
rank 1. Extraction success (rank 1) is a reconstruction among |R| candidates, so its rate is
reported with a Clopper-Pearson interval beside the ReRo bound for kappa = 1/|R|
(for r = 1; r copies of a record enjoy only group privacy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from attacks.metrics import clopper_pearson
from forge_secure.errors import ForgeDataError, ForgeValueError

from ..estimator import ConfigEstimator


@dataclass
class CanaryConfig:
    repetitions: tuple[int, ...] = (0, 1, 2, 4, 8)  # 0: control canaries, never inserted
    canaries_per_repetition: int = 4
    candidates: int = 100  # |R|, the inserted canary included

    def __post_init__(self) -> None:
        reps = tuple(self.repetitions)
        if not reps or not all(isinstance(r, (int, np.integer)) and r >= 0 for r in reps) or len(set(reps)) != len(reps) or max(reps) < 1:
            raise ForgeValueError(
                f"repetitions must be distinct integers >= 0 (0 = a control canary never inserted), at least one "
                f"above 0, got {self.repetitions!r}",
                fix="use e.g. --repetitions 0,1,2,4,8",
                code="recon.config",
            )
        self.repetitions = tuple(sorted(int(r) for r in reps))
        if not (isinstance(self.canaries_per_repetition, int) and self.canaries_per_repetition >= 1):
            raise ForgeValueError(f"canaries_per_repetition must be >= 1, got {self.canaries_per_repetition!r}", code="recon.config")
        if not (isinstance(self.candidates, int) and self.candidates >= 2):
            raise ForgeValueError(f"the candidate set needs at least 2 records, got {self.candidates!r}", code="recon.config")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["repetitions"] = list(self.repetitions)
        return d


def exposure(rank: np.ndarray | int, n_candidates: int) -> np.ndarray:
    """log2 |R| - log2 rank (rank 1 = the most likely candidate)."""
    rank = np.asarray(rank, dtype=np.float64)
    if (rank < 1).any() or (rank > n_candidates).any():
        raise ForgeValueError(f"ranks must lie in 1..{n_candidates}", code="recon.rank")
    return math.log2(n_candidates) - np.log2(rank)


def base_logits_fn(base) -> Callable[[np.ndarray], np.ndarray]:
    """``X -> logits`` of a frozen base model (``forge_secure.plugins.Base``)."""

    def run(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return base.model(torch.tensor(np.asarray(X, dtype=np.float32))).double().numpy()

    return run


def losses(logits_fn: Callable[[np.ndarray], np.ndarray], X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of each record under a model given as ``X -> logits`` (float64)."""
    logits = torch.tensor(np.asarray(logits_fn(np.asarray(X, dtype=np.float32)), dtype=np.float64))
    return torch.nn.functional.cross_entropy(logits, torch.tensor(np.asarray(y), dtype=torch.long), reduction="none").numpy()


class CanaryExposure(ConfigEstimator):
    """``CanaryExposure(repetitions=..., ...).fit(data, make_canaries, seed)`` (settings: the
    fields of :class:`CanaryConfig`) builds the canaries and the training set with them
    inserted; train a model on ``training_set_``; then ``score(logits_fn)`` ranks every canary
    and returns the exposures."""

    Config = CanaryConfig

    def fit(self, data, make_canaries: Callable, seed: int = 0) -> CanaryExposure:
        """``data`` is a ``forge_secure.plugins.Dataset``; ``make_canaries(m, like, seed)`` draws
        canaries. Builds ``training_set_`` = data + every canary repeated r times."""
        cfg = self.config
        self._clear_fitted()
        m = cfg.canaries_per_repetition * len(cfg.repetitions)
        draws = make_canaries(m * cfg.candidates, data, seed)
        X = np.asarray(draws.X).reshape((m, cfg.candidates) + tuple(draws.X.shape[1:]))
        Y = np.asarray(draws.y).reshape(m, cfg.candidates)
        self.cand_X_, self.cand_y_ = X, Y  # candidate 0 of each set is the inserted canary
        self.reps_ = np.repeat(np.array(cfg.repetitions), cfg.canaries_per_repetition)
        rows = np.concatenate([np.full(r, k, dtype=int) for k, r in enumerate(self.reps_)])
        inserted = draws.subset(rows * cfg.candidates, name=f"canaries/{len(rows)}-rows")
        self.training_set_ = data.concat(inserted, name=f"{data.name}+canaries")
        self.data_ = data
        return self

    def score(
        self, logits_fn: Callable[[np.ndarray], np.ndarray], reference_fn: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> np.ndarray:
        """Exposure (bits) of every canary, ordered like ``reps_``.

        With ``reference_fn`` (the public base model, which never saw a canary) candidates are
        ranked by their loss under the plugin *minus* their loss under the base: out-of-
        distribution candidates that the base already happens to extrapolate well then gain
        nothing, and only what the plugin learnt counts (the calibration of Watson et al.,
        ICLR 2022). Without it, by the plugin's loss alone as in Carlini et al."""
        self._check_fitted("the canary exposure test")
        cfg = self.config
        m = len(self.cand_X_)
        flat = self.cand_X_.reshape((m * cfg.candidates,) + self.cand_X_.shape[2:])
        ls = losses(logits_fn, flat, self.cand_y_.reshape(-1)).reshape(m, cfg.candidates)
        if reference_fn is not None:
            ls = ls - losses(reference_fn, flat, self.cand_y_.reshape(-1)).reshape(m, cfg.candidates)
        if not np.isfinite(ls).all():
            raise ForgeDataError("the model gives non-finite losses on the canaries", code="recon.nonfinite")
        # rank of the inserted canary: 1 + number of candidates with a strictly lower loss,
        # ties counted half (mid-rank), so a model that knows nothing has no advantage
        lower = (ls[:, 1:] < ls[:, :1]).sum(axis=1)
        ties = (ls[:, 1:] == ls[:, :1]).sum(axis=1)
        self.ranks_ = 1 + lower + ties / 2.0
        return exposure(self.ranks_, cfg.candidates)

    def summary(self, exposures: np.ndarray, bound: float | None = None) -> dict:
        """Mean exposure per repetition count, and the rank-1 (extraction) rate beside the
        ReRo bound for kappa = 1/|R|."""
        self._check_fitted("the canary exposure test")
        if not hasattr(self, "ranks_"):
            raise ForgeValueError(
                "the canaries are not scored yet", fix="call score(logits_fn) before summary(...)", code="attack.not_fitted"
            )
        cfg = self.config
        rows = []
        for r in cfg.repetitions:
            sel = self.reps_ == r
            e = exposures[sel]
            top = int((self.ranks_[sel] == 1).sum())
            lo, hi = clopper_pearson(top, int(sel.sum()), 0.95)
            rows.append(
                {
                    "repetitions": r,
                    "canaries": int(sel.sum()),
                    "mean_exposure_bits": float(e.mean()),
                    "min_exposure_bits": float(e.min()),
                    "max_exposure_bits": float(e.max()),
                    "rank1": {"rate": top / int(sel.sum()), "successes": top, "trials": int(sel.sum()), "ci": [lo, hi]},
                }
            )
        return {
            "by_repetition": rows,
            "candidates": cfg.candidates,
            "max_exposure_bits": math.log2(cfg.candidates),
            "chance_exposure_bits": float(np.mean(exposure(np.arange(1, cfg.candidates + 1), cfg.candidates))),
            "baseline": 1.0 / cfg.candidates,
            "bound_r1": bound,
        }
