"""Verifying and opening: :func:`verify` (no secret needed) and :func:`open_bundle` (verify,
refuse replays, decrypt into a temporary directory renamed into place only after the last
chunk authenticated). Layout in :mod:`forge_secure.crypto.bundle`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag

from ..fileio import atomic_directory, fsync_directory, scratch_root, sweep_partials
from ..progress import task
from . import _primitives as P
from . import _time
from ._pipeline import TwoLanes, give_back, positional_fd, pread_exactly, readinto_exactly, take_buffers
from .bundle_format import INFO_LABEL, Opened, Verified, _digest_error, _fresh, _open_file, _parse, _Parsed, _stamp, _truncated, _verify
from .container import ContainerReader
from .errors import BundleError, fail
from .keys import PrivateKey, load_decryption_key
from .replay import ReplayStore
from .roster import Roster
from .trust import load_roster


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


def open_bundle(
    bundle,
    key,
    roster,
    out,
    *,
    passphrase: bytes | None = None,
    now: int | None = None,
    replay: ReplayStore | None = None,
    state_dir=None,
    root=None,
    timestamp=None,
) -> Opened:
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

    return digest, TwoLanes(total, stride, fill=load, update=digest.update, drain=not_yet, fill_anywhere=fd is not None, threaded=total > 2)


def _open(
    f: BinaryIO, path, key: PrivateKey, trusted: Roster, out: Path, now: int, replay: ReplayStore, *, early=None, before=None
) -> Opened:
    before = _stamp(f) if early is None else before
    # parsed once: the checks run on the header and envelope the early hashing started from
    parsed, v = _verify(f, path, trusted, now, full_digest=False, parsed=None if early is None else early[0])
    if key.key_id != v.recipient:
        raise fail(
            "bundle.wrong_recipient",
            f"{path} is sealed for key {v.recipient[:16]}..., not for this key ({key.key_id[:16]}...)",
            "open it with the consortium's decryption.key that matches the --recipient used to seal it",
        )
    if key.algorithms[0] != parsed.kem.name:
        raise fail(
            "bundle.wrong_recipient",
            f"{path} uses {parsed.kem.name}, the key is {key.algorithms[0]}",
            "open it with the matching decryption key",
        )
    try:
        data_key = P.hpke_unwrap(parsed.kem, key.keys, parsed.wrapped, INFO_LABEL + parsed.pre_digest)
    except InvalidTag:
        raise fail(
            "bundle.key_unwrap",
            f"the wrapped data key of {path} does not authenticate with this key",
            "do not use this bundle: its header was changed after sealing; ask the site to seal again",
        ) from None
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
                if early is not None:
                    _, digest, lanes = early  # started from the very structure verified: keep what was hashed so far
                else:  # no early start (an in-memory stream)
                    digest, lanes = _open_lanes(parsed, f, positional_fd(f), path)

                def decrypt(index: int, view: memoryview) -> None:  # in order, on this thread
                    try:
                        plain = cipher.open_chunk(index, index == total - 1, view, plain_buf[0])
                    except InvalidTag:
                        raise fail(
                            "bundle.chunk",
                            f"chunk {index} of {path} does not authenticate",
                            "do not use this bundle: it was changed after sealing or damaged",
                        ) from None
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
