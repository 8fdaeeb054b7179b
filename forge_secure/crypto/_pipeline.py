"""Run a chunked byte stream on two threads: the caller's and one pooled helper.

A bundle stream makes four passes over its bytes: read, AES-GCM, SHA-256 and write. The
signed payload digest is one SHA-256, a sequential pass that takes about as long as the
three others together (SHA-256 about 1.4 GB/s here; copies into and out of the page cache
about 3-4 GB/s), so the stream can only be as fast as that one pass if the other work is
shared out around it. :class:`TwoLanes` does that with two threads, one per core:

* the **helper** hashes the chunks strictly in order and, whenever the next chunk is not
  ready, does other work that may run on any thread (read and encrypt a later chunk, read
  a later ciphertext chunk with ``pread``, or write a finished one with ``pwrite``);
* the **caller** does the work that must stay on one thread in order (decrypting into the
  container when opening, which writes the files in order) and takes any shared work the
  helper has not taken;
* a stream may have a second in-order pass (``check``: sealing hashes the plaintext of a
  plugin's adapter against the sha256 its forge.json records, in the same read), which
  either thread runs, one chunk at a time and in order; the caller takes it first, so the
  two hashes run side by side, one on each core.

Which thread does a shared piece of work is decided at run time, so the two stay balanced
whatever the speeds of this machine. ``hashlib`` updates, ``pread``/``pwrite`` and file
reads/writes release the GIL, so the two threads really run at once; more threads would
only make two cores time-share. Memory is bounded by ``depth`` chunk buffers, which are
kept in a small process-wide cache (first-touching fresh pages costs more than AES-GCM on
this kind of virtual machine). Helper threads come from a process-wide pool and are reused
(starting a thread takes milliseconds on a loaded machine); a forked child gets a fresh
pool. Nothing cryptographic happens here.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()
_CACHE: dict[int, list[bytearray]] = {}
CACHE_BYTES = 16 << 20  # at most this much idle buffer memory is kept between streams


def _pool() -> ThreadPoolExecutor:
    """The process-wide pool of helper threads (the executor reuses idle threads)."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="forge-stream")
        return _POOL


def _reset_in_child() -> None:  # the parent's threads do not exist in a forked child
    global _POOL, _LOCK
    _POOL, _LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


def take_buffers(size: int, count: int) -> list[bytearray]:
    """``count`` buffers of ``size`` bytes, reused from earlier streams when possible."""
    with _LOCK:
        cached = _CACHE.get(size, [])
        got = [cached.pop() for _ in range(min(count, len(cached)))]
    return got + [bytearray(size) for _ in range(count - len(got))]


def give_back(buffers: list[bytearray]) -> None:
    """Return buffers for reuse; beyond ``CACHE_BYTES`` in total they are freed."""
    with _LOCK:
        held = sum(len(b) for bs in _CACHE.values() for b in bs)
        for b in buffers:
            if held + len(b) <= CACHE_BYTES:
                _CACHE.setdefault(len(b), []).append(b)
                held += len(b)


IN_FLIGHT_BYTES = 5 << 20  # chunk buffer memory of one stream (4 buffers of 1 MiB chunks)


