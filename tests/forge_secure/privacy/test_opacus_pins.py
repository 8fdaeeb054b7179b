"""Pins what the DP optimizer of :mod:`forge_secure.privacy.train` relies on inside Opacus.

``ClippedGradDPOptimizer`` subclasses Opacus's ``DPOptimizerFastGradientClipping`` and overrides
``params``, ``accumulate``, ``add_noise`` and ``scale_grad`` (and adds ``step_flat``). Those
overrides read and write Opacus state that is not public API: the helpers
``opacus.optimizers.optimizer.params``, ``_check_processed_flag`` and (by imitation)
``_mark_as_processed``; the attributes ``_step_skip_queue``, ``_is_last_step_skipped``,
``p.summed_grad`` and ``tensor._processed``; and the order in which Opacus's ``pre_step`` calls
the overridden methods. Each test below pins one of them against the installed Opacus, with real
Opacus objects, so that an Opacus upgrade that moves any of them fails here, by name, instead of
silently changing the noise a plugin's DP guarantee rests on.

What could use Opacus's public API instead: ``params`` and ``scale_grad`` are overridden for speed
only (Opacus's own give the same numbers, see the sigma = 0 test); ``accumulate`` only drops
Opacus's deep copy; ``step_flat`` could hand the flat buffer to the public ``step()`` path at the
cost of per-parameter work. ``add_noise`` must stay: Opacus has no public way to take the noise
from a caller's secret stream (needed for replay), only from a torch generator or its own
secure mode.
"""

from __future__ import annotations

import inspect

import opacus
import pytest
import torch
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers import optimizer as opacus_optimizer
from packaging.version import Version

from forge_secure.privacy.randomness import (
    NOISE,
    NoiseSource,
    SecretStream,
    fresh_secret,
)
from forge_secure.privacy.train import ClippedGradDPOptimizer

#: the Opacus releases the subclass was read against (major, minor)
CHECKED_OPACUS = {(1, 6)}
OVERRIDDEN = ("accumulate", "add_noise", "scale_grad")

UPGRADE_FIX = (
    "forge_secure/privacy/train.py's DP optimizer overrides Opacus internals; read Opacus's "
    "DPOptimizer / DPOptimizerFastGradientClipping of the new release, adapt the subclass, then add "
    "the release to CHECKED_OPACUS in this file"
)


def _cls() -> type:
    """The subclass itself (``ClippedGradDPOptimizer`` builds it on first use)."""
    return type(_optimizer(torch.nn.Linear(2, 2)))


def _optimizer(model: torch.nn.Module, sigma: float = 1.0, opacus_own: bool = False):
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"noise_multiplier": sigma, "max_grad_norm": 0.5, "expected_batch_size": 4.0, "loss_reduction": "mean"}
    if opacus_own:
        return DPOptimizerFastGradientClipping(torch.optim.SGD(params, lr=0.1), **kwargs)
    opt = ClippedGradDPOptimizer(torch.optim.SGD(params, lr=0.1), **kwargs)
    opt.noise_source = NoiseSource(SecretStream(fresh_secret(), NOISE))
    return opt


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _clipped_grads(model: torch.nn.Module) -> None:
    """Stand-in clipped sums (what LoraClipper leaves in p.grad): fixed, so two models match."""
    gen = torch.Generator().manual_seed(7)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def test_installed_opacus_is_a_release_the_subclass_was_checked_against():
    release = Version(opacus.__version__).release[:2]
    assert release in CHECKED_OPACUS, f"Opacus {opacus.__version__} is installed; {UPGRADE_FIX}"


def test_the_subclass_derives_from_opacus_fast_gradient_clipping_optimizer():
    cls = _cls()
    assert issubclass(cls, DPOptimizerFastGradientClipping), UPGRADE_FIX
    for name in OVERRIDDEN:
        ours, theirs = getattr(cls, name), getattr(DPOptimizerFastGradientClipping, name, None)
        assert theirs is not None, f"Opacus no longer has DPOptimizerFastGradientClipping.{name}; {UPGRADE_FIX}"
        assert inspect.signature(ours) == inspect.signature(theirs), f"Opacus changed the signature of {name}; {UPGRADE_FIX}"
    assert isinstance(inspect.getattr_static(DPOptimizerFastGradientClipping, "params"), property), (
        f"Opacus's DPOptimizer.params is no longer a property; {UPGRADE_FIX}"
    )


def test_private_helpers_exist_and_behave_as_the_subclass_assumes():
    for name in ("params", "_check_processed_flag", "_mark_as_processed"):
        assert callable(getattr(opacus_optimizer, name, None)), f"opacus.optimizers.optimizer.{name} is gone; {UPGRADE_FIX}"
    t = torch.zeros(3)
    opacus_optimizer._check_processed_flag(t)  # a fresh sum passes
    opacus_optimizer._mark_as_processed(t)
    # add_noise sets this flag by hand (one attribute write instead of a call per tensor)
    assert getattr(t, "_processed", None) is True, f"_mark_as_processed no longer sets tensor._processed; {UPGRADE_FIX}"
    with pytest.raises(ValueError):
        opacus_optimizer._check_processed_flag(t)
    model = _model()
    opt = _optimizer(model, opacus_own=True)
    assert opacus_optimizer.params(opt) == list(model.parameters()), f"opacus.optimizers.optimizer.params changed; {UPGRADE_FIX}"


