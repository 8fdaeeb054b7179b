"""The informed adversary: knows every training record but one and must tell which of ``n``
candidates is the missing one (Balle, Cherubin, Hayes, "Reconstructing Training Data with
Informed Adversaries", IEEE S&P 2022; Hayes, Mahloujifar, Balle, "Bounding Training Data
Reconstruction in DP-SGD", NeurIPS 2023).

The game, repeated over many trials: the challenger draws ``n`` candidates from the
population, picks the target uniformly among them (baseline success kappa = 1/n), and runs
DP-SGD with the plugin's recorded recipe (Poisson sample rate q, noise multiplier sigma,
clipping norm C, T steps, learning rate) on the known records plus the target, starting from
the plugin's LoRA tensors. The adversary sees

* ``mode="gradients"``: every noisy gradient of the run (and so every intermediate model),
  and which known records each batch held (the target's inclusion stays hidden). Prior-aware
  attack of Hayes et al. 2023 on the residuals r_t = B g~_t - sum_{known j in batch t}
  clip(grad(z_j)) (B the expected batch size, gradients at the step's parameters), which are
  N(0, (sigma C)^2) plus, with probability q, the target's clipped gradient c_t. Each
  candidate is scored by its exact log-likelihood ratio under that mixture,
  ``sum_t log[(1 - q) + q exp((<r_t, c_it> - |c_it|^2 / 2) / (sigma C)^2)]``; when all
  candidate gradients share one norm this ranks exactly as Hayes et al.'s inner-product
  score ``sum_t <r_t, c_it>``, and otherwise it does not favour candidates with large
  gradients;
* ``mode="model"``: only the final plugin. Score: how much the candidate's loss fell from the
  starting plugin to the final one (on a TIES / DARE / sequential merge: minus the distance
  between the released merge and the merge redone with the candidate's expected run,
  :func:`expected_run`, :mod:`.merged`).

A merged plugin holds no DP-SGD recipe of its own; the game then takes one parent site's
recipe (:class:`MergeRelease`): that site continues DP-SGD from its own plugin on the known
records plus the target, the other parents stay fixed, and the attacker sees only the
re-released merge (the merged tensors plus the site's weight times the site's change), i.e.
``mode="model"`` on the merged model. The merge is post-processing of the site's DP release,
so the site's ReRo bound (its sigma, q, T) applies.

It guesses the highest-scoring candidate. The success rate carries a Clopper-Pearson
interval and sits beside the ReRo bound for (q, sigma, T) and kappa, which no attack in this
threat model can exceed (up to the bound's Monte Carlo error and the interval).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.metrics import clopper_pearson
from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.progress import task

from ..estimator import ConfigEstimator
from .bounds import rero_bound_dpsgd
from .gradients import DPSetting, LoraFunctional, clip_per_sample, unflatten
from .merged import MergeRedo

INFORMED_MODES = ("gradients", "model")


@dataclass
class InformedConfig:
    """The game's settings; the DP-SGD recipe is the plugin's (see :meth:`from_meta`)."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float = 1.0
    lr: float = 0.05
    candidates: int = 10
    mode: str = "gradients"
    bound_samples: int = 100_000

    def __post_init__(self) -> None:
        DPSetting(self.noise_multiplier, self.max_grad_norm, self.sample_rate, self.steps)  # validates
        if not (isinstance(self.candidates, int) and self.candidates >= 2):
            raise ForgeValueError(
                f"need at least 2 candidates, got {self.candidates!r}", fix="use e.g. --candidates 10", code="recon.config"
            )
        if self.mode not in INFORMED_MODES:
            raise ForgeValueError(
                f"unknown informed-adversary mode {self.mode!r}", fix=f"use one of: {', '.join(INFORMED_MODES)}", code="recon.config"
            )
        if not self.lr > 0:
            raise ForgeValueError(f"lr must be > 0, got {self.lr!r}", code="recon.config")

    @classmethod
    def from_meta(cls, meta: dict, **overrides) -> InformedConfig:
        """The recipe recorded in a plugin's forge.json (no DP: noise 0, sample rate from the
        batch size over the row count, steps from the epochs)."""
        dp = meta.get("dp") or {}
        tr = meta.get("training") or {}
        rows = int((meta.get("data") or {}).get("rows") or 1)
        try:
            if dp.get("enabled"):
                kw: dict[str, Any] = dict(
                    noise_multiplier=float(dp["noise_multiplier"]),
                    sample_rate=float(dp["sample_rate"]),
                    steps=int(dp["steps"]),
                    max_grad_norm=float(dp["max_grad_norm"]),
                )
            else:
                q = min(1.0, float(tr.get("batch_size", rows)) / rows)
                kw = dict(
                    noise_multiplier=0.0,
                    sample_rate=q,
                    steps=max(1, int(round(int(tr.get("epochs", 1)) / q))),
                    max_grad_norm=float(dp.get("max_grad_norm") or 1.0),
                )
            kw["lr"] = float(tr.get("lr", 0.05))
        except (KeyError, TypeError, ValueError) as e:
            raise ForgeValueError(
                f"the plugin's training record is malformed ({e.__class__.__name__}: {e})",
                fix="attack a plugin written by forge train",
                code="recon.dp_record",
            ) from None
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transcript:
    """What one DP-SGD run released: the noisy gradients (flat), the parameters each was taken
    at, and the known records each batch held; ``target_sampled`` is the challenger's secret."""

    noisy: list[torch.Tensor] = field(default_factory=list)
    params: list[dict] = field(default_factory=list)
    known_batches: list[np.ndarray] = field(default_factory=list)
    target_sampled: list[bool] = field(default_factory=list)
    final: dict | None = None


