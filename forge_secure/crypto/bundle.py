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
import bisect
import hashlib
import math
import os
import struct
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from cryptography.exceptions import InvalidTag

from .. import __version__
from ..errors import ForgeDataError
from ..fileio import atomic_directory, atomic_output, canonical_json, fsync_directory, loads_bounded, scratch_root, sweep_partials
from ..progress import task
from . import _primitives as P
from . import _time
from ._pipeline import (EarlyWriteback, TwoLanes, give_back, hash_stream, positional_fd, pread_exactly, pwrite_all,
                        readinto_exactly, take_buffers)
from .container import ContainerReader, scan_directory, index_bytes, Entry
from .errors import BundleError, fail
from .keys import PrivateKey, PublicKey, load_decryption_key, load_public_key, load_signing_key
from .replay import ReplayStore, SequenceCounter
from .roster import Roster
from .trust import load_roster, trusted_rosters

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
JSON_DEPTH = 8                 # header, envelope and statement nest at most 5 levels


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
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
        return str(value)  # canonical JSON (RFC 8785) holds integers a double holds exactly
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
        meta = loads_bounded(meta_path.read_bytes(), allow_nonfinite=True)
    except ValueError as e:
        raise fail("bundle.not_plugin", f"{meta_path} is not valid JSON ({e})", "repair or rewrite the plugin's forge.json") from None
    if not isinstance(meta, dict):
        raise fail("bundle.not_plugin", f"{meta_path} is not a JSON object", "repair or rewrite the plugin's forge.json")
    return meta


def _algorithms(kem: str, signature: tuple[str, ...]) -> dict:
    return {"kem": kem, "kdf": KDF, "aead": AEAD, "stream": STREAM, "signature": list(signature)}


