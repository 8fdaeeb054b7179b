"""Site and consortium keys: a signing key, a decryption key and a public key file.

``new_keys(site, out)`` writes three files into ``out`` (the public half, ``public.json``, key ids and
the bounded reading of key files live in :mod:`forge_secure.crypto.public_keys`, re-exported here):

* ``signing.key`` (mode 0600): Ed25519, plus ML-DSA-65 with ``post_quantum`` (both must
  sign), each as PKCS#8 PEM, encrypted with the passphrase when one is given;
* ``decryption.key`` (mode 0600): X25519, or ML-KEM-768 + X25519 with ``post_quantum``
  (the HPKE hybrid KEM), stored the same way;
* ``public.json``: the site, the key ids and the public keys (base64).

A key id is the sha256 (hex) of the public key bytes: the raw public keys of the key's
algorithms concatenated in their stated order. Nothing is pickled.

Private key file formats (both are read; ``format`` names the version):

* ``forge-private-key/1``: ``{"format", "role", "site", "key_id", "algorithms", "encrypted",
  "pkcs8": {component: PEM}}``. Written for keys without a passphrase. A version-1 file
  with ``"encrypted": true`` (PKCS#8 ``BestAvailableEncryption``, PBKDF2-SHA256 with 2,048
  iterations, about 0.3 ms per guess) is still read, and ``forge keys protect`` rewrites it
  as version 2.
* ``forge-private-key/2``: passphrase-protected. ``{"format", "role", "site", "key_id",
  "algorithms", "encrypted": true, "kdf": {"name": "scrypt", "log_n": 18, "r": 8, "p": 1,
  "salt": b64(16 bytes)}, "aead": "aes-256-gcm", "nonce": b64(12 bytes), "ciphertext": b64}``.
  The key-encryption key is scrypt(passphrase, salt, N = 2**log_n, r, p) (RFC 7914), the
  parameters age uses (work factor 18: 256 MiB and about a second per guess; see
  docs/benchmarks.md for the measured time); the plaintext is the canonical JSON of
  ``{component: b64(PKCS#8 DER)}`` and the associated data the canonical JSON of every other
  field, so no field can be changed without the passphrase. A wrong passphrase always fails
  the AES-GCM tag (never a parse error).

A private key file readable or writable by group or others is refused on load (the fix is
``chmod 600``); key files are written with mode 0600.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import ForgeError
from ..fileio import atomic_write_bytes, canonical_json, loads_bounded
from . import _primitives as P
from .errors import BundleError, fail
from .public_keys import (  # noqa: F401 - the public half lives there; re-exported
    CLASSIC_KEM,
    CLASSIC_SIGNATURES,
    DECRYPTION_FILE,
    MAX_KEY_FILE,
    PQ_KEM,
    PQ_SIGNATURES,
    PUBLIC_FILE,
    PUBLIC_FORMAT,
    SIGNING_FILE,
    SITE_RE,
    PublicKey,
    SigningPublicKey,
    _json_doc,
    _read_json_doc,
    _read_small,
    b64d,
    b64e,
    check_site,
    key_id,
    load_public_key,
    public_key_from_bytes,
)

PRIVATE_FORMAT = "forge-private-key/1"  # plain (or legacy PKCS#8-encrypted) components
PROTECTED_FORMAT = "forge-private-key/2"  # scrypt + AES-256-GCM over the components
PRIVATE_FORMATS = (PRIVATE_FORMAT, PROTECTED_FORMAT)
SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P = 18, 8, 1  # age's scrypt work factor (N = 2**18, r = 8, p = 1)
SCRYPT_LOG_N_RANGE = (14, 20)  # accepted when reading (2**20: 1 GiB, a bound on memory)

# --------------------------------------------------------------------------- private keys


@dataclass(frozen=True)
class PrivateKey:
    """A loaded signing or decryption key: the site, its algorithms and key objects."""

    role: str  # "signing" | "decryption"
    site: str
    algorithms: tuple[str, ...]  # signature algorithms, or (kem name,)
    keys: dict[str, object] = field(hash=False, repr=False)

    @property
    def public_raw(self) -> bytes:
        if self.role == "signing":
            return b"".join(P.SignatureAlgorithm.public_raw(self.keys[a]) for a in self.algorithms)
        return P.KEMS.get(self.algorithms[0]).public_raw(self.keys)

    @property
    def key_id(self) -> str:
        return key_id(self.public_raw)

    def signing_public(self) -> SigningPublicKey:
        if self.role != "signing":
            raise fail("key.wrong_type", "a decryption key has no signing half", f"give the {SIGNING_FILE} file")
        return SigningPublicKey(self.algorithms, {a: P.SignatureAlgorithm.public_raw(self.keys[a]) for a in self.algorithms})

    def sign_all(self, message: bytes) -> dict[str, bytes]:
        """One signature per algorithm over ``message``."""
        if self.role != "signing":
            raise fail("key.wrong_type", "a decryption key cannot sign", f"give the {SIGNING_FILE} file")
        return {a: P.SignatureAlgorithm.sign(self.keys[a], message) for a in self.algorithms}


def read_passphrase(file: str | os.PathLike | None = None, env: str | None = None) -> bytes | None:
    """A passphrase from a file (first line) or an environment variable; None when neither."""
    if file is not None and env is not None:
        raise fail("key.passphrase_source", "both --passphrase-file and --passphrase-env were given", "give only one")
    if file is not None:
        raw = _read_small(file, "passphrase file").split(b"\n", 1)[0].rstrip(b"\r")
        if not raw:
            raise fail("key.passphrase_empty", f"passphrase file {file} has an empty first line", "write the passphrase on its first line")
        return raw
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise fail(
                "key.passphrase_empty",
                f"environment variable {env} is not set or empty",
                f"export {env} with the passphrase, or use --passphrase-file",
            )
        return value.encode("utf-8")
    return None


def _scrypt(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log_n, r=r, p=p).derive(passphrase)


def _private_doc(
    role: str,
    site: str,
    algorithms: tuple[str, ...],
    keys: dict,
    passphrase: bytes | None,
    kid: str,
    *,
    random: P.RandomSource = os.urandom,
    log_n: int = SCRYPT_LOG_N,
) -> bytes:
    doc: dict[str, Any] = {"role": role, "site": site, "key_id": kid, "algorithms": list(algorithms), "encrypted": bool(passphrase)}
    if not passphrase:
        doc.update(format=PRIVATE_FORMAT, pkcs8={name: P.private_to_pem(k, None) for name, k in keys.items()})
    else:
        doc.update(
            format=PROTECTED_FORMAT,
            aead="aes-256-gcm",
            kdf={"name": "scrypt", "log_n": log_n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64e(random(16))},
        )
        nonce = random(12)
        plain = canonical_json({name: b64e(P.private_to_der(k)) for name, k in keys.items()})
        kek = _scrypt(passphrase, b64d(doc["kdf"]["salt"], "salt"), log_n, SCRYPT_R, SCRYPT_P)
        doc.update(nonce=b64e(nonce), ciphertext=b64e(AESGCM(kek).encrypt(nonce, plain, canonical_json(doc))))
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _check_mode(path: Path) -> None:
    """Refuse a secret key file that group or others may read or write (POSIX only)."""
    if os.name != "posix":  # pragma: no cover - other systems have other permission models
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise fail(
            "key.permissions",
            f"private key file {path} is readable or writable by group or others (mode {mode:04o})",
            f"restrict it to its owner with: chmod 600 {path}",
        )


def _unprotect(path: Path, doc: dict, names: tuple[str, ...], passphrase: bytes) -> dict[str, bytes]:
    """The components' PKCS#8 DER bytes of a version-2 (scrypt + AES-256-GCM) key file."""
    kdf = doc.get("kdf")
    fields = {k: doc.get(k) for k in ("aead", "nonce", "ciphertext")}
    if not (
        isinstance(kdf, dict)
        and set(kdf) == {"name", "log_n", "r", "p", "salt"}
        and kdf["name"] == "scrypt"
        and fields["aead"] == "aes-256-gcm"
        and all(isinstance(kdf[k], int) and not isinstance(kdf[k], bool) for k in ("log_n", "r", "p"))
    ):
        raise fail("key.invalid", f"{path} does not state a supported key protection (scrypt + aes-256-gcm)", "restore it from a good copy")
    lo, hi = SCRYPT_LOG_N_RANGE
    if not (
        lo <= kdf["log_n"] <= hi and 1 <= kdf["r"] <= 16 and 1 <= kdf["p"] <= 4 and 128 * kdf["r"] * (1 << kdf["log_n"]) <= 1 << 30
    ):  # at most 1 GiB and 4 passes per unlock
        raise fail(
            "key.invalid",
            f"{path} states scrypt parameters out of range (log_n {kdf['log_n']}, r {kdf['r']}, p {kdf['p']})",
            f"rewrite it with 'forge keys protect' (log_n {lo}..{hi})",
        )
    salt, nonce = b64d(kdf["salt"], f"{path}: salt"), b64d(fields["nonce"], f"{path}: nonce")
    ciphertext = b64d(fields["ciphertext"], f"{path}: ciphertext")
    if len(salt) < 16 or len(nonce) != 12 or len(ciphertext) < 16:
        raise fail("key.invalid", f"{path} has a salt, nonce or ciphertext of the wrong length", "restore it from a good copy")
    try:
        aad = canonical_json({k: v for k, v in doc.items() if k not in ("nonce", "ciphertext")})
    except ForgeError:  # a field canonical JSON cannot hold (a lone surrogate, a huge integer): never written so
        raise fail("key.invalid", f"{path} holds a field that canonical JSON cannot represent", "restore it from a good copy") from None
    try:
        plain = AESGCM(_scrypt(passphrase, salt, kdf["log_n"], kdf["r"], kdf["p"])).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise fail(
            "key.bad_passphrase", f"wrong passphrase for {path} (or the file was changed)", "give the passphrase the key was written with"
        ) from None
    try:
        parts = loads_bounded(plain, max_depth=2, allow_floats=False)
        if not isinstance(parts, dict) or set(parts) != set(names):
            raise ValueError("wrong components")
        return {name: b64d(parts[name], f"{path}: {name}") for name in names}
    except (ValueError, BundleError):
        raise fail("key.invalid", f"{path} does not hold exactly the keys {list(names)}", "restore it from a good copy") from None


