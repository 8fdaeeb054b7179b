"""Sealing: :func:`seal` writes a plugin folder (or any forge folder) as a ``.forge`` bundle
for one recipient, signed by the site (layout in :mod:`forge_secure.crypto.bundle`).

The folder's ``forge.json`` is read through the one gateway into a plugin folder
(:func:`forge_secure.plugins.record.read_plugin`, ``schema=False``): the same fault gets the
same error as when the plugin is loaded, merged or audited. A plugin's adapter must match the
sha256 its ``forge.json`` records (``plugin.adapter_digest``), or no bundle is written: the
adapter is hashed in the same pass that reads and encrypts it (one read of its bytes, in
order on either thread, beside the ciphertext's hash), and compared before the bundle is
renamed into place, so the check covers exactly the bytes sealed. No tensor is parsed:
the opener's gateway checks the schema, the values and the base. The DP claim and base
digest it records are copied into the signed manifest, encoded by
:func:`forge_secure.numbers.jsonable` (canonical: floats as their ``repr``).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..fileio import atomic_output, canonical_json, fsync_directory
from ..numbers import jsonable
from ..plugins.record import adapter_file, check_adapter_digest, check_folder, read_plugin
from ..plugins.schema import FORMAT as PLUGIN_FORMAT
from ..progress import task
from . import _primitives as P
from . import _time
from ._pipeline import EarlyWriteback, TwoLanes, pread_exactly, pwrite_all
from .bundle_format import (
    DEFAULT_CHUNK,
    FORMAT,
    INFO_LABEL,
    MAGIC,
    MAX_CHUNK,
    MIN_CHUNK,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    _algorithms,
    _fresh,
)
from .container import Entry, index_bytes, scan_directory
from .errors import BundleError, fail
from .keys import PrivateKey, PublicKey, load_public_key, load_signing_key
from .replay import SequenceCounter
from .roster import Roster
from .trust import load_roster, trusted_rosters

SEAL_DEPTH = 4  # chunk buffers in flight (each holds a chunk's plaintext and its ciphertext)


class _ContainerSource:
    """The container bytes of ``entries``, read at any offset by any thread (``read_at``).

    Each file is opened when first needed and closed once all its bytes were read, after
    checking that it did not change size while it was being sealed."""

    def __init__(self, entries: list[Entry], root: str | os.PathLike = "the plugin folder"):
        self.root = root
        self._index = index_bytes(entries)
        self._entries = list(entries)
        self._paths: list[Path] = []
        for e in self._entries:
            if e.path is None:  # entries parsed from a bundle carry no source file
                raise ValueError(f"container entry {e.name!r} has no source path; seal the entries scan_directory returns")
            self._paths.append(e.path)
        self._starts: list[int] = []
        pos = len(self._index)
        for e in self._entries:
            self._starts.append(pos)
            pos += e.size
        self.size = pos
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}
        self._left = {k: e.size for k, e in enumerate(self._entries)}

    def changed(self):
        """The error for a folder that changed while it was being sealed (a short read)."""
        return fail(
            "bundle.source_changed",
            f"{self.root} changed while it was being sealed",
            "wait until the plugin is fully written, then seal again",
        )

    def _changed(self, entry: Entry):
        return fail(
            "bundle.source_changed",
            f"{entry.path} changed while it was being sealed",
            "wait until the plugin is fully written, then seal again",
        )

    def _fd(self, k: int) -> int:
        with self._lock:
            if k not in self._fds:
                try:  # O_NOFOLLOW: a file replaced by a link since the scan is not followed
                    self._fds[k] = os.open(self._paths[k], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
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

    def span(self, name: str) -> tuple[int, int]:
        """(offset, size) of file ``name``'s bytes in the container."""
        k = next(k for k, e in enumerate(self._entries) if e.name == name)
        return self._starts[k], self._entries[k].size

    def read_at(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` with the container bytes at ``offset``; returns the bytes filled
        (fewer only at the end of the container)."""
        filled = 0
        if offset < len(self._index):
            n = min(len(self._index) - offset, len(view))
            view[:n] = self._index[offset : offset + n]
            filled = n
        k = bisect.bisect_right(self._starts, offset + filled) - 1
        while filled < len(view) and 0 <= k < len(self._entries):
            e, inside = self._entries[k], offset + filled - self._starts[k]
            want = min(e.size - inside, len(view) - filled)
            if want > 0:
                if pread_exactly(self._fd(k), view[filled : filled + want], inside) != want:
                    raise self._changed(e)  # it shrank
                filled += want
                self._done(k, want)
            k += 1
        return filled

    def finish(self) -> None:
        """After the last chunk: every file was read whole, and the empty ones are still empty."""
        for k, e in enumerate(self._entries):
            if self._left[k] or (e.size == 0 and os.stat(self._paths[k]).st_size != 0):
                raise self._changed(e)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)


# --------------------------------------------------------------------------- seal


def _seal_head(signer, recipient, kem, algorithms, meta, entries, seq, created, payload_size, chunk_size, chunks, random, wrap):
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
        "dp": jsonable(meta.get("dp"), canonical=True) if isinstance(meta.get("dp"), dict) else None,
        "content": {"format": str(meta.get("format", "unknown")), "kind": str(meta.get("kind", "unknown")), "files": len(entries)},
        "payload_size": payload_size,
        "chunk_size": chunk_size,
        "chunks": chunks,
        "toolkit_version": __version__,
    }
    manifest_bytes = canonical_json(manifest)
    header = canonical_json(
        {
            "format": FORMAT,
            "algorithms": algorithms,
            "chunk_size": chunk_size,
            "payload_size": payload_size,
            "chunks": chunks,
            "nonce_prefix": nonce_prefix.hex(),
            "recipient": recipient.encryption_key_id,
            "signer": signer.key_id,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        }
    )
    pre = MAGIC + struct.pack(">I", len(header)) + header
    wrapped = wrap(kem, recipient.encryption_key, data_key, INFO_LABEL + hashlib.sha256(pre).digest())
    head = pre + struct.pack(">H", len(wrapped)) + wrapped
    cipher = P.ChunkCipher(data_key, nonce_prefix, hashlib.sha256(head).digest())
    return head, manifest, hashlib.sha256(head), cipher, submission_id


def seal(
    plugin_dir,
    signer,
    recipient,
    out,
    *,
    sequence: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    passphrase: bytes | None = None,
    random: P.RandomSource = os.urandom,
    now: int | None = None,
    counter: SequenceCounter | None = None,
    roster=None,
    root=None,
    state_dir=None,
    timestamp=None,
) -> Path:
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
    return _seal(
        plugin_dir,
        signer,
        recipient,
        out,
        sequence=sequence,
        chunk_size=chunk_size,
        passphrase=passphrase,
        random=random,
        now=now,
        counter=counter,
        wrap=P.hpke_wrap,
        roster=roster,
        root=root,
        state_dir=state_dir,
        timestamp=timestamp,
    )


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
    raise fail(
        "bundle.unlisted_recipient",
        f"recipient key {recipient.encryption_key_id[:16]}... ({recipient.site}) is not listed in any roster trusted on "
        f"this machine (trusted: {where})",
        "give the consortium's roster with --roster (pin its root once with 'forge roster pin'), and seal to a recipient it lists",
    )


def _seal(
    plugin_dir,
    signer,
    recipient,
    out,
    *,
    sequence,
    chunk_size,
    passphrase,
    random,
    now,
    counter,
    wrap: Callable[[P.KemAlgorithm, bytes, bytes, bytes], bytes],
    roster=None,
    root=None,
    state_dir=None,
    timestamp=None,
) -> Path:
    plugin_dir, out = Path(plugin_dir), Path(out)
    check_folder(plugin_dir)  # plugin.missing / plugin.not_directory, as from every reader of a plugin folder
    if out.is_dir():
        raise fail("file.is_directory", f"--out {out} is a directory", "give the path of the .forge file to write")
    if out.exists():
        raise fail("file.exists", f"{out} already exists", "choose another --out; bundles are never overwritten")
    if out.resolve().is_relative_to(plugin_dir.resolve()):
        raise fail("file.inside_input", f"--out {out} is inside the plugin directory", "write the bundle outside the plugin directory")
    if not (isinstance(chunk_size, int) and MIN_CHUNK <= chunk_size <= MAX_CHUNK and chunk_size & (chunk_size - 1) == 0):
        raise fail(
            "bundle.chunk_size",
            f"chunk size {chunk_size!r} is not a power of two between {MIN_CHUNK} and {MAX_CHUNK}",
            "leave the default (1 MiB)",
        )
    if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1):
        raise fail("bundle.sequence", f"sequence number {sequence!r} must be an integer of at least 1", "give --sequence 1 or more")
    if not isinstance(signer, PrivateKey):
        signer = load_signing_key(signer, passphrase)
    if signer.role != "signing":
        raise fail("key.wrong_type", "--signer must be a signing key", "give the signing.key written by 'forge keys new'")
    if not isinstance(recipient, PublicKey):
        recipient = load_public_key(recipient)
    _listed_recipient(recipient, roster, root, state_dir, _time.now() if now is None else int(now), timestamp)
    # the gateway into a plugin folder: forge.json parsed in the one place (the opener's gateway
    # checks the schema, values and base); a plugin must have its adapter, hashed below
    record = read_plugin(plugin_dir, schema=False, weights=False)
    meta = record.meta
    adapter = adapter_file(plugin_dir) if record.format == PLUGIN_FORMAT else None
    entries = scan_directory(plugin_dir)
    payload_size = len(index_bytes(entries)) + sum(e.size for e in entries)
    chunks = -(-payload_size // chunk_size)
    kem = P.KEMS.get(recipient.kem)
    algorithms = _algorithms(kem.name, signer.algorithms)
    created = _time.now() if now is None else int(now)
    counter = counter or SequenceCounter()
    stride = chunk_size + P.TAG_BYTES
    source = _ContainerSource(entries, plugin_dir)
    # the adapter's sha256 over the very bytes sealed, when forge.json records one to compare
    adapter_hash, adapter_at = None, (0, 0)
    if adapter is not None and record.recorded_adapter_sha256 is not None:
        adapter_hash, adapter_at = hashlib.sha256(), source.span(adapter.name)

    def hash_adapter(index: int, plain: memoryview) -> None:  # in chunk order (TwoLanes' check)
        assert adapter_hash is not None
        start = adapter_at[0] - index * chunk_size
        part = plain[max(start, 0) : max(start + adapter_at[1], 0)]
        if len(part):
            adapter_hash.update(part)

    try:
        with counter.next(signer.site, sequence) as seq:
            head, manifest, digest, cipher, submission_id = _seal_head(
                signer, recipient, kem, algorithms, meta, entries, seq, created, payload_size, chunk_size, chunks, random, wrap
            )

            def plaintext(index: int, buf: bytearray) -> memoryview:  # a chunk's buffer: ciphertext, then plaintext
                want = payload_size - index * chunk_size if index == chunks - 1 else chunk_size
                return memoryview(buf)[stride : stride + want]

            def encrypt(index: int, buf: bytearray) -> int:  # any thread, any order (chunks are independent)
                plain = plaintext(index, buf)
                if source.read_at(index * chunk_size, plain) != len(plain):
                    raise source.changed()
                return len(cipher.seal_chunk(index, index == chunks - 1, plain, buf))

            def check_adapter(index: int, buf: bytearray, n: int) -> None:  # either thread, in chunk order
                hash_adapter(index, plaintext(index, buf))

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
                    # read -> encrypt by either thread; SHA-256 of the payload in order on a pooled
                    # helper, and of the adapter's plaintext in order on either (the caller first);
                    # each chunk written (pwrite at its offset) by whichever thread is free (_pipeline)
                    TwoLanes(
                        chunks,
                        stride + chunk_size,
                        fill=encrypt,
                        update=digest.update,
                        drain=store,
                        check=None if adapter_hash is None else check_adapter,
                        fill_anywhere=True,
                        drain_anywhere=True,
                        depth=SEAL_DEPTH,
                        threaded=chunks > 2,
                        progress=advance,
                    ).run()
                source.finish()
                if adapter is not None and adapter_hash is not None:  # before anything is signed or renamed
                    check_adapter_digest(plugin_dir, record.recorded_adapter_sha256, adapter_hash.hexdigest())
                statement = {
                    "_type": STATEMENT_TYPE,
                    "subject": [
                        {"name": f"{submission_id}.payload", "digest": {"sha256": digest.hexdigest()}},
                        {"name": f"{submission_id}.header", "digest": {"sha256": hashlib.sha256(head).hexdigest()}},
                    ],
                    "predicateType": PREDICATE_TYPE,
                    "predicate": manifest,
                }
                body = canonical_json(statement)
                signatures = signer.sign_all(P.pae(PAYLOAD_TYPE, body))
                envelope = canonical_json(
                    {
                        "payloadType": PAYLOAD_TYPE,
                        "payload": base64.b64encode(body).decode("ascii"),
                        "signatures": [
                            {"keyid": f"{alg}:{signer.key_id}", "sig": base64.b64encode(signatures[alg]).decode("ascii")}
                            for alg in signer.algorithms
                        ],
                    }
                )
                f.seek(len(head) + payload_size + chunks * P.TAG_BYTES)  # the end of the last (short) chunk
                f.write(struct.pack(">I", len(envelope)) + envelope)
            fsync_directory(out.parent)  # the file was fsynced before the rename; make its name durable too
    finally:
        source.close()
    return out
