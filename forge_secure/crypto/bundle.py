"""Sealed submissions: ``seal``, ``verify`` and ``open_bundle`` (the recipe layer).

A ``.forge`` bundle (format ``forge-bundle/1``; integers big-endian)::

    magic        8 bytes   b"FORGEBDL"
    header_len   u32       1 .. 65536
    header       canonical JSON: format, algorithms, chunk_size, payload_size, chunks,
                 nonce_prefix, recipient and signer key ids, manifest_sha256
    wrapped_len  u16       the HPKE output's length for the KEM (80 for X25519)
    wrapped_key  HPKE(recipient, data key, info = "forge-bundle/1 data-key" 0x00 || sha256(magic..header))
    chunks       ``chunks`` AES-256-GCM chunks of ``chunk_size`` plaintext bytes (the last
                 one shorter) + 16-byte tags; AAD = sha256(magic..wrapped_key) || index || last flag
    env_len      u32       1 .. 65536
    envelope     DSSE envelope (JSON) of an in-toto Statement v1 whose subjects are the
                 sha256 of every byte before ``env_len`` ("<id>.payload") and the sha256 of
                 magic..wrapped_key ("<id>.header"), and whose predicate is the manifest

The manifest (type ``https://forge-secure.dev/submission/v1``) holds the format, the
algorithms, a random submission id, the site and its sequence number, the creation time,
the DP claim and base digest copied from ``forge.json``, the signer and recipient key ids
and the payload size and chunk count. No hash of the plaintext is in the clear part.
The header carries the manifest's sha256, so the manifest, the header and the wrapped
key are bound into the HPKE ``info`` and the chunks' associated data; the signature binds
all of them to the ciphertext. The plaintext is a :mod:`~forge_secure.crypto.container`.

Formats and papers: DSSE v1 and in-toto Statement v1 (https://github.com/in-toto/attestation);
HPKE, RFC 9180; the chunked stream is STREAM (Hoang et al., CRYPTO 2015), see ``_primitives``.

The code lives in three modules named for what they hold, and every public name (and the
private helpers that :mod:`.received` and the tests use) is re-exported here:
:mod:`.bundle_format` (constants, results, parsing and signature verification),
:mod:`.sealing` (:func:`seal`) and :mod:`.opening` (:func:`verify`, :func:`open_bundle`).
"""

from __future__ import annotations

from .bundle_format import (  # noqa: F401  (re-exported)
    AEAD,
    CLOCK_SKEW,
    DEFAULT_CHUNK,
    FORMAT,
    INFO_LABEL,
    JSON_DEPTH,
    KDF,
    MAGIC,
    MAX_CHUNK,
    MAX_ENVELOPE,
    MAX_HEADER,
    MAX_SAFE_INT,
    MIN_CHUNK,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    READ_BLOCK,
    STATEMENT_TYPE,
    STREAM,
    Opened,
    Verified,
    _algorithms,
    _canonical,
    _check_header,
    _decode_envelope,
    _digest_error,
    _format,
    _fresh,
    _hash_prefix,
    _keyids,
    _loads,
    _open_file,
    _parse,
    _Parsed,
    _read_exact,
    _signature_error,
    _size,
    _stamp,
    _truncated,
    _verify,
)
from .opening import _open, _open_lanes, _start_hashing, open_bundle, verify  # noqa: F401
from .sealing import _ContainerSource, _listed_recipient, _seal, _seal_head, seal  # noqa: F401

__all__ = [
    "FORMAT",
    "MAGIC",
    "INFO_LABEL",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "DEFAULT_CHUNK",
    "MIN_CHUNK",
    "MAX_CHUNK",
    "Opened",
    "Verified",
    "open_bundle",
    "seal",
    "verify",
]