def simulate_dpsgd(
    fn: LoraFunctional,
    known_X: torch.Tensor,
    known_y: torch.Tensor,
    target_x: torch.Tensor,
    target_y: torch.Tensor,
    cfg: InformedConfig,
    generator: torch.Generator,
) -> Transcript:
    """Run DP-SGD (Abadi et al. 2016; Poisson sampling, per-sample clipping, Gaussian noise
    sigma*C on the sum, division by the expected batch size q*N) on the known records plus the
    target, from the plugin's LoRA tensors, and record what it releases."""
    N = len(known_X) + 1
    expected = cfg.sample_rate * N
    params = {n: p.clone() for n, p in fn.params.items()}
    tr = Transcript()
    for _ in range(cfg.steps):
        take = torch.rand(N, generator=generator) < cfg.sample_rate
        known_idx = torch.nonzero(take[:-1]).flatten()
        xs = torch.cat([known_X[known_idx], target_x[None]]) if take[-1] else known_X[known_idx]
        ys = torch.cat([known_y[known_idx], target_y[None]]) if take[-1] else known_y[known_idx]
        d = sum(p.numel() for p in params.values())
        total = torch.zeros(d, dtype=fn.dtype)
        if len(xs):
            total = clip_per_sample(fn.flatten(fn.per_sample_grads(xs, ys, params)), cfg.max_grad_norm).sum(dim=0)
        noise = torch.normal(0.0, cfg.noise_multiplier * cfg.max_grad_norm, size=(d,), generator=generator, dtype=fn.dtype)
        g = (total + noise) / expected
        tr.noisy.append(g)
        tr.params.append(params)
        tr.known_batches.append(known_idx.numpy())
        tr.target_sampled.append(bool(take[-1]))
        step = unflatten(fn, g)
        params = {n: p - cfg.lr * step[n] for n, p in params.items()}
    tr.final = params
    return tr


def expected_run(fn: LoraFunctional, X: torch.Tensor, y: torch.Tensor, cfg: InformedConfig) -> dict:
    """The noise-free mean of one DP-SGD run of :func:`simulate_dpsgd` on ``(X, y)``: with
    Poisson sampling at rate q and division by the expected batch size qN, every step's
    expected gradient is the mean of all N clipped per-sample gradients (the noise has mean
    zero), so this is full-batch gradient descent on clipped gradients for ``cfg.steps``
    steps from the plugin's tensors. The informed adversary's hypothesis for one candidate."""
    params = {n: p.clone() for n, p in fn.params.items()}
    for _ in range(cfg.steps):
        mean = clip_per_sample(fn.flatten(fn.per_sample_grads(X, y, params)), cfg.max_grad_norm).mean(dim=0)
        step = unflatten(fn, mean)
        params = {n: p - cfg.lr * step[n] for n, p in params.items()}
    return params


