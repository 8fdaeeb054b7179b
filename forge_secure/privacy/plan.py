"""The privacy plan of one training run, fixed before it starts (:func:`plan_privacy`): sample
rate, steps, delta and the noise multiplier (given, or calibrated to a target epsilon with the
configured accountant)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ForgeDataError, ForgeValueError
from .accountants import calibrate_noise_multiplier, compute_epsilon, default_delta
from .config import TrainConfig


@dataclass(frozen=True)
class DPPlan:
    """The privacy parameters of one training run, fixed before it starts."""

    n: int
    sample_rate: float
    steps_per_epoch: int
    steps: int
    delta: float | None
    noise_multiplier: float | None
    epsilon: float  # planned (equal to the recorded one: same accountant, same history)
    accountant: str | None

    @property
    def history(self) -> list[tuple[float, float, int]]:
        return [] if self.noise_multiplier is None else [(self.noise_multiplier, self.sample_rate, self.steps)]


def plan_privacy(config: TrainConfig, n: int, *, prior: list | None = None) -> DPPlan:
    """Sample rate, steps, delta and noise multiplier for ``config`` on ``n`` records.

    ``q = min(1, batch_size / n)``, ``ceil(n / batch_size)`` steps per epoch; delta
    defaults to ``min(1e-5, 1 / n^2)`` (see ``accountants.default_delta``) and must be below ``1 / n``; a target epsilon is calibrated
    with the configured accountant.
    """
    if n < 1:
        raise ForgeDataError("the training set is empty", fix="give a data set with at least one record", code="data.empty")
    q = min(1.0, config.batch_size / n)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    steps = config.epochs * steps_per_epoch
    if config.no_dp:
        return DPPlan(n, q, steps_per_epoch, steps, None, None, math.inf, None)
    delta = config.delta if config.delta is not None else default_delta(n)
    if delta >= 1.0 / n:
        raise ForgeValueError(
            f"delta {delta:g} is not below 1/n = {1.0 / n:.4g} for {n} training records",
            fix=f"give --delta below {1.0 / n:.3g} (default min(1e-5, 1/n^2) = {default_delta(n):.3g})",
            code="dp.delta",
        )
    sigma = config.noise_multiplier
    if sigma is None:
        assert config.target_epsilon is not None  # TrainConfig holds exactly one of no_dp, noise_multiplier, target_epsilon
        sigma = calibrate_noise_multiplier(config.target_epsilon, delta, q, steps, config.accountant)
    eps = compute_epsilon([(sigma, q, steps)], delta, config.accountant)
    return DPPlan(n, q, steps_per_epoch, steps, delta, float(sigma), eps, config.accountant)