def load_private_key(path: str | os.PathLike, passphrase: bytes | None = None, *, role: str | None = None) -> PrivateKey:
    """Read ``signing.key`` or ``decryption.key`` (format 1 or 2); checks the file mode, role,
    passphrase and key id."""
    path = Path(path)
    if path.is_dir() and role:
        guess = path / (SIGNING_FILE if role == "signing" else DECRYPTION_FILE)
        if guess.is_file():
            path = guess
    what = f"{role or 'private'} key file"
    return _private_key(_read_json_doc(path, what), path, passphrase, role, check_mode=True)


def private_key_from_bytes(
    raw: bytes, passphrase: bytes | None = None, *, role: str | None = None, where: str = "<private key>"
) -> PrivateKey:
    """Parse the bytes of a private key file (what :func:`load_private_key` does after reading it
    and checking its mode)."""
    if len(raw) > MAX_KEY_FILE:
        raise fail("key.too_large", f"{where} is larger than {MAX_KEY_FILE} bytes", "give the key file itself")
    return _private_key(_json_doc(raw, where, f"{role or 'private'} key file"), where, passphrase, role, check_mode=False)


def _private_key(doc: object, path, passphrase: bytes | None, role: str | None, *, check_mode: bool) -> PrivateKey:
    if not isinstance(doc, dict) or doc.get("format") not in PRIVATE_FORMATS:
        hint = " (that is a public key file)" if isinstance(doc, dict) and doc.get("format") == PUBLIC_FORMAT else ""
        raise fail(
            "key.wrong_type",
            f"{path} is not a forge private key file{hint}",
            f"give the {SIGNING_FILE if role != 'decryption' else DECRYPTION_FILE} written by 'forge keys new'",
        )
    if check_mode:
        _check_mode(path)
    if role and doc.get("role") != role:
        raise fail(
            "key.wrong_type",
            f"{path} is a {str(doc.get('role'))[:20]} key, but a {role} key is needed",
            f"give the {SIGNING_FILE if role == 'signing' else DECRYPTION_FILE} file",
        )
    try:
        site = check_site(doc["site"])
        algorithms = tuple(doc["algorithms"]) if isinstance(doc["algorithms"], list) else None
        stated_id = doc["key_id"]
        encrypted = doc["encrypted"]
        kind = doc["role"]
        if algorithms is None or not all(isinstance(a, str) for a in algorithms) or not isinstance(encrypted, bool):
            raise TypeError
    except (KeyError, TypeError):
        raise fail("key.invalid", f"{path} is missing fields of a private key file", "restore it from a good copy") from None
    names: tuple[str, ...]
    if kind == "signing":
        if algorithms not in (CLASSIC_SIGNATURES, PQ_SIGNATURES):
            raise fail(
                "key.algorithm",
                f"{path}: signature algorithms {list(algorithms)} are not supported",
                "write new keys with 'forge keys new'",
            )
        names = algorithms
    elif kind == "decryption":
        if len(algorithms) != 1 or algorithms[0] not in P.KEMS:
            raise fail(
                "key.algorithm",
                f"{path}: key encapsulation {list(algorithms)} are not supported",
                f"use one of: {', '.join(P.KEMS.names())}",
            )
        names = P.KEMS.get(algorithms[0]).components
    else:
        raise fail("key.wrong_type", f"{path} has unknown role {str(kind)[:20]!r}", "give a key file written by 'forge keys new'")
    protected = doc["format"] == PROTECTED_FORMAT
    if protected != encrypted and protected:
        raise fail("key.invalid", f"{path} is a {PROTECTED_FORMAT} file that says it is not encrypted", "restore it from a good copy")
    if encrypted and not passphrase:
        raise fail(
            "key.passphrase_required", f"{path} is protected by a passphrase", "give it with --passphrase-file FILE or --passphrase-env VAR"
        )
    if passphrase and not encrypted:
        raise fail(
            "key.not_encrypted",
            f"{path} is not passphrase-protected, but a passphrase was given",
            "drop --passphrase-file/--passphrase-env, or check that this is the right key file",
        )
    keys = {}
    if protected:
        assert passphrase is not None  # protected implies encrypted, and encrypted without a passphrase was refused above
        for name, der in _unprotect(path, doc, names, passphrase).items():
            try:
                keys[name] = P.private_from_der(der)
            except (ValueError, TypeError) as e:
                raise fail("key.invalid", f"{path}: the {name} key cannot be read ({e})", "restore it from a good copy") from None
    else:
        pems = doc.get("pkcs8")
        if not isinstance(pems, dict) or set(pems) != set(names) or not all(isinstance(v, str) for v in pems.values()):
            raise fail("key.invalid", f"{path} does not hold exactly the keys {list(names)}", "restore it from a good copy")
        for name in names:
            try:
                keys[name] = P.private_from_pem(pems[name], passphrase if encrypted else None)
            except (ValueError, TypeError, UnicodeEncodeError) as e:
                if encrypted:
                    # PKCS#8 PBKDF2 + CBC: a wrong passphrase fails the padding check, except about once in
                    # 256 tries where the padding happens to be valid and the DER parse fails instead
                    raise fail(
                        "key.bad_passphrase",
                        f"wrong passphrase for {path} (or the file is damaged)",
                        "give the passphrase the key was written with",
                    ) from None
                raise fail("key.invalid", f"{path}: the {name} key cannot be read ({e})", "restore it from a good copy") from None
    key = PrivateKey(kind, site, algorithms, keys)
    try:
        real_id = key.key_id
    except Exception:  # a PEM of another algorithm in this slot
        raise fail("key.invalid", f"{path}: a key is of the wrong algorithm", "restore it from a good copy") from None
    if real_id != stated_id:
        raise fail(
            "key.invalid",
            f"{path}: stated key id {str(stated_id)[:80]!r} does not match the key ({real_id})",
            "the file was edited or damaged; restore it from a good copy",
        )
    return key


