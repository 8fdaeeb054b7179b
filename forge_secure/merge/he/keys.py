"""The consortium's CKKS keys: a secret context for the key holder and a public context
(``make_context_public()``: public key only, no secret key) for sites and the aggregator.

``forge he keygen --out DIR`` writes ``secret.ctx`` (mode 0600, key holder only),
``public.ctx`` and ``he.json`` (parameters and the context fingerprint). The fingerprint is
the sha256 of the serialized public key alone; every contribution records it, so
ciphertexts made under another context are refused instead of decrypting to garbage.
Contexts are TenSEAL's own protobuf serialisation: nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import ForgeFileError, ForgeIntegrityError, ForgeValueError
from ...fileio import atomic_directory, atomic_write_bytes, atomic_write_json, read_json_file, sha256_bytes
from .params import HEParams

KEYS_FORMAT = "forge-he-keys/1"
SECRET_FILE = "secret.ctx"
PUBLIC_FILE = "public.ctx"
META_FILE = "he.json"


def _ts():
    import tenseal as ts

    return ts


def make_context(params: HEParams):
    """A fresh secret CKKS context (no Galois or relinearisation work is ever needed)."""
    ts = _ts()
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree, coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes)
    )
    ctx.global_scale = 2.0**params.scale_bits
    return ctx


def fingerprint(ctx) -> str:
    """sha256 of the serialized public key: the same for a secret context and its public copy."""
    return sha256_bytes(ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False))


def public_copy(ctx):
    pub = ctx.copy()
    pub.make_context_public()
    return pub


@dataclass(frozen=True)
class KeyInfo:
    params: HEParams
    fingerprint: str
    path: Path


def keygen(out_dir: str | os.PathLike, params: HEParams | None = None) -> KeyInfo:
    """Write a new key directory (refuses a non-empty one)."""
    params = params or HEParams()
    ctx = make_context(params)
    fp = fingerprint(ctx)
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        atomic_write_bytes(tmp / SECRET_FILE, ctx.serialize(save_secret_key=True), mode=0o600)
        atomic_write_bytes(tmp / PUBLIC_FILE, public_copy(ctx).serialize())
        atomic_write_json(tmp / META_FILE, {"format": KEYS_FORMAT, "params": params.to_dict(), "fingerprint": fp})
        os.chmod(tmp, 0o700)
    return KeyInfo(params, fp, out)


def _context_file(path: str | os.PathLike, default_name: str, what: str) -> tuple[Path, dict | None]:
    p = Path(path)
    if p.is_dir():
        meta_path = p / META_FILE
        meta = read_json_file(meta_path, "CKKS key description") if meta_path.exists() else None
        p = p / default_name
    else:
        meta_path = p.parent / META_FILE
        meta = read_json_file(meta_path, "CKKS key description") if meta_path.exists() else None
    if not p.exists():
        raise ForgeFileError(
            f"{what} {p} does not exist", fix="give the directory made by `forge he keygen` (or the .ctx file)", code="he.missing_context"
        )
    if p.is_dir():
        raise ForgeFileError(f"{what} {p} is a directory", fix="give the context file", code="he.missing_context")
    return p, meta


def _deserialize(p: Path, what: str):
    raw = p.read_bytes()
    if not raw:
        raise ForgeIntegrityError(f"{what} {p} is empty", fix="copy it again from the key holder", code="he.bad_context")
    try:
        return _ts().context_from(raw)
    except Exception as e:  # TenSEAL raises ValueError/RuntimeError on bad streams
        raise ForgeIntegrityError(
            f"{what} {p} is not a TenSEAL context ({e})",
            fix="it is truncated or of the wrong type; copy it again from the key holder",
            code="he.bad_context",
        ) from None


def _params_of(meta: dict | None, p: Path) -> HEParams:
    if meta is None:
        return HEParams()
    if not isinstance(meta, dict) or meta.get("format") != KEYS_FORMAT:
        raise ForgeIntegrityError(
            f"{p.parent / META_FILE} is not a forge CKKS key description", fix="regenerate with `forge he keygen`", code="he.bad_context"
        )
    return HEParams.from_dict(meta.get("params", {}))


def load_public_context(path: str | os.PathLike):
    """The public context for sites and the aggregator; refuses one that holds a secret key."""
    p, meta = _context_file(path, PUBLIC_FILE, "public CKKS context")
    ctx = _deserialize(p, "public CKKS context")
    if ctx.is_private() or ctx.has_secret_key():
        raise ForgeValueError(
            f"{p} holds the secret key, where only a public context belongs",
            fix="give sites and the aggregator public.ctx; the secret context stays with the key holder",
            code="he.secret_where_public",
        )
    params = _params_of(meta, p)
    fp = fingerprint(ctx)
    if meta is not None and meta.get("fingerprint") != fp:
        raise ForgeIntegrityError(
            f"{p} does not match the fingerprint in {META_FILE}", fix="copy the key directory again", code="he.context_mismatch"
        )
    return ctx, KeyInfo(params, fp, p)


def load_secret_context(path: str | os.PathLike):
    """The key holder's secret context; refuses a public one (it could not decrypt)."""
    p, meta = _context_file(path, SECRET_FILE, "secret CKKS context")
    ctx = _deserialize(p, "secret CKKS context")
    if not ctx.is_private():
        raise ForgeValueError(f"{p} holds no secret key", fix="decrypt with the key holder's secret.ctx", code="he.no_secret_key")
    params = _params_of(meta, p)
    fp = fingerprint(ctx)
    if meta is not None and meta.get("fingerprint") != fp:
        raise ForgeIntegrityError(
            f"{p} does not match the fingerprint in {META_FILE}",
            fix="use the key directory as written by `forge he keygen`",
            code="he.context_mismatch",
        )
    return ctx, KeyInfo(params, fp, p)
