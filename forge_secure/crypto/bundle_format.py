"""The ``forge-bundle/1`` layout (see :mod:`forge_secure.crypto.bundle` for the byte layout):
its constants, the :class:`Verified` and :class:`Opened` results, and the parsing and
verification of a bundle's clear part (header, envelope, statement, signatures, payload
digest) that :func:`~forge_secure.crypto.bundle.verify`, ``open_bundle`` and the hub's
one-pass check (:mod:`.received`) share.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ForgeDataError
from ..fileio import canonical_json, loads_bounded
from ..progress import task
from . import _primitives as P
from . import _time
from ._pipeline import hash_stream
from .errors import BundleError, fail
from .roster import Roster

FORMAT = "forge-bundle/1"
MAGIC = b"FORGEBDL"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://forge-secure.dev/submission/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
INFO_LABEL = b"forge-bundle/1 data-key\x00"
KDF, AEAD, STREAM = "hkdf-sha256", "aes-256-gcm", "aes-256-gcm-chunked/1"
DEFAULT_CHUNK = 1 << 20
MIN_CHUNK, MAX_CHUNK = 1 << 12, 1 << 26
MAX_HEADER = MAX_ENVELOPE = 1 << 16
CLOCK_SKEW = 300
READ_BLOCK = 1 << 20
MAX_SAFE_INT = (1 << 53) - 1  # RFC 8785 / I-JSON: integers a double holds exactly
JSON_DEPTH = 8  # header, envelope and statement nest at most 5 levels


def _loads(raw: bytes):
    """Outside JSON of a bundle (header, envelope, statement), bounded before use; raises ValueError."""
    return loads_bounded(raw, max_depth=JSON_DEPTH, max_int_digits=16, allow_floats=False)


def _canonical(obj, path, what: str) -> bytes:
    try:
        return canonical_json(obj)
    except ForgeDataError:
        raise _format(path, f"the {what} cannot be written as canonical JSON") from None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Verified:
    """What a verified bundle says (everything here was checked against the signature)."""

    path: str
    site: str
    sequence: int
    submission_id: str
    created: str
    signer: str
    recipient: str
    algorithms: dict
    base_digest: str | None
    dp: dict | None
    content: dict
    payload_size: int
    chunk_size: int
    chunks: int
    bundle_size: int
    bundle_sha256: str
    roster_consortium: str
    roster_version: int
    envelope_sha256: str = ""  # sha256 of the signed envelope's bytes (with the payload digest, they fix every byte)

    @property
    def post_quantum(self) -> bool:
        return "ml-dsa-65" in self.algorithms.get("signature", [])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Opened:
    verified: Verified
    out: Path
    files: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"verified": self.verified.to_dict(), "out": str(self.out), "files": list(self.files)}


# --------------------------------------------------------------------------- helpers


def _truncated(path) -> BundleError:
    return fail(
        "bundle.truncated",
        f"{path} ends early: the bundle is truncated",
        "copy the bundle again from the site; the transfer was incomplete",
    )


def _format(path, why: str) -> BundleError:
    return fail(
        "bundle.format", f"{path} is not a valid forge bundle ({why})", "ask the site to send the .forge file written by 'forge seal' again"
    )


def _algorithms(kem: str, signature: tuple[str, ...]) -> dict:
    return {"kem": kem, "kdf": KDF, "aead": AEAD, "stream": STREAM, "signature": list(signature)}


# --------------------------------------------------------------------------- parse + verify


@dataclass
class _Parsed:
    path: str
    size: int
    header: dict
    head: bytes  # magic .. wrapped key
    pre_digest: bytes  # sha256(magic .. header), the HPKE info's digest
    wrapped: bytes
    kem: P.KemAlgorithm
    chunks_offset: int
    envelope_offset: int  # offset of env_len
    envelope: bytes


def _read_exact(f: BinaryIO, n: int, path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _truncated(path)
    return data


def _check_header(h: object, path) -> dict:
    if not isinstance(h, dict):
        raise _format(path, "the header is not a JSON object")
    if h.get("format") != FORMAT:
        raise fail(
            "bundle.version",
            f"{path} has format {h.get('format')!r}; this toolkit reads {FORMAT}",
            "open it with the forge-secure version that wrote it, or ask the site to seal again",
        )
    expected = {"format", "algorithms", "chunk_size", "payload_size", "chunks", "nonce_prefix", "recipient", "signer", "manifest_sha256"}
    if set(h) != expected:
        raise _format(path, f"header fields {sorted(set(h) ^ expected)} are unexpected or missing")
    alg = h["algorithms"]
    if not isinstance(alg, dict) or set(alg) != {"kem", "kdf", "aead", "stream", "signature"}:
        raise _format(path, "the algorithm list is malformed")
    if not (
        all(isinstance(alg[k], str) for k in ("kem", "kdf", "aead", "stream"))
        and isinstance(alg["signature"], list)
        and all(isinstance(a, str) for a in alg["signature"])
    ):  # types first: a list is no registry key
        raise _format(path, "an algorithm name is not a string")
    if (
        alg["kem"] not in P.KEMS
        or alg["kdf"] != KDF
        or alg["aead"] != AEAD
        or alg["stream"] != STREAM
        or alg["signature"] not in (["ed25519"], ["ed25519", "ml-dsa-65"])
    ):
        raise fail(
            "bundle.algorithm",
            f"{path} names algorithms this toolkit does not accept ({alg})",
            f"bundles use kem {' or '.join(P.KEMS.names())}, {KDF}, {AEAD}, {STREAM}, ed25519 (+ ml-dsa-65)",
        )
    for k in ("chunk_size", "payload_size", "chunks"):
        if not isinstance(h[k], int) or isinstance(h[k], bool) or not 1 <= h[k] <= MAX_SAFE_INT:
            raise _format(path, f"{k} is not a positive integer below 2**53")
    cs = h["chunk_size"]
    if (
        not (MIN_CHUNK <= cs <= MAX_CHUNK and cs & (cs - 1) == 0)
        or h["chunks"] != -(-h["payload_size"] // cs)
        or h["chunks"] >= P.MAX_CHUNKS
    ):
        raise _format(path, "chunk size, payload size and chunk count do not agree")
    for k, n in (("nonce_prefix", 2 * P.NONCE_PREFIX_BYTES), ("recipient", 64), ("signer", 64), ("manifest_sha256", 64)):
        v = h[k]
        if not isinstance(v, str) or len(v) != n or any(c not in "0123456789abcdef" for c in v):
            raise _format(path, f"{k} is not {n} lower-case hex digits")
    return h


def _size(f: BinaryIO) -> int:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    return size


def _stamp(f: BinaryIO):
    """(size, mtime) of a real file, to notice a change between verifying and decrypting."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):  # an in-memory stream
        return None
    return st.st_size, st.st_mtime_ns


