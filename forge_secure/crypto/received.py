"""Verify a bundle that was hashed while it arrived (the hub's one-pass push).

:func:`~forge_secure.crypto.bundle.verify` reads a bundle twice in effect when the bundle
has just been received: once to receive (and hash for a content address) and once more to
hash the signed payload. A receiver that writes the bytes itself can hash them as they go
by: :class:`ArrivalDigest` computes, in one SHA-256 pass over the stream, both the sha256 of
the whole file and -- split off with ``hashlib``'s ``copy()`` at the end of the encrypted
payload -- the sha256 of the signed prefix that the envelope's ``.payload`` subject names.

:func:`verify_received` then runs every check of ``verify`` (structure, roster trust,
signer, signature, manifest, the header digest) on the file, and compares the signed
payload digest with the one computed on arrival instead of reading the payload again. The
digest is taken only from bytes the receiver itself wrote to the file it verifies; where
the arrival digest cannot be used (an unreadable header, a split point other than the
one the parser finds, a size mismatch) the payload is hashed from the file as ``verify``
does, so every refusal is the same as ``verify``'s.
"""

from __future__ import annotations

import hashlib
import struct

from . import _primitives as P
from . import _time
from .bundle_format import MAGIC, MAX_HEADER, Verified, _check_header, _digest_error, _fresh, _hash_prefix, _loads, _open_file, _verify
from .trust import load_roster

_HEAD_LIMIT = len(MAGIC) + 4 + MAX_HEADER + 2  # the bytes that locate the end of the payload


class ArrivalDigest:
    """sha256 of a bundle stream and of its signed prefix, in one pass (``update`` in order)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self.size = 0
        self.prefix_end: int | None = None  # None: not known yet; -1: the header does not tell
        self._prefix: str | None = None

    def _locate(self) -> None:
        head, need = self._head, len(MAGIC) + 4
        if len(head) < need:
            return
        (hlen,) = struct.unpack(">I", head[8:12])
        if head[:8] != MAGIC or not 1 <= hlen <= MAX_HEADER:
            self.prefix_end = -1
            return
        if len(head) < need + hlen + 2:
            return
        try:
            header = _check_header(_loads(bytes(head[need : need + hlen])), "<upload>")
        except Exception:  # noqa: BLE001 - any refusal is verify's to report, from the file
            self.prefix_end = -1
            return
        (wlen,) = struct.unpack(">H", head[need + hlen : need + hlen + 2])
        self.prefix_end = need + hlen + 2 + wlen + header["payload_size"] + header["chunks"] * P.TAG_BYTES
        self._head = bytearray()

    def update(self, block) -> None:
        view = memoryview(block).cast("B")
        if self.prefix_end is None:
            self._head += view[: _HEAD_LIMIT - len(self._head)]
            self._locate()
            if self.prefix_end is None and len(self._head) >= _HEAD_LIMIT:
                self.prefix_end = -1
        end = self.prefix_end
        if end is not None and end > 0 and self.size <= end < self.size + len(view):
            cut = end - self.size
            self._hash.update(view[:cut])
            self._prefix = self._hash.copy().hexdigest()
            self._hash.update(view[cut:])
        else:
            self._hash.update(view)
        self.size += len(view)

    def hexdigest(self) -> str:
        """sha256 of every byte given so far."""
        return self._hash.hexdigest()

    def prefix_hexdigest(self) -> str | None:
        """sha256 of the bytes before the envelope, or None when the stream did not reach it."""
        if self.prefix_end is not None and self.prefix_end > 0 and self.size == self.prefix_end and self._prefix is None:
            self._prefix = self._hash.copy().hexdigest()  # a stream cut exactly at the envelope
        return self._prefix


def verify_received(
    bundle, roster, arrival: ArrivalDigest, *, now: int | None = None, state_dir=None, root=None, timestamp=None
) -> Verified:
    """:func:`~forge_secure.crypto.bundle.verify` of a file whose every byte, in order, went
    through ``arrival`` as it was written; the signed payload digest is checked against the
    arrival digest (or, when that cannot be used, read back from the file)."""
    now = _time.now() if now is None else int(now)
    trusted = load_roster(roster, now=now, state_dir=state_dir, root=root)
    _fresh(trusted, timestamp, now)
    f, path, owned = _open_file(bundle)
    try:
        parsed, v = _verify(f, path, trusted, now, full_digest=False)  # every check but the payload digest
        claimed = v.bundle_sha256
        computed = arrival.prefix_hexdigest()
        if computed is None or arrival.prefix_end != parsed.envelope_offset or arrival.size != parsed.size:
            computed = _hash_prefix(f, parsed)
        if computed != claimed:
            raise _digest_error(path)
        return v
    finally:
        if owned:
            f.close()


__all__ = ["ArrivalDigest", "verify_received"]