def test_private_state_the_subclass_reads_and_writes():
    model = _model()
    opt = _optimizer(model)
    assert opt._step_skip_queue == [], f"DPOptimizer._step_skip_queue changed; {UPGRADE_FIX}"
    assert opt._is_last_step_skipped is False, f"DPOptimizer._is_last_step_skipped changed; {UPGRADE_FIX}"
    assert all(p.summed_grad is None for p in model.parameters()), f"Opacus no longer sets p.summed_grad = None; {UPGRADE_FIX}"
    assert opt.accumulated_iterations == 1
    assert opt.expected_batch_size == 4.0 and opt.loss_reduction == "mean"
    assert opt.noise_multiplier == 1.0 and opt.max_grad_norm == 0.5
    assert opt.step_hook is None and isinstance(opt.original_optimizer, torch.optim.SGD)
    # add_noise uses noise_multiplier; Opacus's own reads _adjusted_noise_multiplier first (adaptive
    # clipping), which forge never turns on
    assert not hasattr(opt, "_adjusted_noise_multiplier"), f"Opacus sets _adjusted_noise_multiplier by default; {UPGRADE_FIX}"
    # a signalled skip is a virtual step: step_flat must hand it to Opacus's own path
    opt.signal_skip_step(True)
    assert opt._step_skip_queue == [True], f"signal_skip_step no longer fills _step_skip_queue; {UPGRADE_FIX}"


def test_opacus_pre_step_calls_the_overrides_in_order_and_zero_grad_clears_the_sums():
    calls: list[str] = []

    class Recording(_cls()):  # the real subclass, recording which of its overrides Opacus calls
        def accumulate(self):
            calls.append("accumulate")
            return super().accumulate()

        def add_noise(self):
            calls.append("add_noise")
            return super().add_noise()

        def scale_grad(self):
            calls.append("scale_grad")
            return super().scale_grad()

    model = _model()
    params = list(model.parameters())
    opt = Recording(
        torch.optim.SGD(params, lr=0.1), noise_multiplier=1.0, max_grad_norm=0.5, expected_batch_size=4.0, loss_reduction="mean"
    )
    opt.noise_source = NoiseSource(SecretStream(fresh_secret(), NOISE))
    hooked = []
    opt.attach_step_hook(lambda o: hooked.append(o))
    _clipped_grads(model)
    opt.step()
    assert calls == ["accumulate", "add_noise", "scale_grad"], f"Opacus's pre_step calls {calls}; {UPGRADE_FIX}"
    assert hooked == [opt], f"Opacus's pre_step no longer calls the step hook (the accountant); {UPGRADE_FIX}"
    assert all(getattr(p.summed_grad, "_processed", False) for p in params)
    opt.zero_grad(set_to_none=True)
    assert all(p.summed_grad is None and p.grad is None for p in params), f"zero_grad no longer clears p.summed_grad; {UPGRADE_FIX}"


def test_without_noise_the_subclass_moves_the_weights_exactly_as_opacus_does():
    """sigma = 0: accumulate, add_noise and scale_grad of the subclass compute what Opacus's own
    DPOptimizerFastGradientClipping computes (sum / expected batch size, then the SGD step)."""
    ours, theirs = _model(1), _model(1)
    opt_ours, opt_theirs = _optimizer(ours, sigma=0.0), _optimizer(theirs, sigma=0.0, opacus_own=True)
    for _ in range(3):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad(set_to_none=True)
            _clipped_grads(model)
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_noise_is_added_to_every_parameter_at_the_recorded_scale():
    """sigma > 0: the noise on each coordinate is sigma * C times the stream's next normal, on
    every parameter (one draw for all of them, parameter by parameter)."""
    secret = fresh_secret()
    model = _model(2)
    params = list(model.parameters())
    opt = _optimizer(model, sigma=1.3)
    opt.noise_source = NoiseSource(SecretStream(secret, NOISE))
    _clipped_grads(model)
    sums = [p.grad.clone() for p in params]
    opt.accumulate()
    opt.add_noise()
    z = NoiseSource(SecretStream(secret, NOISE)).take(sum(p.numel() for p in params))
    o = 0
    for p, s in zip(params, sums, strict=True):
        want = s.double() + 1.3 * 0.5 * z[o : o + p.numel()].view(p.shape)
        torch.testing.assert_close(p.grad.double(), want, rtol=0, atol=1e-6)
        o += p.numel()
