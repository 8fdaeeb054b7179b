"""A site's encrypted contribution to homomorphic Fusion.

A site with an FFA-LoRA plugin (``A`` frozen and shared, only ``B`` trained) multiplies its
``B`` tensors by its weight ``w_i`` (by default its training-set size), checks that every
value is finite and within ``params.max_abs`` (CKKS ciphertexts are malleable and carry no
range proof, so the range is checked before encryption and again after decryption), and
encrypts them under the consortium's *public* context. The contribution directory holds:

- ``forge.json`` (format ``forge-he-contribution/1``): site, base, LoRA settings, weight,
  the context fingerprint, the tensor layout, the digests of the other files, the DP record,
  and a *salted* commitment to the plugin (``sha256(salt || adapter digest)``): lineage
  without a plaintext weight hash the aggregator could test guesses against; the site keeps
  the salt to open the commitment later;
- ``ciphertexts.bin`` (see :mod:`.pack`), ``frozen_A.safetensors`` (the public shared ``A``)
  and ``adapter_config.json``.

It is a directory with a ``forge.json`` like a plugin, so ``forge seal`` seals it as it is.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import __version__
from ...errors import ForgeDataError, ForgeIntegrityError, ForgeValueError
from ...fileio import atomic_directory, atomic_write_json, sha256_bytes, sha256_file
from ...plugins.record import read_manifest, read_plugin
from .keys import load_public_context
from .ops import encrypt_vector
from .pack import flatten, make_layout, n_values, write_ciphertexts
from .params import HEParams

CONTRIBUTION_FORMAT = "forge-he-contribution/1"
CIPHERTEXTS = "ciphertexts.bin"
FROZEN_A = "frozen_A.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Contribution:
    path: Path
    meta: dict
    salt: str  # keep it: it opens the commitment to the plugin


def check_weight(weight) -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise ForgeValueError(
            f"weight {weight!r} is not a number", fix="give a positive number, e.g. the training-set size", code="he.bad_weight"
        ) from None
    if not (math.isfinite(w) and w > 0):
        raise ForgeValueError(
            f"weight {weight!r} must be a positive finite number", fix="give e.g. the training-set size", code="he.bad_weight"
        )
    return w


def encrypt_plugin(
    plugin_dir: str | os.PathLike,
    public_context: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weight: float | None = None,
    hide_digest: bool = False,
) -> Contribution:
    """Encrypt ``weight * B`` of an FFA plugin under the public context into ``out``
    (``hide_digest``: record only a salted commitment to the plugin, see above)."""
    from safetensors.torch import save_file

    ctx, info = load_public_context(public_context)
    params: HEParams = info.params
    plugin = read_plugin(plugin_dir)
    plugin_digest = plugin.adapter_sha256
    assert plugin_digest is not None  # read_plugin with its weights always hashes the adapter
    ad = plugin.adapter
    if not ad.ffa:
        raise ForgeDataError(
            f"plugin {plugin.path} is plain LoRA; homomorphic Fusion needs FFA-LoRA (A frozen and shared)",
            fix="train the plugin with FFA-LoRA (--ffa and the consortium's ffa_seed)",
            code="he.not_ffa",
        )
    w = check_weight(weight if weight is not None else plugin.rows)
    b_keys = [kb for _, kb in ad.modules.values()]
    a_keys = [ka for ka, _ in ad.modules.values()]
    layout = make_layout(ad.state, b_keys)
    vec = flatten(ad.state, layout) * w
    peak = float(np.abs(vec).max()) if vec.size else 0.0
    if not np.isfinite(vec).all() or peak > params.max_abs:
        raise ForgeDataError(
            f"weight {w} x B of {plugin.path} reaches {peak:.4g}, beyond the agreed range {params.max_abs:g}",
            fix="use a smaller weight (e.g. a fraction rather than a row count) or clip the plugin; nothing was written",
            code="he.out_of_range",
        )
    blobs = encrypt_vector(ctx, vec, params.slots)
    salt = secrets.token_hex(32)
    out = Path(out)
    with atomic_directory(out) as tmp:
        save_file({k: ad.state[k].contiguous() for k in sorted(a_keys)}, str(tmp / FROZEN_A))
        atomic_write_json(tmp / ADAPTER_CONFIG, plugin.config)
        write_ciphertexts(tmp / CIPHERTEXTS, blobs)
        meta = {
            "format": CONTRIBUTION_FORMAT,
            "kind": "he-contribution",
            "toolkit_version": __version__,
            "id": secrets.token_hex(16),
            "site": plugin.site,
            "base": plugin.meta.get("base"),
            "lora": plugin.meta.get("lora"),
            "rank": ad.rank,
            "alpha": ad.alpha,
            "weight": w,
            "context_fingerprint": info.fingerprint,
            "params": params.to_dict(),
            "layout": layout,
            "n_values": n_values(layout),
            "n_ciphertexts": len(blobs),
            "files": {
                CIPHERTEXTS: sha256_file(tmp / CIPHERTEXTS),
                FROZEN_A: sha256_file(tmp / FROZEN_A),
                ADAPTER_CONFIG: sha256_file(tmp / ADAPTER_CONFIG),
            },
            "parent": dict(
                {
                    "commitment": sha256_bytes(bytes.fromhex(salt) + bytes.fromhex(plugin_digest)),
                    "site": plugin.site,
                    "kind": plugin.meta.get("kind", "trained"),
                    "dp": plugin.meta.get("dp"),
                    "rows": plugin.rows,
                },
                **({} if hide_digest else {"digest": plugin_digest}),
            ),
            "dp": plugin.meta.get("dp"),
        }
        atomic_write_json(tmp / "forge.json", meta)
    return Contribution(out, meta, salt)


def read_he_dir(path: str | os.PathLike, fmt: str, what: str) -> dict:
    """Read and check the forge.json of a contribution or aggregate directory, and the
    digests of its files."""
    p = Path(path)
    if not p.is_dir():
        raise ForgeDataError(
            f"{what} {p} is not a directory",
            fix="give the directory written by forge (or open its sealed bundle first)",
            code="he.not_a_directory",
        )
    meta = read_manifest(p)  # the one parse of a forge.json
    if meta.get("format") != fmt:
        got = meta.get("format")
        raise ForgeDataError(
            f"{p} is not a {what} (format {got!r}, expected {fmt!r})", fix=f"give a {what} directory", code="he.wrong_type"
        )
    try:
        files = dict(meta["files"])
        layout = [[str(k), [int(x) for x in shape]] for k, shape in meta["layout"]]
        int(meta["n_ciphertexts"])
        HEParams.from_dict(meta["params"])
        str(meta["context_fingerprint"])
    except (KeyError, TypeError, ValueError):
        raise ForgeDataError(
            f"{p / 'forge.json'} lacks required fields", fix="the description is damaged; produce it again", code="he.bad_meta"
        ) from None
    meta["layout"] = layout
    for name, digest in files.items():
        f = p / name
        if not f.is_file():
            raise ForgeIntegrityError(f"{what} {p} is missing {name}", fix="copy the whole directory", code="he.missing_file")
        if sha256_file(f) != digest:
            raise ForgeIntegrityError(
                f"{f} does not match the digest in forge.json",
                fix="the file is truncated or tampered with; ask for it again",
                code="he.tampered",
            )
    return meta
