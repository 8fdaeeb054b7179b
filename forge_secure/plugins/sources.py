"""From a ``--data`` argument to what training needs: the training set, its commitment,
the data-set identity for the budget ledger, and the matching test split.

For bundled data (``bundled:site-1``) the training set is the site's coin-flip draw from
its pool (:meth:`SiteShard.train`) and the commitment records the pool size, the
inclusion probability and the sha256 of the membership seed. A user file is trained on
whole (its commitment records no membership draw) unless a ``membership_seed`` is given:
then the file is the pool, each record is included by an independent coin flip
(:func:`draw_membership`, probability ``include_prob``), the rest is the holdout, and the
commitment records the same fields as for bundled data, so that a membership audit of the
plugin is statistically valid (``forge attack mia --data FILE --membership-seed S``).
The seed is the secret that hides which records were trained on: forge.json, which anyone
who receives the plugin reads, holds sha256 of it, so a guessable seed (a date, a small
number) would let them recompute the draw. A training seed must therefore be at least
``2**MIN_SEED_BITS`` (a random 128-bit number passes with probability 1 - 2^-32); checking
a seed against an existing commitment (the attack) accepts any seed.

Canaries (``canaries=M``): ``M`` out-of-distribution records (:func:`make_canaries`), each
included in the training set by an independent fair coin flip (Steinke, Nasr and
Jagielski 2023, "Privacy auditing with one (1) training run"); both the canaries and their
coin flips come from ``canary_seed``, of which forge.json records only the sha256. Whoever
holds the seed regenerates both with :func:`canary_set`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ForgeDataError, ForgeValueError
from .bases import Base
from .data import Dataset, draw_membership, is_bundled, load_data, make_canaries, resolve_bundled, seed_sha256

CANARY_INCLUDE_PROB = 0.5


@dataclass(frozen=True, eq=False)
class TrainingData:
    data: Dataset  # what is trained on (with the included canaries appended)
    commitment: dict  # the forge.json "data" record except rows/kind/n_classes
    ledger_dataset: str  # the data set the site's budget ledger composes over
    test: Dataset | None  # the site's test split (bundled data), else None
    site: str | None  # the bundled site the data belongs to, else None
    canary_mask: np.ndarray | None = None  # which canaries were included (kept in memory only)


def canary_set(m: int, like: Dataset, seed: int) -> tuple[Dataset, np.ndarray]:
    """The ``m`` canaries of ``seed`` and their inclusion mask (fair coins)."""
    gen_seed, coin_seed = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint32).tolist()
    canaries = make_canaries(m, like, seed=gen_seed)
    return canaries, draw_membership(m, coin_seed, CANARY_INCLUDE_PROB)


def default_canary_seed(site: str, seed: int) -> int:
    """A canary seed derived from public values (the site and the training seed): for research
    experiments only (``forge bench``, the membership tests), never for an audit; ``forge train``
    no longer inserts site-chosen canaries, an audit uses the auditor's own (:mod:`forge_secure.privacy.canaries`)."""
    return int.from_bytes(hashlib.sha256(f"forge-canaries|{site}|{seed}".encode()).digest()[:8], "big") >> 1


MIN_SEED_BITS = 96  # a training membership seed is at least 2**96: guessable seeds are refused

SEED_FIX = (
    'give --membership-seed a random number drawn with: python -c "import secrets; print(secrets.randbits(128))" '
    "and keep it secret until the audit"
)


