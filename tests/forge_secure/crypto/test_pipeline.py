"""The two-lane stream under the bundle format: hashing strictly in order, every chunk
filled and drained exactly once, bounded buffers, shared work on both threads, errors
handed back without hanging, pooled threads reused, short reads and early ends of files."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import numpy as np
import pytest

from forge_secure.crypto import _pipeline
from forge_secure.crypto._pipeline import (
    EarlyWriteback,
    TwoLanes,
    give_back,
    hash_stream,
    positional_fd,
    pread_exactly,
    pwrite_all,
    readinto_exactly,
    take_buffers,
)

MODES = [  # (fill_anywhere, drain_anywhere, threaded)
    (False, True, True),  # sealing: fill in order here, write anywhere
    (True, False, True),  # opening: read anywhere, decrypt in order here
    (True, True, True),  # verifying: read anywhere, nothing to drain
    (False, False, True),
    (False, True, False),  # short streams: all inline
]


def pieces(seed: int, count: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.bytes(int(n)) for n in rng.integers(1, size + 1, size=count)]


@pytest.mark.parametrize("fill_anywhere,drain_anywhere,threaded", MODES)
def test_every_chunk_is_filled_hashed_in_order_and_drained_once(fill_anywhere, drain_anywhere, threaded):
    data = pieces(7, 97, 64)
    filled: list[tuple[int, str]] = []
    hashed: list[bytes] = []
    drained: dict[int, bytes] = {}
    caller = threading.current_thread().name
    lock = threading.Lock()

    def fill(i, buf):
        with lock:
            filled.append((i, threading.current_thread().name))
        buf[: len(data[i])] = data[i]
        return len(data[i])

    def drain(i, view):
        assert i not in drained
        if not drain_anywhere:
            assert threading.current_thread().name == caller and i == len(drained)
        drained[i] = bytes(view)

    TwoLanes(
        len(data),
        64,
        fill=fill,
        update=lambda v: hashed.append(bytes(v)),
        drain=drain,
        fill_anywhere=fill_anywhere,
        drain_anywhere=drain_anywhere,
        depth=3,
        threaded=threaded,
    ).run()
    assert hashed == data  # the running hash sees the stream in order
    assert drained == dict(enumerate(data))
    assert sorted(i for i, _ in filled) == list(range(len(data)))
    if not fill_anywhere:
        assert [i for i, _ in filled] == list(range(len(data))) and {t for _, t in filled} == {caller}


@pytest.mark.parametrize("fill_anywhere,drain_anywhere,threaded", MODES)
def test_the_second_ordered_pass_sees_every_chunk_once_in_order_on_either_thread(fill_anywhere, drain_anywhere, threaded):
    """``check`` (sealing's adapter hash) runs strictly in order, one chunk at a time, on the
    whole buffer ``fill`` left (more than the ``n`` bytes hashed and drained), before reuse."""
    data = pieces(9, 120, 48)
    checked: list[bytes] = []
    who: set[str] = set()
    busy = threading.Lock()

    def fill(i, buf):
        buf[: len(data[i])] = data[i]
        buf[48:] = data[i][:1] * 16  # beside the chunk: kept in the buffer until every step is done
        return len(data[i])

    def check(i, buf, n):
        assert busy.acquire(blocking=False), "two threads checked at once"
        try:
            assert n == len(data[i]) and bytes(buf[48:]) == data[i][:1] * 16
            checked.append(bytes(buf[:n]))
            who.add(threading.current_thread().name)
        finally:
            busy.release()

    hashed: list[bytes] = []
    TwoLanes(
        len(data),
        64,
        fill=fill,
        update=lambda v: hashed.append(bytes(v)),
        drain=lambda i, v: None,
        check=check,
        fill_anywhere=fill_anywhere,
        drain_anywhere=drain_anywhere,
        depth=3,
        threaded=threaded,
    ).run()
    assert checked == data and hashed == data
    if not threaded:
        assert who == {threading.current_thread().name}


def test_the_two_ordered_passes_run_side_by_side():
    """With a slow hash and a slow check, the caller checks while the helper hashes."""
    overlap = threading.Event()
    running = {"hash": threading.Event(), "check": threading.Event()}

    def step(kind):
        running[kind].set()
        other = running["check" if kind == "hash" else "hash"]
        if other.wait(0.02):
            overlap.set()
        running[kind].clear()

    TwoLanes(
        30,
        8,
        fill=lambda i, b: 8,
        update=lambda v: step("hash"),
        drain=lambda i, v: None,
        check=lambda i, b, n: step("check"),
        fill_anywhere=True,
        drain_anywhere=True,
        depth=4,
    ).run()
    assert overlap.is_set()


def test_shared_work_goes_to_the_idle_thread():
    """Writes are taken by the helper when the caller is the slower lane, and the other way."""

    def run(slow_fill: bool):
        who: list[str] = []
        gate = threading.Event()

        def fill(i, buf):
            if slow_fill:
                gate.wait(0.005)  # the caller is slow: the helper has time to write
            return 8

        def drain(i, view):
            who.append(threading.current_thread().name)

        def update(view):
            if not slow_fill:
                gate.wait(0.005)  # the hash is slow: the caller writes

        TwoLanes(40, 8, fill=fill, update=update, drain=drain, drain_anywhere=True, depth=4).run()
        return who

    assert any(n.startswith("forge-stream") for n in run(slow_fill=True))
    assert all(n == threading.current_thread().name for n in run(slow_fill=False)[8:])


def test_never_more_than_depth_buffers_in_flight():
    seen: set[int] = set()
    in_flight = [0]
    peak = [0]
    lock = threading.Lock()

    def fill(i, buf):
        seen.add(id(buf))
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        return 4

    def drain(i, view):
        with lock:
            in_flight[0] -= 1

    TwoLanes(200, 4, fill=fill, update=lambda v: None, drain=drain, drain_anywhere=True, depth=3).run()
    assert len(seen) <= 3 and peak[0] <= 3


@pytest.mark.parametrize("where", ["fill", "update", "drain", "check"])
@pytest.mark.parametrize("fill_anywhere,drain_anywhere,threaded", MODES)
def test_an_error_on_either_thread_is_raised_here_and_nothing_hangs(where, fill_anywhere, drain_anywhere, threaded):
    calls = {"fill": 0, "update": 0, "drain": 0, "check": 0}

    def step(kind, value=None):
        calls[kind] += 1
        if kind == where and calls[kind] == 5:
            raise ValueError(f"{kind} failed")
        return value

    lanes = TwoLanes(
        50,
        8,
        fill=lambda i, b: step("fill", 8),
        update=lambda v: step("update"),
        drain=lambda i, v: step("drain"),
        check=lambda i, b, n: step("check"),
        fill_anywhere=fill_anywhere,
        drain_anywhere=drain_anywhere,
        depth=2,
        threaded=threaded,
    )
    with pytest.raises(ValueError, match=f"{where} failed"):
        lanes.run()
    assert calls["fill"] < 50  # it stopped early


def test_helper_threads_are_reused_and_buffers_come_back():
    names = set()

    def update(view):
        names.add(threading.current_thread().name)

    def pool_threads():
        return {t.name for t in threading.enumerate() if t.name.startswith("forge-stream")}

    TwoLanes(6, 16, fill=lambda i, b: 16, update=update, drain=lambda i, v: None).run()
    before = pool_threads()
    for _ in range(5):
        TwoLanes(6, 16, fill=lambda i, b: 16, update=update, drain=lambda i, v: None).run()
    assert pool_threads() == before and names <= before  # no thread started after the first stream
    a = take_buffers(12345, 2)
    give_back(a)
    b = take_buffers(12345, 2)
    assert {id(x) for x in a} == {id(x) for x in b}
    give_back(b)
    give_back([bytearray(_pipeline.CACHE_BYTES + 1)])  # too large to keep
    assert _pipeline.CACHE_BYTES + 1 not in _pipeline._CACHE


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_helper_threads():
    TwoLanes(6, 8, fill=lambda i, b: 8, update=lambda v: None, drain=lambda i, v: None).run()  # the parent has a helper
    pid = os.fork()
    if pid == 0:  # child: the parent's helper does not exist here; a new one must start
        code = 1
        try:
            h = hashlib.sha256()
            TwoLanes(6, 3, fill=lambda i, b: b.__setitem__(slice(0, 3), b"abc") or 3, update=h.update, drain=lambda i, v: None).run()
            code = 0 if h.digest() == hashlib.sha256(b"abc" * 6).digest() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


class Dribble(io.RawIOBase):
    """A raw stream (no file descriptor) that returns at most 7 bytes per read."""

    def __init__(self, data: bytes):
        self._data, self._pos = data, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        self._pos = pos
        return pos

    def readinto(self, b):
        n = min(7, len(b), len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_hash_stream_on_streams_and_real_files_with_short_reads_and_early_ends(tmp_path):
    data = bytes(range(256)) * 1000
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    buf = bytearray(100)
    assert readinto_exactly(Dribble(data), memoryview(buf)) == 100 and bytes(buf) == data[:100]
    with open(path, "rb") as f:
        assert positional_fd(f) is not None and positional_fd(io.BytesIO(data)) is None
        assert pread_exactly(f.fileno(), memoryview(buf), 1000) == 100 and bytes(buf) == data[1000:1100]
        for block in (4096, 1 << 20):  # threaded and inline
            h = hashlib.sha256()
            assert hash_stream(f, 100, len(data) - 100, h.update, block=block) == len(data) - 100
            assert h.digest() == hashlib.sha256(data[100:]).digest()
    for block in (4096, 1 << 20):
        h = hashlib.sha256()
        assert hash_stream(Dribble(data), 100, len(data) - 100, h.update, block=block) == len(data) - 100
        assert h.digest() == hashlib.sha256(data[100:]).digest()
    path.write_bytes(data[:5000])
    with open(path, "rb") as f:
        progress = []
        h = hashlib.sha256()
        assert hash_stream(f, 0, len(data), h.update, block=1024, progress=progress.append) < len(data)
        assert h.digest() == hashlib.sha256(data[:5000]).digest()


def test_pwrite_all_and_early_writeback_leave_the_bytes_as_written(tmp_path):
    path = tmp_path / "out.bin"
    rng = np.random.default_rng(3)
    parts = [rng.bytes(1000) for _ in range(9)]
    with open(path, "wb") as f:
        wb = EarlyWriteback(f.fileno(), every=2500)
        for i in reversed(range(9)):  # out of order, as two threads write
            pwrite_all(f.fileno(), memoryview(parts[i]), i * 1000)
            wb.hint(i * 1000, 1000)
            wb.wrote(1000)
        os.fsync(f.fileno())
    assert path.read_bytes() == b"".join(parts)


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError):
        TwoLanes(3, 0, fill=lambda i, b: 0, update=lambda v: None, drain=lambda i, v: None)
    with pytest.raises(ValueError):
        TwoLanes(3, 8, fill=lambda i, b: 0, update=lambda v: None, drain=lambda i, v: None, depth=1)


def test_start_hashes_ahead_without_draining_and_cancel_stops_it():
    data = pieces(11, 30, 32)
    hashed: list[bytes] = []
    drained: list[int] = []
    ahead = threading.Event()

    def update(view):
        hashed.append(bytes(view))
        if len(hashed) == 3:
            ahead.set()

    def fill(i, buf):
        buf[: len(data[i])] = data[i]
        return len(data[i])

    lanes = TwoLanes(len(data), 32, fill=fill, update=update, drain=lambda i, v: None, fill_anywhere=True, depth=4)
    lanes.start()
    assert ahead.wait(5)  # the helper read and hashed ahead on its own...
    assert len(hashed) <= 4 and not drained  # ...at most depth chunks, and drained nothing
    lanes.drain = lambda i, v: drained.append(i)
    lanes.run()
    assert hashed == data and drained == list(range(len(data)))

    started = TwoLanes(len(data), 32, fill=fill, update=lambda v: None, drain=lambda i, v: drained.append(i), fill_anywhere=True, depth=2)
    drained.clear()
    started.start()
    started.cancel()
    assert drained == [] and started._helper is None
    with pytest.raises(ValueError):
        TwoLanes(3, 8, fill=fill, update=lambda v: None, drain=lambda i, v: None, drain_anywhere=True).start()
