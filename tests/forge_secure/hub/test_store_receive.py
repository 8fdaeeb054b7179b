"""The hub's upload receiver (``store.Incoming.receive``): several batches are hashed and
written on ordered pool lanes while the event loop reads on; the bytes land in order, the
digest is the one of the whole stream, and a refusal or a failed write leaves no lane running."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time

import pytest

from forge_secure.hub import store as store_mod
from forge_secure.hub.store import Incoming, Store, TooLarge


async def _blocks(data: bytes, sizes: list[int], pause_every: int = 7):
    at, k = 0, 0
    while at < len(data):
        n = sizes[k % len(sizes)]
        yield data[at : at + n]
        at, k = at + n, k + 1
        if k % pause_every == 0:
            await asyncio.sleep(0)  # let finished lanes be settled between pieces


@pytest.mark.parametrize("sizes", [[1], [65536], [262144, 1, 4093], [3 << 20]])
def test_batches_land_in_order_and_hash_the_whole_stream(tmp_path, sizes):
    rng = random.Random(len(sizes))
    total = (store_mod.WINDOW + 3) * store_mod.BATCH + 12345  # more batches than the window holds
    if sizes == [1]:
        total = 3 * 4096 + 7  # one-byte pieces: keep it short
    data = rng.randbytes(total)
    st = Store(tmp_path / "store")
    with st.incoming() as inc:
        asyncio.run(inc.receive(_blocks(data, sizes), limit=total))
        assert inc.size == total
        assert inc.sha256 == hashlib.sha256(data).hexdigest()
        inc.file.seek(0)
        assert inc.file.read() == data
        digest = inc.commit()
    assert st.path(digest).read_bytes() == data


def test_a_stream_over_the_limit_is_refused_and_no_lane_is_left_running(tmp_path):
    data = os.urandom(6 * store_mod.BATCH)
    st = Store(tmp_path / "store")
    with st.incoming() as inc:
        with pytest.raises(TooLarge, match="larger than the hub's limit"):
            asyncio.run(inc.receive(_blocks(data, [300_000]), limit=4 * store_mod.BATCH + 1))
        assert inc.size <= 4 * store_mod.BATCH + 300_000 + 1
        inc.file.flush()
        written = os.fstat(inc.file.fileno()).st_size
        assert written <= inc.size  # the queued tail was never written
        time.sleep(0.05)
        assert os.fstat(inc.file.fileno()).st_size == written  # no lane writes after the refusal
    assert not any((tmp_path / "store" / "sha256").rglob("*")), "nothing stored"


def test_a_failed_write_is_raised_after_every_lane_stopped(tmp_path):
    """A full disk (``/dev/full`` refuses every write with ENOSPC) surfaces as the OSError, once."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    data = os.urandom(5 * store_mod.BATCH)
    with open("/dev/full", "wb", buffering=0) as full:
        inc = Incoming(Store(tmp_path / "store"), tmp_path / "x.part", full)
        with pytest.raises(OSError) as err:
            asyncio.run(inc.receive(_blocks(data, [store_mod.BATCH // 2]), limit=len(data)))
        assert err.value.errno == 28  # ENOSPC


def test_concurrent_uploads_share_the_pool_and_each_stays_in_order(tmp_path):
    """More uploads at once than the pool has threads: a lane's task waits for the one before
    it, which the pool (first in, first out) has always started, so none deadlocks."""
    st = Store(tmp_path / "store")
    payloads = [os.urandom((store_mod.WINDOW + 2) * store_mod.BATCH + i) for i in range(6)]

    async def one(data: bytes, inc: Incoming) -> None:
        await inc.receive(_blocks(data, [200_000, 65536], pause_every=2), limit=len(data))

    with contextlib.ExitStack() as stack:
        incs = [stack.enter_context(st.incoming()) for _ in payloads]

        async def main() -> None:
            await asyncio.gather(*(one(d, i) for d, i in zip(payloads, incs, strict=True)))

        asyncio.run(main())
        for data, inc in zip(payloads, incs, strict=True):
            assert inc.sha256 == hashlib.sha256(data).hexdigest()
            inc.file.seek(0)
            assert inc.file.read() == data
