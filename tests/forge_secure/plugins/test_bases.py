"""Base models: shipped artifacts checked by digest, forge base directories, Hugging Face directories."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from forge_secure.errors import ForgeDataError, ForgeError, ForgeFileError, ForgeIntegrityError, ForgeValueError
from forge_secure.plugins import bases
from forge_secure.plugins.base_builders import build_files, write_base
from forge_secure.plugins.bases import (
    ASSETS,
    GRID,
    SHIPPED,
    TABULAR_BASE_FEATURES,
    directory_digest,
    fresh_copy,
    load_base,
    weights_bytes,
    weights_digest,
)
from forge_secure.plugins.data import bundled_image_splits, bundled_splits
from tests.conftest import assert_clean_error

ROOT = Path(__file__).resolve().parents[3]

# The digests of the shipped bases (sha256 over the sha256sum-style manifest of base.json and
# model.safetensors). If one changes, every existing plugin on that base stops loading.
TABULAR_DIGEST = "9d7df87e53cf8a5f080f557cf6ef532edc44d3acdd6978ac14fb94370d8d8b3f"
VIT_DIGEST = "fdd903fd2589821741bde06138197190e468afb1b56f20d095521701d21685e0"
# the tabular weights file is byte-identical to the one earlier versions rebuilt on every machine
TABULAR_WEIGHTS_SHA256 = "5aed6ac8343c14b8e377559e81a4839590ea34b207bc90cea3c259d4d5e1f188"


def _sha256sum_manifest_digest(folder: Path, names: list[str]) -> str:
    """The digest as its definition says, independently of the library: sha256 of the
    `sha256sum` listing of the defining files, sorted by path."""
    lines = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in sorted(names))
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.fixture
def private_assets(tmp_path, monkeypatch):
    """A private copy of the shipped assets, loaded instead of the package's (and no memo)."""
    root = tmp_path / "assets"
    shutil.copytree(ASSETS, root)
    monkeypatch.setattr(bases, "ASSETS", root)
    monkeypatch.setattr(bases, "_memo", {})
    return root


# --------------------------------------------------------------------------- shipped bases


def test_shipped_digests_are_pinned_and_defined_by_the_files():
    assert SHIPPED == {"tabular-mlp": TABULAR_DIGEST, "vit-tiny": VIT_DIGEST}
    for name, digest in SHIPPED.items():
        folder = ASSETS / name
        assert sorted(p.name for p in folder.iterdir()) == ["base.json", "model.safetensors"]
        assert _sha256sum_manifest_digest(folder, ["base.json", "model.safetensors"]) == digest
        assert directory_digest(folder)[0] == digest
        assert load_base(name).digest == digest
        assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000  # committed files stay small
    assert hashlib.sha256((ASSETS / "tabular-mlp" / "model.safetensors").read_bytes()).hexdigest() == TABULAR_WEIGHTS_SHA256


@pytest.mark.parametrize("name", ["tabular-mlp", "vit-tiny"])
def test_loading_is_byte_identical_to_the_shipped_files(name):
    base = load_base(name)
    assert weights_bytes(base.model) == (ASSETS / name / "model.safetensors").read_bytes()
    assert not base.model.training and not any(p.requires_grad for p in base.model.parameters())
    record = json.loads((ASSETS / name / "base.json").read_text())
    assert base.settings == record["settings"] and base.n_classes == record["n_classes"]
    assert list(base.input_shape) == record["input_shape"]


def test_nothing_is_trained_at_load_time(private_assets, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("a base was trained at load time")

    monkeypatch.setattr(torch.optim, "Adam", no_training)
    monkeypatch.setattr(torch.Tensor, "backward", no_training)
    assert load_base("tabular-mlp").digest == TABULAR_DIGEST
    assert load_base("vit-tiny").digest == VIT_DIGEST


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "config"])
def test_damaged_shipped_base_is_refused(private_assets, damage):
    w = private_assets / "tabular-mlp" / "model.safetensors"
    if damage == "flip":
        raw = bytearray(w.read_bytes())
        raw[-3] ^= 0x01
        w.write_bytes(bytes(raw))
    elif damage == "truncate":
        w.write_bytes(w.read_bytes()[:1000])
    elif damage == "empty":
        w.write_bytes(b"")
    else:  # a plausible edit of base.json: another class count
        cfg = private_assets / "tabular-mlp" / "base.json"
        cfg.write_text(cfg.read_text().replace('"n_classes": 2', '"n_classes": 3'))
    with pytest.raises(ForgeIntegrityError) as e:
        load_base("tabular-mlp")
    assert e.value.code == "base.digest_mismatch"
    assert "reinstall" in str(e.value) and "tabular-mlp" in str(e.value)


