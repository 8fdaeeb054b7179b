"""Homomorphic Fusion on real TenSEAL CKKS: equality with plaintext Fusion, the aggregator
cannot decrypt, k-of-n, one release per contribution, and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest

from forge_secure.errors import ForgeConfigError, ForgeDataError, ForgeIntegrityError, ForgeValueError
from forge_secure.merge import fuse, fusion_merge, lineage_tree
from forge_secure.merge.he import (
    HEParams,
    aggregate,
    decrypt_sum,
    decrypt_to_plugin,
    encrypt_plugin,
    keygen,
    load_public_context,
    load_secret_context,
)
from forge_secure.merge.he.pack import flatten
from forge_secure.plugins.plugin import load_plugin
from forge_secure.plugins.record import read_plugin


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("he") / "keys")


@pytest.fixture(scope="module")
def ffa(tmp_path_factory, make_plugin):
    d = tmp_path_factory.mktemp("heffa")
    return [make_plugin(d / f"f{i}", 30 + i, ffa=True, rows=r, site=f"site-{i + 1}") for i, r in enumerate([84, 62, 31])]


@pytest.fixture(scope="module")
def contributions(tmp_path_factory, keys, ffa):
    d = tmp_path_factory.mktemp("contrib")
    return [encrypt_plugin(p, keys.path, d / f"c{i}").path for i, p in enumerate(ffa)]


def test_keygen_writes_secret_0600_and_public_without_secret(keys):
    assert stat.S_IMODE(os.stat(keys.path / "secret.ctx").st_mode) == 0o600
    ctx, info = load_public_context(keys.path)
    assert not ctx.is_private() and info.fingerprint == keys.fingerprint
    sctx, sinfo = load_secret_context(keys.path)
    assert sctx.is_private() and sinfo.fingerprint == keys.fingerprint


def test_homomorphic_fusion_equals_plaintext_fusion(tmp_path, keys, ffa, contributions):
    agg = aggregate(contributions, keys.path / "public.ctx", tmp_path / "agg")
    assert agg["sum_weights"] == 177.0 and len(agg["contributions"]) == 3
    meta, mean = decrypt_sum(tmp_path / "agg", keys.path, k=2)
    plain = fuse("ffa", [read_plugin(p).adapter for p in ffa], [84, 62, 31]).adapter
    want = flatten(plain.state, meta["layout"])
    rel = np.linalg.norm(mean - want) / np.linalg.norm(want)
    assert rel < 1e-6, rel
    assert np.abs(mean - want).max() < 1e-6 * np.abs(want).max()


def test_key_holder_writes_the_merged_plugin_once(tmp_path, keys, ffa, make_plugin):
    d = tmp_path / "c"
    contribs = [encrypt_plugin(p, keys.path / "public.ctx", d / f"c{i}", hide_digest=i == 2).path for i, p in enumerate(ffa)]
    aggregate(contribs, keys.path, tmp_path / "agg")
    out = decrypt_to_plugin(tmp_path / "agg", keys.path, tmp_path / "merged", k=3)
    he = load_plugin(out)
    plain = load_plugin(fusion_merge(ffa, tmp_path / "plain", method="ffa"))
    X = np.random.default_rng(1).normal(size=(30, 30)).astype(np.float32)
    np.testing.assert_allclose(he.logits(X), plain.logits(X), rtol=1e-5, atol=1e-5)
    assert he.meta["kind"] == "merged" and he.meta["merge"]["method"] == "ffa-ckks"
    assert [p["site"] for p in he.meta["parents"]] == ["site-1", "site-2", "site-3"]
    assert all(len(p["commitment"]) == 64 for p in he.meta["parents"])
    assert [p.get("digest") for p in he.meta["parents"]] == [read_plugin(p).digest for p in ffa[:2]] + [None]  # site-3 hid it
    tree = lineage_tree(out)
    assert [c["site"] for c in tree["parents"]] == ["site-1", "site-2", "site-3"]
    # one merge releases one aggregate: the same contributions cannot be decrypted again
    aggregate(contribs[:2], keys.path, tmp_path / "agg2")
    with pytest.raises(ForgeValueError, match="already in a released aggregate") as e:
        decrypt_sum(tmp_path / "agg2", keys.path)
    assert e.value.code == "he.already_released"


def test_aggregator_context_cannot_decrypt(tmp_path, keys, contributions):
    import tenseal as ts

    from forge_secure.merge.he.pack import read_ciphertexts

    aggregate(contributions[:2], keys.path, tmp_path / "agg")
    ctx, _ = load_public_context(keys.path)
    blob = read_ciphertexts(tmp_path / "agg" / "ciphertexts.bin", 1)[0]
    vec = ts.ckks_vector_from(ctx, blob)
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()
    with pytest.raises(ForgeValueError, match="holds no secret key"):
        decrypt_sum(tmp_path / "agg", keys.path / "public.ctx")


def test_fewer_than_k_contributions_are_refused(tmp_path, keys, contributions):
    aggregate(contributions[:1], keys.path, tmp_path / "one")
    with pytest.raises(ForgeValueError, match="fewer than k = 2") as e:
        decrypt_sum(tmp_path / "one", keys.path)
    assert e.value.code == "he.too_few"
    aggregate(contributions[:2], keys.path, tmp_path / "two")
    with pytest.raises(ForgeValueError, match="fewer than k = 3"):
        decrypt_sum(tmp_path / "two", keys.path, k=3)
    with pytest.raises(ForgeValueError, match="at least 2"):
        decrypt_sum(tmp_path / "two", keys.path, k=1)


def test_secret_context_where_a_public_one_belongs_is_refused(tmp_path, keys, ffa, contributions):
    with pytest.raises(ForgeValueError, match="holds the secret key") as e:
        aggregate(contributions, keys.path / "secret.ctx", tmp_path / "agg")
    assert e.value.code == "he.secret_where_public"
    with pytest.raises(ForgeValueError, match="holds the secret key"):
        encrypt_plugin(ffa[0], keys.path / "secret.ctx", tmp_path / "c")
    assert not (tmp_path / "agg").exists() and not (tmp_path / "c").exists()


def test_ciphertexts_under_another_context_are_refused(tmp_path, keys, ffa, contributions):
    other = keygen(tmp_path / "other")
    foreign = encrypt_plugin(ffa[0], other.path, tmp_path / "foreign").path
    with pytest.raises(ForgeIntegrityError, match="another CKKS context") as e:
        aggregate([contributions[1], foreign], keys.path, tmp_path / "agg")
    assert e.value.code == "he.context_mismatch"
    # an aggregate made under the other key cannot be decrypted with ours
    aggregate([foreign, encrypt_plugin(ffa[1], other.path, tmp_path / "f2").path], other.path, tmp_path / "oagg")
    with pytest.raises(ForgeIntegrityError, match="another CKKS context"):
        decrypt_sum(tmp_path / "oagg", keys.path)


def test_plain_lora_cannot_be_encrypted(tmp_path, keys, make_plugin):
    plain = make_plugin(tmp_path / "plain", 3)
    with pytest.raises(ForgeDataError, match="FFA-LoRA"):
        encrypt_plugin(plain, keys.path, tmp_path / "c")


def test_out_of_range_weights_are_refused_before_encryption(tmp_path, keys, ffa):
    with pytest.raises(ForgeDataError, match="agreed range") as e:
        encrypt_plugin(ffa[0], keys.path, tmp_path / "c", weight=1e9)
    assert e.value.code == "he.out_of_range"
    for bad in (0, -1, float("nan"), "many"):
        with pytest.raises(ForgeValueError, match="weight"):
            encrypt_plugin(ffa[0], keys.path, tmp_path / "c", weight=bad)
    assert not (tmp_path / "c").exists()


def test_tampered_truncated_and_wrong_type_contributions(tmp_path, keys, contributions, ffa):
    bad = tmp_path / "bad"
    shutil.copytree(contributions[0], bad)
    ct = bad / "ciphertexts.bin"
    raw = bytearray(ct.read_bytes())
    raw[100] ^= 1
    ct.write_bytes(bytes(raw))
    with pytest.raises(ForgeIntegrityError, match="tampered"):
        aggregate([bad, contributions[1]], keys.path, tmp_path / "a1")
    ct.write_bytes(bytes(raw[: len(raw) // 2]))
    meta = json.loads((bad / "forge.json").read_text())
    meta["files"]["ciphertexts.bin"] = __import__("hashlib").sha256(ct.read_bytes()).hexdigest()
    (bad / "forge.json").write_text(json.dumps(meta))
    with pytest.raises(ForgeIntegrityError, match="truncated"):
        aggregate([bad, contributions[1]], keys.path, tmp_path / "a2")
    meta["weight"] = "x"
    (bad / "forge.json").write_text("{")
    with pytest.raises(ForgeDataError, match="not valid JSON"):
        aggregate([bad, contributions[1]], keys.path, tmp_path / "a3")
    with pytest.raises(ForgeDataError, match="not a homomorphic contribution"):
        aggregate([ffa[0], contributions[1]], keys.path, tmp_path / "a4")
    with pytest.raises(ForgeValueError, match="given twice"):
        aggregate([contributions[0], contributions[0]], keys.path, tmp_path / "a5")
    with pytest.raises(ForgeDataError, match="not a homomorphic aggregate"):
        decrypt_sum(contributions[0], keys.path)
    junk = tmp_path / "junk.ctx"
    junk.write_bytes(b"not a context")
    with pytest.raises(ForgeIntegrityError, match="not a TenSEAL context"):
        aggregate(contributions, junk, tmp_path / "a6")
    empty = tmp_path / "empty.ctx"
    empty.write_bytes(b"")
    with pytest.raises(ForgeIntegrityError, match="empty"):
        load_public_context(empty)
    for o in ("a1", "a2", "a3", "a4", "a5", "a6"):
        assert not (tmp_path / o).exists()


def test_params_are_checked_against_the_security_cap():
    with pytest.raises(ForgeConfigError, match="security cap"):
        HEParams(8192, (60, 60, 60, 60))
    with pytest.raises(ForgeConfigError, match="not supported"):
        HEParams(1000)
    p = HEParams()
    assert p.slots == 4096 and p.capacity == 2.0**19 and p.max_contributions >= 10


def test_out_of_range_aggregate_is_refused_after_decryption(tmp_path, keys, ffa):
    """Ciphertexts are malleable: an aggregator that swaps in an encryption of huge values is
    caught by the key holder's range check, and nothing is released."""
    import hashlib

    from forge_secure.merge.he.ops import encrypt_vector
    from forge_secure.merge.he.pack import write_ciphertexts

    fresh = [encrypt_plugin(p, keys.path, tmp_path / f"c{i}").path for i, p in enumerate(ffa[:2])]
    aggregate(fresh, keys.path, tmp_path / "agg")
    meta = json.loads((tmp_path / "agg" / "forge.json").read_text())
    ctx, info = load_public_context(keys.path)
    forged = encrypt_vector(ctx, np.full(meta["n_values"], 1e5), info.params.slots)
    write_ciphertexts(tmp_path / "agg" / "ciphertexts.bin", forged)
    meta["files"]["ciphertexts.bin"] = hashlib.sha256((tmp_path / "agg" / "ciphertexts.bin").read_bytes()).hexdigest()
    (tmp_path / "agg" / "forge.json").write_text(json.dumps(meta))
    log = keys.path / "releases.json"
    before = log.read_text() if log.exists() else None
    with pytest.raises(ForgeIntegrityError, match="out of range") as e:
        decrypt_to_plugin(tmp_path / "agg", keys.path, tmp_path / "merged")
    assert e.value.code == "he.out_of_range"
    assert not (tmp_path / "merged").exists()
    assert (log.read_text() if log.exists() else None) == before