def _parse(f: BinaryIO, path) -> _Parsed:
    size = _size(f)
    if size == 0:
        raise fail("bundle.empty", f"{path} is empty", "copy the bundle again from the site")
    first = f.read(8)
    if first != MAGIC[: len(first)]:
        raise _format(path, "it does not start with the forge bundle magic; wrong file?")
    if len(first) < 8:
        raise _truncated(path)
    (hlen,) = struct.unpack(">I", _read_exact(f, 4, path))
    if not 1 <= hlen <= MAX_HEADER:
        raise _format(path, f"header length {hlen}")
    header_bytes = _read_exact(f, hlen, path)
    try:
        header = _loads(header_bytes)
    except ValueError as e:
        raise _format(path, f"the header is not JSON within bounds: {e}") from None
    header = _check_header(header, path)
    if _canonical(header, path, "header") != header_bytes:
        raise _format(path, "the header is not canonical JSON")
    kem = P.KEMS.get(header["algorithms"]["kem"])
    (wlen,) = struct.unpack(">H", _read_exact(f, 2, path))
    if wlen != kem.wrapped_bytes():
        raise _format(path, f"the wrapped key has {wlen} bytes, {kem.name} gives {kem.wrapped_bytes()}")
    wrapped = _read_exact(f, wlen, path)
    pre = MAGIC + struct.pack(">I", hlen) + header_bytes
    head = pre + struct.pack(">H", wlen) + wrapped
    chunks_offset = len(head)
    env_offset = chunks_offset + header["payload_size"] + header["chunks"] * P.TAG_BYTES
    if size < env_offset + 4:
        raise _truncated(path)
    f.seek(env_offset)
    (elen,) = struct.unpack(">I", _read_exact(f, 4, path))
    if not 1 <= elen <= MAX_ENVELOPE:
        raise _format(path, f"envelope length {elen}")
    if size < env_offset + 4 + elen:
        raise _truncated(path)
    if size > env_offset + 4 + elen:
        raise fail(
            "bundle.trailing",
            f"{path} has {size - env_offset - 4 - elen} bytes after its end",
            "ask the site to send the .forge file written by 'forge seal' again",
        )
    envelope = _read_exact(f, elen, path)
    return _Parsed(str(path), size, header, head, hashlib.sha256(pre).digest(), wrapped, kem, chunks_offset, env_offset, envelope)


