"""The content-addressed store of the hub: ``<store>/sha256/ab/cdef...`` holds the bytes
whose sha256 is ``abcdef...``; uploads land in ``<store>/incoming`` first.

An upload is streamed to a temporary file in ``incoming`` with a running sha256 and a hard
size limit (memory stays at one network chunk); only after the hub has verified it and
just before the database records it is the file moved into place (fsynced, then renamed,
then the directory fsynced). A crash leaves at most an unreferenced temporary file, which
the next start of a hub on this store removes (:meth:`Store.sweep`: temporary uploads are
``.forge-partial.`` files, locked while a live process receives them), or an unreferenced
blob, which a retry of the same bytes reuses.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from ..crypto.received import ArrivalDigest
from ..errors import ForgeError
from ..fileio import FRESH_PREFIX, PARTIAL_PREFIX, _try_lock, fsync_directory, sweep_partials

HEX64 = re.compile(r"^[0-9a-f]{64}$")
BATCH = 1 << 20  # received bytes handed at once to the hashing and writing threads
WINDOW = 3  # batches in flight per upload (the event loop reads on meanwhile)
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="forge-hub-store")  # hashing and writing


class UploadError(ForgeError):
    default_code = "hub.upload"


class TooLarge(UploadError):
    default_code = "hub.too_large"


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)

    def sweep(self) -> list[Path]:
        """Remove the partial uploads that a killed hub process left (at start-up).

        An upload in progress is a ``.forge-partial.`` file in ``incoming`` that its process
        holds ``flock``-ed, so :func:`~forge_secure.fileio.sweep_partials` removes exactly the
        uploads whose process is gone, never one that a live sibling process (another hub on
        the same store) is receiving. Files named ``up-*`` by earlier versions are removed
        when older than an hour."""
        removed = sweep_partials(self.root) + sweep_partials(self.root / "incoming") + sweep_partials(self.root / "sha256")
        now = time.time()
        for p in (self.root / "incoming").glob("up-*"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime >= 3600:
                    p.unlink()
                    removed.append(p)
        return removed

    def path(self, sha256: str) -> Path:
        if not HEX64.match(sha256):
            raise UploadError(f"{sha256[:80]!r} is not a sha256 digest", fix="give 64 lowercase hex digits", code="hub.not_found")
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[Incoming]:
        """A temporary upload file, ``incoming/.forge-partial.upload.<random>.part``, locked for
        as long as this process receives it (created under a name no sweeper touches, locked,
        then renamed, as :func:`~forge_secure.fileio.atomic_output` does)."""
        fd, fresh = tempfile.mkstemp(dir=self.root / "incoming", prefix=f"{FRESH_PREFIX}upload.", suffix=".part")
        _try_lock(fd)
        name = str(self.root / "incoming" / (PARTIAL_PREFIX + Path(fresh).name[len(FRESH_PREFIX) :]))
        try:
            os.rename(fresh, name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fresh)
            raise
        inc = Incoming(self, Path(name), os.fdopen(fd, "w+b"))
        try:
            yield inc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)  # unlinked while still locked, so no sweeper sees it half-removed
            inc.file.close()

    def put_bytes(self, data: bytes) -> str:
        with self.incoming() as inc:
            inc.write(data)
            return inc.commit()


class Incoming:
    """One upload being received: ``write`` / ``receive``, then ``commit`` into the store.

    Every byte is hashed as it is written (one pass, :class:`~forge_secure.crypto.received.ArrivalDigest`):
    the sha256 of the whole upload is its content address, and for a bundle the digest of
    its signed prefix is split off on the way, so verifying the bundle need not read its
    payload again (:func:`~forge_secure.crypto.received.verify_received`)."""

    def __init__(self, store: Store, path: Path, file):
        self.store, self.path, self.file = store, path, file
        self.size, self.arrival = 0, ArrivalDigest()

    def _count(self, n: int, limit: int | None) -> None:
        self.size += n
        if limit is not None and self.size > limit:
            raise TooLarge(
                f"the upload is larger than the hub's limit of {limit} bytes",
                fix="the hub refuses bundles above --max-bundle; ask its operator, or send a smaller bundle",
            )

    def write(self, block, limit: int | None = None) -> None:
        self._count(len(block), limit)
        self.arrival.update(block)
        self.file.write(block)

    def _hash_all(self, blocks: list) -> None:
        for b in blocks:
            self.arrival.update(b)

    def _write_all(self, blocks: list) -> None:
        for b in blocks:
            self.file.write(b)

    async def receive(self, stream: AsyncIterator[bytes], limit: int) -> None:
        """Write the request body, hashing it on the way.

        The event loop only receives. Each batch of blocks that arrived meanwhile goes to two
        ordered lanes on pool threads, one hashing and one writing (``hashlib`` and file
        writes release the GIL), each batch after the one before it in its lane. Up to
        ``WINDOW`` batches are in flight, so the loop goes on reading the socket while the
        threads work (with one batch in flight, reading stopped at every batch until the
        one before it was hashed, and the client stalled). Memory stays at about
        ``WINDOW + 1`` batches per upload; the size limit is checked before a block is queued."""
        pending: list = []
        waiting = 0
        flight: collections.deque[tuple[concurrent.futures.Future, concurrent.futures.Future]] = collections.deque()
        last: tuple[concurrent.futures.Future | None, concurrent.futures.Future | None] = (None, None)

        def after(previous: concurrent.futures.Future | None, work, batch: list) -> None:
            # the pool runs tasks in the order they were submitted, so ``previous`` has already
            # started on another thread: waiting for it cannot deadlock the pool
            if previous is not None:
                previous.result()
            work(batch)

        def launch() -> None:
            nonlocal pending, waiting, last
            batch, pending, waiting = pending, [], 0
            hashed = _POOL.submit(after, last[0], self._hash_all, batch)
            written = _POOL.submit(after, last[1], self._write_all, batch)
            last = (hashed, written)
            flight.append(last)

        async def settle(futures) -> None:
            # both finish before anything is raised (e.g. a full disk): no thread is left using the file
            for outcome in await asyncio.gather(*map(asyncio.wrap_future, futures), return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome

        try:
            async for block in stream:
                if not block:
                    continue
                self._count(len(block), limit)
                pending.append(block)
                waiting += len(block)
                if waiting >= BATCH:
                    while len(flight) >= WINDOW or (flight and all(f.done() for f in flight[0])):
                        await settle(flight.popleft())
                    launch()
            if pending:
                launch()
            while flight:
                await settle(flight.popleft())
        finally:
            # cancelled or refused half-way: wait for the batches in flight (bounded: WINDOW) before
            # the caller closes and removes the file, so no write can land on a reused descriptor
            concurrent.futures.wait([f for pair in flight for f in pair])
        self.file.flush()

    @property
    def sha256(self) -> str:
        """The sha256 of what was received."""
        return self.arrival.hexdigest()

    def sync(self) -> None:
        """Make the received bytes durable (flush, fsync); the hub calls it while it verifies,
        so that ``commit`` under the database's writer lock has only a rename left to do."""
        if not getattr(self, "_synced", False):
            self.file.flush()
            os.fsync(self.file.fileno())
            self._synced = True

    def commit(self) -> str:
        """Move the received bytes into the store (durably); returns their sha256."""
        self.sync()
        digest = self.sha256
        target = self.store.path(digest)
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            os.chmod(self.path, 0o644)
            os.replace(self.path, target)
            fsync_directory(target.parent)
        return digest
