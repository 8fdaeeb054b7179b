"""The secret randomness generators (forge_secure/privacy/randomness.py): the recipe each one
names, that it does not depend on how the numbers are drawn, and that a plugin is replayed with
the generator its forge.json names (a plugin trained before forge-drbg/2 still replays)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import special, stats

from forge_secure.errors import ForgeValueError
from forge_secure.privacy import TrainConfig, train_plugin
from forge_secure.privacy.randomness import (
    GENERATOR,
    GENERATOR_V1,
    GENERATOR_V2,
    GENERATORS,
    NOISE,
    NoiseSource,
    SecretStream,
    check_generator,
)
from forge_secure.privacy.replay import build_recipe, replay

SECRET = bytes(range(32))  # a fixed secret: these tests check recipes, not secrecy


def test_new_runs_use_the_fast_generator_and_both_are_known():
    assert GENERATOR == GENERATOR_V2
    assert set(GENERATORS) == {GENERATOR_V1, GENERATOR_V2}
    assert all("sum of 4 standard normals / 2" in recipe for recipe in GENERATORS.values())


@pytest.mark.parametrize("bad", ["forge-drbg/9", ["forge-drbg/2"], {"a": 1}, None, 3])
def test_an_unknown_or_ill_typed_generator_is_a_clean_error(bad):
    with pytest.raises(ForgeValueError) as e:
        check_generator(bad)
    assert e.value.code == "dp.generator"
    with pytest.raises(ForgeValueError):
        SecretStream(SECRET, NOISE, bad)


def test_forge_drbg_2_noise_is_its_documented_recipe():
    """Recomputed from the AES-256-CTR keystream in float64 with SciPy: the float32 result
    agrees to float32 precision."""
    n, group = 5000, SecretStream.GROUP  # two groups of 4096 outputs, each from 4 planes of 4096 words
    z = SecretStream(SECRET, NOISE, GENERATOR_V2).secure_normal(n)
    assert z.dtype == torch.float32
    key = hashlib.sha256(b"forge-drbg/2\x00" + NOISE.encode() + b"\x00" + SECRET).digest()
    stream = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor().update(bytes(2 * 16 * group))
    j = np.frombuffer(stream, dtype="<i4").astype(np.int64) >> 8  # the top 24 bits, signed
    assert j.min() >= -(2**23) and j.max() < 2**23
    v = (2 * j + 1) / 2.0**24
    planes = (np.sqrt(2.0) * special.erfinv(v)).reshape(2, 4, group)  # (group, plane, i)
    expected = planes.sum(axis=1).reshape(-1)[:n] / 2.0
    np.testing.assert_allclose(z.double().numpy(), expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("generator", [GENERATOR_V1, GENERATOR_V2])
def test_noise_is_standard_normal(generator):
    z = SecretStream(SECRET, "ks", generator).secure_normal(200_000).double().numpy()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert stats.kurtosis(z) == pytest.approx(0.0, abs=0.05)  # a sum of 4 normals is normal, not a 4-draw mixture


@pytest.mark.parametrize("generator", [GENERATOR_V1, GENERATOR_V2])
def test_the_numbers_do_not_depend_on_how_they_are_drawn(generator, monkeypatch):
    whole = SecretStream(SECRET, NOISE, generator).secure_normal(70_001)
    s = SecretStream(SECRET, NOISE, generator)
    parts = torch.cat([s.secure_normal(k) for k in (1, 12_345, 0, 40_000, 17_655)])
    assert torch.equal(whole, parts)
    src = NoiseSource(SecretStream(SECRET, NOISE, generator))
    assert torch.equal(whole[:7000], torch.cat([src.take(1776) for _ in range(3)] + [src.take(1672)]))
    monkeypatch.setattr(SecretStream, "CHUNK", 1000)
    monkeypatch.setattr(SecretStream, "CHUNK_F32", 1000)  # one group per pass
    assert torch.equal(whole, SecretStream(SECRET, NOISE, generator).secure_normal(70_001))


def test_the_generators_and_the_streams_are_independent():
    a = SecretStream(SECRET, NOISE, GENERATOR_V1).secure_normal(1000).float()
    b = SecretStream(SECRET, NOISE, GENERATOR_V2).secure_normal(1000)
    c = SecretStream(SECRET, "poisson-sampling", GENERATOR_V2).secure_normal(1000)
    assert abs(np.corrcoef(a.numpy(), b.numpy())[0, 1]) < 0.15
    assert abs(np.corrcoef(b.numpy(), c.numpy())[0, 1]) < 0.15


def _state_equal(a, b) -> bool:
    sa, sb = a.adapter_state(), b.adapter_state()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_plugin_replays_with_the_generator_its_forge_json_names(tab_base, tab_train, tmp_path):
    """A forge-drbg/1 plugin (trained before forge-drbg/2 became the default) is replayed bit for
    bit with forge-drbg/1; naming the other generator, or one that does not exist, fails replay
    without a crash."""
    cfg = TrainConfig(noise_multiplier=1.0, epochs=2, batch_size=32, lr=0.05, accountant="rdp", delta=1e-5)
    old = train_plugin(cfg, tab_train, site="site-1", base=tab_base, secret=SECRET, generator=GENERATOR_V1, out=tmp_path / "old")
    assert old.meta["dp"]["randomness"]["generator"] == GENERATOR_V1
    assert old.meta["dp"]["randomness"]["noise"] == GENERATORS[GENERATOR_V1]
    new = train_plugin(cfg, tab_train, site="site-1", base=tab_base, secret=SECRET)
    assert new.meta["dp"]["randomness"]["generator"] == GENERATOR_V2
    assert not _state_equal(old, new)  # same secret, another generator: other noise and batches

    source = {"spec": "test", "label_column": None, "membership_seed": None, "include_prob": None}
    recipe = build_recipe(old, cfg, source=source, data=tab_train)
    recipe["secret"] = bytes.fromhex(recipe["secret"])
    result = replay(recipe, old.path, tab_train)
    assert result.verified and result.bit_exact, result.message

    meta_file = old.path / "forge.json"
    meta = json.loads(meta_file.read_text())
    for named, reason in ((GENERATOR_V2, None), (["forge-drbg/1"], "replay.recipe"), ("forge-drbg/0", "replay.recipe")):
        meta["dp"]["randomness"]["generator"] = named
        meta_file.write_text(json.dumps(meta))
        result = replay(recipe, old.path, tab_train)
        assert not result.verified, named
        if reason:
            assert result.reason == reason