def protect_key_file(
    path: str | os.PathLike,
    old_passphrase: bytes | None,
    new_passphrase: bytes,
    *,
    log_n: int = SCRYPT_LOG_N,
    random: P.RandomSource = os.urandom,
) -> Path:
    """Rewrite a private key file (format 1, plain or PKCS#8-encrypted, or format 2) as format 2
    under ``new_passphrase`` (scrypt at ``log_n``), atomically, with mode 0600."""
    path = Path(path)
    key = load_private_key(path, old_passphrase)
    if len(new_passphrase) < 8:
        raise fail("key.passphrase_short", "the new passphrase has fewer than 8 characters", "use a longer passphrase")
    atomic_write_bytes(
        path,
        _private_doc(key.role, key.site, key.algorithms, key.keys, new_passphrase, key.key_id, random=random, log_n=_check_log_n(log_n)),
        0o600,
    )
    return path


def _check_log_n(log_n: int) -> int:
    lo, hi = SCRYPT_LOG_N_RANGE
    if not isinstance(log_n, int) or not lo <= log_n <= hi:
        raise fail("key.kdf", f"scrypt work factor {log_n!r} is out of range", f"give log_n between {lo} and {hi} (default {SCRYPT_LOG_N})")
    return log_n


def load_signing_key(path, passphrase: bytes | None = None) -> PrivateKey:
    return load_private_key(path, passphrase, role="signing")


