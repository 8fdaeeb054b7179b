"""Hazardous primitives of the bundle format, kept apart from the recipe layer.

Everything here is a thin, typed wrapper over the ``cryptography`` package; nothing is
implemented by hand. Callers outside ``forge_secure.crypto`` should use
:mod:`forge_secure.crypto.bundle` instead.

* DSSE pre-authentication encoding (PAE), from the DSSE protocol
  (https://github.com/secure-systems-lab/dsse/blob/master/protocol.md):
  ``"DSSEv1" SP len(type) SP type SP len(body) SP body``, lengths in ASCII decimal.
* Signatures: Ed25519 (RFC 8032) and ML-DSA-65 (FIPS 204); a hybrid key signs with both
  and both must verify.
* Key wrapping: HPKE (RFC 9180) single-shot base mode with HKDF-SHA256 and AES-256-GCM,
  over DHKEM(X25519) or the hybrid ML-KEM-768+X25519 KEM (X-Wing style, FIPS 203 + RFC 7748).
  The bundle header is bound through HPKE ``info``.
* The payload stream: fixed-size AES-256-GCM chunks (NIST SP 800-38D), nonce = 8-byte
  random prefix || 4-byte big-endian chunk counter, associated data = header digest ||
  8-byte chunk index || 1-byte last-chunk flag. This is the STREAM construction of Hoang,
  Reyhanitabar, Rogaway and Vizar (CRYPTO 2015, "Online authenticated-encryption and its
  nonce-reuse misuse-resistance") with the flag carried in the associated data, so
  truncation, reordering and splicing fail authentication.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..registry import Registry

RandomSource = Callable[[int], bytes]

# --------------------------------------------------------------------------- DSSE


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``body`` with ``payload_type``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class SignatureAlgorithm:
    """One signature scheme: how to make a key from random bytes, serialise, sign, verify."""

    name: str
    seed_bytes: int
    signature_bytes: int
    public_bytes: int
    from_seed: Callable[[bytes], Any]
    public_from_raw: Callable[[bytes], Any]

    def generate(self, random: RandomSource):
        return self.from_seed(random(self.seed_bytes))

    @staticmethod
    def public_raw(private_or_public) -> bytes:
        pub = private_or_public.public_key() if hasattr(private_or_public, "public_key") else private_or_public
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @staticmethod
    def sign(private_key, message: bytes) -> bytes:
        return private_key.sign(message)

    def verify(self, public_raw: bytes, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is valid; any malformed input is simply invalid."""
        if len(signature) != self.signature_bytes or len(public_raw) != self.public_bytes:
            return False
        try:
            self.public_from_raw(public_raw).verify(signature, message)
        except Exception:  # InvalidSignature, or a malformed key/signature
            return False
        return True


SIGNATURES: Registry[SignatureAlgorithm] = Registry("signature algorithm")
SIGNATURES.add(
    "ed25519",
    SignatureAlgorithm(
        "ed25519",
        32,
        64,
        32,
        ed25519.Ed25519PrivateKey.from_private_bytes,
        ed25519.Ed25519PublicKey.from_public_bytes,
    ),
)
SIGNATURES.add(
    "ml-dsa-65",
    SignatureAlgorithm(
        "ml-dsa-65",
        32,
        3309,
        1952,
        mldsa.MLDSA65PrivateKey.from_seed_bytes,
        mldsa.MLDSA65PublicKey.from_public_bytes,
    ),
)


# --------------------------------------------------------------------------- KEMs / HPKE


@dataclass(frozen=True)
class KemAlgorithm:
    """An HPKE KEM: its component private keys (each PKCS#8-serialisable) and the suite."""

    name: str
    components: tuple[str, ...]  # names of the stored component keys, in order
    hpke_kem: object
    enc_bytes: int

    def suite(self):
        return hpke.Suite(self.hpke_kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

    def wrapped_bytes(self, key_bytes: int = 32) -> int:
        return self.enc_bytes + key_bytes + 16

    def generate(self, random: RandomSource) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        for c in self.components:
            if c == "x25519":
                keys[c] = x25519.X25519PrivateKey.from_private_bytes(random(32))
            elif c == "ml-kem-768":
                keys[c] = mlkem.MLKEM768PrivateKey.from_seed_bytes(random(64))
        return keys

    def private_key(self, parts: dict[str, Any]):
        """The object HPKE decrypts with, from the component keys."""
        if self.name == "x25519":
            return parts["x25519"]
        return hpke.MLKEM768X25519PrivateKey(parts["ml-kem-768"], parts["x25519"])

    def public_raw(self, parts: dict[str, Any]) -> bytes:
        """Public key bytes: the components' raw public keys concatenated in order."""
        return b"".join(
            parts[c].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) for c in self.components
        )

    def public_from_raw(self, raw: bytes):
        if self.name == "x25519":
            if len(raw) != 32:
                raise ValueError(f"an X25519 public key has 32 bytes, not {len(raw)}")
            return x25519.X25519PublicKey.from_public_bytes(raw)
        if len(raw) != 1184 + 32:
            raise ValueError(f"an ML-KEM-768+X25519 public key has 1216 bytes, not {len(raw)}")
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
            x25519.X25519PublicKey.from_public_bytes(raw[1184:]),
        )


