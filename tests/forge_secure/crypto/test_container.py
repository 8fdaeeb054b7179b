"""The plaintext container: round trip, and every unsafe layout refused on open."""

from __future__ import annotations

import struct

import pytest

from forge_secure.crypto import BundleError
from forge_secure.crypto.container import MAGIC, ContainerReader, Entry, container_size, index_bytes, iter_container, scan_directory


def raw_container(files: list[tuple[str, bytes]], extra: bytes = b"") -> bytes:
    parts = [MAGIC, struct.pack(">I", len(files))]
    for name, data in files:
        raw = name.encode()
        parts.append(struct.pack(">H", len(raw)) + raw + struct.pack(">Q", len(data)))
    return b"".join(parts) + b"".join(d for _, d in files) + extra


def unpack(tmp_path, data: bytes, size: int | None = None, step: int = 7):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    reader = ContainerReader(out, len(data) if size is None else size)
    try:
        for i in range(0, len(data), step):  # fed in small pieces, as chunks arrive
            reader.feed(data[i : i + step])
        return reader.finish()
    finally:
        reader.close()


@pytest.mark.parametrize("step", [7, 1000, 1 << 20], ids=["index-over-many-pieces", "index-in-first-piece", "one-piece"])
def test_round_trip_with_subdirectories_and_empty_files(tmp_path, step):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "forge.json").write_text("{}")
    (src / "sub" / "deeper" / "w.bin").write_bytes(bytes(range(256)) * 40)
    (src / "empty").write_bytes(b"")
    entries = scan_directory(src)
    assert [e.name for e in entries] == ["empty", "forge.json", "sub/deeper/w.bin"]
    data = b"".join(iter_container(entries))
    assert len(data) == container_size(entries)
    got = unpack(tmp_path, data, step=step)
    assert [e.name for e in got] == [e.name for e in entries]
    assert (tmp_path / "out" / "sub" / "deeper" / "w.bin").read_bytes() == bytes(range(256)) * 40
    assert (tmp_path / "out" / "empty").read_bytes() == b""


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", "a/", "", "x\x00y", "a/./b"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(BundleError) as e:
        unpack(tmp_path, raw_container([(name, b"data")]))
    assert e.value.code in ("bundle.unsafe_path", "bundle.container")
    assert not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "evil").exists()


def test_duplicate_and_clashing_names_are_refused(tmp_path):
    with pytest.raises(BundleError) as e:
        unpack(tmp_path, raw_container([("a", b"1"), ("a", b"2")]))
    assert e.value.code == "bundle.duplicate_name"
    with pytest.raises(BundleError) as e:
        unpack(tmp_path, raw_container([("a", b"1"), ("a/b", b"2")]))
    assert e.value.code == "bundle.container"


def test_wrong_sizes_and_trailing_bytes_are_refused(tmp_path):
    good = raw_container([("forge.json", b"{}"), ("w", b"123")])
    cases = (
        (good + b"x", len(good) + 1),
        (good[:-1], len(good)),
        (good, len(good) + 5),
        (b"NOTMAGIC" + good[8:], len(good)),
        (MAGIC + struct.pack(">I", 0), 12),
    )
    for i, (data, size) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        with pytest.raises(BundleError) as e:
            unpack(tmp_path / str(i), data, size)
        assert e.value.code == "bundle.container"


def test_scan_refuses_symlinks_and_empty_dirs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(BundleError) as e:
        scan_directory(src)
    assert e.value.code == "bundle.empty"
    (src / "real").write_text("x")
    (src / "link").symlink_to(src / "real")
    with pytest.raises(BundleError) as e:
        scan_directory(src)
    assert e.value.code == "bundle.symlink"


def test_index_is_deterministic():
    entries = [Entry("b", 3), Entry("a", 1)]
    assert index_bytes(entries) == index_bytes(list(entries))
    assert index_bytes(entries).startswith(MAGIC + b"\x00\x00\x00\x02")