class _ContainerSource:
    """The container bytes of ``entries``, read at any offset by any thread (``read_at``).

    Each file is opened when first needed and closed once all its bytes were read, after
    checking that it did not change size while it was being sealed."""

    def __init__(self, entries: list[Entry]):
        self._index = index_bytes(entries)
        self._entries = list(entries)
        self._starts: list[int] = []
        pos = len(self._index)
        for e in self._entries:
            self._starts.append(pos)
            pos += e.size
        self.size = pos
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}
        self._left = {k: e.size for k, e in enumerate(self._entries)}

    def _changed(self, entry: Entry):
        return fail("bundle.source_changed", f"{entry.path} changed while it was being sealed",
                    "wait until the plugin is fully written, then seal again")

    def _fd(self, k: int) -> int:
        with self._lock:
            if k not in self._fds:
                try:  # O_NOFOLLOW: a file replaced by a link since the scan is not followed
                    self._fds[k] = os.open(self._entries[k].path,
                                           os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
                except OSError:
                    raise self._changed(self._entries[k]) from None
            return self._fds[k]

    def _done(self, k: int, n: int) -> None:
        with self._lock:
            self._left[k] -= n
            if self._left[k]:
                return
            fd = self._fds.pop(k)
        try:
            if os.fstat(fd).st_size != self._entries[k].size:  # it grew (or shrank after we read it)
                raise self._changed(self._entries[k])
        finally:
            os.close(fd)

    def read_at(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` with the container bytes at ``offset``; returns the bytes filled
        (fewer only at the end of the container)."""
        filled = 0
        if offset < len(self._index):
            n = min(len(self._index) - offset, len(view))
            view[:n] = self._index[offset:offset + n]
            filled = n
        k = bisect.bisect_right(self._starts, offset + filled) - 1
        while filled < len(view) and 0 <= k < len(self._entries):
            e, inside = self._entries[k], offset + filled - self._starts[k]
            want = min(e.size - inside, len(view) - filled)
            if want > 0:
                if pread_exactly(self._fd(k), view[filled:filled + want], inside) != want:
                    raise self._changed(e)  # it shrank
                filled += want
                self._done(k, want)
            k += 1
        return filled

    def finish(self) -> None:
        """After the last chunk: every file was read whole, and the empty ones are still empty."""
        for k, e in enumerate(self._entries):
            if self._left[k] or (e.size == 0 and os.stat(e.path).st_size != 0):
                raise self._changed(e)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)


# --------------------------------------------------------------------------- seal


def _seal_head(signer, recipient, kem, algorithms, meta, entries, seq, created, payload_size, chunk_size, chunks, random,
               wrap):
    """The manifest, the clear head (magic .. wrapped key), the running payload digest and the
    chunk cipher of a new bundle (the draws from ``random``, in the order the vectors fix)."""
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
    return head, manifest, hashlib.sha256(head), cipher, submission_id


def seal(plugin_dir, signer, recipient, out, *, sequence: int | None = None, chunk_size: int = DEFAULT_CHUNK,
         passphrase: bytes | None = None, random: P.RandomSource = os.urandom, now: int | None = None,
         counter: SequenceCounter | None = None, roster=None, root=None, state_dir=None, timestamp=None) -> Path:
    """Seal ``plugin_dir`` for ``recipient``, signed by ``signer``; write ``out`` atomically.

    ``signer`` is a loaded signing :class:`PrivateKey` or the path of ``signing.key``
    (with ``passphrase``); ``recipient`` a :class:`PublicKey` or the path of its
    ``public.json``, which must be listed as a recipient in the signed ``roster`` (a path or
    :class:`Roster`, trusted against this machine's pinned root, see
    :func:`~forge_secure.crypto.roster.trust`; ``root`` pins one first). Without ``roster``
    the latest roster trusted on this machine that lists the recipient is used; with none,
    ``bundle.unlisted_recipient``. ``sequence`` defaults to the next value of the site's
    counter under ``forge_home()``. ``random`` (submission id, data key, nonce prefix) and
    ``now`` are injectable for known-answer tests; the defaults are the OS CSPRNG and the clock.
    """
    return _seal(plugin_dir, signer, recipient, out, sequence=sequence, chunk_size=chunk_size, passphrase=passphrase,
                 random=random, now=now, counter=counter, wrap=P.hpke_wrap, roster=roster, root=root, state_dir=state_dir,
                 timestamp=timestamp)


def _listed_recipient(recipient: PublicKey, roster, root, state_dir, now: int, timestamp=None) -> Roster:
    """The trusted roster that lists ``recipient`` (see :func:`seal`)."""
    if roster is not None:
        trusted = load_roster(roster, now=now, state_dir=state_dir, root=root)
        _fresh(trusted, timestamp, now)
        trusted.check_recipient(recipient)
        return trusted
    candidates = trusted_rosters(now=now, state_dir=state_dir)
    for trusted in candidates:
        try:
            trusted.check_recipient(recipient)
            return trusted
        except BundleError:
            continue
    where = ", ".join(f"{r.consortium} version {r.version}" for r in candidates) or "none"
    raise fail("bundle.unlisted_recipient",
               f"recipient key {recipient.encryption_key_id[:16]}... ({recipient.site}) is not listed in any roster trusted on "
               f"this machine (trusted: {where})",
               "give the consortium's roster with --roster (pin its root once with 'forge roster pin'), and seal to a "
               "recipient it lists")


def _seal(plugin_dir, signer, recipient, out, *, sequence, chunk_size, passphrase, random, now, counter,
          wrap: Callable[[P.KemAlgorithm, bytes, bytes, bytes], bytes], roster=None, root=None, state_dir=None,
          timestamp=None) -> Path:
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
    _listed_recipient(recipient, roster, root, state_dir, _time.now() if now is None else int(now), timestamp)
    meta = _read_forge_json(plugin_dir)
    entries = scan_directory(plugin_dir)
    payload_size = len(index_bytes(entries)) + sum(e.size for e in entries)
    chunks = -(-payload_size // chunk_size)
    kem = P.KEMS.get(recipient.kem)
    algorithms = _algorithms(kem.name, signer.algorithms)
    created = _time.now() if now is None else int(now)
    counter = counter or SequenceCounter()
    stride = chunk_size + P.TAG_BYTES
    plain_bufs: list[bytearray] = []
    local = threading.local()
    source = _ContainerSource(entries)
    try:
        with counter.next(signer.site, sequence) as seq:
            head, manifest, digest, cipher, submission_id = _seal_head(
                signer, recipient, kem, algorithms, meta, entries, seq, created, payload_size, chunk_size, chunks, random,
                wrap)

            def encrypt(index: int, buf: bytearray) -> int:  # any thread, any order (chunks are independent)
                want = payload_size - index * chunk_size if index == chunks - 1 else chunk_size
                mine = getattr(local, "plain", None)
                if mine is None:  # one plaintext buffer per thread
                    mine = local.plain = take_buffers(chunk_size, 1)[0]
                    plain_bufs.append(mine)
                plain = memoryview(mine)[:want]
                if source.read_at(index * chunk_size, plain) != want:
                    raise fail("bundle.source_changed", f"{plugin_dir} changed while it was being sealed",
                               "wait until the plugin is fully written, then seal again")
                return len(cipher.seal_chunk(index, index == chunks - 1, plain, buf))

            with atomic_output(out) as f:
                f.write(head)
                f.flush()
                fd = f.fileno()
                writeback = EarlyWriteback(fd)  # start write-back early, so the final fsync is short

                def store(index: int, block: memoryview) -> None:  # any thread, any order
                    pwrite_all(fd, block, len(head) + index * stride)
                    if index % 4 == 3:
                        writeback.hint(len(head) + (index - 3) * stride, 4 * stride)

                with task("sealing", chunks) as advance:
                    # read -> encrypt by either thread; SHA-256 in order on a pooled helper; each
                    # chunk written (pwrite at its offset) by whichever thread is free (_pipeline)
                    TwoLanes(chunks, stride, fill=encrypt, update=digest.update, drain=store, fill_anywhere=True,
                             drain_anywhere=True, threaded=chunks > 2, progress=advance).run()
                source.finish()
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
                    "signatures": [{"keyid": f"{alg}:{signer.key_id}",
                                    "sig": base64.b64encode(signatures[alg]).decode("ascii")} for alg in signer.algorithms],
                })
                f.seek(len(head) + payload_size + chunks * P.TAG_BYTES)  # the end of the last (short) chunk
                f.write(struct.pack(">I", len(envelope)) + envelope)
            fsync_directory(out.parent)  # the file was fsynced before the rename; make its name durable too
    finally:
        source.close()
        give_back(plain_bufs)
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
    if not (all(isinstance(alg[k], str) for k in ("kem", "kdf", "aead", "stream")) and isinstance(alg["signature"], list)
            and all(isinstance(a, str) for a in alg["signature"])):  # types first: a list is no registry key
        raise _format(path, "an algorithm name is not a string")
    if alg["kem"] not in P.KEMS or alg["kdf"] != KDF or alg["aead"] != AEAD or alg["stream"] != STREAM or \
            alg["signature"] not in (["ed25519"], ["ed25519", "ml-dsa-65"]):
        raise fail("bundle.algorithm", f"{path} names algorithms this toolkit does not accept ({alg})",
                   f"bundles use kem {' or '.join(P.KEMS.names())}, {KDF}, {AEAD}, {STREAM}, ed25519 (+ ml-dsa-65)")
    for k in ("chunk_size", "payload_size", "chunks"):
        if not isinstance(h[k], int) or isinstance(h[k], bool) or not 1 <= h[k] <= MAX_SAFE_INT:
            raise _format(path, f"{k} is not a positive integer below 2**53")
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
        raise fail("bundle.trailing", f"{path} has {size - env_offset - 4 - elen} bytes after its end",
                   "ask the site to send the .forge file written by 'forge seal' again")
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
    return fail("bundle.signature", f"the signature of {path} does not verify",
                "do not use this bundle: it was changed after sealing or damaged; ask the site to send it again")


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
        rebuilt = canonical_json({"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode("ascii"),
                                  "signatures": [{"keyid": s["keyid"], "sig": base64.b64encode(
                                      base64.b64decode(s["sig"], validate=True)).decode("ascii")} for s in env["signatures"]]})
        if rebuilt != parsed.envelope:
            raise ValueError("not canonical")
        if not isinstance(env["payload"], str):
            raise ValueError("the payload is not a string")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        raise fail("bundle.envelope", f"the signature envelope of {parsed.path} is malformed",
                   "do not use this bundle: it was changed after sealing or damaged; ask the site to send it again") from None
    return body, sigs


def _keyids(parsed: _Parsed) -> list[str]:
    return [s["keyid"] for s in _loads(parsed.envelope)["signatures"]]  # checked by _decode_envelope


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
        statement = _loads(body)
        manifest = statement["predicate"]
        subject = statement["subject"]
        ok = (isinstance(statement, dict) and statement.get("_type") == STATEMENT_TYPE
              and statement.get("predicateType") == PREDICATE_TYPE and isinstance(manifest, dict)
              and isinstance(subject, list) and len(subject) == 2
              and [x["name"] for x in subject] == [f"{manifest['submission_id']}.payload", f"{manifest['submission_id']}.header"])
        claimed, claimed_head = subject[0]["digest"]["sha256"], subject[1]["digest"]["sha256"]
        ok = ok and isinstance(claimed, str) and isinstance(claimed_head, str)
        manifest_digest = hashlib.sha256(canonical_json(manifest)).hexdigest() if ok else None
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, AttributeError):
        ok = False
    if not ok:
        raise fail("bundle.statement", f"{path} is signed but its statement is not a forge submission",
                   "ask the site to seal its plugin again with 'forge seal'")
    if manifest_digest != header["manifest_sha256"]:
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


def _fresh(trusted: Roster, timestamp, now: int) -> None:
    if timestamp is not None:
        from .timestamp import verify_timestamp

        verify_timestamp(timestamp, trusted, now=now)


def verify(bundle, roster, *, now: int | None = None, state_dir=None, root=None, timestamp=None) -> Verified:
    """Check a bundle without any secret: structure, roster trust, signer, signature and
    the digest of the encrypted payload. Returns what the bundle says, or raises BundleError.

    ``bundle`` is a path or a readable, seekable binary stream; ``roster`` a path or a
    :class:`Roster` (trusted here against this machine's pinned root: threshold signatures,
    expiry, rollback, rotation; ``root`` pins the consortium's root first if none is).
    ``timestamp`` (a file or :class:`~forge_secure.crypto.timestamp.Timestamp`) must then name
    this roster as current and be unexpired (a bound on freeze attacks)."""
    now = _time.now() if now is None else int(now)
    trusted = load_roster(roster, now=now, state_dir=state_dir, root=root)
    _fresh(trusted, timestamp, now)
    f, path, owned = _open_file(bundle)
    try:
        return _verify(f, path, trusted, now)[1]
    finally:
        if owned:
            f.close()


def open_bundle(bundle, key, roster, out, *, passphrase: bytes | None = None, now: int | None = None,
                replay: ReplayStore | None = None, state_dir=None, root=None, timestamp=None) -> Opened:
    """Verify, refuse replays, decrypt into a temporary directory and rename it to ``out``
    only after the last chunk has authenticated and the container is complete.

    Before any decryption: structure, roster, signer, signature, manifest, the signed digest
    of the header (so the wrapped data key is the sealer's) and the replay store. Then one
    pass over the same open file hashes the ciphertext and decrypts it; every chunk is
    authenticated (AES-GCM, bound to the header, its index and the last-chunk flag) before
    its plaintext is written, and the payload digest must equal the signed one before the
    temporary directory is renamed to ``out``. (Reading and hashing the ciphertext, which
    reveals nothing, starts on a helper thread while the roster and signature are checked;
    the chunks hashed then are the very buffers decrypted later.) The opened files and
    directories are fsynced before the rename, and the rename before the submission is
    recorded as accepted, so a crash loses nothing and cannot turn into a refused replay.
    """
    now = _time.now() if now is None else int(now)
    sweep_partials(scratch_root())  # decrypted scratch data a killed merge left (fileio.scratch_directory)
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
    try:  # a missing or unreadable bundle is reported after the roster, as always
        f, path, owned = _open_file(bundle)
        unopened = None
    except BundleError as e:
        f, owned, unopened = None, False, e
    early = None
    try:
        if f is not None:
            before = _stamp(f)
            early = _start_hashing(f, path)
        trusted = load_roster(roster, now=now, state_dir=state_dir, root=root)
        _fresh(trusted, timestamp, now)
        if unopened is not None:
            raise unopened
        return _open(f, path, key, trusted, out, now, replay or ReplayStore(), early=early, before=before)
    finally:
        if early is not None:
            early[2].cancel()  # a no-op once it ran
        if owned:
            f.close()


def _start_hashing(f: BinaryIO, path):
    """Start reading and hashing the ciphertext of a real bundle file on the helper thread
    while the roster and the signature are checked: (parsed, digest, lanes), or None when the
    file does not parse (``_verify`` then says why). Hashing is not decryption: nothing is
    decrypted before every check has passed, and the chunks hashed here are the very buffers
    decrypted later, so the payload digest compared before renaming covers them."""
    fd = positional_fd(f)
    if fd is None:
        return None
    try:
        parsed = _parse(f, path)
    except BundleError:
        return None
    lanes = _open_lanes(parsed, f, fd, path)
    lanes[1].start()
    return (parsed, *lanes)


def _open_lanes(parsed: _Parsed, f: BinaryIO, fd: int | None, path):
    """The running payload digest and the two-lane stream over the chunks of ``parsed`` (its
    ordered ``drain``, decrypting, is set by the caller once everything is verified)."""
    h = parsed.header
    cs, total = h["chunk_size"], h["chunks"]
    stride = cs + P.TAG_BYTES
    digest = hashlib.sha256(parsed.head)
    if fd is None:
        f.seek(parsed.chunks_offset)

    def load(index: int, buf: bytearray) -> int:  # any thread (pread) when f is a real file
        want = (h["payload_size"] - index * cs if index == total - 1 else cs) + P.TAG_BYTES
        view = memoryview(buf)[:want]
        got = pread_exactly(fd, view, parsed.chunks_offset + index * stride) if fd is not None else readinto_exactly(f, view)
        if got != want:
            raise _truncated(path)
        return want

    def not_yet(index: int, view: memoryview) -> None:  # pragma: no cover - replaced before run()
        raise RuntimeError("the stream was run before it was verified")

    return digest, TwoLanes(total, stride, fill=load, update=digest.update, drain=not_yet, fill_anywhere=fd is not None,
                            threaded=total > 2)


def _open(f: BinaryIO, path, key: PrivateKey, trusted: Roster, out: Path, now: int, replay: ReplayStore, *,
          early=None, before=None) -> Opened:
    before = _stamp(f) if early is None else before
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

    # One pass over the ciphertext on two threads (_pipeline.TwoLanes): each chunk is read
    # (pread at its offset) by whichever thread is free, hashed in order on the helper, and
    # authenticated, decrypted and written in order here. The header digest was checked
    # against the signature above, so the data key is the sealer's and every chunk is
    # authenticated (AES-GCM) before its plaintext is used; the payload digest is compared
    # before the directory is renamed into place.
    with replay.accept(v.submission_id, v.site, v.sequence, now=now) as ticket:
        with atomic_directory(out) as tmp:
            ticket.reserve(out, tmp)  # durable before anything can be renamed into out (crash-safe, see replay)
            reader = ContainerReader(tmp, h["payload_size"])
            plain_buf = take_buffers(cs, 1)
            try:
                if early is not None and (early[0].head, early[0].chunks_offset, early[0].envelope_offset) == \
                        (parsed.head, parsed.chunks_offset, parsed.envelope_offset):
                    _, digest, lanes = early   # the same bytes as verified: keep what was hashed so far
                else:  # no early start (an in-memory stream), or the file changed under us: start afresh
                    if early is not None:
                        early[2].cancel()
                    digest, lanes = _open_lanes(parsed, f, positional_fd(f), path)

                def decrypt(index: int, view: memoryview) -> None:  # in order, on this thread
                    try:
                        plain = cipher.open_chunk(index, index == total - 1, view, plain_buf[0])
                    except InvalidTag:
                        raise fail("bundle.chunk", f"chunk {index} of {path} does not authenticate",
                                   "do not use this bundle: it was changed after sealing or damaged") from None
                    reader.feed(plain)

                lanes.drain = decrypt
                with task("opening", total) as advance:
                    lanes.progress = advance
                    lanes.run()
                if digest.hexdigest() != v.bundle_sha256:
                    raise _digest_error(path)
                entries = reader.finish()
            finally:
                reader.close()
                give_back(plain_buf)
            if _stamp(f) != before:
                raise fail("bundle.changed", f"{path} changed while it was being opened", "copy it again and open the copy")
        # files and directories were fsynced by the reader; now the rename, before the
        # submission is recorded as accepted (a replay is refused only once nothing can be lost)
        fsync_directory(out.parent)
    return Opened(v, out, tuple(e.name for e in entries))


__all__ = ["Opened", "Verified", "open_bundle", "seal", "verify"]