KEMS: Registry[KemAlgorithm] = Registry("key encapsulation")
KEMS.add("x25519", KemAlgorithm("x25519", ("x25519",), hpke.KEM.X25519, hpke.KEM.X25519.enc_length()))
KEMS.add(
    "ml-kem-768+x25519",
    KemAlgorithm("ml-kem-768+x25519", ("ml-kem-768", "x25519"), hpke.KEM.MLKEM768_X25519, hpke.KEM.MLKEM768_X25519.enc_length()),
)


def hpke_wrap(kem: KemAlgorithm, public_raw: bytes, data_key: bytes, info: bytes) -> bytes:
    """Encrypt ``data_key`` to the recipient (``enc || ciphertext``), binding ``info``."""
    return kem.suite().encrypt(data_key, kem.public_from_raw(public_raw), info=info)


def hpke_unwrap(kem: KemAlgorithm, parts: dict[str, Any], wrapped: bytes, info: bytes) -> bytes:
    """Recover the data key; raises ``cryptography.exceptions.InvalidTag`` on any mismatch."""
    return kem.suite().decrypt(wrapped, kem.private_key(parts), info=info)


# --------------------------------------------------------------------------- private key files

PRIVATE_PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8


def private_to_pem(key, passphrase: bytes | None) -> str:
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(PRIVATE_PEM, PKCS8, enc).decode("ascii")


def private_to_der(key) -> bytes:
    """Unencrypted PKCS#8 DER (only ever stored inside an AES-GCM-sealed key file)."""
    return key.private_bytes(serialization.Encoding.DER, PKCS8, serialization.NoEncryption())


def private_from_der(der: bytes):
    """Load a PKCS#8 DER key; ``ValueError`` for bad data, including a key of an algorithm the
    library does not know (its ``UnsupportedAlgorithm``: a damaged algorithm identifier)."""
    try:
        return serialization.load_der_private_key(der, password=None)
    except UnsupportedAlgorithm as e:
        raise ValueError(f"unsupported key type ({e})") from None


def private_from_pem(pem: str, passphrase: bytes | None):
    """Load a PKCS#8 PEM key. Raises ``ValueError`` (bad passphrase / bad data, or a damaged
    algorithm identifier, which the library reports as ``UnsupportedAlgorithm``) or
    ``TypeError`` (passphrase missing or given for an unencrypted key), as the library does."""
    try:
        return serialization.load_pem_private_key(pem.encode("ascii"), password=passphrase)
    except UnsupportedAlgorithm as e:
        raise ValueError(f"unsupported key type ({e})") from None


# --------------------------------------------------------------------------- chunk stream

NONCE_PREFIX_BYTES = 8
TAG_BYTES = 16
MAX_CHUNKS = 1 << 32


class ChunkCipher:
    """AES-256-GCM over numbered chunks of one payload (see the module docstring).

    ``seal_chunk`` / ``open_chunk`` write into caller-owned buffers, so a stream of any
    length needs only two chunk-sized buffers.
    """

    def __init__(self, key: bytes, nonce_prefix: bytes, header_digest: bytes):
        if len(key) != 32:
            raise ValueError("the data key must have 32 bytes (AES-256)")
        if len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError(f"the nonce prefix must have {NONCE_PREFIX_BYTES} bytes")
        if len(header_digest) != 32:
            raise ValueError("the header digest must have 32 bytes (SHA-256)")
        self._aead = AESGCM(key)
        self._prefix = nonce_prefix
        self._digest = header_digest

    def nonce(self, index: int) -> bytes:
        if not 0 <= index < MAX_CHUNKS:
            raise ValueError("chunk counter out of range")
        return self._prefix + struct.pack(">I", index)

    def aad(self, index: int, last: bool) -> bytes:
        return self._digest + struct.pack(">QB", index, 1 if last else 0)

    def seal_chunk(self, index: int, last: bool, plaintext: memoryview, out: bytearray) -> memoryview:
        """Encrypt one chunk into ``out`` (at least ``len(plaintext) + 16`` bytes)."""
        view = memoryview(out)[: len(plaintext) + TAG_BYTES]
        self._aead.encrypt_into(self.nonce(index), plaintext, self.aad(index, last), view)
        return view

    def open_chunk(self, index: int, last: bool, ciphertext: memoryview, out: bytearray) -> memoryview:
        """Decrypt one chunk into ``out``; raises ``cryptography.exceptions.InvalidTag`` when
        the chunk does not authenticate (wrong key, index, flag, header or bytes)."""
        if len(ciphertext) < TAG_BYTES:
            raise ValueError("a chunk is shorter than its tag")
        view = memoryview(out)[: len(ciphertext) - TAG_BYTES]
        self._aead.decrypt_into(self.nonce(index), ciphertext, self.aad(index, last), view)
        return view
