"""The hub's one-pass push check (forge_secure.crypto.received): the digests taken while a
bundle arrives, and verify_received refusing exactly what verify refuses."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from forge_secure.crypto import BundleError, load_roster, verify
from forge_secure.crypto.bundle import _parse
from forge_secure.crypto.received import ArrivalDigest, verify_received


def _arrive(data: bytes, block: int) -> ArrivalDigest:
    a = ArrivalDigest()
    for i in range(0, len(data), block):
        a.update(data[i : i + block])
    return a


def _outcome(fn):
    try:
        v = fn()
    except BundleError as e:
        return ("refused", e.code)
    return ("accepted", v.submission_id, v.bundle_sha256, v.site, v.sequence)


@pytest.fixture
def sealed(consortium):
    bundle = consortium.seal("site-1", plugin=consortium.plugin("site-1", rows=700, dp=False))  # several 4 KiB chunks
    return consortium, bundle, bundle.read_bytes()


@pytest.mark.parametrize("block", [1, 7, 4096, 65536, 1 << 30])
def test_digests_whatever_the_blocks(sealed, block):
    _, bundle, data = sealed
    with open(bundle, "rb") as f:
        end = _parse(f, bundle).envelope_offset
    a = _arrive(data, block)
    assert a.size == len(data) and a.prefix_end == end
    assert a.hexdigest() == hashlib.sha256(data).hexdigest()
    assert a.prefix_hexdigest() == hashlib.sha256(data[:end]).hexdigest()


def test_same_result_as_verify(sealed):
    c, bundle, data = sealed
    roster = load_roster(c.roster)
    v = verify(bundle, roster)
    r = verify_received(bundle, roster, _arrive(data, 65536))
    assert r == v


def _mutations(data: bytes, seed: int, n: int):
    rng = random.Random(seed)
    (hlen,) = struct.unpack(">I", data[8:12])
    yield "truncated-half", data[: len(data) // 2]
    yield "truncated-last-byte", data[:-1]
    yield "trailing", data + b"\x00"
    yield "header-only", data[: 12 + hlen]
    yield "bad-magic", b"X" + data[1:]
    yield "huge-header-length", data[:8] + struct.pack(">I", 1 << 31) + data[12:]
    for k in range(n):
        pos = rng.randrange(len(data))
        yield f"flip-{k}@{pos}", data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]
    for k in range(n // 4):  # a flip in the encrypted payload, the part whose digest is taken on arrival
        pos = rng.randrange(12 + hlen + 90, len(data) - 600)
        yield f"payload-flip-{k}@{pos}", data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1 :]


def test_refuses_exactly_what_verify_refuses(sealed, tmp_path):
    """Byte flips anywhere, truncation, extension, a broken header: the one-pass check gives
    verify's outcome (accepted only when verify accepts, the same error code otherwise)."""
    c, _, data = sealed
    roster = load_roster(c.roster)
    path = tmp_path / "received.forge"
    refused = 0
    for name, mutated in _mutations(data, seed=1, n=120):
        path.write_bytes(mutated)
        expect = _outcome(lambda: verify(path, roster))
        got = _outcome(lambda mutated=mutated: verify_received(path, roster, _arrive(mutated, 4093)))
        assert got == expect, name
        refused += expect[0] == "refused"
    assert refused >= 100  # the mutations do reach the checks


def test_payload_flip_is_caught_by_the_arrival_digest(sealed, tmp_path):
    c, _, data = sealed
    roster = load_roster(c.roster)
    with open(sealed[1], "rb") as f:
        parsed = _parse(f, sealed[1])
    pos = parsed.chunks_offset + 5000
    bad = data[:pos] + bytes([data[pos] ^ 0x80]) + data[pos + 1 :]
    path = tmp_path / "b.forge"
    path.write_bytes(bad)
    a = _arrive(bad, 65536)
    assert a.prefix_hexdigest() is not None  # the arrival digest itself is used, not a re-read
    with pytest.raises(BundleError) as e:
        verify_received(path, roster, a)
    assert e.value.code == "bundle.digest"


def test_arrival_of_other_bytes_falls_back_to_the_file(sealed, tmp_path):
    """A digest taken over a stream of another length than the file is never trusted."""
    c, bundle, data = sealed
    roster = load_roster(c.roster)
    a = _arrive(data + b"extra", 65536)
    assert verify_received(bundle, roster, a) == verify(bundle, roster)
