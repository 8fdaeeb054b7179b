"""The content-addressed store of the hub: ``<store>/sha256/ab/cdef...`` holds the bytes
whose sha256 is ``abcdef...``; uploads land in ``<store>/incoming`` first.

An upload is streamed to a temporary file in ``incoming`` with a running sha256 and a hard
size limit (memory stays at one network chunk); only after the hub has verified it and
just before the database records it is the file moved into place (fsynced, then renamed,
then the directory fsynced). A crash leaves at most an unreferenced temporary file, which
the next start removes, or an unreferenced blob, which a retry of the same bytes reuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator

from ..errors import ForgeError
from ..fileio import fsync_directory

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class UploadError(ForgeError):
    default_code = "hub.upload"


class TooLarge(UploadError):
    default_code = "hub.too_large"


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)

    def clean_incoming(self, older_than: float = 0.0) -> int:
        """Remove temporary uploads left by a crash (older than ``older_than`` seconds)."""
        import time

        removed = 0
        for p in (self.root / "incoming").iterdir():
            with contextlib.suppress(OSError):
                if time.time() - p.stat().st_mtime >= older_than:
                    p.unlink()
                    removed += 1
        return removed

    def path(self, sha256: str) -> Path:
        if not HEX64.match(sha256):
            raise UploadError(f"{sha256[:80]!r} is not a sha256 digest", fix="give 64 lowercase hex digits", code="hub.not_found")
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    @contextlib.contextmanager
    def incoming(self) -> Iterator["Incoming"]:
        fd, name = tempfile.mkstemp(dir=self.root / "incoming", prefix="up-")
        inc = Incoming(self, Path(name), os.fdopen(fd, "w+b"))
        try:
            yield inc
        finally:
            inc.file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def put_bytes(self, data: bytes) -> str:
        with self.incoming() as inc:
            inc.write(data)
            return inc.commit()


class Incoming:
    """One upload being received: ``write`` / ``receive``, then ``commit`` into the store."""

    def __init__(self, store: Store, path: Path, file):
        self.store, self.path, self.file = store, path, file
        self.size, self._hash, self._digest = 0, hashlib.sha256(), None

    def write(self, block: bytes, limit: int | None = None, *, hashing: bool = True) -> None:
        self.size += len(block)
        if limit is not None and self.size > limit:
            raise TooLarge(f"the upload is larger than the hub's limit of {limit} bytes",
                           fix="the hub refuses bundles above --max-bundle; ask its operator, or send a smaller bundle")
        if hashing:
            self._hash.update(block)
        else:
            self._hash = None
        self.file.write(block)

    async def receive(self, stream: AsyncIterator[bytes], limit: int, *, hashing: bool = True) -> None:
        """Write the request body; with ``hashing=False`` the sha256 is computed later from
        the file (:meth:`hash_file`, e.g. on a thread while the bundle is verified)."""
        async for block in stream:
            if block:
                self.write(block, limit, hashing=hashing)
        self.file.flush()

    def hash_file(self) -> str:
        """The sha256 of what was received, read back from the file (thread-safe: own fd)."""
        if self._digest is None:
            if self._hash is not None:
                self._digest = self._hash.hexdigest()
            else:
                h = hashlib.sha256()
                with open(self.path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                self._digest = h.hexdigest()
        return self._digest

    @property
    def sha256(self) -> str:
        return self.hash_file()

    def commit(self) -> str:
        """Move the received bytes into the store (durably); returns their sha256."""
        self.file.flush()
        os.fsync(self.file.fileno())
        digest = self.sha256
        target = self.store.path(digest)
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            os.chmod(self.path, 0o644)
            os.replace(self.path, target)
            fsync_directory(target.parent)
        return digest
