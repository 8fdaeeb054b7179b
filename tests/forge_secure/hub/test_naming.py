"""How a log entry names a bundle (hub/naming.py): the signed payload digest, the envelope's
sha256, the size and the submission id, read from the header and envelope alone -- of a
file, or of the ends of a stream kept as it is sent -- and checked against an entry."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from forge_secure.crypto import verify
from forge_secure.errors import ForgeIntegrityError
from forge_secure.hub.naming import HEAD_BYTES, TAIL_BYTES, BundleName, SentEnds, check_entry, name_of


def _envelope_span(data: bytes) -> tuple[int, int]:
    """Offset of env_len and the envelope's length, walked from the layout (independently of the parser)."""
    hlen = struct.unpack(">I", data[8:12])[0]
    header = json.loads(data[12 : 12 + hlen])
    pos = 12 + hlen
    wlen = struct.unpack(">H", data[pos : pos + 2])[0]
    pos += 2 + wlen + header["payload_size"] + header["chunks"] * 16
    return pos, struct.unpack(">I", data[pos : pos + 4])[0]


@pytest.fixture
def bundle(consortium):
    return consortium.seal("site-1")


def _expected(bundle, roster) -> BundleName:
    data = bundle.read_bytes()
    pos, elen = _envelope_span(data)
    v = verify(bundle, roster)
    assert v.bundle_sha256 == hashlib.sha256(data[:pos]).hexdigest()  # the signed payload digest covers every byte before env_len
    return BundleName(v.submission_id, v.bundle_sha256, hashlib.sha256(data[pos + 4 : pos + 4 + elen]).hexdigest(), len(data))


def test_name_of_a_file(bundle, consortium):
    want = _expected(bundle, consortium.roster)
    with open(bundle, "rb") as f:
        assert name_of(f) == want
    assert verify(bundle, consortium.roster).envelope_sha256 == want.envelope_sha256  # what the hub logs


@pytest.mark.parametrize("block", [1, 7, 4096, TAIL_BYTES - 1, TAIL_BYTES + 3, 1 << 20])
def test_name_of_the_bytes_sent_in_any_blocks(bundle, consortium, block):
    data = bundle.read_bytes()
    sent = SentEnds()
    for i in range(0, len(data), block):
        sent.add(data[i : i + block])
    assert sent.size == len(data) and len(sent.head) <= HEAD_BYTES and len(sent.tail) <= TAIL_BYTES
    assert sent.name() == _expected(bundle, consortium.roster)


def test_a_large_bundle_keeps_only_its_ends(consortium):
    bundle = consortium.seal("site-1", rows=1 << 15)  # about 1 MiB of weights
    data = bundle.read_bytes()
    assert len(data) > HEAD_BYTES + TAIL_BYTES
    sent = SentEnds()
    for i in range(0, len(data), 1 << 16):
        sent.add(data[i : i + (1 << 16)])
    assert sent.name() == _expected(bundle, consortium.roster)


def test_the_name_is_the_signed_digest_not_a_hash_of_the_payload(bundle, consortium):
    """A flipped ciphertext byte leaves the name unchanged: the name binds the payload through
    the signed digest, which the hub checks on arrival (test_push's tampered pushes) -- so a
    receipt naming it names the bundle the site signed."""
    data = bytearray(bundle.read_bytes())
    pos, _ = _envelope_span(bytes(data))
    data[pos - 40] ^= 1
    sent = SentEnds()
    sent.add(bytes(data))
    assert sent.name() == _expected(bundle, consortium.roster)


@pytest.mark.parametrize(
    "junk", [b"", b"not a bundle at all", b"FORGEBDL" + b"\xff" * 64, "truncated", "flipped-envelope"], ids=lambda j: str(j)[:20]
)
def test_bytes_that_are_not_a_bundle_have_no_name(bundle, junk):
    data = bundle.read_bytes()
    if junk == "truncated":
        junk = data[: len(data) - 10]
    elif junk == "flipped-envelope":
        pos, elen = _envelope_span(data)
        junk = data[: pos + 4] + data[pos + 4 : pos + 4 + elen].replace(b'"payloadType"', b'"payloadTypo"')
    sent = SentEnds()
    sent.add(junk)
    with pytest.raises(ForgeIntegrityError) as e:
        sent.name()
    assert e.value.code == "log.receipt"


def test_check_entry_refuses_every_other_name(bundle, consortium):
    name = _expected(bundle, consortium.roster)
    entry = {"kind": "submission", **{k: getattr(name, k) for k in BundleName.FIELDS}, "bundle_sha256": "ab" * 32}
    check_entry(entry, name)
    for field, other in [
        ("submission_id", "0" * 32),
        ("payload_sha256", "cd" * 32),
        ("envelope_sha256", "ef" * 32),
        ("size", name.size + 1),
    ]:
        with pytest.raises(ForgeIntegrityError) as e:
            check_entry({**entry, field: other}, name)
        assert e.value.code == "log.receipt" and field in e.value.message
    with pytest.raises(ForgeIntegrityError):
        check_entry({k: v for k, v in entry.items() if k != "envelope_sha256"}, name)  # an entry that names no envelope


@pytest.mark.parametrize("block", [1, 5, 1000, TAIL_BYTES, TAIL_BYTES + 1, 2 * TAIL_BYTES, None])
def test_sent_ends_keep_exactly_the_first_and_last_bytes(block):
    import os

    data = os.urandom(HEAD_BYTES + 3 * TAIL_BYTES + 123)
    sent = SentEnds()
    step = block or len(data)
    for i in range(0, len(data), step):
        sent.add(data[i : i + step])
    assert (sent.head, sent.tail, sent.size) == (data[:HEAD_BYTES], data[-TAIL_BYTES:], len(data))
    short = SentEnds()
    short.add(b"abc")
    short.add(b"de")
    assert (short.head, short.tail, short.size) == (b"abcde", b"abcde", 5)