class MergeRelease:
    """The merge released after the recipe site's run, the other parents fixed.

    * FFA merges (``ffa``, ``ffa-ckks``: B averaged, A shared and frozen; the trainable
      tensors line up): released = merged + weight * (site's final - site's starting tensors);
    * ``exact`` (concatenation: ``A' = vstack(w_i s_i A_i)``, ``B' = hstack(B_i)``): the site's
      block of each module is found in the merged tensors (checked against the site's own
      tensors) and replaced by the site's final ``A`` (times ``w s``) and ``B``.

    Other merges (``ties``, ``dare``, ``sequential``) are not a fixed function of one site's
    change given the merged tensors alone; they are redone from every parent by
    :class:`attacks.reconstruction.merged.MergeRedo` (and refused here)."""

    def __init__(
        self,
        merged: LoraFunctional,
        weight: float,
        site_start: dict,
        *,
        scaling: float = 1.0,
        method: str = "ffa",
        site_frozen: dict | None = None,
    ):
        if not (0.0 < float(weight) <= 1.0):
            raise ForgeValueError(f"merge weight {weight!r} of the recipe site is not in (0, 1]", code="recon.merge_weight")
        self.fn = merged
        self.weight = float(weight)
        self.start = {n: p.detach().clone() for n, p in site_start.items()}
        self.blocks: dict[str, tuple[int, int, float]] | None = None  # name -> (offset, rank, factor) for exact
        refuse = ForgeValueError(
            f"cannot redo the {method!r} merge from the recipe site's tensors: they do not line up with the merged plugin's",
            fix="attack an ffa, ffa-ckks or exact merge, or the site plugin itself",
            code="recon.merge_method",
        )
        if set(merged.params) == set(site_start) and all(merged.params[n].shape == site_start[n].shape for n in site_start):
            return
        if method != "exact" or not set(site_start) <= set(merged.params):
            raise refuse
        site_all = {**(site_frozen or {}), **site_start}
        factor = self.weight * float(scaling)
        self.blocks = {}
        for n, mB in merged.params.items():
            if ".lora_B." not in n:
                continue
            na = n.replace(".lora_B.", ".lora_A.")
            B = site_all.get(n)
            if B is None or na not in site_all or na not in merged.params:
                raise refuse
            B = B.to(mB.dtype)
            r = B.shape[1]
            found = None
            for off in range(0, mB.shape[1] - r + 1):
                if torch.allclose(mB[:, off : off + r], B, rtol=1e-5, atol=1e-8) and torch.allclose(
                    merged.params[na][off : off + r], factor * site_all[na].to(mB.dtype), rtol=1e-4, atol=1e-7
                ):
                    found = off
                    break
            if found is None:
                raise refuse
            self.blocks[n] = (found, r, 1.0)
            self.blocks[na] = (found, r, factor)
        if set(self.blocks) != set(merged.params):
            raise refuse

    def __call__(self, site_params: dict) -> dict:
        if self.blocks is None:
            return {n: self.fn.params[n] + self.weight * (site_params[n] - self.start[n]) for n in self.fn.params}
        out = {}
        for n, m in self.fn.params.items():
            off, r, f = self.blocks[n]
            if n not in site_params:  # frozen in the site (FFA): its block does not change
                out[n] = m
                continue
            m = m.clone()
            if ".lora_B." in n:
                m[:, off : off + r] = site_params[n]
            else:
                m[off : off + r] = f * site_params[n]
            out[n] = m
        return out


