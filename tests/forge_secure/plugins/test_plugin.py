"""The plugin directory: save, load with PEFT as it is, and refuse every kind of bad file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

from forge_secure.errors import ForgeDataError, ForgeFileError, ForgeIntegrityError, ForgeValueError
from forge_secure.plugins.bases import fresh_copy, load_base
from forge_secure.plugins.data import bundled_splits
from forge_secure.plugins.plugin import (
    ADAPTER_FILE,
    META_FILE,
    adapter_digest,
    load_plugin,
    meta_epsilon,
    save_plugin,
)
from forge_secure.plugins.record import read_plugin


@pytest.fixture
def saved(tmp_path, tabular_base, make_lora_model, make_meta):
    model = make_lora_model(tabular_base)
    path = save_plugin(model, make_meta(tabular_base), tmp_path / "plugin")
    return path, model


def test_roundtrip_and_peft_loads_it_as_is(saved, tabular_base):
    path, model = saved
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "forge.json"]
    X = bundled_splits().public.X[:20]
    plugin = load_plugin(path)
    with torch.no_grad():
        expect = model(torch.tensor(X)).double().numpy()
    np.testing.assert_allclose(plugin.logits(X), expect, rtol=1e-6, atol=1e-6)
    proba = plugin.predict_proba(X)
    assert proba.dtype == np.float64 and np.allclose(proba.sum(1), 1)
    # the plugin changes the base's outputs (so the adapter really is applied)
    with torch.no_grad():
        assert not np.allclose(tabular_base.model(torch.tensor(X)).numpy(), expect, atol=1e-3)
    # plain PEFT, no forge code in between
    peft_model = PeftModel.from_pretrained(fresh_copy(tabular_base), str(path)).eval()
    with torch.no_grad():
        np.testing.assert_allclose(peft_model(torch.tensor(X)).double().numpy(), expect, rtol=1e-6, atol=1e-6)
    state = plugin.adapter_state()
    ref = get_peft_model_state_dict(model)
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)
    assert plugin.meta["adapter"]["sha256"] == adapter_digest(path) == hashlib.sha256((path / ADAPTER_FILE).read_bytes()).hexdigest()
    assert plugin.meta["dp"]["epsilon"] == "inf" and meta_epsilon(plugin.meta) == float("inf") == plugin.epsilon
    assert plugin.meta["base"]["digest"] == tabular_base.digest


def test_save_refuses_existing_plugin_and_bad_meta(saved, tmp_path, tabular_base, make_lora_model, make_meta):
    path, model = saved
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(ForgeFileError, match="already holds a plugin") as e:
        save_plugin(model, make_meta(tabular_base), path)
    assert e.value.code == "plugin.exists"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    out = tmp_path / "bad"
    bad = make_meta(tabular_base)
    del bad["lora"]
    with pytest.raises(ForgeDataError, match="lora"):
        save_plugin(model, bad, out)
    assert not out.exists() and not list(tmp_path.glob(".bad.*"))
    with pytest.raises(ForgeValueError, match="PeftModel"):
        save_plugin(fresh_copy(tabular_base), make_meta(tabular_base), out)


def _edit_meta(path, fn):
    meta = json.loads((path / META_FILE).read_text())
    fn(meta)
    (path / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "breaker,error,code,words",
    [
        (lambda p: (p / META_FILE).unlink(), ForgeFileError, "plugin.no_meta", "no forge.json"),
        (lambda p: (p / META_FILE).write_text("{not json"), ForgeDataError, "file.not_json", "not valid json"),
        (lambda p: (p / META_FILE).write_text("[1, 2]"), ForgeDataError, "plugin.wrong_type", "not an object"),
        (lambda p: _edit_meta(p, lambda m: m.update(format="forge-plugin/9")), ForgeDataError, "plugin.format", "forge-plugin/9"),
        (lambda p: _edit_meta(p, lambda m: m.pop("dp")), ForgeDataError, "plugin.meta_invalid", "'dp' is a required property"),
        (lambda p: _edit_meta(p, lambda m: m["lora"].update(rank="four")), ForgeDataError, "plugin.meta_invalid", "lora.rank"),
        # the DP record must be complete and consistent: a claim the record cannot back is refused
        (lambda p: _edit_meta(p, lambda m: m["dp"].update(epsilon=1.0)), ForgeDataError, "plugin.meta_invalid", "dp.epsilon"),
        (
            lambda p: _edit_meta(p, lambda m: m["dp"].update(enabled=True, epsilon=1.0)),
            ForgeDataError,
            "plugin.meta_invalid",
            "noise_multiplier",
        ),
        (
            lambda p: _edit_meta(
                p,
                lambda m: m["dp"].update(
                    enabled=True,
                    epsilon=1.0,
                    noise_multiplier=1.1,
                    sample_rate=1.5,
                    steps=10,
                    delta=1e-5,
                    max_grad_norm=1.0,
                    accountant="prv",
                ),
            ),
            ForgeDataError,
            "plugin.meta_invalid",
            "dp.sample_rate",
        ),
        (
            lambda p: _edit_meta(p, lambda m: m["base"].update(digest="ab" * 32)),
            ForgeIntegrityError,
            "plugin.base_mismatch",
            "digest abababab",
        ),
        (
            lambda p: (p / ADAPTER_FILE).write_bytes((p / ADAPTER_FILE).read_bytes()[:-40]),
            ForgeIntegrityError,
            "plugin.adapter_digest",
            "truncated or tampered",
        ),
        (lambda p: (p / ADAPTER_FILE).unlink(), ForgeFileError, "plugin.no_adapter", "adapter_model.safetensors"),
        (
            lambda p: (p / "adapter_config.json").write_text('{"r": 4}'),
            ForgeDataError,
            "plugin.config_invalid",
            "not a peft adapter config",
        ),
    ],
)
def test_load_refuses_broken_plugins(saved, breaker, error, code, words):
    path, _ = saved
    breaker(path)
    with pytest.raises(error) as e:
        load_plugin(path)
    assert e.value.code == code, e.value
    assert words.lower() in str(e.value).lower()
    assert "\n" not in str(e.value)


def _flip_byte(path, offset_from_end=5):
    raw = bytearray((path / ADAPTER_FILE).read_bytes())
    raw[-offset_from_end] ^= 0x55
    (path / ADAPTER_FILE).write_bytes(bytes(raw))


def test_tampered_adapter_is_refused(saved):
    path, _ = saved
    _flip_byte(path)
    with pytest.raises(ForgeIntegrityError) as e:
        load_plugin(path)
    assert e.value.code == "plugin.adapter_digest"


def test_truncated_adapter_without_recorded_digest_is_refused(saved):
    """A forge.json from another writer may lack the adapter digest; safetensors still catches truncation."""
    path, _ = saved
    _edit_meta(path, lambda m: m.pop("adapter"))
    (path / ADAPTER_FILE).write_bytes((path / ADAPTER_FILE).read_bytes()[:60])
    with pytest.raises(ForgeIntegrityError) as e:
        load_plugin(path)
    assert e.value.code == "plugin.adapter_corrupt"


def test_missing_or_wrong_type_paths(tmp_path):
    with pytest.raises(ForgeFileError, match="does not exist"):
        load_plugin(tmp_path / "nowhere")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ForgeFileError, match="not a plugin directory"):
        load_plugin(f)
    with pytest.raises(ForgeFileError, match="no forge.json"):
        read_plugin(tmp_path, weights=False)


def test_adapter_that_does_not_fit_the_base(tmp_path, monkeypatch, make_lora_model, make_meta):
    """A plugin for a wider base, presented with a base whose digest was forged to match."""
    from forge_secure.plugins import bases as b
    from forge_secure.plugins.base_builders import write_base

    write_base("tabular-mlp", tmp_path / "wide-base", hidden=32)
    wide = load_base(tmp_path / "wide-base")
    path = save_plugin(make_lora_model(wide), make_meta(wide), tmp_path / "wide")
    std = load_base("tabular-mlp")
    forged = b.Base(std.name, std.model, wide.digest, std.target_modules, std.kind, std.n_classes, std.input_shape, {})
    with pytest.raises(ForgeIntegrityError) as e:
        load_plugin(path, base=forged)
    assert e.value.code == "plugin.adapter_mismatch"
    # with no base given, the recorded base directory gives the right (wide) base
    assert load_plugin(path).base.digest == wide.digest


def test_non_finite_adapter_is_refused(saved, tmp_path, tabular_base, make_lora_model, make_meta):
    from safetensors.torch import load_file, save_file

    model = make_lora_model(tabular_base)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n)[0, 0] = float("nan")
    with pytest.raises(ForgeValueError, match="NaN") as e:
        save_plugin(model, make_meta(tabular_base), tmp_path / "nan")
    assert e.value.code == "plugin.not_finite" and not (tmp_path / "nan").exists()
    path, _ = saved  # a NaN written by someone else (digest updated to match) is refused on load
    tensors = load_file(str(path / ADAPTER_FILE))
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("inf")
    save_file(tensors, str(path / ADAPTER_FILE))
    _edit_meta(path, lambda m: m["adapter"].update(sha256=adapter_digest(path)))
    with pytest.raises(ForgeIntegrityError, match="NaN or infinite"):
        load_plugin(path)


def test_plugin_on_a_local_hugging_face_base(tmp_path, make_meta):
    """q/v LoRA on a local HF ViT directory; the base is found again by its path, or given."""
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    from forge_secure.plugins import bases as b

    torch.manual_seed(0)
    hf_dir = tmp_path / "hf"
    ViTForImageClassification(b.vit_config(n_classes=3, layers=1)).save_pretrained(hf_dir)
    base = load_base(hf_dir)
    torch.manual_seed(1)
    model = get_peft_model(
        fresh_copy(base), LoraConfig(r=2, lora_alpha=4, target_modules=list(base.target_modules), init_lora_weights=False)
    )
    meta = make_meta(base, rank=2)
    path = save_plugin(model, meta, tmp_path / "plugin")
    X = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expect = model(torch.tensor(X)).double().numpy()
    np.testing.assert_allclose(load_plugin(path).logits(X), expect, rtol=1e-5, atol=1e-6)
    moved = tmp_path / "hf-moved"
    hf_dir.rename(moved)
    with pytest.raises(ForgeFileError, match="does not exist"):
        load_plugin(path)
    np.testing.assert_allclose(load_plugin(path, base=load_base(moved)).logits(X), expect, rtol=1e-5, atol=1e-6)