def test_k_counts_distinct_sites_not_contributions(tmp_path, keys, ffa):
    """Two contributions of one site are still one site: decrypting their sum is
    (w1 + w2) * B of that site, i.e. its plugin in the clear. k-of-n must count sites."""
    twice = [encrypt_plugin(ffa[0], keys.path, tmp_path / f"same{i}").path for i in range(2)]
    aggregate(twice, keys.path, tmp_path / "agg")
    log = keys.path / "releases.json"
    before = log.read_text() if log.exists() else None
    with pytest.raises(ForgeValueError, match="distinct site") as e:
        decrypt_sum(tmp_path / "agg", keys.path, k=2)
    assert e.value.code == "he.too_few"
    assert (log.read_text() if log.exists() else None) == before


def test_key_holder_sums_the_contributions_itself(tmp_path, keys, ffa):
    """The aggregator writes the aggregate's list of contributions and holds the public
    context, so it can present one site's ciphertext as the sum of two. Given the
    contributions, the key holder checks the list and decrypts its own sum."""
    fresh = [encrypt_plugin(p, keys.path, tmp_path / f"c{i}").path for i, p in enumerate(ffa[:2])]
    aggregate(fresh[:1], keys.path, tmp_path / "agg")  # only site-1's ciphertext ...
    meta = json.loads((tmp_path / "agg" / "forge.json").read_text())
    other = json.loads((fresh[1] / "forge.json").read_text())
    meta["contributions"].append({"id": other["id"], "site": other["site"], "weight": other["weight"], "parent": other["parent"]})
    meta["sum_weights"] = meta["contributions"][0]["weight"] + other["weight"]  # ... listed as site-1 + site-2
    (tmp_path / "agg" / "forge.json").write_text(json.dumps(meta))
    with pytest.raises(ForgeIntegrityError, match="contributions given") as e:
        decrypt_sum(tmp_path / "agg", keys.path, contributions=fresh[:1])
    assert e.value.code == "he.contribution_mismatch"
    _, mean = decrypt_sum(tmp_path / "agg", keys.path, contributions=fresh)
    plain = fuse("ffa", [read_plugin(p).adapter for p in ffa[:2]], [84, 62]).adapter
    want = flatten(plain.state, json.loads((tmp_path / "agg" / "forge.json").read_text())["layout"])
    assert np.linalg.norm(mean - want) / np.linalg.norm(want) < 1e-6  # the true two-site mean, not site-1 alone
