"""The I/O pipeline under the bundle stream: order, bounded buffers, errors handed back."""

from __future__ import annotations

import hashlib
import io

import pytest

from forge_secure.crypto._pipeline import FanOut, prefetch


def test_fanout_keeps_order_for_every_consumer_and_reraises():
    seen_a, seen_b = [], []
    with FanOut([lambda v: seen_a.append(bytes(v)), lambda v: seen_b.append(bytes(v))], 8, depth=2) as fan:
        for i in range(50):
            buf = fan.buffer()
            buf[:1] = bytes([i])
            fan.submit(buf, 1)
    assert seen_a == seen_b == [bytes([i]) for i in range(50)]

    def boom(view):
        raise ValueError("consumer failed")

    with pytest.raises(ValueError, match="consumer failed"):
        with FanOut([boom], 8, depth=2) as fan:
            for _ in range(10):
                fan.submit(fan.buffer(), 1)


def test_prefetch_reads_hashes_and_stops_early():
    data = bytes(range(256)) * 1000
    h = hashlib.sha256()
    pieces = [bytes(v) for v in prefetch(io.BytesIO(data), 0, len(data), block=4096, hasher=h)]
    assert b"".join(pieces) == data and h.digest() == hashlib.sha256(data).digest()
    # a short file gives a short last piece, and the consumer may stop at any time
    got = [len(v) for v in prefetch(io.BytesIO(data[:5000]), 0, len(data), block=4096)]
    assert got == [4096, 904]
    for i, _ in enumerate(prefetch(io.BytesIO(data), 100, len(data) - 100, block=1000)):
        if i == 3:
            break