@pytest.mark.parametrize("missing", ["model.safetensors", "base.json"])
def test_missing_shipped_file_is_refused(private_assets, missing):
    (private_assets / "vit-tiny" / missing).unlink()
    with pytest.raises(ForgeIntegrityError) as e:
        load_base("vit-tiny")
    assert e.value.code == "base.asset_missing" and missing in str(e.value)


def test_tampered_shipped_base_is_a_clean_cli_error(private_assets, forge_inproc, tmp_path):
    w = private_assets / "tabular-mlp" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-8])
    r = forge_inproc("train", "--site", "site-1", "--data", "bundled:site-1", "--no-dp", "--epochs", "1", "--out", tmp_path / "p")
    assert_clean_error(r, "tabular-mlp", "digest")
    assert not (tmp_path / "p").exists()


def test_settings_must_match_the_shipped_ones():
    shipped = load_base("tabular-mlp")
    # forge.json records the settings and plugin loading passes them back
    assert load_base("tabular-mlp", **shipped.settings) is shipped
    assert load_base("tabular-mlp", lr=0.01, hidden=64) is shipped
    with pytest.raises(ForgeValueError) as e:
        load_base("tabular-mlp", seed=1)
    assert e.value.code == "base.not_shipped"
    assert "tools/make_bases.py tabular-mlp --set seed=1 --out DIR" in str(e.value)
    with pytest.raises(ForgeValueError) as e:
        load_base("vit-tiny", image_size=28, num_channels=3)
    assert e.value.code == "base.not_shipped" and "--set image_size=28" in str(e.value)
    with pytest.raises(ForgeValueError) as e:
        bases.BASES.get("tabular-mlp")(depth=3)
    assert e.value.code == "base.settings"
    with pytest.raises(ForgeValueError, match="hidden"):
        load_base("tabular-mlp", hidden=0)


def test_tabular_weights_on_grid_and_blind_to_other_features(tabular_base):
    m = tabular_base.model
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


def test_vit_tiny():
    v = load_base("vit-tiny")
    assert v.digest == VIT_DIGEST and v.kind == "image" and v.n_classes == 10 and v.input_shape == (1, 8, 8)
    assert v.target_modules in (("query", "value"), ("q_proj", "v_proj"))
    public = bundled_image_splits()
    x = torch.tensor(public.sites[0].test.X)
    with torch.no_grad():
        out = v.model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (len(x), 10)
    assert (out.argmax(1).numpy() == public.sites[0].test.y).mean() > 0.3  # pretrained, not random (0.1)
    for p in v.model.parameters():
        scaled = p.double() / GRID
        assert torch.equal(scaled, torch.round(scaled))


def test_fresh_copy_is_independent(tabular_base):
    m = fresh_copy(tabular_base)
    with torch.no_grad():
        m.fc1.weight.add_(1.0)
    assert weights_bytes(tabular_base.model) == (ASSETS / "tabular-mlp" / "model.safetensors").read_bytes()


def test_unknown_base_lists_registry_names():
    with pytest.raises(ForgeValueError) as e:
        load_base("resnet-9000")
    msg = str(e.value)
    for name in bases.BASES.names():
        assert name in msg
    assert e.value.code == "base.unknown"


def test_load_base_memoises(tabular_base):
    assert load_base("tabular-mlp") is load_base("tabular-mlp") is tabular_base


# --------------------------------------------------------------------------- the builder script


def test_builder_reproduces_the_shipped_tabular_files():
    files = build_files("tabular-mlp")
    assert files["model.safetensors"] == (ASSETS / "tabular-mlp" / "model.safetensors").read_bytes()
    built, shipped = (json.loads(t) for t in (files["base.json"], (ASSETS / "tabular-mlp" / "base.json").read_bytes()))
    # provenance names library versions; everything else is identical
    assert {k: v for k, v in built.items() if k != "built_with"} == {k: v for k, v in shipped.items() if k != "built_with"}


