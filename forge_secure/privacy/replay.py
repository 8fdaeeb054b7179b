"""Replayable, attested training: the replay envelope and the auditor's replay.

``forge train --auditor AUDITOR/public.json`` writes, beside the plugin, ``<plugin>.replay.forge``:
a bundle (the project's own sealed format, :mod:`forge_secure.crypto.bundle`: signed by the
site, the payload encrypted with HPKE to the auditor's key) holding ``replay.json``, the
randomness secret of the run and its exact recipe (configuration with the calibrated noise
multiplier and resolved delta, where the data came from and its digest, the auditor's canary
grant and the digest of the canaries inserted, the base digest, library versions and platform).

An auditor with access to the site's data opens it (:func:`open_replay_envelope`) and calls
:func:`replay`: every claim in ``forge.json`` is compared with what the recipe implies (noise
multiplier, sample rate, steps, clipping norm, accountant, delta, epsilon, epochs, batch size,
learning rate, optimiser, LoRA settings, rows, data and secret commitments), the training is
re-run from the secret on the data the auditor holds, and the result is compared with the
released adapter. A site that trained otherwise than it claims cannot produce an envelope
that passes: the released weights are a deterministic function of (recipe, secret, data),
the secret is bound by the commitment in forge.json, and the noise of another secret or
recipe lands elsewhere.

The comparison: bit-exact where the platform and library versions match; otherwise the
relative L2 distance of all adapter tensors must be at most :data:`DEFAULT_TOLERANCE`
(``benchmarks/bench_replay.py`` measures honest replays across processes and thread counts
against every kind of lie; see docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ForgeDataError, ForgeIntegrityError, ForgeValueError

ENVELOPE_FORMAT = "forge-replay/1"
ENVELOPE_SUFFIX = ".replay.forge"
#: relative L2 distance of the adapter tensors above which a replay does not reproduce the
#: released plugin (honest cross-setting replays measure below 1e-5; the closest lie measured,
#: one record swapped, is 6.7e-3: benchmarks/bench_replay.py)
DEFAULT_TOLERANCE = 1e-4


class ReplayError(ForgeIntegrityError):
    """A replay envelope that cannot be used (missing, damaged, another plugin's, not for this key)."""


def environment() -> dict:
    """Library versions and platform: a replay is bit-exact only where these match."""
    import opacus
    import peft
    import torch

    return {
        "toolkit": __import__("forge_secure").__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "peft": peft.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "",
        "torch_threads": torch.get_num_threads(),
    }


def envelope_path(plugin_dir: str | Path) -> Path:
    """Where ``forge train`` writes the envelope of ``plugin_dir``: beside it."""
    p = Path(plugin_dir)
    return p.with_name(p.name + ENVELOPE_SUFFIX)


def build_recipe(plugin, config, *, source: dict, data, canaries: dict | None = None) -> dict:
    """The replay document of a freshly trained ``plugin`` (``train_plugin``'s result, with its
    in-memory secret) trained with ``config`` on ``data`` (the exact Dataset, canaries appended);
    ``source`` says where the data came from (``spec``, ``label_column``, ``membership_seed``,
    ``include_prob``); ``canaries`` is ``{"grant_id", "count", "digest"}`` of the auditor's grant."""
    from ..plugins.plugin import adapter_digest

    if plugin.secret is None or plugin.path is None:
        raise ForgeValueError(
            "a replay envelope needs a plugin written by train_plugin in this process",
            fix="train with out=... and pass the returned plugin",
            code="replay.no_secret",
        )
    meta = plugin.meta
    dp = meta["dp"]
    resolved = config.to_dict()
    if dp.get("enabled"):  # the calibrated sigma and the resolved delta, so the replay depends on no default
        resolved.update(noise_multiplier=dp["noise_multiplier"], target_epsilon=None, delta=dp["delta"])
    resolved["targets"] = list(meta["lora"]["targets"])
    return {
        "format": ENVELOPE_FORMAT,
        "site": meta["site"],
        "plugin": {"adapter_sha256": adapter_digest(plugin.path), "secret_commitment": dp["randomness"]["secret_commitment"]},
        "secret": plugin.secret.hex(),
        "config": resolved,
        "base": {"name": meta["base"]["name"], "digest": meta["base"]["digest"], "settings": meta["base"].get("settings", {})},
        "data": {"source": dict(source), "rows": len(data), "digest": data.digest(), "kind": data.kind},
        "canaries": dict(canaries) if canaries else None,
        "environment": environment(),
        "created": int(time.time()),
    }


def write_replay_envelope(recipe: dict, *, signer, auditor, out: str | Path, passphrase: bytes | None = None, roster=None) -> Path:
    """Seal ``recipe`` to ``auditor`` (a public key or its ``public.json``), signed by the site's
    ``signer``; ``out`` is written atomically. The auditor must be a recipient listed in the
    trusted ``roster`` (default: the latest roster trusted on this machine that lists it), so a
    swapped key file cannot receive the secret. The envelopes use their own sequence counter."""
    from .sealed import seal_files

    claim = {"format": ENVELOPE_FORMAT, "kind": "replay", "site": recipe["site"], "base": recipe["base"], "plugin": recipe["plugin"]}
    return seal_files(
        {"replay.json": json.dumps(recipe, sort_keys=True).encode()},
        claim,
        signer=signer,
        recipient=auditor,
        out=out,
        counter="sequence-replay",
        roster=roster,
        passphrase=passphrase,
    )


def _bad(code: str, message: str, fix: str) -> ReplayError:
    return ReplayError(message, fix=fix, code=code)


def open_replay_envelope(envelope: str | Path, *, key, roster, passphrase: bytes | None = None, root=None) -> dict:
    """Verify (signature, roster) and decrypt an envelope; return its recipe, with ``secret`` as bytes."""
    from ..crypto.errors import BundleError
    from .sealed import opened_files

    envelope = Path(envelope)
    if not envelope.exists():
        raise _bad(
            "replay.missing",
            f"replay envelope {envelope} does not exist",
            "ask the site for the <plugin>.replay.forge that 'forge train --auditor' wrote beside the plugin",
        )
    try:
        with opened_files(envelope, key=key, roster=roster, passphrase=passphrase, root=root) as out:
            try:
                recipe = json.loads((out / "replay.json").read_text())
            except (OSError, ValueError):
                raise _bad(
                    "replay.damaged", f"{envelope} holds no readable replay.json", "ask the site to train again with --auditor"
                ) from None
    except BundleError as e:
        code = "replay.not_for_this_key" if e.code in ("bundle.wrong_recipient", "bundle.key_unwrap") else "replay.damaged"
        raise _bad(
            code,
            f"replay envelope {envelope} cannot be opened: {e}",
            "ask the site for an envelope sealed to this auditor's key ('forge train --auditor YOUR/public.json')",
        ) from None
    try:
        if recipe.get("format") != ENVELOPE_FORMAT:
            raise ValueError(f"format {recipe.get('format')!r}")
        recipe["secret"] = bytes.fromhex(recipe["secret"])
        for k in ("site", "plugin", "config", "base", "data"):
            recipe[k]  # noqa: B018 - presence check
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _bad(
            "replay.damaged", f"{envelope} is not a {ENVELOPE_FORMAT} envelope ({e})", "ask the site to train again with --auditor"
        ) from None
    return recipe


# --------------------------------------------------------------------------- the replay


@dataclass(frozen=True)
class Comparison:
    field: str
    claimed: Any
    replayed: Any
    ok: bool


@dataclass(frozen=True)
class ReplayResult:
    """What a replay established about one plugin. ``verified`` only when every claim matched
    and the re-run training reproduced the released adapter within ``tolerance``."""

    plugin: str
    verified: bool
    reason: str  # "" when verified, else the first failure's code
    message: str
    comparisons: tuple[Comparison, ...] = ()
    distance: float | None = None  # relative L2 distance of the adapters
    max_abs_diff: float | None = None
    bit_exact: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    same_environment: bool = False
    seconds: float = 0.0
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["comparisons"] = [asdict(c) for c in self.comparisons]
        return d


def _close(a, b, rel: float = 1e-9) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= rel * max(1.0, abs(a), abs(b))
    return a == b


def claim_comparisons(meta: dict, recipe: dict, config, plan, data, secret: bytes) -> list[Comparison]:
    """Every claim of ``meta`` (forge.json) against what the recipe implies."""
    from .accountants import compute_epsilon
    from .randomness import commit
    from .train import data_commitment

    dp, training, lora = meta.get("dp") or {}, meta.get("training") or {}, meta.get("lora") or {}
    out: list[Comparison] = []

    def cmp(name, claimed, replayed, rel=1e-9):
        out.append(Comparison(name, claimed, replayed, _close(claimed, replayed, rel)))

    cmp("randomness.secret_commitment", (dp.get("randomness") or {}).get("secret_commitment"), commit(secret))
    cmp("dp.enabled", dp.get("enabled"), plan.noise_multiplier is not None)
    if plan.noise_multiplier is not None:
        cmp("dp.noise_multiplier", dp.get("noise_multiplier"), plan.noise_multiplier)
        cmp("dp.max_grad_norm", dp.get("max_grad_norm"), config.max_grad_norm)
        cmp("dp.accountant", dp.get("accountant"), plan.accountant)
        cmp("dp.delta", dp.get("delta"), plan.delta)
        cmp("dp.epsilon", dp.get("epsilon"), compute_epsilon(plan.history, plan.delta, plan.accountant), rel=1e-6)
    cmp("dp.sample_rate", dp.get("sample_rate"), plan.sample_rate)
    cmp("dp.steps", dp.get("steps"), plan.steps)
    for k in ("epochs", "batch_size", "lr", "optimizer", "seed"):
        cmp(f"training.{k}", training.get(k), getattr(config, k))
    for k in ("rank", "alpha", "ffa", "dropout"):
        cmp(f"lora.{k}", lora.get(k), getattr(config, k))
    cmp("lora.targets", list(lora.get("targets") or []), list(config.targets or []))
    if config.ffa:
        cmp("lora.ffa_seed", lora.get("ffa_seed"), config.ffa_seed)
    cmp("data.rows", (meta.get("data") or {}).get("rows"), len(data))
    cmp("data.commitment", (meta.get("data") or {}).get("commitment"), data_commitment(secret, data))
    return out


def _adapter_distance(released: dict, replayed: dict) -> tuple[float, float]:
    import torch

    keys = sorted(released)
    if sorted(replayed) != keys:
        return math.inf, math.inf
    a = torch.cat([released[k].detach().double().reshape(-1) for k in keys])
    b = torch.cat([replayed[k].detach().double().reshape(-1) for k in keys])
    if a.shape != b.shape:
        return math.inf, math.inf
    diff = a - b
    return float(diff.norm() / max(float(a.norm()), 1e-30)), float(diff.abs().max())


def replay(recipe: dict, plugin_dir: str | Path, data, *, tolerance: float = DEFAULT_TOLERANCE) -> ReplayResult:
    """Re-run the training of ``recipe`` on ``data`` (the Dataset the auditor assembled: the
    site's records and the auditor's canaries, in the order the recipe says) and compare it and
    every claim with the released plugin at ``plugin_dir``."""
    from ..plugins.bases import load_base
    from ..plugins.plugin import adapter_digest, load_plugin
    from .config import TrainConfig
    from .randomness import is_generator
    from .train import plan_privacy, train_plugin

    started = time.perf_counter()
    plugin_dir = Path(plugin_dir)
    name = str(plugin_dir)
    env = recipe.get("environment") or {}
    same_env = {k: v for k, v in env.items() if k != "torch_threads"} == {k: v for k, v in environment().items() if k != "torch_threads"}

    def result(verified, reason, message, **kw) -> ReplayResult:
        return ReplayResult(
            name,
            verified,
            reason,
            message,
            tolerance=tolerance,
            same_environment=same_env,
            seconds=time.perf_counter() - started,
            environment=env,
            **kw,
        )

    released_digest = adapter_digest(plugin_dir)
    if released_digest != recipe["plugin"].get("adapter_sha256"):
        return result(
            False,
            "replay.other_plugin",
            f"the envelope is for the adapter {str(recipe['plugin'].get('adapter_sha256'))[:16]}..., "
            f"but {name} holds {released_digest[:16]}...",
        )
    if data.digest() != recipe["data"].get("digest") or len(data) != recipe["data"].get("rows"):
        return result(
            False,
            "replay.data",
            f"the data the auditor holds ({len(data)} rows) is not the data the site says it trained on "
            f"({recipe['data'].get('rows')} rows)",
        )
    base = load_base(recipe["base"]["name"], **(recipe["base"].get("settings") or {}))
    if base.digest != recipe["base"]["digest"]:
        return result(
            False,
            "replay.base",
            f"base {base.name} has digest {base.digest[:16]}..., the recipe names {str(recipe['base']['digest'])[:16]}...",
        )
    try:
        fields: dict[str, Any] = {k: (tuple(v) if k == "targets" and v is not None else v) for k, v in recipe["config"].items()}
        config = TrainConfig(**fields)
    except (TypeError, ForgeValueError) as e:
        return result(False, "replay.recipe", f"the recipe is not a valid training configuration ({e})")
    plugin = load_plugin(plugin_dir, base)
    secret = recipe["secret"]
    plan = plan_privacy(config, len(data))
    comparisons = claim_comparisons(plugin.meta, recipe, config, plan, data, secret)
    bad = [c for c in comparisons if not c.ok]
    if bad:
        return result(
            False,
            "replay.claim_mismatch",
            "forge.json claims what the recipe does not do: "
            + "; ".join(f"{c.field} claimed {c.claimed!r}, recipe {c.replayed!r}" for c in bad[:4]),
            comparisons=tuple(comparisons),
        )
    generator = ((plugin.meta.get("dp") or {}).get("randomness") or {}).get("generator")
    if not is_generator(generator):
        return result(
            False,
            "replay.recipe",
            f"forge.json names the randomness generator {str(generator)[:80]!r}, which this toolkit does not implement",
            comparisons=tuple(comparisons),
        )
    again = train_plugin(config, data, site=plugin.meta["site"], base=base, secret=secret, generator=str(generator))
    distance, max_abs = _adapter_distance(plugin.adapter_state(), again.adapter_state())
    exact = distance == 0.0
    ok = exact or distance <= tolerance
    msg = (
        (
            "re-running the recipe reproduced the released adapter "
            + ("bit for bit" if exact else f"within tolerance (relative distance {distance:.2e} <= {tolerance:g})")
        )
        if ok
        else (
            f"re-running the recipe gives another adapter (relative distance {distance:.3g} > {tolerance:g}): "
            "the plugin was not trained as forge.json and the envelope say"
        )
    )
    return result(
        ok,
        "" if ok else "replay.weights_differ",
        msg,
        comparisons=tuple(comparisons),
        distance=distance,
        max_abs_diff=max_abs,
        bit_exact=exact,
    )


def assemble_data(recipe: dict, *, spec: str | None = None, canary_record: dict | None = None):
    """The Dataset the auditor replays on: the site's data (``spec``, default the recipe's own
    source), with the included canaries of the auditor's ``canary_record`` appended when the
    recipe says canaries were inserted. Raises a clean error when the record does not match."""
    from ..plugins.sources import prepare_training_data
    from .canaries import included_canaries

    src = recipe["data"].get("source") or {}
    spec = spec or src.get("spec")
    if not isinstance(spec, str):
        raise ForgeValueError("the recipe names no data source", fix="give the site's data with --data", code="replay.data")
    td = prepare_training_data(
        spec, label_column=src.get("label_column"), membership_seed=src.get("membership_seed"), include_prob=src.get("include_prob", 0.5)
    )
    data = td.data
    grant = recipe.get("canaries")
    if grant:
        if canary_record is None:
            raise ForgeDataError(
                f"the site says it inserted the canaries of grant {grant.get('grant_id')}",
                fix="give the auditor's canary record of that grant (--canary-record)",
                code="replay.canaries",
            )
        cset = included_canaries(canary_record, like=data)
        if (
            canary_record.get("grant_id") != grant.get("grant_id")
            or cset.digest() != grant.get("digest")
            or len(cset) != grant.get("count")
        ):
            raise ForgeDataError(
                f"the site says it inserted {grant.get('count')} canaries of grant {grant.get('grant_id')}, which is not "
                f"what the auditor issued ({len(cset)} canaries of grant {canary_record.get('grant_id')})",
                fix="the canaries were dropped or altered: the plugin fails replay",
                code="replay.canaries",
            )
        data = data.concat(cset, name=data.name)
    return data


__all__ = [
    "DEFAULT_TOLERANCE",
    "ENVELOPE_FORMAT",
    "ReplayError",
    "ReplayResult",
    "assemble_data",
    "build_recipe",
    "envelope_path",
    "open_replay_envelope",
    "replay",
    "write_replay_envelope",
]