class InformedAdversary(ConfigEstimator):
    """``InformedAdversary(noise_multiplier=..., sample_rate=..., steps=..., ...)`` (the fields of
    :class:`InformedConfig`, or one such object) ``.fit(fn, known_X, known_y).score(cand_X,
    cand_y, transcript)``; :meth:`run` plays the whole game over many trials."""

    Config = InformedConfig

    def fit(
        self, fn: LoraFunctional, known_X: np.ndarray, known_y: np.ndarray, *, release: MergeRelease | MergeRedo | None = None
    ) -> InformedAdversary:
        """The starting plugin and the records the adversary knows (all but the target);
        ``release`` (mode ``model`` only): the attacker sees the merge re-released after the run."""
        self._check_settings()  # the settings' values are checked here
        self._clear_fitted()
        if len(known_X) != len(known_y) or len(known_X) < 1:
            raise ForgeDataError(f"{len(known_X)} known records with {len(known_y)} labels", code="recon.data")
        if release is not None and self.config.mode != "model":
            raise ForgeValueError("on a merged plugin the attacker sees only the released merge", fix="use mode model", code="recon.config")
        self.release_ = release
        self.fn_ = fn
        self.known_X_ = torch.tensor(np.asarray(known_X), dtype=fn.dtype)
        self.known_y_ = torch.tensor(np.asarray(known_y), dtype=torch.long)
        return self

    def _clipped(self, X: torch.Tensor, y: torch.Tensor, params: dict) -> torch.Tensor:
        return clip_per_sample(self.fn_.flatten(self.fn_.per_sample_grads(X, y, params)), self.config.max_grad_norm)

    def score(self, cand_X: np.ndarray, cand_y: np.ndarray, transcript: Transcript) -> np.ndarray:
        """One score per candidate; the guess is the arg-max."""
        self._check_fitted("the informed adversary")
        fn, cfg = self.fn_, self.config
        cx = torch.tensor(np.asarray(cand_X), dtype=fn.dtype)
        cy = torch.tensor(np.asarray(cand_y), dtype=torch.long)
        if cfg.mode == "model":
            released = transcript.final
            if released is None:
                raise ForgeDataError(
                    "the transcript holds no final parameters (the released model)",
                    fix="score a transcript of a whole run: its final parameters are what the attacker sees",
                    code="recon.data",
                )
            if isinstance(self.release_, MergeRedo):
                # a redone merge (ties, dare, sequential): the candidate whose expected run, merged
                # with the other parents, lands nearest the released merge
                redo = self.release_
                with torch.no_grad():
                    observed = redo.deltas(released)
                    out = np.empty(len(cx))
                    for i in range(len(cx)):
                        final = expected_run(fn, torch.cat([self.known_X_, cx[i : i + 1]]), torch.cat([self.known_y_, cy[i : i + 1]]), cfg)
                        out[i] = -redo.distance(observed, redo.deltas(final))
                return out
            if isinstance(self.release_, MergeRelease):
                rel = self.release_
                with torch.no_grad():
                    before = torch.nn.functional.cross_entropy(rel.fn.logits(cx), cy, reduction="none")
                    after = torch.nn.functional.cross_entropy(rel.fn.logits(cx, rel(released)), cy, reduction="none")
                return (before - after).numpy()
            with torch.no_grad():
                before = torch.nn.functional.cross_entropy(fn.logits(cx), cy, reduction="none")
                after = torch.nn.functional.cross_entropy(fn.logits(cx, released), cy, reduction="none")
            return (before - after).numpy()
        expected = cfg.sample_rate * (len(self.known_X_) + 1)
        scores = torch.zeros(len(cx), dtype=fn.dtype)
        n = len(cx)
        var = max(cfg.noise_multiplier * cfg.max_grad_norm, 1e-6) ** 2
        log_out = math.log1p(-cfg.sample_rate) if cfg.sample_rate < 1 else 0.0
        log_in = math.log(cfg.sample_rate)
        for g, params, idx in zip(transcript.noisy, transcript.params, transcript.known_batches, strict=True):
            # one vmap call per step for the candidates and the known records of the batch
            clipped = self._clipped(torch.cat([cx, self.known_X_[idx]]), torch.cat([cy, self.known_y_[idx]]), params)
            residual = g * expected - clipped[n:].sum(dim=0)
            c = clipped[:n]
            z = (c @ residual - 0.5 * (c * c).sum(dim=1)) / var
            scores += z if cfg.sample_rate >= 1 else torch.logaddexp(torch.full_like(z, log_out), log_in + z)
        return scores.numpy()

    def run(self, pool_X: np.ndarray, pool_y: np.ndarray, trials: int, *, seed: int = 0) -> dict:
        """Play ``trials`` games with candidates drawn from ``pool`` (records not in the known set);
        return the success rate with its interval, the baseline 1/n and the ReRo bound."""
        self._check_fitted("the informed adversary")
        cfg = self.config
        pool_X, pool_y = np.asarray(pool_X), np.asarray(pool_y)
        if len(pool_X) < cfg.candidates:
            raise ForgeDataError(
                f"the candidate pool holds {len(pool_X)} records, fewer than the {cfg.candidates} candidates a trial needs",
                fix="give more data or fewer --candidates",
                code="recon.data",
            )
        if not (isinstance(trials, int) and trials >= 1):
            raise ForgeValueError(f"trials must be a positive integer, got {trials!r}", code="recon.trials")
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31 - 1)))
        wins = 0
        with task("informed adversary", trials) as advance:
            for _ in range(trials):
                pick = rng.choice(len(pool_X), size=cfg.candidates, replace=False)
                t = int(rng.integers(0, cfg.candidates))
                cx, cy = pool_X[pick], pool_y[pick]
                tx = torch.tensor(cx[t], dtype=self.fn_.dtype)
                ty = torch.tensor(int(cy[t]), dtype=torch.long)
                transcript = simulate_dpsgd(self.fn_, self.known_X_, self.known_y_, tx, ty, cfg, gen)
                s = self.score(cx, cy, transcript)
                # ties (e.g. no noise and the target never sampled) broken at random
                best = np.flatnonzero(s == s.max())
                wins += int(rng.choice(best) == t)
                advance(1)
        kappa = 1.0 / cfg.candidates
        lo, hi = clopper_pearson(wins, trials, 0.95)
        bound = rero_bound_dpsgd(cfg.noise_multiplier, cfg.sample_rate, cfg.steps, kappa, samples=cfg.bound_samples, seed=seed)
        return {
            "success": {"rate": wins / trials, "successes": wins, "trials": trials, "ci": [lo, hi], "confidence": 0.95},
            "baseline": kappa,
            "bound": bound.to_dict(),
            "within_bound": bool(lo <= bound.bound + 3 * bound.mc_stderr),
            "settings": cfg.to_dict(),
        }
