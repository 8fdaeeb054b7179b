"""The bench's reconstruction cell: the informed adversary on the final model.

The adversary (Balle et al. 2022, "Reconstructing training data with informed
adversaries"; Hayes et al. 2023, "Bounding data reconstruction attacks with the hypothesis
testing interpretation of differential privacy") knows every training record but one and a
prior of ``prior`` candidates for the missing one, and picks the candidate the final model
fits best (lowest cross-entropy). Because every pool record entered training by an
independent fair coin flip, a prior set built from one member and ``prior - 1``
non-members is, conditioned on exactly one of them being in, a uniform prior: the game is
the paper's, with baseline success kappa = 1/prior and no retraining per trial.

Reported: the success rate over ``trials`` trials with its Clopper-Pearson interval, the
baseline kappa, and the ReRo bound of the model's DP-SGD recipe (Monte Carlo, Hayes et al.
2023, :func:`attacks.reconstruction.bounds.rero_bound_dpsgd`); 1 without DP.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from forge_secure.errors import ForgeValueError


def informed_adversary_row(runner, cell, target: dict[str, np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
    from attacks.membership.stats import cross_entropy
    from attacks.metrics import clopper_pearson
    from attacks.reconstruction.bounds import rero_bound_dpsgd

    from .cell import derive_seed

    trials, prior = int(settings["trials"]), int(settings["prior"])
    if prior < 2:
        raise ForgeValueError(f"recon prior {prior} must be at least 2", fix="set [attack.recon] prior = 8", code="bench.recon_prior")
    cand, members = runner.candidates(cell.merge)
    members = np.asarray(members, dtype=bool)
    loss = cross_entropy(target["candidates"], cand.y)
    ins, outs = np.flatnonzero(members), np.flatnonzero(~members)
    if ins.size == 0 or outs.size < prior - 1:
        raise ForgeValueError(
            f"the candidate pool has {ins.size} members and {outs.size} non-members, too few for a prior of {prior}",
            fix="lower [attack.recon] prior",
            code="bench.recon_prior",
        )
    rng = np.random.default_rng(derive_seed(runner.group.seed, 23))
    wins = 0
    for _ in range(trials):
        z = rng.choice(ins)
        others = rng.choice(outs, size=prior - 1, replace=False)
        prior_set = np.concatenate([[z], others])
        best = prior_set[np.flatnonzero(loss[prior_set] == loss[prior_set].min())]
        wins += int(rng.choice(best) == z)  # ties broken at random
    low, high = clopper_pearson(wins, trials, 0.95)
    kappa = 1.0 / prior
    bound = 1.0  # without DP there is no bound
    if not math.isinf(float(target["claimed_epsilon"])):
        # the record may come from any site: the largest of the sites' bounds holds for all
        bound = max(
            rero_bound_dpsgd(sigma, q, int(steps), kappa, samples=20_000, seed=derive_seed(runner.group.seed, 29)).bound
            if sigma > 0 and q > 0 and steps >= 1
            else 1.0
            for sigma, q, steps in np.asarray(target["dp_records"], dtype=float)
        )
    return {
        "recon_success": wins / trials,
        "recon_low": low,
        "recon_high": high,
        "recon_baseline": kappa,
        "recon_bound": bound,
        "n_members": int(ins.size),
        "n_nonmembers": int(outs.size),
    }