def prepare_training_data(
    spec: str,
    *,
    label_column: str | None = None,
    canaries: int = 0,
    canary_seed: int | None = None,
    membership_seed: int | None = None,
    include_prob: float = 0.5,
) -> TrainingData:
    """Resolve ``spec`` (see :func:`load_data`) into a :class:`TrainingData`."""
    spec = str(spec)
    if membership_seed is not None:
        if isinstance(membership_seed, bool) or not isinstance(membership_seed, (int, np.integer)) or membership_seed < 0:
            raise ForgeValueError(
                f"membership seed {membership_seed!r} must be a non-negative integer",
                fix=SEED_FIX,
                code="data.membership_seed",
            )
        if not (0.0 < float(include_prob) < 1.0):
            raise ForgeValueError(
                f"inclusion probability {include_prob!r} is not strictly between 0 and 1",
                fix="give --include-prob such as 0.5",
                code="data.include_prob",
            )
    test = None
    site = None
    if is_bundled(spec):
        if membership_seed is not None:
            raise ForgeValueError(
                f"{spec} already has its site's recorded coin flips",
                fix="drop --membership-seed (it is for your own CSV or .npz files)",
                code="data.membership_seed",
            )
        splits, shard, part = resolve_bundled(spec)
        if shard is None or part != "train":
            raise ForgeValueError(
                f"{spec!r} is not a site's training set",
                fix=f"train on {spec.split(':')[0]}:<site> (e.g. {spec.split(':')[0]}:site-1), which is the site's coin-flip draw",
                code="data.not_training_set",
            )
        data = shard.train()
        membership = shard.commitment()
        ledger_dataset = data.name.rsplit("/", 1)[0]  # e.g. breast-cancer/site-1: the site's patients
        test, site = shard.test, shard.site
    else:
        data = load_data(spec, label_column=label_column)
        membership = None
        if membership_seed is not None:
            if int(membership_seed) < 2**MIN_SEED_BITS:
                raise ForgeValueError(
                    f"membership seed {membership_seed} can be guessed: forge.json records sha256 of it, so anyone who "
                    "reads the plugin could try every small number and recompute which records were trained on",
                    fix=SEED_FIX,
                    code="data.membership_seed",
                )
            pool = data
            mask = draw_membership(len(pool), int(membership_seed), float(include_prob))
            if not mask.any():
                raise ForgeDataError(
                    f"the coin flips of seed {membership_seed} include none of the {len(pool)} records of {pool.name}",
                    fix="give more records, another --membership-seed or a larger --include-prob",
                    code="data.empty",
                )
            data = pool.subset(mask, name=pool.name)
            membership = {"include_prob": float(include_prob), "pool_rows": len(pool), "seed_sha256": seed_sha256(int(membership_seed))}
        ledger_dataset = str(Path(spec.rsplit(".npz:", 1)[0] + (".npz" if ".npz:" in spec else "")).resolve())
    canary_record: dict[str, Any] = {"count": 0, "seed_sha256": None}
    canary_mask: np.ndarray | None = None
    if canaries:
        if canary_seed is None:
            raise ForgeValueError("canaries need a seed", fix="pass canary_seed", code="data.canary_seed")
        cset, canary_mask = canary_set(canaries, data, canary_seed)
        data = data.concat(cset.subset(canary_mask), name=data.name)
        canary_record = {"count": int(canaries), "include_prob": CANARY_INCLUDE_PROB, "seed_sha256": seed_sha256(canary_seed)}
    commitment = {"name": data.name, "membership": membership, "canaries": canary_record}
    return TrainingData(data, commitment, ledger_dataset, test, site, canary_mask)


def check_compatible(base: Base, data: Dataset, what: str = "data") -> None:
    """Refuse data that the base cannot take: wrong kind, record shape or label range.

    The one data-compatibility check (codes ``data.*``) of training, both attack suites and
    the audit; ``what`` names the data's role in messages ("candidate data", "population prior")."""
    if base.kind in ("tabular", "image", "text") and data.kind != base.kind:
        raise ForgeDataError(
            f"base {base.name} takes {base.kind} data, but {what} {data.name} is {data.kind} data",
            fix="use tabular-mlp for tables, vit-tiny (or a local Hugging Face image model) for images, "
            "and a local Hugging Face text classifier for token ids",
            code="data.kind_mismatch",
        )
    if base.kind == "text":
        config = getattr(getattr(base.model, "hf", None), "config", None)
        vocab, positions = getattr(config, "vocab_size", None), getattr(config, "max_position_embeddings", None)
        if vocab is not None and len(data) and int(data.X.max()) >= int(vocab):
            raise ForgeDataError(
                f"{what} {data.name} holds token id {int(data.X.max())}, base {base.name} has a vocabulary of {vocab}",
                fix="tokenize the text with the base's own tokenizer",
                code="data.tokens",
            )
        if positions is not None and data.shape[0] > int(positions):
            raise ForgeDataError(
                f"{what} {data.name} has sequences of {data.shape[0]} tokens, base {base.name} takes at most {positions}",
                fix=f"truncate the token ids to {positions}",
                code="data.shape_mismatch",
            )
    if base.input_shape and data.shape != tuple(base.input_shape):
        if data.kind == "tabular":
            msg = (
                f"{what} {data.name} has {data.shape[0]} feature columns, base {base.name} expects {base.input_shape[0]} "
                f"(records of shape {tuple(data.shape)}, not {tuple(base.input_shape)})"
            )
            fix = "give a CSV with exactly the base's features plus the label column"
        else:
            msg = f"{what} {data.name} has records of shape {data.shape}, base {base.name} expects {tuple(base.input_shape)}"
            fix = "resize the images or build the base for this size"
        raise ForgeDataError(msg, fix=fix, code="data.shape_mismatch")
    if len(data) and int(data.y.max()) >= base.n_classes:
        raise ForgeDataError(
            f"{what} {data.name} has label {int(data.y.max())}, base {base.name} has {base.n_classes} classes",
            fix=f"encode the labels as 0..{base.n_classes - 1}",
            code="data.labels",
        )


def base_kwargs_for(base_name: str, data: Dataset) -> dict:
    """Builder settings that fit a bundled base to the data (vit-tiny: image size,
    channels and classes of the data when they differ from its 8x8x1, 10-class default).
    Only the shipped settings load; for others :func:`~.bases.load_base` refuses with the
    ``tools/make_bases.py`` command that builds that base into a directory."""
    if base_name == "vit-tiny" and data.kind == "image":
        c, h, w = data.shape
        if h != w:
            raise ForgeDataError(f"{data.name} has non-square images {h}x{w}", fix="crop or pad the images to a square", code="data.shape")
        kwargs: dict[str, Any] = {}
        if (c, h) != (1, 8):
            kwargs.update(image_size=int(h), num_channels=int(c), patch_size=2 if h <= 16 else 4)
        if data.n_classes != 10:
            kwargs["n_classes"] = int(data.n_classes)
        return kwargs
    return {}
