"""Training a site plugin: LoRA or FFA-LoRA on a frozen base, with DP-SGD on Opacus.

DP-SGD (Abadi et al. 2016, "Deep learning with differential privacy"): every step draws a
Poisson sample of the training set (each record independently with probability
``q = batch_size / n``; Opacus ``UniformWithReplacementSampler``), clips each record's
gradient of the LoRA parameters to ``max_grad_norm``, sums, adds Gaussian noise of standard
deviation ``noise_multiplier * max_grad_norm`` and divides by the expected batch size.

Opacus is the engine: its ``DPOptimizerFastGradientClipping`` (scaling, accountant hook)
and its accountants. The per-sample clipping is computed here, in closed form for LoRA
layers (:mod:`.clipping`), which is what keeps DP-SGD close to the cost of ordinary training.

The randomness the guarantee rests on is secret (:mod:`.randomness`): every run draws a fresh
256-bit secret from the OS (or is given one, to replay a run), and the Poisson sampling, the
Gaussian noise (Opacus's secure-mode recipe: four normals summed) and the dropout masks are
independent ChaCha20 streams of it. ``forge.json`` records only a commitment to the secret;
the training seed (``TrainConfig.seed``) draws nothing but the initial LoRA ``A`` matrix,
which is public. Training without DP uses the same sampler and loop with an ordinary step.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import progress
from ..errors import ForgeDataError, ForgeFileError, ForgeValueError
from .accountants import ACCOUNTANTS, compute_epsilon
from .clipping import LoraClipper
from .config import OPTIMIZERS, TrainConfig
from .lora_model import build_lora_model as build_lora_model  # re-exported from .lora_model and .plan
from .plan import DPPlan as DPPlan
from .plan import plan_privacy as plan_privacy
from .randomness import (
    DROPOUT,
    GENERATOR,
    GENERATORS,
    NOISE,
    SAMPLING,
    NoiseSource,
    PoissonSampler,
    SecretStream,
    check_generator,
    check_secret,
    commit,
    fresh_secret,
    keyed_digest,
)

CLIPPING_METHOD = "per-sample, closed-form LoRA norms (book-keeping, one backward); Opacus DPOptimizerFastGradientClipping"


def _accountant(accountant: str):
    from opacus.accountants import create_accountant

    return create_accountant(ACCOUNTANTS.get(accountant).opacus_name)


def _optimizer_class():
    from opacus.optimizers import DPOptimizerFastGradientClipping

    class _Cls(DPOptimizerFastGradientClipping):
        """Opacus's optimizer for already-clipped gradients (scaling and accountant hook
        unchanged), with the noise drawn from the run's secret stream (:class:`NoiseSource`:
        N(0, (sigma C)^2) per coordinate, Opacus's secure-mode recipe of four normals summed)
        instead of a torch generator, and with the per-step Python and per-parameter work taken
        out (a small model's step is dominated by it):

        * ``params``: the flat parameter list is built once (Opacus rebuilds it from the
          param groups on every access, four times per step);
        * ``accumulate`` keeps a reference to ``p.grad`` instead of a deep copy: every step
          writes a fresh clipped gradient, so there is nothing to protect;
        * ``add_noise`` draws the noise of all parameters at once and adds it in one buffer;
          ``scale_grad`` divides all gradients by the expected batch size in one operation;
        * ``step_flat``: when the clipper left every clipped sum in one flat buffer (the
          tabular case), noise, scaling and the accountant hook act on that buffer directly
          and Opacus's per-parameter bookkeeping (``zero_grad``, ``accumulate``) is skipped.

        Both paths take the same numbers from the stream in the same order (all trainable
        coordinates of one step, parameter by parameter), so a replay reproduces either."""

        noise_source: NoiseSource | None = None

        @property
        def params(self):
            cache = self.__dict__.get("_forge_params")
            if cache is None:
                from opacus.optimizers.optimizer import params as _params

                cache = self.__dict__["_forge_params"] = _params(self)
            return cache

        def accumulate(self):
            for p in self.params:
                if p.summed_grad is not None:
                    p.summed_grad.add_(p.grad)
                else:
                    p.summed_grad = p.grad.detach()

        def _noise(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
            if self.noise_source is None:
                raise RuntimeError("the DP optimizer has no secret noise source")  # a bug, not bad input
            z = self.noise_source.take(numel)
            return z if z.dtype is dtype else z.to(dtype)

        def add_noise(self):
            from opacus.optimizers.optimizer import _check_processed_flag

            params = self.params
            sums = [p.summed_grad for p in params]
            for sg in sums:
                _check_processed_flag(sg)  # as Opacus: refuse to noise the same sum twice
            flat = torch.cat([sg.reshape(-1) for sg in sums])
            noisy = flat.add_(self._noise(flat.numel(), flat.dtype), alpha=self.noise_multiplier * self.max_grad_norm)
            self.__dict__["_forge_flat_grad"] = noisy
            o = 0
            for p, sg in zip(params, sums, strict=True):
                p.grad = noisy[o : o + p.numel()].view(p.shape)
                o += p.numel()
                sg._processed = True  # what Opacus's _mark_as_processed records

        def step_flat(self, flat: torch.Tensor):
            """Opacus's ``step`` for clipped sums held in one buffer of which every
            trainable gradient is a view (:class:`LoraClipper`'s flat path): ``pre_step``'s
            noise, scaling and accountant hook in two tensor operations (one when the clipper
            already divided the sums by the expected batch size, ``flat_divisor``), then the
            wrapped optimizer's step. Virtual steps take Opacus's own path."""
            divisor = getattr(flat, "_forge_divisor", 1.0)
            if self._step_skip_queue or self.loss_reduction != "mean":
                if divisor != 1.0:  # Opacus's path expects undivided sums
                    raise RuntimeError("virtual steps need LoraClipper.flat_divisor = 1")  # a bug, not bad input
                for p in self.params:
                    p.summed_grad = None
                return self.step()
            if getattr(flat, "_forge_processed", True):  # as Opacus: never noise the same sum twice
                raise ValueError(
                    "Gradients haven't been cleared since the last optimizer step. In order to obtain "
                    "privacy guarantees you must compute fresh clipped gradients before each step"
                )
            std = self.noise_multiplier * self.max_grad_norm
            if divisor == self.expected_batch_size:  # (sum + std z) / B, with the sum already divided
                flat.add_(self._noise(flat.numel(), flat.dtype), alpha=std / divisor)
            elif divisor == 1.0:
                flat.add_(self._noise(flat.numel(), flat.dtype), alpha=std)
                flat.div_(self.expected_batch_size)
            else:
                raise RuntimeError(f"clipped sums divided by {divisor}, not by the expected batch size")  # a bug
            flat._forge_processed = True  # type: ignore[attr-defined]  # a marker on the tensor, like Opacus's p._processed
            if self.step_hook:
                self.step_hook(self)
            self._is_last_step_skipped = False
            return self.original_optimizer.step()

        def scale_grad(self):
            if self.loss_reduction != "mean":
                return
            div = self.expected_batch_size * self.accumulated_iterations
            flat = self.__dict__.pop("_forge_flat_grad", None)
            if flat is not None:  # every p.grad is a view of it (set by add_noise just before)
                flat.div_(div)
            else:
                torch._foreach_div_([p.grad for p in self.params], div)

    return _Cls


class ClippedGradDPOptimizer:
    """Factory for the Opacus optimizer subclass (created lazily: Opacus imports are slow)."""

    _cls = None

    def __new__(cls, *args, **kwargs):
        if cls._cls is None:
            cls._cls = _optimizer_class()
        return cls._cls(*args, **kwargs)


class TrainingRun:
    """The state of one training run; :meth:`epoch` runs one epoch of Poisson-sampled
    steps. All its randomness comes from ``secret`` (32 bytes; see :mod:`.randomness`).
    Used by :func:`train_plugin` and by ``benchmarks/bench_dp_overhead.py``."""

    def __init__(
        self,
        model,
        X: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        plan: DPPlan,
        *,
        secret: bytes,
        stabilise_no_dp: bool = True,
        generator: str = GENERATOR,
    ):
        self.model, self.X, self.y, self.config, self.plan = model, X, y, config, plan
        self.stabilise_no_dp = stabilise_no_dp
        self.dp = plan.noise_multiplier is not None
        secret = check_secret(secret)
        params = self.params = [p for p in model.parameters() if p.requires_grad]
        cls_name, extra = OPTIMIZERS.get(config.optimizer)
        base_opt = getattr(torch.optim, cls_name)(params, lr=config.lr, **extra)
        self.accountant = None
        self.clipper: LoraClipper | None = None
        # Opacus's optimizer (Opacus ships no type information) or, without DP, a torch one
        self.optimizer: Any
        self.generator = generator = check_generator(generator)
        self.dropout_seed = SecretStream(secret, DROPOUT, generator).torch_seed()
        if self.dp:
            self.accountant = _accountant(config.accountant)
            self.clipper = LoraClipper(model)
            self.clipper.flat_divisor = plan.n * plan.sample_rate  # the expected batch size: step_flat's division, folded
            self.optimizer = ClippedGradDPOptimizer(
                base_opt,
                noise_multiplier=plan.noise_multiplier,
                max_grad_norm=config.max_grad_norm,
                expected_batch_size=plan.n * plan.sample_rate,
                loss_reduction="mean",
            )
            self.optimizer.noise_source = NoiseSource(SecretStream(secret, NOISE, generator))
            self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
        else:
            self.optimizer = base_opt
        self.sampler = PoissonSampler(SecretStream(secret, SAMPLING, generator), plan.n, plan.sample_rate, plan.steps_per_epoch)
        self.steps_done = 0
        self._dirty = True

    @property
    def history(self) -> list[tuple[float, float, int]]:
        return [] if self.accountant is None else [tuple(h) for h in self.accountant.history]

    def _step(self, idx: list[int]) -> None:
        model, opt = self.model, self.optimizer
        if self.dp:
            clipper = self.clipper
            assert clipper is not None  # a DP run has one
            if self._dirty:  # Opacus's bookkeeping after a step on its own path
                opt.zero_grad(set_to_none=True)
            if idx:
                ix = torch.as_tensor(idx)
                loss = F.cross_entropy(model(self.X[ix]), self.y[ix], reduction="sum")
                clipper.clip_backward(loss, self.config.max_grad_norm, norms=False)
                flat = clipper.flat_grad
                if flat is not None:  # every LoRA gradient is a view of one buffer
                    opt.step_flat(flat)
                    self._dirty = False
                    self.steps_done += 1
                    return
            else:  # an empty Poisson batch is still a step: noise only
                for p in clipper.parameters:
                    p.grad = torch.zeros_like(p)
            opt.step()
            self._dirty = True
        elif idx:
            opt.zero_grad(set_to_none=True)
            ix = torch.as_tensor(idx)
            loss = F.cross_entropy(model(self.X[ix]), self.y[ix])
            loss.backward()
            if self.stabilise_no_dp:  # the batch gradient (not per sample) clipped, as DP-SGD's is bounded
                torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            opt.step()
        self.steps_done += 1

    def epoch(self) -> None:
        for idx in self.sampler:
            self._step(idx)

    def run(self, epochs: int, advance=None) -> None:
        """``epochs`` epochs, with the dropout masks drawn from the secret's dropout stream
        (the global torch RNG is restored afterwards)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.dropout_seed)
            for _ in range(epochs):
                self.epoch()
                if advance is not None:
                    advance(1)

    def close(self) -> None:
        if self.clipper is not None:
            self.clipper.remove()
        self.model.eval()
        for p in self.model.parameters():
            p.grad = None


def _check_out(out: str | Path | None) -> None:
    if out is None:
        return
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ForgeFileError(
            f"{out} already exists and is not an empty directory",
            fix="choose a new --out directory or remove the old plugin",
            code="plugin.exists",
        )


def _check_data(base, data) -> None:
    from ..plugins.sources import check_compatible

    if len(data) == 0:
        raise ForgeDataError(f"training set {data.name} is empty", fix="give a data set with at least one record", code="data.empty")
    check_compatible(base, data)
    if data.n_classes != base.n_classes:
        raise ForgeDataError(
            f"{data.name} has {data.n_classes} classes, base {base.name} has {base.n_classes}",
            fix="use a base built for this number of classes",
            code="data.labels",
        )


def randomness_record(secret: bytes, *, supplied: bool, generator: str = GENERATOR) -> dict:
    """What forge.json says of a run's randomness: the generator, its noise recipe and a hiding
    commitment to the secret; ``source`` is ``"os"`` for a fresh secret from the OS and
    ``"supplied"`` when the caller gave one (then the toolkit cannot vouch that it is secret)."""
    return {
        "generator": generator,
        "noise": GENERATORS[generator],
        "secret_commitment": commit(secret),
        "source": "supplied" if supplied else "os",
    }


def data_commitment(secret: bytes, data) -> str:
    """A hiding commitment to the training set (keyed by the run's secret): a plain hash of the
    data would let anyone holding all records but one test each candidate for the last."""
    return keyed_digest(secret, "training-data", data.digest())


def train_plugin(
    config: TrainConfig,
    data,
    *,
    site: str,
    base=None,
    ledger=None,
    commitment: dict | None = None,
    out: str | Path | None = None,
    secret: bytes | None = None,
    generator: str = GENERATOR,
):
    """Train one plugin of ``site`` on ``data`` with ``config``; return a ``Plugin``.

    The sampling, noise and dropout come from ``secret`` (default: 32 fresh bytes from the OS,
    which is what every released plugin should use); the returned plugin holds it in memory as
    ``plugin.secret`` (for :func:`forge_secure.privacy.replay.write_replay_envelope`), and
    forge.json records only a commitment to it. Give ``secret`` only to replay a run or for an
    auditor's own reproducible experiments: forge.json then says ``randomness.source =
    "supplied"`` and the default audit refuses such a plugin unless a replay verifies it.
    ``generator`` (:data:`.randomness.GENERATORS`) is for a replay of a run that used an older one.

    With a ``ledger``, the epsilon of this release composed with everything already in
    the ledger is checked against the site's budget *before* training (refused with the
    figures) and the release is recorded after it, before the plugin is written. With
    ``out``, the plugin directory is written atomically (an existing plugin is refused
    before any work is done).
    """
    from ..plugins.bases import load_base
    from ..plugins.plugin import Plugin, new_meta, save_plugin
    from ..plugins.record import read_plugin

    if not isinstance(config, TrainConfig):
        raise ForgeValueError(f"config is a {type(config).__name__}, not a TrainConfig", code="train.config")
    if not isinstance(site, str) or not site:
        raise ForgeValueError(f"site {site!r} must be a non-empty name", fix="give --site such as site-1", code="train.site")
    _check_out(out)
    base = base if base is not None else load_base(config.base)
    _check_data(base, data)
    plan = plan_privacy(config, len(data))
    if ledger is not None and plan.history:
        ledger.check(plan.history, plan.delta, accountant=plan.accountant)
    elif ledger is not None and ledger.budget is not None:
        from ..errors import ForgeBudgetError

        raise ForgeBudgetError(
            f"training without DP spends an unbounded epsilon, but {site} has a budget of {ledger.budget:g} on {ledger.dataset}",
            fix="train with --epsilon or --noise-multiplier, or train on data outside the budget",
            code="budget.exceeded",
        )

    model, targets = build_lora_model(base, config)
    X = torch.from_numpy(np.array(data.X, dtype=np.float32))
    y = torch.from_numpy(np.array(data.y, dtype=np.int64))
    supplied = secret is not None
    secret = check_secret(secret) if supplied else fresh_secret()
    run = TrainingRun(model, X, y, config, plan, secret=secret, generator=generator)
    started = time.perf_counter()
    with progress.task(f"training {site} ({'DP' if run.dp else 'no DP'})", total=config.epochs) as advance:
        run.run(config.epochs, advance)
    seconds = time.perf_counter() - started
    if not all(torch.isfinite(p).all() for p in run.params):
        run.close()
        raise ForgeValueError(
            f"training diverged (non-finite LoRA weights) at learning rate {config.lr:g}", fix="lower --lr", code="train.diverged"
        )
    history = run.history
    run.close()

    if run.dp:
        if sum(h[2] for h in history) != plan.steps or {(h[0], h[1]) for h in history} != {(plan.noise_multiplier, plan.sample_rate)}:
            raise RuntimeError(f"accountant history {history} does not match the plan {plan.history}")  # a bug, not bad input
        assert plan.delta is not None and plan.accountant is not None  # a DP plan has both
        epsilon = compute_epsilon(history, plan.delta, plan.accountant)
        spec = ACCOUNTANTS.get(plan.accountant)
        dp: dict[str, Any] = {
            "enabled": True,
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "steps": plan.steps,
            "max_grad_norm": config.max_grad_norm,
            "accountant": plan.accountant,
            "epsilon": epsilon,
            "delta": plan.delta,
            "history": [list(h) for h in history],
            "target_epsilon": config.target_epsilon,
            "sampling": "poisson",
            "clipping": CLIPPING_METHOD,
        }
        if spec.caveat:
            dp["accountant_caveat"] = spec.caveat
    else:
        epsilon = math.inf
        dp = {
            "enabled": False,
            "epsilon": "inf",
            "noise_multiplier": None,
            "sample_rate": plan.sample_rate,
            "steps": plan.steps,
            "max_grad_norm": None,
            "accountant": None,
            "delta": None,
            "sampling": "poisson",
        }
    dp["randomness"] = randomness_record(secret, supplied=supplied, generator=run.generator)

    commitment = dict(commitment or {})
    data_record = {
        "name": commitment.pop("name", data.name),
        "kind": data.kind,
        "rows": len(data),
        "n_classes": data.n_classes,
        "commitment": data_commitment(secret, data),
        "membership": commitment.pop("membership", None),
        "canaries": commitment.pop("canaries", None) or {"count": 0, "seed_sha256": None},
    }
    data_record.update(commitment)
    training = config.training_record()
    training.update({"steps_per_epoch": plan.steps_per_epoch, "seconds": round(seconds, 3)})
    if not run.dp:
        training["batch_gradient_clip"] = config.max_grad_norm  # stabiliser of the no-DP run (not a privacy measure)
    meta = new_meta(site=site, base=base, lora=config.lora_record(targets), dp=dp, training=training, data=data_record)

    if ledger is not None and run.dp:
        ledger.record(
            history,
            kind="train",
            delta=plan.delta,
            accountant=plan.accountant,
            note={
                "epsilon": epsilon,
                "out": str(out) if out is not None else None,
                "data_commitment": data_record["commitment"],
                "base_digest": base.digest,
            },
        )
    path = record = None
    if out is not None:
        path = save_plugin(model, meta, out)
        record = read_plugin(path, base=base)  # what was written, as every later reader will see it
        meta = record.meta
    return Plugin(path, model, base, meta, secret=secret, record=record)