def default_depth(size: int) -> int:
    """How many chunk buffers a stream uses: 4, fewer for huge chunks (at least 2). Measured
    here with 1 MiB chunks: 4 buffers seal faster than 7 (a smaller working set stays in
    cache) and open as fast; 2 would leave the helper idle while the caller is busy."""
    return max(2, min(4, IN_FLIGHT_BYTES // size))


Fill = Callable[[int, bytearray], int]
Drain = Callable[[int, memoryview], object]
Check = Callable[[int, bytearray, int], object]


class TwoLanes:
    """Chunks ``0 .. count-1`` of a stream, each in a buffer of ``size`` bytes, go through:

    * ``fill(i, buf) -> n``: put chunk ``i`` into ``buf[:n]``. With ``fill_anywhere`` any
      thread may fill any chunk (positional reads); otherwise the caller fills them in order.
    * ``update(view)``: on the helper, strictly in chunk order (a running hash).
    * ``drain(i, view)``: use the chunk. With ``drain_anywhere`` any thread, any order
      (positional writes); otherwise the caller drains them in order.
    * ``check(i, buf, n)`` (optional): a second pass strictly in chunk order, run by either
      thread (never both at once; the caller prefers it), given the whole buffer (``fill``
      may keep more than ``buf[:n]`` in it, e.g. the plaintext beside the ciphertext).

    A buffer is reused once its chunk is hashed, checked and drained, so none of ``update``,
    ``check`` and ``drain`` may change it. ``run()`` returns when every chunk is done, or raises the first
    error of either thread after the helper has stopped. ``progress(1)`` is called per chunk.
    With ``threaded=False`` everything runs on the caller, chunk by chunk.
    """

    def __init__(
        self,
        count: int,
        size: int,
        *,
        fill: Fill,
        update: Callable[[memoryview], object],
        drain: Drain,
        fill_anywhere: bool = False,
        drain_anywhere: bool = False,
        depth: int | None = None,
        threaded: bool = True,
        progress: Callable[[int], object] | None = None,
        check: Check | None = None,
    ):
        depth = default_depth(max(size, 1)) if depth is None else depth
        if count < 0 or size < 1 or depth < 2:
            raise ValueError("TwoLanes needs count >= 0, size >= 1 and depth >= 2")
        self.count, self.size, self.depth = count, size, depth
        self.fill, self.update, self.drain, self.check = fill, update, drain, check
        self._steps = 2 if check is None else 3  # hash, drain (and check) per chunk
        self.fill_anywhere, self.drain_anywhere = fill_anywhere, drain_anywhere
        self.threaded = threaded and count > 1
        self.progress = progress or (lambda n: None)
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._next_fill = 0  # next chunk to claim for filling
        self._next_hash = 0  # next chunk the helper hashes
        self._next_drain = 0  # next chunk the caller drains (ordered drains)
        self._next_check = 0  # next chunk to check (either thread, one at a time)
        self._checking = False
        self._filled: dict[int, tuple[bytearray, int]] = {}
        self._undrained: collections.deque[int] = collections.deque()  # filled, drain not yet taken
        self._left: dict[int, int] = {}  # chunk -> steps still to do (hash, drain)
        self._free: list[bytearray] = []
        self._buffers: list[bytearray] = []
        self._helper: Future[None] | None = None
        self._completed = 0

    # ------------------------------------------------------------------ the plain path

    def _run_inline(self) -> None:
        buffers = take_buffers(self.size, 1)
        try:
            buf = buffers[0]
            for i in range(self.count):
                n = self.fill(i, buf)
                view = memoryview(buf)[:n]
                self.update(view)
                if self.check is not None:
                    self.check(i, buf, n)
                self.drain(i, view)
                self.progress(1)
        finally:
            give_back(buffers)

    # ------------------------------------------------------------------ shared state

    def _finish_step(self, i: int) -> None:
        """One of chunk ``i``'s steps is done (called with the lock held)."""
        self._left[i] -= 1
        if not self._left[i]:
            del self._left[i]
            buf, _ = self._filled.pop(i)
            self._free.append(buf)
            self._completed += 1

    def _claim_fill(self):
        if self._next_fill < self.count and self._free:
            i = self._next_fill
            self._next_fill += 1
            return ("fill", i, self._free.pop())
        return None

    def _claim_check(self):
        # one thread at a time: the flag is set here and cleared when the chunk is checked
        if self.check is not None and not self._checking and self._next_check in self._filled:
            self._checking = True
            return ("check", self._next_check, None)
        return None

    def _pick_caller(self):
        # ordered drains: only this thread takes them, and it finishes one (advancing
        # _next_drain) before it picks again, so a chunk is never drained twice
        if not self.drain_anywhere and self._next_drain in self._filled:
            return ("drain", self._next_drain, None)
        return self._claim_check() or self._spare_work(fill=True)

    def _pick_helper(self):
        if self._next_hash < self.count and self._next_hash in self._filled:
            return ("hash", self._next_hash, None)
        return self._spare_work(fill=self.fill_anywhere) or self._claim_check()

    def _spare_work(self, *, fill: bool):
        """A chunk to fill (when this thread may), else one to drain out of order (when
        drains may run anywhere), else nothing."""
        task = self._claim_fill() if fill else None
        if task:
            return task
        if self.drain_anywhere and self._undrained:
            return ("drain", self._undrained.popleft(), None)
        return None

    def _do(self, task) -> None:
        kind, i, buf = task
        if kind == "fill":
            n = self.fill(i, buf)
            with self._cond:
                self._filled[i] = (buf, n)
                self._left[i] = self._steps
                if self.drain_anywhere:
                    self._undrained.append(i)
                self._cond.notify_all()
            return
        buf, n = self._filled[i]  # a filled chunk stays in _filled until all its steps are done
        view = memoryview(buf)[:n]
        if kind == "hash":
            self.update(view)
        elif kind == "check":
            assert self.check is not None
            self.check(i, buf, n)
        else:
            self.drain(i, view)
        with self._cond:
            if kind == "hash":
                self._next_hash += 1
            elif kind == "check":
                self._next_check += 1
                self._checking = False
            elif not self.drain_anywhere:
                self._next_drain += 1
            self._finish_step(i)
            self._cond.notify_all()
        if kind == "drain":
            self.progress(1)

    def _lane(self, pick, done) -> None:
        while True:
            with self._cond:
                while True:
                    if self._error is not None or done():
                        return
                    task = pick()
                    if task is not None:
                        break
                    self._cond.wait()
            try:
                self._do(task)
            except BaseException as e:
                with self._cond:
                    if self._error is None:
                        self._error = e
                    self._cond.notify_all()
                return

    # ------------------------------------------------------------------ run

    def start(self) -> None:
        """Start the helper now, before ``run``: it fills (when ``fill_anywhere``) and hashes
        up to ``depth`` chunks while the caller does other work. It never drains (give an
        ordered ``drain``, settable until ``run``), so nothing is used before ``run``."""
        if self.drain_anywhere:
            raise ValueError("start() is for streams whose caller drains in order")
        self._launch()

    def _launch(self) -> None:
        if not self.threaded or self._helper is not None:
            return
        self._buffers = take_buffers(self.size, self.depth)
        self._free = list(self._buffers)
        self._helper = _pool().submit(self._lane, self._pick_helper, lambda: self._next_hash >= self.count)

    def _stop_helper(self) -> None:
        if self._helper is not None:
            self._helper.result()  # the helper never raises; it records its error in _error
            self._helper = None
            give_back(self._buffers)
            self._buffers = []

    def cancel(self) -> None:
        """Stop a started helper and drop its work (e.g. the stream turned out not to be
        wanted); a no-op after ``run``."""
        with self._cond:
            if self._error is None:
                self._error = Cancelled("the stream was cancelled")
            self._cond.notify_all()
        self._stop_helper()

    def run(self) -> None:
        if not self.threaded:
            self._run_inline()
            return
        self._launch()
        try:
            self._lane(self._pick_caller, lambda: self._completed >= self.count)
        except BaseException as e:  # e.g. KeyboardInterrupt while waiting: stop the helper too
            with self._cond:
                if self._error is None:
                    self._error = e
                self._cond.notify_all()
            raise
        finally:
            self._stop_helper()
        if self._error is not None:
            raise self._error


class Cancelled(Exception):
    """Raised by ``TwoLanes.run`` after ``cancel``."""


# --------------------------------------------------------------------------- small helpers


def _fill(view: memoryview, read) -> int:
    """Call ``read(rest, done)`` until ``view`` is full or it returns 0 (end of file)."""
    filled = 0
    while filled < len(view):
        n = read(view[filled:], filled)
        if not n:
            break
        filled += n
    return filled


def readinto_exactly(f: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``f`` (raw files may return short reads); returns the bytes read,
    fewer than ``len(view)`` only at the end of the file."""
    return _fill(view, lambda rest, done: f.readinto(rest))  # type: ignore[attr-defined]  # typing.BinaryIO omits readinto


def pread_exactly(fd: int, view: memoryview, offset: int) -> int:
    """``readinto_exactly`` at a position, without moving any file offset (thread-safe)."""
    return _fill(view, lambda rest, done: os.preadv(fd, [rest], offset + done))


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """Write all of ``view`` at ``offset`` (regular files may take a write in pieces)."""
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def positional_fd(f) -> int | None:
    """The descriptor of ``f`` when positional I/O works on it (a real, seekable file)."""
    if not hasattr(os, "preadv"):
        return None
    try:
        fd = f.fileno()
        os.preadv(fd, [bytearray(0)], 0)
        return fd
    except (AttributeError, OSError, ValueError):
        return None


def hash_stream(
    f: BinaryIO,
    offset: int,
    total: int,
    update: Callable[[memoryview], object],
    *,
    block: int = 1 << 20,
    depth: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Pass ``total`` bytes of ``f`` from ``offset`` to ``update`` in order: read on both
    threads (positionally, when ``f`` is a real file), hashed on the helper. Returns the bytes
    read, fewer than ``total`` when the file ends early."""
    count = -(-total // block)
    got = [0] * count
    fd = positional_fd(f)
    if fd is None:
        f.seek(offset)

    def want(i: int) -> int:
        return min(block, total - i * block)

    def fill(i: int, buf: bytearray) -> int:
        view = memoryview(buf)[: want(i)]
        got[i] = pread_exactly(fd, view, offset + i * block) if fd is not None else readinto_exactly(f, view)
        return got[i]

    lanes = TwoLanes(
        count,
        block,
        fill=fill,
        update=update,
        drain=lambda i, v: None,
        fill_anywhere=fd is not None,
        drain_anywhere=True,
        depth=depth,
        threaded=total > 2 * block,
        progress=(lambda n: None) if progress is None else progress,
    )
    lanes.run()
    return sum(got)


class EarlyWriteback:
    """Start writing a file's new bytes to disk while more are still being produced, so the
    ``fsync`` at the end (which durability needs) has little left to wait for.

    Every ``every`` bytes written, ``posix_fadvise(POSIX_FADV_DONTNEED)`` over the bytes
    written since the last hint: on Linux this starts asynchronous write-back of those dirty
    pages (and drops only pages that are already clean); it does not wait for the disk and
    changes no data. It is a no-op on tmpfs and where the call does not exist. Call
    ``wrote(n)`` after each write of ``n`` bytes to the file descriptor ``fd``.
    """

    def __init__(self, fd: int, start: int = 0, every: int = 4 << 20):
        self.fd, self.every = fd, every
        self.done = self.pos = start
        self._on = hasattr(os, "posix_fadvise")

    def wrote(self, n: int) -> None:
        self.pos += n
        if self.pos - self.done >= self.every:
            self.hint(self.done, self.pos - self.done)
            self.done = self.pos

    def hint(self, offset: int, length: int) -> None:
        """Start write-back of ``length`` bytes at ``offset`` (any order, any thread)."""
        if self._on:
            try:
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)
            except OSError:  # e.g. a file system that refuses advice: it is only a hint
                self._on = False
