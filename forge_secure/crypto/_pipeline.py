"""Bounded, ordered producer/consumer plumbing so that file I/O, hashing and AES-GCM overlap.

``hashlib`` updates on large buffers and file reads/writes release the GIL, so running them
on helper threads lets a stream use a second core while memory stays bounded by a fixed
pool of chunk buffers. Nothing cryptographic happens here.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO, Callable, Iterator

_STOP = object()


class FanOut:
    """Hand each filled buffer, in order, to every consumer (one thread per consumer).

    ``with FanOut([digest.update, f.write], size) as fan: buf = fan.buffer(); ...; fan.submit(buf, n)``.
    At most ``depth`` buffers exist; ``buffer()`` blocks until one is free. A consumer's
    exception is re-raised in the caller at the next call or on exit.
    """

    def __init__(self, consumers: list[Callable[[memoryview], object]], size: int, depth: int = 4, *, threaded: bool = True):
        self._inline = consumers if not threaded else None
        self._buf = bytearray(size) if not threaded else None
        if not threaded:  # small streams: call the consumers directly, no threads
            self._queues, self._threads, self._error = [], [], None
            return
        self._free: queue.Queue = queue.Queue()
        for _ in range(depth):
            self._free.put(bytearray(size))
        self._queues = [queue.Queue() for _ in consumers]
        self._pending: dict[int, int] = {}
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._run, args=(c, q), daemon=True) for c, q in zip(consumers, self._queues)]
        for t in self._threads:
            t.start()

    def _run(self, consume, q: queue.Queue) -> None:
        while True:
            item = q.get()
            if item is _STOP:
                return
            buf, n = item
            try:
                if self._error is None:
                    consume(memoryview(buf)[:n])
            except BaseException as e:  # handed to the caller
                self._error = e
            finally:
                with self._lock:
                    self._pending[id(buf)] -= 1
                    if not self._pending[id(buf)]:
                        del self._pending[id(buf)]
                        self._free.put(buf)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def buffer(self) -> bytearray:
        self._check()
        if self._inline is not None:
            return self._buf
        return self._free.get()

    def submit(self, buf: bytearray, n: int) -> None:
        self._check()
        if self._inline is not None:
            for consume in self._inline:
                consume(memoryview(buf)[:n])
            return
        with self._lock:
            self._pending[id(buf)] = len(self._queues)
        for q in self._queues:
            q.put((buf, n))

    def __enter__(self) -> "FanOut":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for q in self._queues:
            q.put(_STOP)
        for t in self._threads:
            t.join()
        if exc_type is None:
            self._check()


def prefetch(f: BinaryIO, offset: int | None, total: int, sizes: Iterator[int] | None = None, *, block: int = 1 << 20,
             depth: int = 4, hasher=None) -> Iterator[memoryview]:
    """Yield ``total`` bytes of ``f`` from ``offset`` (None: where it is) as memoryviews,
    read ahead on a thread (``f`` needs only ``readinto``).

    ``hasher`` (e.g. a ``hashlib`` object) is updated with every piece on the reading
    thread. ``sizes`` iterates over the length of each piece, each at most ``block`` (default:
    ``block`` bytes each); lengths are produced lazily, so memory does not grow with ``total``. A view is
    valid until the next one is requested. A short read yields a shorter last view.
    """
    lengths = sizes if sizes is not None else (min(block, total - i) for i in range(0, total, block))
    if total <= 2 * block:  # small streams: read inline, no thread
        if offset is not None:
            f.seek(offset)
        buf = bytearray(block)
        for n in lengths:
            got = f.readinto(memoryview(buf)[:n])
            if hasher is not None:
                hasher.update(memoryview(buf)[:got])
            yield memoryview(buf)[:got]
            if got != n:
                return
        return
    free: queue.Queue = queue.Queue()
    for _ in range(depth):
        free.put(bytearray(block))
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        try:
            if offset is not None:
                f.seek(offset)
            for n in lengths:
                buf = free.get()
                if stop.is_set():
                    break
                got = f.readinto(memoryview(buf)[:n])
                if hasher is not None:
                    hasher.update(memoryview(buf)[:got])
                ready.put((buf, got))
                if got != n:
                    break
        except BaseException as e:  # handed to the consumer
            ready.put(e)
        ready.put(_STOP)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    previous = None
    try:
        while True:
            item = ready.get()
            if previous is not None:
                free.put(previous)
                previous = None
            if item is _STOP:
                return
            if isinstance(item, BaseException):
                raise item
            buf, got = item
            previous = buf
            yield memoryview(buf)[:got]
    finally:
        stop.set()
        free.put(bytearray(0))  # unblock the reader if it waits for a buffer
        thread.join()