def load_decryption_key(path, passphrase: bytes | None = None) -> PrivateKey:
    return load_private_key(path, passphrase, role="decryption")


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class KeyFiles:
    signing: Path
    decryption: Path
    public: Path
    public_key: PublicKey


def new_keys(
    site: str,
    out: str | os.PathLike,
    *,
    post_quantum: bool = False,
    passphrase: bytes | None = None,
    random: P.RandomSource = os.urandom,
    kdf_log_n: int = SCRYPT_LOG_N,
) -> KeyFiles:
    """Generate and write a party's keys into ``out`` (created if needed).

    ``random`` supplies the key material (default: the OS CSPRNG); tests inject a fixed
    source to make known-answer vectors. Existing key files are never overwritten. With a
    ``passphrase`` the private files are format 2 (scrypt at ``kdf_log_n``, default 18).
    """
    check_site(site)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise fail("file.not_a_directory", f"--out {out} exists and is not a directory", "give a directory for the keys")
    paths = KeyFiles(out / SIGNING_FILE, out / DECRYPTION_FILE, out / PUBLIC_FILE, None)  # type: ignore[arg-type]
    for p in (paths.signing, paths.decryption, paths.public):
        if p.exists():
            raise fail(
                "key.exists",
                f"{p} already exists; keys are never overwritten",
                "choose another --out directory, or move the old keys away first",
            )
    if passphrase is not None and len(passphrase) < 8:
        raise fail("key.passphrase_short", "the passphrase has fewer than 8 characters", "use a longer passphrase")
    _check_log_n(kdf_log_n)
    sig_algs = PQ_SIGNATURES if post_quantum else CLASSIC_SIGNATURES
    sig_keys = {a: P.SIGNATURES.get(a).generate(random) for a in sig_algs}
    kem = P.KEMS.get(PQ_KEM if post_quantum else CLASSIC_KEM)
    kem_keys = kem.generate(random)
    signing = PrivateKey("signing", site, sig_algs, sig_keys)
    decryption = PrivateKey("decryption", site, (kem.name,), kem_keys)
    public = PublicKey(
        site,
        SigningPublicKey(sig_algs, {a: P.SignatureAlgorithm.public_raw(k) for a, k in sig_keys.items()}),
        kem.name,
        kem.public_raw(kem_keys),
    )
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for path, data, mode in (
            (paths.signing, _private_doc("signing", site, sig_algs, sig_keys, passphrase, signing.key_id, log_n=kdf_log_n), 0o600),
            (
                paths.decryption,
                _private_doc("decryption", site, (kem.name,), kem_keys, passphrase, decryption.key_id, log_n=kdf_log_n),
                0o600,
            ),
            (paths.public, canonical_json(public.to_dict()) + b"\n", 0o644),
        ):
            if path.exists():  # raced with another writer
                raise fail("key.exists", f"{path} appeared while writing keys", "choose another --out directory")
            atomic_write_bytes(path, data, mode)
            written.append(path)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return KeyFiles(paths.signing, paths.decryption, paths.public, public)


__all__ = [
    "BundleError",
    "KeyFiles",
    "PrivateKey",
    "PublicKey",
    "SigningPublicKey",
    "key_id",
    "load_decryption_key",
    "load_private_key",
    "load_public_key",
    "load_signing_key",
    "new_keys",
    "private_key_from_bytes",
    "protect_key_file",
    "public_key_from_bytes",
    "read_passphrase",
]