def _hash_prefix(f: BinaryIO, parsed: _Parsed) -> str:
    """sha256 of every byte before the envelope (read on both threads, hashed in order on the
    helper; bounded memory)."""
    h = hashlib.sha256(parsed.head)
    total = parsed.envelope_offset - parsed.chunks_offset
    with task("verifying", -(-total // READ_BLOCK)) as advance:
        seen = hash_stream(f, parsed.chunks_offset, total, h.update, block=READ_BLOCK, progress=advance)
    if seen != total:
        raise _truncated(parsed.path)
    return h.hexdigest()


def _signature_error(path) -> BundleError:
    return fail(
        "bundle.signature",
        f"the signature of {path} does not verify",
        "do not use this bundle: it was changed after sealing or damaged; ask the site to send it again",
    )


def _decode_envelope(parsed: _Parsed) -> tuple[bytes, dict[str, list[bytes]]]:
    try:
        env = _loads(parsed.envelope)
        if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE or not isinstance(env.get("signatures"), list):
            raise ValueError
        body = base64.b64decode(env["payload"], validate=True)
        sigs: dict[str, list[bytes]] = {}
        for s in env["signatures"]:
            if not isinstance(s, dict) or not isinstance(s.get("keyid"), str) or not isinstance(s.get("sig"), str):
                raise ValueError("a signature entry is malformed")
            alg = s["keyid"].split(":", 1)[0]
            sigs.setdefault(alg, []).append(base64.b64decode(s["sig"], validate=True))
        # one encoding only: canonical JSON, canonical base64 (no spare bits, no whitespace)
        rebuilt = canonical_json(
            {
                "payloadType": PAYLOAD_TYPE,
                "payload": base64.b64encode(body).decode("ascii"),
                "signatures": [
                    {"keyid": s["keyid"], "sig": base64.b64encode(base64.b64decode(s["sig"], validate=True)).decode("ascii")}
                    for s in env["signatures"]
                ],
            }
        )
        if rebuilt != parsed.envelope:
            raise ValueError("not canonical")
        if not isinstance(env["payload"], str):
            raise ValueError("the payload is not a string")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        raise fail(
            "bundle.envelope",
            f"the signature envelope of {parsed.path} is malformed",
            "do not use this bundle: it was changed after sealing or damaged; ask the site to send it again",
        ) from None
    return body, sigs


def _keyids(parsed: _Parsed) -> list[str]:
    return [s["keyid"] for s in _loads(parsed.envelope)["signatures"]]  # checked by _decode_envelope


def _digest_error(path) -> BundleError:
    return fail(
        "bundle.digest",
        f"the encrypted payload of {path} does not match its signed digest",
        "do not use this bundle: its payload was changed, swapped or damaged; ask the site to send it again",
    )


def _verify(
    f: BinaryIO, path, roster: Roster, now: int, *, full_digest: bool = True, parsed: _Parsed | None = None
) -> tuple[_Parsed, Verified]:
    """Every check of a bundle. With ``full_digest=False`` (used by open, which hashes the
    ciphertext while decrypting and compares before releasing anything) the payload digest
    is returned as claimed; the header digest (which authenticates the wrapped key and so
    every chunk's key) is always checked here, before any decryption. ``parsed``: the
    structure already parsed from ``f`` (open parses it once, to start hashing early); every
    check then runs on those very bytes."""
    parsed = _parse(f, path) if parsed is None else parsed
    header = parsed.header
    signer_id = header["signer"]
    entry = roster.listed_key(signer_id)  # revoked / not in the roster: refused before any signature work
    body, sigs = _decode_envelope(parsed)
    if list(sigs) != list(entry.key.algorithms) or any(len(v) != 1 for v in sigs.values()):
        raise _signature_error(path)
    if _keyids(parsed) != [f"{a}:{signer_id}" for a in entry.key.algorithms]:
        raise _signature_error(path)  # the key id hints are never trusted, but must not be malleable either
    if not entry.key.verify_all(P.pae(PAYLOAD_TYPE, body), {a: v[0] for a, v in sigs.items()}):
        raise _signature_error(path)
    try:
        statement = _loads(body)
        manifest = statement["predicate"]
        subject = statement["subject"]
        ok = (
            isinstance(statement, dict)
            and statement.get("_type") == STATEMENT_TYPE
            and statement.get("predicateType") == PREDICATE_TYPE
            and isinstance(manifest, dict)
            and isinstance(subject, list)
            and len(subject) == 2
            and [x["name"] for x in subject] == [f"{manifest['submission_id']}.payload", f"{manifest['submission_id']}.header"]
        )
        claimed, claimed_head = subject[0]["digest"]["sha256"], subject[1]["digest"]["sha256"]
        ok = ok and isinstance(claimed, str) and isinstance(claimed_head, str)
        manifest_digest = hashlib.sha256(canonical_json(manifest)).hexdigest() if ok else None
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, AttributeError):
        ok = False
    if not ok:
        raise fail(
            "bundle.statement",
            f"{path} is signed but its statement is not a forge submission",
            "ask the site to seal its plugin again with 'forge seal'",
        )
    if manifest_digest != header["manifest_sha256"]:
        raise _format(path, "the signed manifest does not match the header")
    for k in ("algorithms", "chunk_size", "payload_size", "chunks", "recipient", "signer", "format"):
        if manifest.get(k) != header.get(k):
            raise _format(path, f"the signed manifest's {k} does not match the header")
    try:
        created = _time.parse_time(manifest["created"], "created")
        site, seq, sub_id = manifest["site"], manifest["sequence"], manifest["submission_id"]
        if not (
            isinstance(site, str)
            and isinstance(seq, int)
            and not isinstance(seq, bool)
            and seq >= 1
            and isinstance(sub_id, str)
            and len(sub_id) == 32
        ):
            raise ValueError
    except (BundleError, KeyError, ValueError):
        raise fail("bundle.statement", f"{path} has a malformed manifest", "ask the site to seal its plugin again") from None
    if entry.key.algorithms != tuple(header["algorithms"]["signature"]):
        raise _signature_error(path)
    roster.check_signer(signer_id, site, created, now)
    if created > now + CLOCK_SKEW:
        raise fail(
            "bundle.future",
            f"{path} claims to be sealed at {manifest['created']}, in the future",
            "check the clocks of the site and of this machine",
        )
    if claimed_head != hashlib.sha256(parsed.head).hexdigest():
        raise _digest_error(path)
    computed = _hash_prefix(f, parsed) if full_digest else claimed
    if claimed != computed:
        raise _digest_error(path)
    dp, base = manifest.get("dp"), manifest.get("base_digest")
    return parsed, Verified(
        path=str(path),
        site=site,
        sequence=seq,
        submission_id=sub_id,
        created=manifest["created"],
        signer=signer_id,
        recipient=header["recipient"],
        algorithms=header["algorithms"],
        base_digest=base if isinstance(base, str) else None,
        dp=dp if isinstance(dp, dict) else None,
        content=manifest.get("content") if isinstance(manifest.get("content"), dict) else {},
        payload_size=header["payload_size"],
        chunk_size=header["chunk_size"],
        chunks=header["chunks"],
        bundle_size=parsed.size,
        bundle_sha256=computed,
        roster_consortium=roster.consortium,
        roster_version=roster.version,
        envelope_sha256=hashlib.sha256(parsed.envelope).hexdigest(),
    )


def _open_file(bundle):
    """``bundle`` as (file object, name, whether we opened it): a path, or a readable binary stream."""
    if hasattr(bundle, "read") and hasattr(bundle, "seek"):
        return bundle, getattr(bundle, "name", "<stream>"), False
    path = Path(bundle)
    if path.is_dir():
        raise fail("file.is_directory", f"{path} is a directory, not a bundle", "give the path of the .forge file itself")
    if not path.exists():
        raise fail("file.missing", f"bundle {path} does not exist", "check the path")
    try:
        return open(path, "rb"), path, True
    except OSError as e:
        raise fail("file.unreadable", f"bundle {path} cannot be read ({e.strerror})", "check its permissions") from None


def _fresh(trusted: Roster, timestamp, now: int) -> None:
    if timestamp is not None:
        from .timestamp import verify_timestamp

        verify_timestamp(timestamp, trusted, now=now)
