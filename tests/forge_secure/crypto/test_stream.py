"""The fast stream under seal/open keeps every property: nothing is decrypted before the
bundle is verified (although hashing starts early), damage found by either thread is
refused with nothing left behind, a bundle or source changed mid-way is refused, opened
files are fsynced, and bundles written on two threads are byte-for-byte the format."""

from __future__ import annotations

import filecmp
import os

import pytest

from forge_secure.crypto import BundleError
from forge_secure.crypto import _primitives as P
from forge_secure.crypto import bundle as bundle_mod
from forge_secure.crypto import opening as opening_mod
from forge_secure.crypto import sealing as sealing_mod


def no_output(world, out="opened"):
    leftovers = [p.name for p in world.root.iterdir() if p.name.startswith(f".{out}.")]
    return not (world.root / out).exists() and not leftovers


@pytest.fixture
def big(tmp_path, kit):
    """A world whose plugin fills 40 chunks of 4 KiB, so both threads take part."""
    world = kit.build_world(tmp_path, rows=4800)
    path = world.seal("big.forge")
    assert world.verify(path).chunks > 30
    return world, path


def count_decryptions(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = P.ChunkCipher.open_chunk

    def counted(self, index, *a, **k):
        calls.append(index)
        return real(self, index, *a, **k)

    monkeypatch.setattr(P.ChunkCipher, "open_chunk", counted)
    return calls


def test_round_trip_through_files_on_two_threads(big):
    world, path = big
    opened = world.open(path)
    cmp = filecmp.dircmp(world.plugin, opened.out)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files)


def test_nothing_is_decrypted_before_the_signature_verifies(big, monkeypatch, kit):
    world, path = big
    data = path.read_bytes()
    parts = kit.split(data)
    calls = count_decryptions(monkeypatch)
    # a valid structure whose envelope is signed by nobody: hashing may start, decryption must not
    bad = world.root / "badsig.forge"
    envelope = parts.envelope.replace(b'"sig":"', b'"sig":"AAAA', 1)
    bad.write_bytes(kit.join(parts.header_bytes, parts.wrapped, parts.chunks, envelope))
    with pytest.raises(BundleError) as info:
        world.open(bad)
    assert info.value.code in ("bundle.signature", "bundle.envelope")
    # an untrusted roster (expired): refused before anything is decrypted
    with pytest.raises(BundleError):
        world.open(path, now=kit.NOW + 2 * 365 * kit.DAY)
    assert calls == [] and no_output(world)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_damaged_chunk_in_a_file_is_refused_and_leaves_nothing(big, kit, where):
    world, path = big
    data = bytearray(path.read_bytes())
    parts = kit.split(bytes(data))
    index = {"first": 0, "middle": len(parts.chunks) // 2, "last": len(parts.chunks) - 1}[where]
    offset = len(parts.head) + sum(len(c) for c in parts.chunks[:index]) + 7
    data[offset] ^= 0x40
    bad = world.root / "bad.forge"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError) as info:
        world.open(bad)
    assert info.value.code in ("bundle.digest", "bundle.chunk")
    assert no_output(world)
    assert world.open(path).files  # the good one still opens (not consumed as a replay)


def _flip_middle_byte(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:  # flip a ciphertext byte in the middle, same size
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 1]))


def _cut_in_half(path):
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize(
    "change, codes",
    [
        (_flip_middle_byte, ("bundle.digest", "bundle.chunk", "bundle.changed")),
        (_cut_in_half, ("bundle.truncated", "bundle.changed", "bundle.digest")),
    ],
    ids=["flipped", "truncated"],
)
def test_a_bundle_changed_while_it_is_being_verified_is_refused(big, monkeypatch, change, codes):
    """The helper starts hashing before the roster is loaded; a change made then is caught."""
    world, path = big
    real = opening_mod.load_roster

    def load_roster_and_change(*a, **k):
        change(path)
        return real(*a, **k)

    monkeypatch.setattr(opening_mod, "load_roster", load_roster_and_change)
    with pytest.raises(BundleError) as info:
        world.open(path)
    assert info.value.code in codes
    assert no_output(world)


def after_the_scan(monkeypatch, change):
    """Make ``change`` right after seal scanned the folder, before it reads any file."""
    real = sealing_mod.scan_directory

    def scan_then_change(*a, **k):
        entries = real(*a, **k)
        change()
        return entries

    monkeypatch.setattr(sealing_mod, "scan_directory", scan_then_change)


@pytest.mark.parametrize("how", ["grow", "shrink", "fill_empty", "vanish", "symlink"])
def test_a_source_changed_while_sealing_is_refused_and_nothing_is_written(tmp_path, kit, how, monkeypatch):
    world = kit.build_world(tmp_path, rows=4800)
    weights = world.plugin / "adapter_model.safetensors"
    empty = world.plugin / "notes.txt"
    empty.write_bytes(b"")

    def change():
        if how == "grow":
            with open(weights, "ab") as f:
                f.write(b"more")
        elif how == "shrink":
            os.truncate(weights, weights.stat().st_size - 5000)
        elif how == "fill_empty":
            empty.write_bytes(b"late")
        elif how == "vanish":
            weights.unlink()
        else:
            moved = weights.with_name("elsewhere.bin")
            weights.rename(moved)
            weights.symlink_to(moved)

    after_the_scan(monkeypatch, change)
    with pytest.raises(BundleError) as info:
        world.seal("changed.forge")
    assert info.value.code == "bundle.source_changed"
    assert not any(p.name.startswith((".forge-partial.changed.forge", "changed.forge")) for p in world.root.iterdir())


def test_opened_files_and_directories_are_fsynced(big, monkeypatch):
    world, path = big
    synced: list[str] = []
    real = os.fsync

    def recording(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else str(fd))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    opened = world.open(path)
    names = {os.path.basename(p) for p in synced}
    for name in opened.files:  # every file, its directory, and the directory the output was renamed in
        assert os.path.basename(name) in names
    assert any(os.path.basename(p).startswith(".forge-partial.opened.") for p in synced)
    assert str(world.root) in synced


def test_bundles_sealed_on_two_threads_are_identical_to_single_threaded_ones(tmp_path, kit, monkeypatch):
    world = kit.build_world(tmp_path, rows=4800)
    wrapped: dict = {}

    def wrap(kem, public_raw, data_key, info):  # HPKE draws its own ephemeral key: reuse one encapsulation
        if (data_key, info) not in wrapped:
            wrapped[(data_key, info)] = P.hpke_wrap(kem, public_raw, data_key, info)
        return wrapped[(data_key, info)]

    def seal(name):
        return bundle_mod._seal(
            world.plugin,
            world.signer(),
            world.keys["consortium"].public,
            world.root / name,
            sequence=5,
            chunk_size=4096,
            passphrase=None,
            random=kit.Drbg("same"),
            now=kit.NOW,
            counter=None,
            wrap=wrap,
        ).read_bytes()

    threaded = seal("a.forge")
    real = sealing_mod.TwoLanes

    def inline(*a, **k):
        k["threaded"] = False
        return real(*a, **k)

    monkeypatch.setattr(sealing_mod, "TwoLanes", inline)
    assert seal("b.forge") == threaded
    assert world.open(world.root / "a.forge").files
