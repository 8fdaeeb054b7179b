"""Public keys: key ids, the public half of a signing key, ``public.json`` files, and the
bounded reading of small key files (:mod:`forge_secure.crypto.keys` holds the private keys
and re-exports everything here).

``public.json`` (format ``forge-public-key/1``): the site, its signing key (algorithms and raw
public keys, base64) and its encryption key (KEM name and raw public key), each with its key
id: the sha256 (hex) of the public key bytes, the raw public keys of the key's algorithms
concatenated in their stated order.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ForgeError
from ..fileio import loads_bounded
from . import _primitives as P
from .errors import BundleError, fail

PUBLIC_FORMAT = "forge-public-key/1"
SIGNING_FILE, DECRYPTION_FILE, PUBLIC_FILE = "signing.key", "decryption.key", "public.json"
CLASSIC_SIGNATURES = ("ed25519",)
PQ_SIGNATURES = ("ed25519", "ml-dsa-65")
CLASSIC_KEM, PQ_KEM = "x25519", "ml-kem-768+x25519"
SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_KEY_FILE = 1 << 20


def check_site(site: object) -> str:
    if not isinstance(site, str) or not SITE_RE.match(site):
        raise fail(
            "key.bad_site",
            f"site name {site!r} is not allowed",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return site


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, what: str, code: str = "key.invalid") -> bytes:
    if not isinstance(text, str):
        raise fail(code, f"{what} is not a base64 string", "restore the file from a good copy")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise fail(code, f"{what} is not valid base64", "restore the file from a good copy") from None


def key_id(public_raw: bytes) -> str:
    """sha256 hex of the public key bytes."""
    return hashlib.sha256(public_raw).hexdigest()


# --------------------------------------------------------------------------- public keys


@dataclass(frozen=True)
class SigningPublicKey:
    """The public half of a signing key: its algorithms and raw public keys."""

    algorithms: tuple[str, ...]
    keys: dict[str, bytes] = field(hash=False)

    def __post_init__(self):
        if self.algorithms not in (CLASSIC_SIGNATURES, PQ_SIGNATURES):
            raise fail(
                "key.algorithm",
                f"signature algorithms {list(self.algorithms)} are not supported",
                f"use {list(CLASSIC_SIGNATURES)} or {list(PQ_SIGNATURES)}",
            )
        for alg in self.algorithms:
            raw = self.keys.get(alg)
            if raw is None or len(raw) != P.SIGNATURES.get(alg).public_bytes:
                raise fail(
                    "key.invalid",
                    f"the {alg} public key is missing or of the wrong length",
                    "restore the key file or roster from a good copy",
                )

    @property
    def key_id(self) -> str:
        return key_id(b"".join(self.keys[a] for a in self.algorithms))

    def verify_all(self, message: bytes, signatures: dict[str, bytes]) -> bool:
        """True only when every algorithm of the key has a valid signature (hybrid: both)."""
        return set(signatures) == set(self.algorithms) and all(
            P.SIGNATURES.get(a).verify(self.keys[a], signatures[a], message) for a in self.algorithms
        )

    def to_dict(self) -> dict:
        return {"algorithms": list(self.algorithms), "public_keys": {a: b64e(self.keys[a]) for a in self.algorithms}}

    @classmethod
    def from_dict(cls, doc: object, where: str, code: str = "key.invalid") -> SigningPublicKey:
        if not isinstance(doc, dict) or not isinstance(doc.get("algorithms"), list) or not isinstance(doc.get("public_keys"), dict):
            raise fail(code, f"{where} is not a signing key entry", "restore it from a good copy")
        if not all(isinstance(a, str) for a in doc["algorithms"]) or len(doc["algorithms"]) > 4:
            raise fail(code, f"{where}: the algorithm names are not a short list of strings", "restore it from a good copy")
        algs = tuple(doc["algorithms"])
        keys = {a: b64d(doc["public_keys"].get(a), f"{where}: {a} public key", code) for a in algs}
        return cls(algs, keys)


@dataclass(frozen=True)
class PublicKey:
    """The public half of a party's keys, as ``public.json`` holds it."""

    site: str
    signing: SigningPublicKey
    kem: str
    encryption_key: bytes

    def __post_init__(self):
        check_site(self.site)
        if self.kem not in P.KEMS:
            raise fail("key.algorithm", f"key encapsulation {self.kem!r} is not supported", f"use one of: {', '.join(P.KEMS.names())}")
        try:
            P.KEMS.get(self.kem).public_from_raw(self.encryption_key)
        except ValueError as e:
            raise fail(
                "key.invalid", f"the {self.kem} public key is not valid ({e})", "restore the public key file from a good copy"
            ) from None

    @property
    def key_id(self) -> str:
        return self.signing.key_id

    @property
    def encryption_key_id(self) -> str:
        return key_id(self.encryption_key)

    @property
    def post_quantum(self) -> bool:
        return self.signing.algorithms == PQ_SIGNATURES

    def to_dict(self) -> dict:
        return {
            "format": PUBLIC_FORMAT,
            "site": self.site,
            "key_id": self.key_id,
            "signing": self.signing.to_dict(),
            "encryption": {"kem": self.kem, "key_id": self.encryption_key_id, "public_key": b64e(self.encryption_key)},
        }

    @classmethod
    def from_dict(cls, doc: object, where: str) -> PublicKey:
        if not isinstance(doc, dict) or doc.get("format") != PUBLIC_FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise fail(
                "key.wrong_type",
                f"{where} is not a forge public key file (format {got!r})",
                f"give the {PUBLIC_FILE} written by 'forge keys new'",
            )
        try:
            encryption = doc["encryption"]
            if not isinstance(encryption, dict) or not isinstance(encryption.get("kem"), str):
                raise TypeError("encryption")
            pub = cls(
                doc["site"],
                SigningPublicKey.from_dict(doc["signing"], f"{where}: signing"),
                encryption["kem"],
                b64d(encryption["public_key"], f"{where}: encryption public key"),
            )
        except (KeyError, TypeError):
            raise fail(
                "key.invalid",
                f"{where} is missing fields of a public key file",
                "restore it from a good copy or write a new one with 'forge keys new'",
            ) from None
        for stated, real in ((doc.get("key_id"), pub.key_id), (encryption.get("key_id"), pub.encryption_key_id)):
            if stated != real:
                raise fail(
                    "key.invalid",
                    f"{where}: stated key id {stated!r} does not match the keys ({real})",
                    "the file was edited or damaged; restore it from a good copy",
                )
        return pub