@pytest.mark.slow
def test_make_bases_script_reproduces_every_shipped_file():
    """``tools/make_bases.py --check`` rebuilds both bases (vit-tiny: about 10 s) and compares
    them byte for byte. Floating-point results differ between CPUs: this holds on the machine
    (and library versions) that built the assets, which is why bases ship as files."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_bases.py"), "--check"], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("identical to the shipped files") == 2


def _make_bases_main():
    spec = importlib.util.spec_from_file_location("make_bases", ROOT / "tools" / "make_bases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_make_bases_script_builds_other_settings_into_a_directory(tmp_path, capsys):
    main = _make_bases_main()
    out = tmp_path / "wide"
    assert main(["tabular-mlp", "--set", "hidden=16", "--set", "seed=3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    base = load_base(out)
    assert printed.split()[1] == base.digest == directory_digest(out)[0]
    assert base.settings["hidden"] == 16 and base.settings["seed"] == 3 and base.model.fc1.out_features == 16
    assert base.name == str(out.resolve()) and base.kind == "tabular" and base.target_modules == ("fc1", "fc2")
    assert main(["tabular-mlp", "--set", "hidden=0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "hidden" in err and "Traceback" not in err and not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as e:  # settings never overwrite the shipped assets
        main(["tabular-mlp", "--set", "seed=1"])
    assert e.value.code == 2


# --------------------------------------------------------------------------- forge base directories


@pytest.fixture(scope="module")
def seed1_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bases") / "seed-1"
    write_base("tabular-mlp", out, seed=1)
    return out


def test_forge_base_directory(seed1_dir, tmp_path):
    b = load_base(seed1_dir)
    assert b.digest == _sha256sum_manifest_digest(seed1_dir, ["base.json", "model.safetensors"]) != TABULAR_DIGEST
    assert b.settings["seed"] == 1 and weights_digest(b.model) == hashlib.sha256((seed1_dir / "model.safetensors").read_bytes()).hexdigest()
    copy = tmp_path / "copy"
    shutil.copytree(seed1_dir, copy)
    assert load_base(copy).digest == b.digest  # a byte copy at another site is the same base
    with pytest.raises(ForgeValueError) as e:
        load_base(seed1_dir, seed=2)
    assert e.value.code == "base.settings"


@pytest.mark.parametrize(
    "damage,code",
    [
        ("no-weights", "base.missing_file"),
        ("truncated", "base.bad_weights"),
        ("not-json", "base.bad_config"),
        ("wrong-type", "base.bad_config"),
        ("other-shape", "base.bad_weights"),
        ("unknown-arch", "base.unsupported"),
    ],
)
def test_damaged_forge_base_directory(seed1_dir, tmp_path, damage, code):
    d = tmp_path / "b"
    shutil.copytree(seed1_dir, d)
    cfg = json.loads((d / "base.json").read_text())
    if damage == "no-weights":
        (d / "model.safetensors").unlink()
    elif damage == "truncated":
        (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500])
    elif damage == "not-json":
        (d / "base.json").write_text('{"format": "forge-base/1", ')
    elif damage == "wrong-type":
        (d / "base.json").write_text("[1, 2]")
    elif damage == "other-shape":
        cfg["config"]["hidden"] = 32
        (d / "base.json").write_text(json.dumps(cfg))
    else:
        cfg["architecture"] = "resnet-9000"
        (d / "base.json").write_text(json.dumps(cfg))
    with pytest.raises(ForgeError) as e:
        load_base(d)
    assert e.value.code == code, e.value


# --------------------------------------------------------------------------- Hugging Face directories


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
    assert b.target_modules in (("query", "value"), ("q_proj", "v_proj"))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(b.model(x), hf.eval()(pixel_values=x).logits)


def test_hugging_face_digest_is_the_digest_of_its_files(tmp_path):
    path, _ = _hf_dir(tmp_path)
    defining = ["config.json", "model.safetensors"]
    assert sorted(p.name for p in path.iterdir() if p.name in defining) == defining
    digest = load_base(path).digest
    assert digest == _sha256sum_manifest_digest(path, defining) == directory_digest(path)[0]
    (path / "README.md").write_text("# notes\n")  # not a defining file
    assert load_base(path).digest == digest
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # a tokenizer file defines the base too
    assert load_base(path).digest == _sha256sum_manifest_digest(path, [*defining, "vocab.txt"]) != digest
    with_vocab = load_base(path).digest
    (path / "vocab.txt").unlink()
    cfg = json.loads((path / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-5  # same weights, another function: another base
    (path / "config.json").write_text(json.dumps(cfg))
    assert load_base(path).digest not in (digest, with_vocab)


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
    (path / "config.json").write_text("{not json")
    with pytest.raises(ForgeDataError) as e:
        load_base(path)
    assert e.value.code == "base.bad_config"
    path, _ = _hf_dir(tmp_path / "again")
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
