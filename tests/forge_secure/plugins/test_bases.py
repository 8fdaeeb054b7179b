"""Base models: stable digests, the cache, targets, Hugging Face directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from forge_secure import home
from forge_secure.errors import ForgeError, ForgeFileError, ForgeValueError
from forge_secure.plugins import bases
from forge_secure.plugins.bases import GRID, TABULAR_BASE_FEATURES, fresh_copy, load_base, weights_digest
from forge_secure.plugins.data import bundled_image_splits, bundled_splits

# The digests every machine must reproduce (torch 2.x, safetensors 0.x). If one changes,
# every existing plugin stops loading: change it only together with a format version bump.
TABULAR_DIGEST = "5aed6ac8343c14b8e377559e81a4839590ea34b207bc90cea3c259d4d5e1f188"
# vit-tiny's also depends on transformers' ViT parameter names (pinned for transformers 5.x)
VIT_DIGEST = "8a841c11cd5e3d3d6bbb9f40c56869e6e89704fa3c332ca88e09b666c79e2c47"


def _fresh_build(monkeypatch, tmp_path, name, **kwargs):
    """Build with a private home *and* cache (tests/conftest.py shares FORGE_CACHE between
    tests): the build really runs, and a test that damages the cache damages only its own."""
    monkeypatch.setenv("FORGE_HOME", str(tmp_path))
    monkeypatch.setenv("FORGE_CACHE", str(tmp_path / "cache"))
    return bases.BASES.get(name)(**kwargs)


def test_tabular_digest_is_pinned_and_rebuilt_identically(monkeypatch, tmp_path):
    """Two real builds in fresh homes, with one and with two threads (BLAS splits sums
    differently with more threads; the grid rounding absorbs it)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = _fresh_build(monkeypatch, tmp_path / "a", "tabular-mlp")
        torch.set_num_threads(2)
        b = _fresh_build(monkeypatch, tmp_path / "b", "tabular-mlp")
    finally:
        torch.set_num_threads(before)
    assert a.digest == b.digest == TABULAR_DIGEST
    assert weights_digest(a.model) == a.digest
    # and from the cache
    c = _fresh_build(monkeypatch, tmp_path / "b", "tabular-mlp")
    assert c.digest == TABULAR_DIGEST
    assert _fresh_build(monkeypatch, tmp_path / "c", "tabular-mlp", seed=1).digest != TABULAR_DIGEST


def test_tabular_weights_on_grid_frozen_and_blind_to_other_features(tabular_base):
    m = tabular_base.model
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    for p in m.parameters():
        assert p.dtype == torch.float32
        scaled = p.double() / GRID
        assert torch.equal(scaled, torch.round(scaled))
    other = [j for j in range(30) if j not in TABULAR_BASE_FEATURES]
    assert torch.count_nonzero(m.fc1.weight[:, other]) == 0
    assert torch.count_nonzero(m.fc1.weight[:, list(TABULAR_BASE_FEATURES)]) > 0
    assert tabular_base.target_modules == ("fc1", "fc2") and tabular_base.input_shape == (30,)


def test_tabular_base_is_useful_but_leaves_room(tabular_base):
    s = bundled_splits()
    X = np.concatenate([x.test.X for x in s.sites])
    y = np.concatenate([x.test.y for x in s.sites])
    with torch.no_grad():
        acc = (tabular_base.model(torch.tensor(X)).argmax(1).numpy() == y).mean()
    assert 0.65 < acc < 0.93


def test_tampered_cache_is_rebuilt(monkeypatch, tmp_path):
    a = _fresh_build(monkeypatch, tmp_path, "tabular-mlp")
    (wfile,) = home.cache_dir("bases").glob("tabular-mlp-*.safetensors")
    raw = bytearray(wfile.read_bytes())
    raw[-3] ^= 0xFF
    wfile.write_bytes(bytes(raw))
    b = bases.BASES.get("tabular-mlp")()
    assert b.digest == a.digest == TABULAR_DIGEST
    wfile.write_bytes(b"junk")
    assert bases.BASES.get("tabular-mlp")().digest == TABULAR_DIGEST
    meta = json.loads(next(home.cache_dir("bases").glob("tabular-mlp-*.json")).read_text())
    assert meta["digest"] == TABULAR_DIGEST


def test_fresh_copy_is_independent(tabular_base):
    m = fresh_copy(tabular_base)
    with torch.no_grad():
        m.fc1.weight.add_(1.0)
    assert weights_digest(tabular_base.model) == tabular_base.digest


def test_unknown_base_lists_registry_names():
    with pytest.raises(ForgeValueError) as e:
        load_base("resnet-9000")
    msg = str(e.value)
    for name in bases.BASES.names():
        assert name in msg
    assert e.value.code == "base.unknown"
    with pytest.raises(ForgeValueError, match="hidden"):
        load_base("tabular-mlp", hidden=0)


def test_load_base_memoises(tabular_base):
    assert load_base("tabular-mlp") is load_base("tabular-mlp")


def test_vit_tiny():
    # through the shared test cache (a fresh build in fresh homes is the slow test below)
    v = bases.BASES.get("vit-tiny")()
    again = bases.BASES.get("vit-tiny")()  # from the cache
    assert v.digest == again.digest == weights_digest(again.model) == VIT_DIGEST
    assert v.kind == "image" and v.n_classes == 10 and v.input_shape == (1, 8, 8)
    assert v.target_modules in (("query", "value"), ("q_proj", "v_proj"))
    x = torch.tensor(bundled_image_splits().sites[0].test.X[:5])
    with torch.no_grad():
        out = v.model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (5, 10)
    for p in v.model.parameters():
        scaled = p.double() / GRID
        assert torch.equal(scaled, torch.round(scaled))


@pytest.mark.slow
def test_vit_tiny_digest_identical_in_fresh_homes(monkeypatch, tmp_path):
    a = _fresh_build(monkeypatch, tmp_path / "a", "vit-tiny")
    b = _fresh_build(monkeypatch, tmp_path / "b", "vit-tiny")
    assert a.digest == b.digest == VIT_DIGEST


def _hf_dir(tmp_path):
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    cfg = bases.vit_config(image_size=8, num_channels=1, n_classes=3, layers=1)
    model = ViTForImageClassification(cfg)
    path = tmp_path / "hf-vit"
    model.save_pretrained(path)
    return path, model


def test_local_hugging_face_directory(tmp_path):
    path, hf = _hf_dir(tmp_path)
    b = load_base(path)
    assert b.kind == "image" and b.n_classes == 3 and b.input_shape == (1, 8, 8)
    assert b.digest == weights_digest(b.model)
    assert b.target_modules in (("query", "value"), ("q_proj", "v_proj"))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(b.model(x), hf.eval()(pixel_values=x).logits)


def test_bad_hugging_face_directories(tmp_path):
    path, _ = _hf_dir(tmp_path)
    with pytest.raises(ForgeFileError, match="does not exist"):
        load_base(tmp_path / "missing-dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ForgeFileError, match="no config.json"):
        load_base(empty)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((path / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ForgeFileError, match="no .safetensors"):
        load_base(pickled)
    (weights,) = path.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ForgeError, match="cannot load the model"):
        load_base(path)


def test_hugging_face_directory_without_its_head_is_refused(tmp_path):
    """A backbone without a classification head would get a fresh random head on every load."""
    from transformers import ViTModel

    torch.manual_seed(0)
    path = tmp_path / "backbone"
    ViTModel(bases.vit_config(layers=1)).save_pretrained(path)
    with pytest.raises(ForgeError, match="no stored weights for") as e:
        load_base(path)
    assert e.value.code == "base.incomplete"
