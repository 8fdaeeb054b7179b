"""The key holder's step of homomorphic Fusion: decrypt the one aggregate and write the
merged plugin.

Rules (CKKS is not IND-CPA^D secure, Li and Micciancio, EUROCRYPT 2021: whoever sees
ciphertexts and their decryptions may learn the key, and decrypting several combinations
would reveal single plugins):

- decrypt only an aggregate of at least ``k`` contributions (default 2);
- one merge releases one aggregate: a contribution id that was part of an aggregate
  already released is refused (the release log lives beside the secret context);
- the aggregate's list of contributions is written by the aggregator, who holds only the
  public context and so can encrypt anything: given the contributions themselves
  (``contributions=``, directories the key holder received, e.g. from sites' signed
  bundles), the key holder checks that they are exactly the ones the aggregate lists and
  decrypts *its own* sum of their ciphertexts, so a cheating aggregator cannot pass off one
  site's ciphertext (or a re-encryption of it) as an aggregate of k sites. Without them
  the k-of-n rule rests on the aggregator's honesty;
- check the range after decryption (ciphertexts are malleable), divide by the sum of the
  weights, round to float32 (which drops the low-order CKKS noise bits), and write the
  plugin: ``B = sum_i w_i B_i / sum_i w_i`` with the shared frozen ``A``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import ForgeDataError, ForgeIntegrityError, ForgeValueError
from ...fileio import atomic_write_json, read_json_file
from ..adapter import LoraAdapter
from ..io import write_merged_plugin
from .aggregate import AGGREGATE_FORMAT, _load_vectors
from .contribution import ADAPTER_CONFIG, FROZEN_A, read_he_dir
from .keys import load_secret_context
from .ops import decrypt_vectors
from .pack import unflatten

RELEASE_LOG = "releases.json"


def _load_frozen(path: Path, what: str) -> dict:
    """The aggregate's frozen FFA ``A`` tensors (its file digest was checked by read_he_dir)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ForgeDataError(
            f"{path} in {what} is not a readable safetensors file ({e.__class__.__name__})",
            fix="the aggregate is damaged; produce it again",
            code="he.bad_meta",
        ) from None


def _release_log(key_path: Path) -> Path:
    return (key_path if key_path.is_dir() else key_path.parent) / RELEASE_LOG


def _own_sum(ctx, info, meta: dict, contributions) -> list:
    """The key holder's sum of the given contribution directories, after checking that they
    are exactly the contributions the aggregate lists (ids, sites, weights, layout)."""
    from .contribution import CONTRIBUTION_FORMAT
    from .ops import add_all

    paths = [Path(c) for c in contributions]
    metas = [read_he_dir(c, CONTRIBUTION_FORMAT, "homomorphic contribution") for c in paths]
    listed = sorted((str(c.get("id")), str(c.get("site")), float(c.get("weight", 0))) for c in meta.get("contributions") or [])
    given = sorted((str(m.get("id")), str(m.get("site")), float(m.get("weight", 0))) for m in metas)
    if listed != given:
        raise ForgeIntegrityError(
            f"the aggregate lists contributions {[x[:2] for x in listed]}, but the contributions given are {[x[:2] for x in given]}",
            fix="give exactly the contributions the aggregator summed (the sites' signed bundles); nothing was released",
            code="he.contribution_mismatch",
        )
    if not paths:  # an aggregate that lists no contributions, and none given: nothing to decrypt
        raise ForgeValueError("no contributions given", fix="give the sites' contribution directories", code="he.no_contributions")
    total: list = []
    for c, m in zip(paths, metas, strict=True):
        if (
            m["context_fingerprint"] != info.fingerprint
            or m.get("layout") != meta.get("layout")
            or m.get("files", {}).get(FROZEN_A) != meta.get("files", {}).get(FROZEN_A)
        ):
            raise ForgeIntegrityError(
                f"contribution {c} does not fit the aggregate (context, layout or frozen A)",
                fix="give the contributions the aggregate was made from; nothing was released",
                code="he.contribution_mismatch",
            )
        vecs = _load_vectors(ctx, c, m, "contribution")
        total = add_all([total, vecs]) if total else vecs
    return total


