"""Mutation fuzzing: thousands of damaged bundles, and nothing but BundleError comes out.

Each mutated bundle goes through the full open path (structure, roster, signer, signature,
digest, key unwrap, chunk authentication, container), from memory with the roster trusted
once, so a few thousand cases fit in a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_secure.crypto import BundleError


def mutate(rng: np.random.Generator, data: bytes, other: bytes) -> bytes:
    n = len(data)
    kind = rng.integers(0, 7)
    if kind == 0:  # flip one bit
        i = int(rng.integers(0, n))
        return data[:i] + bytes([data[i] ^ (1 << int(rng.integers(0, 8)))]) + data[i + 1 :]
    if kind == 1:  # overwrite a few random bytes
        out = bytearray(data)
        for i in rng.integers(0, n, size=int(rng.integers(1, 5))):
            out[int(i)] = int(rng.integers(0, 256))
        return bytes(out)
    if kind == 2:  # truncate
        return data[: int(rng.integers(0, n))]
    if kind == 3:  # insert random bytes
        i = int(rng.integers(0, n + 1))
        return data[:i] + rng.bytes(int(rng.integers(1, 40))) + data[i:]
    if kind == 4:  # delete a range
        i = int(rng.integers(0, n))
        return data[:i] + data[i + int(rng.integers(1, 64)) :]
    if kind == 5:  # splice a range of another valid bundle over the same offsets
        i = int(rng.integers(0, min(n, len(other))))
        j = min(i + int(rng.integers(1, 2048)), n, len(other))
        return data[:i] + other[i:j] + data[j:]
    i, j = sorted(int(x) for x in rng.integers(0, n, size=2))  # duplicate a range
    return data[:j] + data[i:j] + data[j:]


def run_cases(world, data: bytes, other: bytes, count: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    world.trusted()
    codes: dict[str, int] = {}
    tried = 0
    while tried < count:
        mutated = mutate(rng, data, other)
        if mutated == data:
            continue
        tried += 1
        try:
            world.open_bytes(mutated, out="fuzz-out")
        except BundleError as e:
            codes[e.code] = codes.get(e.code, 0) + 1
        else:  # pragma: no cover - a failure of the format
            pytest.fail(f"a mutated bundle was accepted (case {tried}, seed {seed})")
        assert not (world.root / "fuzz-out").exists()
    return codes


def test_seeded_mutations_are_all_refused(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=256)  # ~8 KB payload in 3 chunks of 4 KiB
    data = world.seal("a.forge").read_bytes()
    other = world.seal("b.forge").read_bytes()
    codes = run_cases(world, data, other, count=3000, seed=1234)
    assert sum(codes.values()) == 3000
    assert {"bundle.truncated", "bundle.digest", "bundle.format"} <= set(codes)
    # and the pristine bundle still opens, so the loop was refusing damage, not everything
    assert world.open_bytes(data, out="pristine").files


@pytest.mark.slow
def test_many_seeded_mutations_larger_payload(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=8192)  # ~260 KB payload, 65 chunks
    data = world.seal("a.forge").read_bytes()
    other = world.seal("b.forge").read_bytes()
    codes = run_cases(world, data, other, count=20000, seed=99)
    assert sum(codes.values()) == 20000


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]), st.integers(0, 1 << 30), st.binary(min_size=1, max_size=16)),
        min_size=1,
        max_size=4,
    )
)
def test_property_no_mutation_is_accepted(world, ops):
    if not hasattr(world, "_fuzz_data"):
        world._fuzz_data = world.seal("p.forge").read_bytes()
    data = world._fuzz_data
    mutated = data
    for op, pos, blob in ops:
        i = pos % max(len(mutated), 1)
        if op == "flip" and mutated:
            mutated = mutated[:i] + bytes([mutated[i] ^ 0xFF]) + mutated[i + 1 :]
        elif op == "cut":
            mutated = mutated[:i]
        elif op == "insert":
            mutated = mutated[:i] + blob + mutated[i:]
        elif op == "zero" and mutated:
            mutated = mutated[:i] + b"\x00" * len(blob) + mutated[i + len(blob) :]
    if mutated == data:
        return
    with pytest.raises(BundleError):
        world.open_bytes(mutated, out="prop-out")
    assert not (world.root / "prop-out").exists()
