"""How the hub's log names a bundle, and how a client checks that name without hashing the bundle.

A ``forge-bundle/1`` file is ``prefix || env_len || envelope`` (layout in
:mod:`forge_secure.crypto.bundle`): the envelope is the site's signed statement, and its
``<id>.payload`` subject is the sha256 of the whole prefix (header, wrapped key and every
ciphertext chunk). A submission's log entry names the bundle by

- ``payload_sha256``: that signed payload digest, which the hub compared with the sha256 of
  the prefix it received (every byte, hashed as it arrived, :mod:`forge_secure.crypto.received`);
- ``envelope_sha256``: the sha256 of the envelope's bytes, which the hub received and verified;
- ``size`` and ``submission_id``; and ``bundle_sha256``, the sha256 of the whole file (its
  address in the store).

The pair (payload digest, envelope digest) fixes every byte of the bundle (SHA-256 is
collision resistant): the envelope is compared byte for byte through its digest, ``env_len``
is its length, and the prefix is the one whose sha256 the envelope's signature covers. So a
client checks a receipt against the bundle it sent by reading only the sent bundle's header
and envelope (:class:`SentEnds` keeps them as the bytes go out, so the check is on the bytes
sent, not on a file that might change meanwhile): the receipt names exactly that bundle,
whose payload ``forge seal`` and ``forge verify`` -- and the hub, on arrival -- check against
the signed digest. The client hashes nothing large; the hub still hashes every byte.

The parsing is the crypto package's own (:func:`~forge_secure.crypto.bundle_format._parse`),
run on the kept header and envelope bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from dataclasses import dataclass

from ..crypto.bundle_format import MAGIC, MAX_ENVELOPE, MAX_HEADER, _decode_envelope, _loads, _parse
from ..crypto.errors import BundleError
from ..errors import ForgeIntegrityError

# magic, header_len, header, wrapped_len, wrapped key (u16): every byte the parser reads before the chunks
HEAD_BYTES = len(MAGIC) + 4 + MAX_HEADER + 2 + 0xFFFF
TAIL_BYTES = 4 + MAX_ENVELOPE  # env_len and the envelope


@dataclass(frozen=True)
class BundleName:
    """What a log entry says about the bundle it accepted (see the module docstring)."""

    submission_id: str
    payload_sha256: str
    envelope_sha256: str
    size: int

    FIELDS = ("submission_id", "payload_sha256", "envelope_sha256", "size")

    def mismatches(self, entry: dict) -> list[str]:
        """The fields of a log entry ``entry`` that do not name this bundle."""
        return [k for k in self.FIELDS if entry.get(k) != getattr(self, k)]


def name_of(f, path="<bundle>") -> BundleName:
    """The name of the bundle in the seekable binary file ``f``, from its header and envelope
    only (no signature check, no hashing of the payload). Raises :class:`BundleError` (the
    parser's own refusals) or ``ValueError`` when the bytes are not a bundle."""
    parsed = _parse(f, path)
    body, _sigs = _decode_envelope(parsed)
    statement = _loads(body)
    try:
        sub_id = statement["predicate"]["submission_id"]
        payload = statement["subject"][0]["digest"]["sha256"]
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError("the signed statement names no payload digest") from e
    if not isinstance(sub_id, str) or not isinstance(payload, str):
        raise ValueError("the signed statement names no payload digest")
    return BundleName(sub_id, payload, hashlib.sha256(parsed.envelope).hexdigest(), parsed.size)


class _Ends(io.RawIOBase):
    """A read-only view of a stream of ``size`` bytes of which only ``head`` (from offset 0)
    and ``tail`` (ending at ``size``) are kept; reading elsewhere is an error."""

    def __init__(self, head: bytes, tail: bytes, size: int):
        self._head, self._tail, self._size, self._pos = head, tail, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        start = self._pos
        end = self._size if n is None or n < 0 else min(self._size, start + n)
        if end <= start:
            return b""
        if end <= len(self._head):
            out = self._head[start:end]
        elif start >= self._size - len(self._tail):
            base = self._size - len(self._tail)
            out = self._tail[start - base : end - base]
        else:
            raise ValueError(f"bytes {start}..{end} of the stream were not kept")
        self._pos = end
        return out


class SentEnds:
    """Keeps the first ``HEAD_BYTES`` and the last ``TAIL_BYTES`` of a stream as it is sent
    (``add`` each block in order), so the bundle's name can be read from the very bytes sent.
    The tail is kept as references to the last blocks (no copy while sending)."""

    def __init__(self) -> None:
        self.head = b""
        self.size = 0
        self._recent: deque[bytes] = deque()
        self._recent_size = 0

    def add(self, block: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += block[: HEAD_BYTES - len(self.head)]
        self._recent.append(block)
        self._recent_size += len(block)
        while self._recent_size - len(self._recent[0]) >= TAIL_BYTES:
            self._recent_size -= len(self._recent.popleft())
        self.size += len(block)

    @property
    def tail(self) -> bytes:
        """The last ``TAIL_BYTES`` sent (fewer when fewer were sent)."""
        parts, need = [], TAIL_BYTES
        for block in reversed(self._recent):
            if need <= 0:
                break
            parts.append(block[-need:] if len(block) > need else block)
            need -= len(block)
        return b"".join(reversed(parts))

    def name(self) -> BundleName:
        """The name of the bundle sent; a :class:`ForgeIntegrityError` when the bytes sent are
        not a bundle (the hub cannot have accepted them)."""
        try:
            return name_of(_Ends(self.head, self.tail, self.size), "the bundle sent")
        except (BundleError, ValueError):
            raise ForgeIntegrityError(
                "the bytes sent are not a readable forge bundle, so the hub's receipt cannot be for them",
                fix="do not rely on this receipt; check the bundle with 'forge verify' and push it again",
                code="log.receipt",
            ) from None


def check_entry(entry: dict, sent: BundleName) -> None:
    """Refuse a log entry that does not name the bundle ``sent`` (``log.receipt``)."""
    wrong = sent.mismatches(entry)
    if wrong:
        raise ForgeIntegrityError(
            f"the hub's receipt is for other bytes than the bundle sent (its {', '.join(wrong)} differ)",
            fix="do not rely on this hub; report it to the consortium",
            code="log.receipt",
        )


__all__ = ["BundleName", "SentEnds", "check_entry", "name_of"]
