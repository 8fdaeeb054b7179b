"""MedForge's sequential scalar Fusion (after LoraHub; Huang et al. 2023, "LoraHub:
efficient cross-task generalization via dynamic LoRA composition").

The plugins are merged one after another in the given order. At each step the current
merged LoRA and the next plugin are combined as ``alpha * current + beta * next``, the same
two scalars on every ``A`` and every ``B`` tensor, with ``(alpha, beta)`` found by a
gradient-free optimiser (nevergrad ``NGOpt``, budget 40, start 0.5, bounds +-1.5) that
minimises the cross-entropy on (synthetic) tuning data plus ``0.05 * mean |w|``.

This is kept faithful on purpose, including its flaw: scaling ``A`` and ``B`` by the same
scalar scales the update ``B A`` by its square and mixes cross terms ``B_i A_j``, so it is
not the weighted sum of the updates (use ``exact`` or ``ffa`` for that). The factors of
plugin ``i`` end up scaled by ``c_i = beta_i * prod_{j > i} alpha_j`` (``beta_1 = 1``);
those ``c_i`` are recorded as the merge weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ...errors import ForgeValueError
from ..adapter import LoraAdapter, check_compatible, check_finite
from .base import FusionMethod, FusionResult, register

LossFn = Callable[[LoraAdapter], float]


def minimise_scalars(
    objective: Callable[[np.ndarray], float],
    n: int,
    *,
    budget: int = 40,
    init: float = 0.5,
    bound: float = 1.5,
    lower: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Minimise ``objective`` over ``n`` scalars in ``[lower, bound]`` (``lower`` defaults to
    ``-bound``) with nevergrad NGOpt, starting at ``init``, seeded (the parametrization's
    random state)."""
    import nevergrad as ng

    if budget < 1:
        raise ForgeValueError(
            f"budget {budget} must be at least 1", fix="give a positive number of evaluations, e.g. 40", code="merge.bad_budget"
        )
    with warnings.catch_warnings():  # nevergrad/scipy chatter about bounds and COBYLA settings
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        param = ng.p.Array(init=np.full(n, float(init))).set_bounds(-float(bound) if lower is None else float(lower), float(bound))
        param.random_state = np.random.RandomState(int(seed))
        opt = ng.optimizers.NGOpt(parametrization=param, budget=int(budget), num_workers=1)
        best = opt.minimize(lambda x: float(objective(np.asarray(x, dtype=np.float64))))
    x = np.asarray(best.value, dtype=np.float64)
    return x, float(objective(x))


def combine(current: LoraAdapter, nxt: LoraAdapter, alpha: float, beta: float) -> LoraAdapter:
    """``alpha * current + beta * next`` on every A and B tensor (same rank required)."""
    state = {k: (alpha * current.state[k].double() + beta * nxt.state[k].double()).to(current.state[k].dtype) for k in current.state}
    return current.with_state(state, name="merged", ffa=False)


def sequential_merge(
    adapters: Sequence[LoraAdapter],
    *,
    loss_fn: LossFn | None,
    budget: int = 40,
    init: float = 0.5,
    bound: float = 1.5,
    l1: float = 0.05,
    seed: int = 0,
) -> FusionResult:
    """MedForge's Fusion; ``loss_fn(adapter)`` is the cross-entropy on tuning data."""
    if loss_fn is None:
        raise ForgeValueError(
            "the sequential (MedForge) merge tunes its scalars on data and got none",
            fix="give synthetic tuning data (forge synth, then --tune-on FILE)",
            code="merge.needs_tuning_data",
        )
    check_compatible(adapters, same_rank=True)
    first = adapters[0]
    # all plugins must share the scaling: the scalars act on the raw factors
    if any(abs(ad.scaling - first.scaling) > 1e-12 for ad in adapters):
        raise ForgeValueError(
            "plugins have different lora_alpha/rank scalings",
            fix="merge plugins trained with the same r and lora_alpha",
            code="merge.different_scaling",
        )
    current = first.with_state({k: v.clone() for k, v in first.state.items()}, name="merged", ffa=False)
    coef = np.ones(1)
    steps = []
    for j, nxt in enumerate(adapters[1:], start=1):

        def objective(x: np.ndarray, current=current, nxt=nxt) -> float:
            cand = combine(current, nxt, x[0], x[1])
            value = float(loss_fn(cand)) + l1 * float(np.mean(np.abs(x)))
            return value if np.isfinite(value) else 1e12

        (a, b), value = minimise_scalars(objective, 2, budget=budget, init=init, bound=bound, seed=seed + j)
        current = combine(current, nxt, a, b)
        coef = np.append(coef * a, b)
        steps.append({"step": j, "alpha": float(a), "beta": float(b), "objective": value})
    check_finite(current.state, "the merged adapter")
    details = {"steps": steps, "budget": budget, "init": init, "bound": bound, "l1": l1, "seed": seed, "optimizer": "nevergrad NGOpt"}
    return FusionResult(current, "sequential", [float(c) for c in coef], details)


register(
    FusionMethod(
        "sequential",
        lambda adapters, weights, loss_fn=None, budget=40, seed=0, **_: sequential_merge(
            adapters, loss_fn=loss_fn, budget=budget, seed=seed
        ),
        same_rank=True,
        needs_loss=True,
        description="MedForge/LoraHub: alpha*current + beta*next on A and B, scalars tuned by nevergrad on synthetic data",
    )
)
