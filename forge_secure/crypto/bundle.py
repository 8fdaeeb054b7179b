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
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from cryptography.exceptions import InvalidTag

from .. import __version__
from ..fileio import atomic_directory, atomic_output, canonical_json
from ..progress import task
from . import _primitives as P
from . import _time
from ._pipeline import FanOut, prefetch
from .container import ContainerReader, scan_directory, index_bytes, Entry
from .errors import BundleError, fail
from .keys import PrivateKey, PublicKey, load_decryption_key, load_public_key, load_signing_key
from .replay import ReplayStore, SequenceCounter
from .roster import Roster, load_roster

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
    return fail("bundle.truncated", f"{path} ends early: the bundle is truncated",
                "copy the bundle again from the site; the transfer was incomplete")


def _format(path, why: str) -> BundleError:
    return fail("bundle.format", f"{path} is not a valid forge bundle ({why})",
                "ask the site to send the .forge file written by 'forge seal' again")


def _jsonable_claim(value):
    """The DP claim as canonical JSON allows: floats become their repr ("1.1", "inf")."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): _jsonable_claim(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable_claim(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _read_forge_json(plugin_dir: Path) -> dict:
    meta_path = plugin_dir / "forge.json"
    if not meta_path.is_file() or meta_path.is_symlink():
        raise fail("bundle.not_plugin", f"{plugin_dir} has no forge.json",
                   "give a plugin directory (written by 'forge train') or another directory holding a forge.json")
    if meta_path.stat().st_size > 1 << 20:
        raise fail("bundle.not_plugin", f"{meta_path} is larger than 1 MiB", "give a plugin directory with a normal forge.json")
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise fail("bundle.not_plugin", f"{meta_path} is not valid JSON", "repair or rewrite the plugin's forge.json") from None
    if not isinstance(meta, dict):
        raise fail("bundle.not_plugin", f"{meta_path} is not a JSON object", "repair or rewrite the plugin's forge.json")
    return meta


def _algorithms(kem: str, signature: tuple[str, ...]) -> dict:
    return {"kem": kem, "kdf": KDF, "aead": AEAD, "stream": STREAM, "signature": list(signature)}


class _ContainerSource:
    """The container bytes of ``entries`` as a reader filling caller buffers (no copies)."""

    def __init__(self, entries: list[Entry]):
        self._pending = memoryview(index_bytes(entries))
        self._entries = list(entries)
        self._file: BinaryIO | None = None
        self._left = 0
        self._entry: Entry | None = None

    def _changed(self):
        return fail("bundle.source_changed", f"{self._entry.path} changed while it was being sealed",
                    "wait until the plugin is fully written, then seal again")

    def readinto(self, buf: memoryview) -> int:
        filled = 0
        while filled < len(buf):
            if len(self._pending):
                n = min(len(self._pending), len(buf) - filled)
                buf[filled:filled + n] = self._pending[:n]
                self._pending = self._pending[n:]
                filled += n
                continue
            if self._file is None:
                if not self._entries:
                    break
                self._entry = self._entries.pop(0)
                self._file = open(self._entry.path, "rb")
                self._left = self._entry.size
            want = min(self._left, len(buf) - filled)
            n = self._file.readinto(buf[filled:filled + want]) if want else 0
            if want and not n:
                raise self._changed()
            filled += n
            self._left -= n
            if self._left == 0:
                extra = self._file.read(1)
                self._file.close()
                self._file = None
                if extra:
                    raise self._changed()
        return filled

    def close(self):
        if self._file:
            self._file.close()


# --------------------------------------------------------------------------- seal


def seal(plugin_dir, signer, recipient, out, *, sequence: int | None = None, chunk_size: int = DEFAULT_CHUNK,
         passphrase: bytes | None = None, random: P.RandomSource = os.urandom, now: int | None = None,
         counter: SequenceCounter | None = None) -> Path:
    """Seal ``plugin_dir`` for ``recipient``, signed by ``signer``; write ``out`` atomically.

    ``signer`` is a loaded signing :class:`PrivateKey` or the path of ``signing.key``
    (with ``passphrase``); ``recipient`` a :class:`PublicKey` or the path of its
    ``public.json``. ``sequence`` defaults to the next value of the site's counter under
    ``forge_home()``. ``random`` (submission id, data key, nonce prefix) and ``now`` are
    injectable for known-answer tests; the defaults are the OS CSPRNG and the clock.
    """
    return _seal(plugin_dir, signer, recipient, out, sequence=sequence, chunk_size=chunk_size, passphrase=passphrase,
                 random=random, now=now, counter=counter, wrap=P.hpke_wrap)


def _seal(plugin_dir, signer, recipient, out, *, sequence, chunk_size, passphrase, random, now, counter,
          wrap: Callable[[P.KemAlgorithm, bytes, bytes, bytes], bytes]) -> Path:
    plugin_dir, out = Path(plugin_dir), Path(out)
    if not plugin_dir.exists():
        raise fail("file.missing", f"plugin directory {plugin_dir} does not exist", "check the path")
    if not plugin_dir.is_dir():
        raise fail("file.not_a_directory", f"{plugin_dir} is a file, not a plugin directory", "give the plugin directory itself")
    if out.is_dir():
        raise fail("file.is_directory", f"--out {out} is a directory", "give the path of the .forge file to write")
    if out.exists():
        raise fail("file.exists", f"{out} already exists", "choose another --out; bundles are never overwritten")
    if out.resolve().is_relative_to(plugin_dir.resolve()):
        raise fail("file.inside_input", f"--out {out} is inside the plugin directory", "write the bundle outside the plugin directory")
    if not (isinstance(chunk_size, int) and MIN_CHUNK <= chunk_size <= MAX_CHUNK and chunk_size & (chunk_size - 1) == 0):
        raise fail("bundle.chunk_size", f"chunk size {chunk_size!r} is not a power of two between {MIN_CHUNK} and {MAX_CHUNK}",
                   "leave the default (1 MiB)")
    if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1):
        raise fail("bundle.sequence", f"sequence number {sequence!r} must be an integer of at least 1", "give --sequence 1 or more")
    if not isinstance(signer, PrivateKey):
        signer = load_signing_key(signer, passphrase)
    if signer.role != "signing":
        raise fail("key.wrong_type", "--signer must be a signing key", "give the signing.key written by 'forge keys new'")
    if not isinstance(recipient, PublicKey):
        recipient = load_public_key(recipient)
    meta = _read_forge_json(plugin_dir)
    entries = scan_directory(plugin_dir)
    payload_size = len(index_bytes(entries)) + sum(e.size for e in entries)
    chunks = -(-payload_size // chunk_size)
    kem = P.KEMS.get(recipient.kem)
    algorithms = _algorithms(kem.name, signer.algorithms)
    created = _time.now() if now is None else int(now)
    counter = counter or SequenceCounter()
    with counter.next(signer.site, sequence) as seq:
        submission_id = random(16).hex()
        data_key, nonce_prefix = random(32), random(P.NONCE_PREFIX_BYTES)
        base = meta.get("base")
        manifest = {
            "format": FORMAT,
            "algorithms": algorithms,
            "submission_id": submission_id,
            "site": signer.site,
            "sequence": seq,
            "created": _time.format_time(created),
            "signer": signer.key_id,
            "recipient": recipient.encryption_key_id,
            "base_digest": base.get("digest") if isinstance(base, dict) and isinstance(base.get("digest"), str) else None,
            "dp": _jsonable_claim(meta.get("dp")) if isinstance(meta.get("dp"), dict) else None,
            "content": {"format": str(meta.get("format", "unknown")), "kind": str(meta.get("kind", "unknown")),
                        "files": len(entries)},
            "payload_size": payload_size,
            "chunk_size": chunk_size,
            "chunks": chunks,
            "toolkit_version": __version__,
        }
        manifest_bytes = canonical_json(manifest)
        header = canonical_json({
            "format": FORMAT, "algorithms": algorithms, "chunk_size": chunk_size, "payload_size": payload_size,
            "chunks": chunks, "nonce_prefix": nonce_prefix.hex(), "recipient": recipient.encryption_key_id,
            "signer": signer.key_id, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        })
        pre = MAGIC + struct.pack(">I", len(header)) + header
        wrapped = wrap(kem, recipient.encryption_key, data_key, INFO_LABEL + hashlib.sha256(pre).digest())
        head = pre + struct.pack(">H", len(wrapped)) + wrapped
        cipher = P.ChunkCipher(data_key, nonce_prefix, hashlib.sha256(head).digest())
        digest = hashlib.sha256(head)
        source = _ContainerSource(entries)

        def sizes():
            return (payload_size - i * chunk_size if i == chunks - 1 else chunk_size for i in range(chunks))

        try:
            with atomic_output(out) as f, task("sealing", chunks) as advance:
                f.write(head)
                # read ahead | encrypt here | hash and write on two helper threads
                with FanOut([digest.update, f.write], chunk_size + P.TAG_BYTES, threaded=chunks > 2) as fan, \
                        contextlib.closing(prefetch(source, None, payload_size, sizes(), block=chunk_size)) as stream:
                    for (index, plain), want in zip(enumerate(stream), sizes()):
                        if len(plain) != want:
                            raise fail("bundle.source_changed", f"{plugin_dir} changed while it was being sealed",
                                       "wait until the plugin is fully written, then seal again")
                        buf = fan.buffer()
                        block = cipher.seal_chunk(index, index == chunks - 1, plain, buf)
                        fan.submit(buf, len(block))
                        advance(1)
                if source.readinto(memoryview(bytearray(1))):
                    raise fail("bundle.source_changed", f"{plugin_dir} grew while it was being sealed",
                               "wait until the plugin is fully written, then seal again")
                statement = {
                    "_type": STATEMENT_TYPE,
                    "subject": [{"name": f"{submission_id}.payload", "digest": {"sha256": digest.hexdigest()}},
                                {"name": f"{submission_id}.header", "digest": {"sha256": hashlib.sha256(head).hexdigest()}}],
                    "predicateType": PREDICATE_TYPE,
                    "predicate": manifest,
                }
                body = canonical_json(statement)
                signatures = signer.sign_all(P.pae(PAYLOAD_TYPE, body))
                envelope = canonical_json({
                    "payloadType": PAYLOAD_TYPE,
                    "payload": base64.b64encode(body).decode("ascii"),
                    "signatures": [{"keyid": f"{alg}:{signer.key_id}", "sig": base64.b64encode(signatures[alg]).decode("ascii")}
                                   for alg in signer.algorithms],
                })
                f.write(struct.pack(">I", len(envelope)) + envelope)
        finally:
            source.close()
    return out


# --------------------------------------------------------------------------- parse + verify


@dataclass
class _Parsed:
    path: str
    size: int
    header: dict
    head: bytes               # magic .. wrapped key
    pre_digest: bytes         # sha256(magic .. header), the HPKE info's digest
    wrapped: bytes
    kem: P.KemAlgorithm
    chunks_offset: int
    envelope_offset: int      # offset of env_len
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
        raise fail("bundle.version", f"{path} has format {h.get('format')!r}; this toolkit reads {FORMAT}",
                   "open it with the forge-secure version that wrote it, or ask the site to seal again")
    expected = {"format", "algorithms", "chunk_size", "payload_size", "chunks", "nonce_prefix", "recipient", "signer", "manifest_sha256"}
    if set(h) != expected:
        raise _format(path, f"header fields {sorted(set(h) ^ expected)} are unexpected or missing")
    alg = h["algorithms"]
    if not isinstance(alg, dict) or set(alg) != {"kem", "kdf", "aead", "stream", "signature"}:
        raise _format(path, "the algorithm list is malformed")
    if alg["kem"] not in P.KEMS or alg["kdf"] != KDF or alg["aead"] != AEAD or alg["stream"] != STREAM or \
            alg["signature"] not in (["ed25519"], ["ed25519", "ml-dsa-65"]):
        raise fail("bundle.algorithm", f"{path} names algorithms this toolkit does not accept ({alg})",
                   f"bundles use kem {' or '.join(P.KEMS.names())}, {KDF}, {AEAD}, {STREAM}, ed25519 (+ ml-dsa-65)")
    for k in ("chunk_size", "payload_size", "chunks"):
        if not isinstance(h[k], int) or isinstance(h[k], bool) or h[k] < 1:
            raise _format(path, f"{k} is not a positive integer")
    cs = h["chunk_size"]
    if not (MIN_CHUNK <= cs <= MAX_CHUNK and cs & (cs - 1) == 0) or h["chunks"] != -(-h["payload_size"] // cs) \
            or h["chunks"] >= P.MAX_CHUNKS:
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
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _format(path, "the header is not JSON") from None
    header = _check_header(header, path)
    if canonical_json(header) != header_bytes:
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
        raise fail("bundle.trailing", f"{path} has {size - env_offset - 4 - elen} bytes after its end",
                   "ask the site to send the .forge file written by 'forge seal' again")
    envelope = _read_exact(f, elen, path)
    return _Parsed(str(path), size, header, head, hashlib.sha256(pre).digest(), wrapped, kem, chunks_offset, env_offset, envelope)


def _hash_prefix(f: BinaryIO, parsed: _Parsed) -> str:
    """sha256 of every byte before the envelope (streamed, read and hashed ahead; bounded memory)."""
    h = hashlib.sha256(parsed.head)
    total = parsed.envelope_offset - parsed.chunks_offset
    seen = 0
    with task("verifying", parsed.header["chunks"]) as advance:
        with contextlib.closing(prefetch(f, parsed.chunks_offset, total, block=READ_BLOCK, hasher=h)) as stream:
            for view in stream:
                seen += len(view)
                advance(max(1, len(view) // parsed.header["chunk_size"]))
    if seen != total:
        raise _truncated(parsed.path)
    return h.hexdigest()


def _signature_error(path) -> BundleError:
    return fail("bundle.signature", f"the signature of {path} does not verify",
                "do not use this bundle: it was changed after sealing or damaged; ask the site to send it again")


def _decode_envelope(parsed: _Parsed) -> tuple[bytes, dict[str, list[bytes]]]:
    try:
        env = json.loads(parsed.envelope.decode("utf-8"))
        if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE or not isinstance(env.get("signatures"), list):
            raise ValueError
        body = base64.b64decode(env["payload"], validate=True)
        sigs: dict[str, list[bytes]] = {}
        for s in env["signatures"]:
            alg = str(s["keyid"]).split(":", 1)[0]
            sigs.setdefault(alg, []).append(base64.b64decode(s["sig"], validate=True))
        # one encoding only: canonical JSON, canonical base64 (no spare bits, no whitespace)
        rebuilt = canonical_json({"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode("ascii"),
                                  "signatures": [{"keyid": s["keyid"], "sig": base64.b64encode(
                                      base64.b64decode(s["sig"], validate=True)).decode("ascii")} for s in env["signatures"]]})
        if rebuilt != parsed.envelope:
            raise ValueError("not canonical")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise fail("bundle.envelope", f"the signature envelope of {parsed.path} is malformed",
                   "do not use this bundle: it was changed after sealing or damaged; ask the site to send it again") from None
    return body, sigs


def _keyids(parsed: _Parsed) -> list[str]:
    return [str(s.get("keyid")) for s in json.loads(parsed.envelope)["signatures"]]


def _digest_error(path) -> BundleError:
    return fail("bundle.digest", f"the encrypted payload of {path} does not match its signed digest",
                "do not use this bundle: its payload was changed, swapped or damaged; ask the site to send it again")


def _verify(f: BinaryIO, path, roster: Roster, now: int, *, full_digest: bool = True) -> tuple[_Parsed, Verified]:
    """Every check of a bundle. With ``full_digest=False`` (used by open, which hashes the
    ciphertext while decrypting and compares before releasing anything) the payload digest
    is returned as claimed; the header digest (which authenticates the wrapped key and so
    every chunk's key) is always checked here, before any decryption."""
    parsed = _parse(f, path)
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
        statement = json.loads(body.decode("utf-8"))
        manifest = statement["predicate"]
        subject = statement["subject"]
        ok = (isinstance(statement, dict) and statement.get("_type") == STATEMENT_TYPE
              and statement.get("predicateType") == PREDICATE_TYPE and isinstance(manifest, dict)
              and isinstance(subject, list) and len(subject) == 2
              and [x["name"] for x in subject] == [f"{manifest['submission_id']}.payload", f"{manifest['submission_id']}.header"])
        claimed, claimed_head = subject[0]["digest"]["sha256"], subject[1]["digest"]["sha256"]
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise fail("bundle.statement", f"{path} is signed but its statement is not a forge submission",
                   "ask the site to seal its plugin again with 'forge seal'")
    if hashlib.sha256(canonical_json(manifest)).hexdigest() != header["manifest_sha256"]:
        raise _format(path, "the signed manifest does not match the header")
    for k in ("algorithms", "chunk_size", "payload_size", "chunks", "recipient", "signer", "format"):
        if manifest.get(k) != header.get(k):
            raise _format(path, f"the signed manifest's {k} does not match the header")
    try:
        created = _time.parse_time(manifest["created"], "created")
        site, seq, sub_id = manifest["site"], manifest["sequence"], manifest["submission_id"]
        if not (isinstance(site, str) and isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1
                and isinstance(sub_id, str) and len(sub_id) == 32):
            raise ValueError
    except (BundleError, KeyError, ValueError):
        raise fail("bundle.statement", f"{path} has a malformed manifest", "ask the site to seal its plugin again") from None
    if entry.key.algorithms != tuple(header["algorithms"]["signature"]):
        raise _signature_error(path)
    roster.check_signer(signer_id, site, created, now)
    if created > now + CLOCK_SKEW:
        raise fail("bundle.future", f"{path} claims to be sealed at {manifest['created']}, in the future",
                   "check the clocks of the site and of this machine")
    if claimed_head != hashlib.sha256(parsed.head).hexdigest():
        raise _digest_error(path)
    computed = _hash_prefix(f, parsed) if full_digest else claimed
    if claimed != computed:
        raise _digest_error(path)
    dp, base = manifest.get("dp"), manifest.get("base_digest")
    return parsed, Verified(
        path=str(path), site=site, sequence=seq, submission_id=sub_id, created=manifest["created"], signer=signer_id,
        recipient=header["recipient"], algorithms=header["algorithms"], base_digest=base if isinstance(base, str) else None,
        dp=dp if isinstance(dp, dict) else None, content=manifest.get("content") if isinstance(manifest.get("content"), dict) else {},
        payload_size=header["payload_size"], chunk_size=header["chunk_size"], chunks=header["chunks"],
        bundle_size=parsed.size, bundle_sha256=computed, roster_consortium=roster.consortium, roster_version=roster.version)


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


def verify(bundle, roster, *, now: int | None = None, state_dir=None) -> Verified:
    """Check a bundle without any secret: structure, roster trust, signer, signature and
    the digest of the encrypted payload. Returns what the bundle says, or raises BundleError.

    ``bundle`` is a path or a readable, seekable binary stream; ``roster`` a path or a
    :class:`Roster` (trusted here: threshold signatures, expiry, rollback)."""
    now = _time.now() if now is None else int(now)
    trusted = load_roster(roster, now=now, state_dir=state_dir)
    f, path, owned = _open_file(bundle)
    try:
        return _verify(f, path, trusted, now)[1]
    finally:
        if owned:
            f.close()


def open_bundle(bundle, key, roster, out, *, passphrase: bytes | None = None, now: int | None = None,
                replay: ReplayStore | None = None, state_dir=None) -> Opened:
    """Verify, refuse replays, decrypt into a temporary directory and rename it to ``out``
    only after the last chunk has authenticated and the container is complete.

    Before any decryption: structure, roster, signer, signature, manifest, the signed digest
    of the header (so the wrapped data key is the sealer's) and the replay store. Then one
    pass over the same open file hashes the ciphertext and decrypts it; every chunk is
    authenticated (AES-GCM, bound to the header, its index and the last-chunk flag) before
    its plaintext is written, and the payload digest must equal the signed one before the
    temporary directory is renamed to ``out``.
    """
    now = _time.now() if now is None else int(now)
    out = Path(out)
    if out.is_symlink():
        raise fail("file.symlink", f"--out {out} is a symbolic link", "give a new directory path that is not a link")
    if out.exists() and not out.is_dir():
        raise fail("file.not_a_directory", f"--out {out} exists and is a file", "give a new directory for the opened plugin")
    if out.is_dir() and any(out.iterdir()):
        raise fail("file.exists", f"--out {out} already exists and is not empty", "give a new directory for the opened plugin")
    if not isinstance(key, PrivateKey):
        key = load_decryption_key(key, passphrase)
    if key.role != "decryption":
        raise fail("key.wrong_type", "--key must be a decryption key", "give the decryption.key written by 'forge keys new'")
    trusted = load_roster(roster, now=now, state_dir=state_dir)
    f, path, owned = _open_file(bundle)
    try:
        return _open(f, path, key, trusted, out, now, replay or ReplayStore())
    finally:
        if owned:
            f.close()


def _open(f: BinaryIO, path, key: PrivateKey, trusted: Roster, out: Path, now: int, replay: ReplayStore) -> Opened:
    before = _stamp(f)
    parsed, v = _verify(f, path, trusted, now, full_digest=False)
    if key.key_id != v.recipient:
        raise fail("bundle.wrong_recipient", f"{path} is sealed for key {v.recipient[:16]}..., not for this key ({key.key_id[:16]}...)",
                   "open it with the consortium's decryption.key that matches the --recipient used to seal it")
    if key.algorithms[0] != parsed.kem.name:
        raise fail("bundle.wrong_recipient", f"{path} uses {parsed.kem.name}, the key is {key.algorithms[0]}",
                   "open it with the matching decryption key")
    try:
        data_key = P.hpke_unwrap(parsed.kem, key.keys, parsed.wrapped, INFO_LABEL + parsed.pre_digest)
    except InvalidTag:
        raise fail("bundle.key_unwrap", f"the wrapped data key of {path} does not authenticate with this key",
                   "do not use this bundle: its header was changed after sealing; ask the site to seal again") from None
    h = parsed.header
    cipher = P.ChunkCipher(data_key, bytes.fromhex(h["nonce_prefix"]), hashlib.sha256(parsed.head).digest())
    cs, total = h["chunk_size"], h["chunks"]

    def sizes():
        return ((h["payload_size"] - i * cs if i == total - 1 else cs) + P.TAG_BYTES for i in range(total))

    # One pass: read ahead and hash (helper thread) | authenticate and decrypt (here) | write
    # (helper thread). The header digest was checked against the signature above, so the data
    # key is the sealer's and every chunk is authenticated (AES-GCM) before its plaintext is
    # used; the payload digest is compared before the directory is renamed into place.
    with replay.accept(v.submission_id, v.site, v.sequence, now=now), atomic_directory(out) as tmp:
        reader = ContainerReader(tmp, h["payload_size"])
        try:
            digest = hashlib.sha256(parsed.head)
            ciphertext = prefetch(f, parsed.chunks_offset, parsed.envelope_offset - parsed.chunks_offset, sizes(),
                                  block=cs + P.TAG_BYTES, hasher=digest)
            with task("opening", total) as advance, FanOut([reader.feed], cs, threaded=total > 2) as fan, \
                    contextlib.closing(ciphertext) as stream:
                for (index, view), want in zip(enumerate(stream), sizes()):
                    if len(view) != want:
                        raise _truncated(path)
                    buf = fan.buffer()
                    try:
                        plain = cipher.open_chunk(index, index == total - 1, view, buf)
                    except InvalidTag:
                        raise fail("bundle.chunk", f"chunk {index} of {path} does not authenticate",
                                   "do not use this bundle: it was changed after sealing or damaged") from None
                    fan.submit(buf, len(plain))
                    advance(1)
            if digest.hexdigest() != v.bundle_sha256:
                raise _digest_error(path)
            entries = reader.finish()
        finally:
            reader.close()
        if _stamp(f) != before:
            raise fail("bundle.changed", f"{path} changed while it was being opened", "copy it again and open the copy")
    return Opened(v, out, tuple(e.name for e in entries))


__all__ = ["Opened", "Verified", "open_bundle", "seal", "verify"]
