"""The aggregator's step of homomorphic Fusion: add ciphertexts, holding only the public
context (it cannot decrypt any contribution, nor the sum).

All contributions must have been made under the same context (fingerprint), for the same
base, LoRA layout and frozen ``A``; each is listed (id, site, weight, commitment, DP record)
in the aggregate's ``forge.json`` so the key holder can apply the k-of-n rule and divide by
the sum of the weights.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ... import __version__
from ...errors import ForgeDataError, ForgeIntegrityError, ForgeValueError
from ...fileio import atomic_directory, atomic_write_json, sha256_file
from .contribution import ADAPTER_CONFIG, CIPHERTEXTS, CONTRIBUTION_FORMAT, FROZEN_A, read_he_dir
from .keys import load_public_context
from .ops import add_all, load_vectors
from .pack import read_ciphertexts, write_ciphertexts
from .params import HEParams

AGGREGATE_FORMAT = "forge-he-aggregate/1"


def _load_vectors(ctx, path: Path, meta: dict, what: str):
    return load_vectors(ctx, read_ciphertexts(path / CIPHERTEXTS, int(meta["n_ciphertexts"])), f"{what} {path}")


def aggregate(contributions: Sequence[str | os.PathLike], public_context: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Sum the encrypted contributions into an aggregate directory; returns its forge.json."""
    ctx, info = load_public_context(public_context)
    paths = [Path(c) for c in contributions]
    if not paths:
        raise ForgeValueError("no contributions given", fix="give the sites' contribution directories", code="he.no_contributions")
    metas = [read_he_dir(p, CONTRIBUTION_FORMAT, "homomorphic contribution") for p in paths]
    first = metas[0]
    ids = set()
    for p, m in zip(paths, metas, strict=True):
        if m["context_fingerprint"] != info.fingerprint:
            raise ForgeIntegrityError(
                f"contribution {p} was encrypted under another CKKS context "
                f"({m['context_fingerprint'][:12]}..., this one is {info.fingerprint[:12]}...)",
                fix="every site must encrypt with the consortium's current public.ctx",
                code="he.context_mismatch",
            )
        if HEParams.from_dict(m["params"]) != info.params:
            raise ForgeIntegrityError(
                f"contribution {p} uses other CKKS parameters", fix="encrypt with the consortium's public.ctx", code="he.context_mismatch"
            )
        if m["id"] in ids:
            raise ForgeValueError(f"contribution {m['id']} ({p}) is given twice", fix="give each contribution once", code="he.duplicate")
        ids.add(m["id"])
        for field, label in (("base", "base model"), ("layout", "LoRA layout"), ("rank", "rank"), ("alpha", "lora_alpha")):
            if m.get(field) != first.get(field):
                raise ForgeDataError(
                    f"contribution {p} has another {label} than {paths[0]}",
                    fix="aggregate only plugins of one base, rank and target set",
                    code="merge.different_bases" if field == "base" else "merge.different_ranks",
                )
        if m["files"][FROZEN_A] != first["files"][FROZEN_A]:
            raise ForgeDataError(
                f"contribution {p} has another frozen A than {paths[0]}",
                fix="FFA plugins must share base digest, rank and ffa_seed",
                code="merge.different_ffa_a",
            )
    params = info.params
    if len(paths) > params.max_contributions:
        raise ForgeValueError(
            f"{len(paths)} contributions could overflow the CKKS range",
            fix=f"aggregate at most {params.max_contributions} at once",
            code="he.too_many",
        )
    total: list = []
    for p, m in zip(paths, metas, strict=True):  # one contribution in memory at a time
        vecs = _load_vectors(ctx, p, m, "contribution")
        total = add_all([total, vecs]) if total else vecs
    with atomic_directory(Path(out)) as tmp:
        write_ciphertexts(tmp / CIPHERTEXTS, [v.serialize() for v in total])
        shutil.copyfile(paths[0] / FROZEN_A, tmp / FROZEN_A)
        shutil.copyfile(paths[0] / ADAPTER_CONFIG, tmp / ADAPTER_CONFIG)
        meta = {
            "format": AGGREGATE_FORMAT,
            "kind": "he-aggregate",
            "toolkit_version": __version__,
            "base": first["base"],
            "lora": first.get("lora"),
            "rank": first["rank"],
            "alpha": first["alpha"],
            "context_fingerprint": info.fingerprint,
            "params": params.to_dict(),
            "layout": first["layout"],
            "n_values": first["n_values"],
            "n_ciphertexts": len(total),
            "contributions": [{"id": m["id"], "site": m["site"], "weight": m["weight"], "parent": m["parent"]} for m in metas],
            "sum_weights": float(sum(m["weight"] for m in metas)),
            "files": {
                CIPHERTEXTS: sha256_file(tmp / CIPHERTEXTS),
                FROZEN_A: sha256_file(tmp / FROZEN_A),
                ADAPTER_CONFIG: sha256_file(tmp / ADAPTER_CONFIG),
            },
            "dp": {"post_processing": True, "per_parent": [m.get("dp") for m in metas]},
        }
        atomic_write_json(tmp / "forge.json", meta)
    return meta
