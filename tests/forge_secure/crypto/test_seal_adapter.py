"""Sealing checks a plugin's adapter against the sha256 its forge.json records in the same pass
that reads and encrypts it: a mismatch (recorded wrong, or the file rewritten after the scan)
is refused with the gateway's ``plugin.adapter_digest`` and nothing is written or counted, the
adapter is read once (no separate hashing pass), on two threads and inline."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from forge_secure.crypto import SequenceCounter
from forge_secure.crypto import sealing as sealing_mod
from forge_secure.errors import ForgeError
from forge_secure.plugins import plugin_files as plugin_files_mod

ADAPTER = "adapter_model.safetensors"


def record_digest(plugin, digest=None):
    """Write the adapter's sha256 (or ``digest``) into forge.json, as ``forge train`` does."""
    meta = json.loads((plugin / "forge.json").read_text())
    meta["adapter"] = {"sha256": digest or hashlib.sha256((plugin / ADAPTER).read_bytes()).hexdigest()}
    (plugin / "forge.json").write_text(json.dumps(meta, indent=2))


def nothing_written(world, name):
    return not any(p.name.startswith((f".forge-partial.{name}", name)) for p in world.root.iterdir())


@pytest.fixture(params=[4800, 64], ids=["threaded", "inline"])
def world(request, tmp_path, kit):
    """A plugin of 40+ chunks of 4 KiB (both threads take part) or of 2 chunks (inline)."""
    world = kit.build_world(tmp_path, rows=request.param)
    record_digest(world.plugin)
    return world


@pytest.mark.parametrize("chunk_size", [4096, 8192, 1 << 20])  # the adapter straddles chunks at odd offsets
def test_a_recorded_digest_is_checked_in_the_one_pass_and_the_plugin_round_trips(world, monkeypatch, chunk_size):
    def no_second_pass(*a, **k):
        raise AssertionError("the adapter was hashed in a pass of its own")

    reads: list[int] = []
    real = os.preadv

    def counting(fd, buffers, offset):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(ADAPTER):
            reads.append(sum(len(memoryview(b)) for b in buffers))
        return real(fd, buffers, offset)

    with monkeypatch.context() as m:
        m.setattr(plugin_files_mod, "sha256_file", no_second_pass)
        m.setattr(os, "preadv", counting)
        path = world.seal("ok.forge", chunk_size=chunk_size)
    assert sum(reads) == (world.plugin / ADAPTER).stat().st_size  # every byte read once
    opened = world.open(path)
    assert (opened.out / ADAPTER).read_bytes() == (world.plugin / ADAPTER).read_bytes()


@pytest.mark.parametrize("chunk_size", [4096, 1 << 20])
def test_a_wrong_recorded_digest_is_refused_and_nothing_is_written_or_counted(world, chunk_size):
    record_digest(world.plugin, "00" * 32)
    with pytest.raises(ForgeError) as info:
        world.seal("bad.forge", chunk_size=chunk_size, sequence=7)
    assert info.value.code == "plugin.adapter_digest"
    assert "forge.json records" in str(info.value) and ADAPTER in str(info.value)
    assert nothing_written(world, "bad.forge")
    assert SequenceCounter().last("site-1") == 0  # the sequence number was not used up


def rewrite(weights):
    """Flip one bit in the middle of the adapter, in place (same size, same inode)."""
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    with open(weights, "r+b") as f:
        f.write(data)


def test_an_adapter_rewritten_after_the_scan_is_refused(world, monkeypatch):
    """Same size, other bytes, changed between the scan and the read: the check covers exactly
    the bytes sealed, so this is caught (a separate hashing pass before sealing could not)."""
    real = sealing_mod.scan_directory

    def scan_then_rewrite(*a, **k):
        entries = real(*a, **k)
        rewrite(world.plugin / ADAPTER)
        return entries

    monkeypatch.setattr(sealing_mod, "scan_directory", scan_then_rewrite)
    with pytest.raises(ForgeError) as info:
        world.seal("late.forge")
    assert info.value.code == "plugin.adapter_digest"
    assert nothing_written(world, "late.forge")


@pytest.mark.parametrize("draw", [1, 2, 3])
def test_wherever_a_rewrite_lands_a_sealed_adapter_matches_its_recorded_digest(world, kit, draw):
    """Rewritten while the set-up runs (at the ``draw``-th random draw): seal either refuses, or
    seals bytes that match forge.json."""
    original = (world.plugin / ADAPTER).read_bytes()
    drbg, calls = kit.Drbg("race"), [0]

    def random(n):
        calls[0] += 1
        if calls[0] == draw:
            rewrite(world.plugin / ADAPTER)
        return drbg(n)

    try:
        path = world.seal("race.forge", random=random)
    except ForgeError as e:
        assert e.code in ("plugin.adapter_digest", "bundle.source_changed")
        assert nothing_written(world, "race.forge")
        return
    assert (world.open(path).out / ADAPTER).read_bytes() == original


def test_a_plugin_without_its_adapter_is_refused_before_anything_is_written(world):
    (world.plugin / ADAPTER).unlink()
    with pytest.raises(ForgeError) as info:
        world.seal("none.forge")
    assert info.value.code == "plugin.no_adapter"
    assert nothing_written(world, "none.forge")