def decrypt_sum(
    aggregate_dir: str | os.PathLike, secret_context: str | os.PathLike, *, k: int = 2, release=None, contributions=None
) -> tuple[dict, np.ndarray]:
    """Decrypt an aggregate (after the checks above): returns its forge.json and the weighted
    mean ``sum_i w_i B_i / sum_i w_i`` as one flat float64 vector. ``release(meta, mean)``,
    if given, is called before the release is logged (a failure there logs nothing).
    ``contributions`` (directories): check the aggregate against them and decrypt the key
    holder's own sum of them instead of the aggregator's ciphertexts."""
    from filelock import FileLock

    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ForgeValueError(
            f"k = {k!r} must be an integer of at least 2", fix="one contribution alone must never be decrypted; use k >= 2", code="he.bad_k"
        )
    p = Path(aggregate_dir)
    meta = read_he_dir(p, AGGREGATE_FORMAT, "homomorphic aggregate")
    ctx, info = load_secret_context(secret_context)
    contribs = meta.get("contributions") or []
    ids = [c.get("id") for c in contribs]
    if len(set(ids)) != len(ids):
        raise ForgeIntegrityError("the aggregate lists a contribution twice", fix="aggregate each contribution once", code="he.duplicate")
    if len(contribs) < k:
        raise ForgeValueError(
            f"the aggregate holds {len(contribs)} contribution(s), fewer than k = {k}",
            fix=f"wait until at least {k} sites have contributed; a smaller aggregate would reveal a single plugin",
            code="he.too_few",
        )
    # k counts parties, not contributions: two contributions of one site sum to
    # (w1 + w2) * B of that site, which decrypts to its plugin in the clear
    sites = {c.get("site") for c in contribs}
    if None in sites or "" in sites or len(sites) < k:
        raise ForgeValueError(
            f"the aggregate holds contributions of {len(sites - {None, ''})} distinct site(s), fewer than k = {k}",
            fix=f"aggregate one contribution from each of at least {k} different sites; several from one site would reveal its plugin",
            code="he.too_few",
        )
    if meta["context_fingerprint"] != info.fingerprint:
        raise ForgeIntegrityError(
            "the aggregate was made under another CKKS context than this secret key",
            fix="decrypt with the key of the consortium it was encrypted for",
            code="he.context_mismatch",
        )
    weights = [float(c.get("weight", 0)) for c in contribs]
    if not all(np.isfinite(weights)) or min(weights) <= 0 or abs(sum(weights) - float(meta["sum_weights"])) > 1e-9 * max(1.0, sum(weights)):
        raise ForgeIntegrityError(
            "the aggregate's weights are not positive or do not add up to its sum_weights",
            fix="aggregate again from the contributions",
            code="he.bad_weights",
        )
    log_path = _release_log(Path(secret_context))
    with FileLock(str(log_path) + ".lock"):
        log = read_json_file(log_path, "release log") if log_path.exists() else {"released": []}
        seen = {i for r in log.get("released", []) for i in r.get("ids", [])}
        reused = sorted(set(ids) & seen)
        if reused:
            raise ForgeValueError(
                f"contribution(s) {', '.join(i[:12] for i in reused)} were already in a released aggregate",
                fix="one merge releases one aggregate; decrypting another combination "
                "would reveal single plugins. Ask the sites for fresh contributions",
                code="he.already_released",
            )
        vecs = _load_vectors(ctx, p, meta, "aggregate") if contributions is None else _own_sum(ctx, info, meta, contributions)
        flat = decrypt_vectors(vecs, int(meta["n_values"]))
        if flat.size != int(meta["n_values"]):
            raise ForgeIntegrityError(
                "the aggregate decrypts to fewer values than its layout", fix="aggregate again", code="he.bad_ciphertexts"
            )
        bound = info.params.max_abs * len(contribs)
        if not np.isfinite(flat).all() or float(np.abs(flat).max(initial=0.0)) > bound:
            raise ForgeIntegrityError(
                f"the decrypted aggregate is out of range (|x| up to {float(np.abs(flat).max(initial=0.0)):.3g}, allowed {bound:.3g})",
                fix="a ciphertext was tampered with or made under another key; nothing was released",
                code="he.out_of_range",
            )
        mean = flat / float(meta["sum_weights"])
        if release is not None:
            release(meta, mean)
        log.setdefault("released", []).append({"ids": ids, "sites": [c.get("site") for c in contribs], "sum_weights": meta["sum_weights"]})
        atomic_write_json(log_path, log, mode=0o600)
    return meta, mean


def decrypt_to_plugin(
    aggregate_dir: str | os.PathLike,
    secret_context: str | os.PathLike,
    out: str | os.PathLike,
    *,
    k: int = 2,
    base=None,
    contributions=None,
) -> Path:
    """Decrypt the aggregate and write the merged FFA plugin (``kind: merged``, method
    ``ffa-ckks``, parents = the contributions' commitments)."""
    import torch

    from ...plugins.bases import load_base

    p = Path(aggregate_dir)
    meta = read_he_dir(p, AGGREGATE_FORMAT, "homomorphic aggregate")
    base_meta = meta.get("base") or {}
    if base is None:
        base = load_base(str(base_meta.get("name")))
    if base.digest != base_meta.get("digest"):
        raise ForgeDataError(
            f"base model {base.name} has digest {base.digest[:12]}..., the aggregate was made for {str(base_meta.get('digest'))[:12]}...",
            fix="use the base model version the sites trained on",
            code="merge.different_bases",
        )
    config = read_json_file(p / ADAPTER_CONFIG, "adapter config")
    frozen = _load_frozen(p / FROZEN_A, f"aggregate {p}")
    written = []

    def release(meta: dict, mean: np.ndarray) -> None:
        state = dict(frozen)
        state.update(unflatten(mean, meta["layout"], dtype=torch.float32))
        adapter = LoraAdapter(
            state=state, rank=int(meta["rank"]), alpha=float(meta["alpha"]), rslora=bool(config.get("use_rslora")), ffa=True, name="merged"
        )
        contribs = meta["contributions"]
        parents = [dict(c["parent"], id=c["id"], weight=c["weight"]) for c in contribs]
        sw = float(meta["sum_weights"])
        template_meta = {"base": base_meta, "lora": meta.get("lora"), "data": {"kind": base.kind, "n_classes": base.n_classes}}
        written.append(
            write_merged_plugin(
                base,
                adapter,
                parents=parents,
                method="ffa-ckks",
                weights=[c["weight"] / sw for c in contribs],
                details={
                    "k": k,
                    "contributions": len(contribs),
                    "key_holder_summed": contributions is not None,
                    "context_fingerprint": meta["context_fingerprint"],
                    "params": meta["params"],
                },
                template_meta=template_meta,
                template_config=config,
                out=out,
            )
        )

    decrypt_sum(p, secret_context, k=k, release=release, contributions=contributions)
    return written[0]