def _read_small(path: str | os.PathLike, what: str) -> bytes:
    from ..fileio import read_bounded_bytes

    try:
        return read_bounded_bytes(path, what, max_bytes=MAX_KEY_FILE, code_prefix="key")
    except BundleError:
        raise
    except ForgeError as e:  # the crypto area's one error type, same code and message
        raise fail(e.code, e.message, e.fix or "restore it from a good copy") from None


def _read_json_doc(path: str | os.PathLike, what: str) -> object:
    return _json_doc(_read_small(path, what), path, what)


def _json_doc(raw: bytes, path, what: str) -> object:
    try:
        return loads_bounded(raw, max_depth=8, max_int_digits=12, allow_floats=False)
    except ValueError as e:
        raise fail(
            "key.invalid",
            f"{what} {path} is not a forge key file ({e}; truncated or of the wrong type)",
            "give the file written by 'forge keys new', restored from a good copy",
        ) from None


def load_public_key(path: str | os.PathLike) -> PublicKey:
    """Read a ``public.json`` (or a key directory holding one)."""
    path = Path(path)
    if path.is_dir() and (path / PUBLIC_FILE).is_file():
        path = path / PUBLIC_FILE
    return PublicKey.from_dict(_read_json_doc(path, "public key file"), str(path))


def public_key_from_bytes(raw: bytes, where: str = "<public key>") -> PublicKey:
    """Parse the bytes of a ``public.json`` (what :func:`load_public_key` does after reading)."""
    if len(raw) > MAX_KEY_FILE:
        raise fail("key.too_large", f"{where} is larger than {MAX_KEY_FILE} bytes", "give the key file itself")
    return PublicKey.from_dict(_json_doc(raw, where, "public key file"), where)
