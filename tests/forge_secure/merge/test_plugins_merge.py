"""Merges over real plugin directories: written with PEFT, loaded back, lineage, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from forge_secure.errors import ForgeDataError, ForgeError, ForgeFileError, ForgeIntegrityError, ForgeValueError
from forge_secure.merge import fusion_merge, lineage_lines, lineage_tree
from forge_secure.plugins.plugin import load_plugin
from forge_secure.plugins.record import read_plugin


@pytest.fixture(scope="module")
def plain(tmp_path_factory, make_plugin):
    d = tmp_path_factory.mktemp("plain")
    return [
        make_plugin(d / f"p{i}", 10 + i, rank=3 + (i == 2), rows=r, site=f"site-{i + 1}", epsilon=e)
        for i, (r, e) in enumerate([(84, 2.0), (62, 8.0), (31, 4.0)])
    ]


@pytest.fixture(scope="module")
def ffa(tmp_path_factory, make_plugin):
    d = tmp_path_factory.mktemp("ffa")
    return [make_plugin(d / f"f{i}", 20 + i, ffa=True, rows=r, site=f"site-{i + 1}") for i, r in enumerate([84, 62, 31])]


def X_test(n=40):
    return np.random.default_rng(0).normal(size=(n, 30)).astype(np.float32)


def test_exact_merge_writes_a_peft_plugin_equal_to_the_weighted_updates(plain, base, tmp_path):
    out = fusion_merge(plain, tmp_path / "merged", method="exact")
    merged = load_plugin(out)  # PeftModel.from_pretrained inside
    files = [read_plugin(p) for p in plain]
    w = np.array([84, 62, 31]) / 177
    X = X_test()
    # reference: W0 + sum_i w_i s_i B_i A_i, applied directly to the base weights
    from forge_secure.plugins.bases import fresh_copy

    ref = fresh_copy(base).double()  # never change the shared base
    deltas = {m: sum(wi * f.adapter.delta(m) for wi, f in zip(w, files, strict=True)) for m in files[0].adapter.modules}
    params = {
        f"{m.split('base_model.model.')[1]}.weight": dict(ref.named_modules())[m.split("base_model.model.")[1]].weight.double() + d
        for m, d in deltas.items()
    }
    with torch.no_grad():
        want = torch.func.functional_call(ref, params, (torch.as_tensor(X).double(),)).numpy()
    np.testing.assert_allclose(merged.logits(X), want, rtol=1e-4, atol=1e-4)
    meta = merged.meta
    assert meta["kind"] == "merged" and meta["merge"]["method"] == "exact"
    assert meta["merge"]["weights"] == pytest.approx(list(w))
    assert [p["digest"] for p in meta["parents"]] == [f.digest for f in files]
    assert [p["site"] for p in meta["parents"]] == ["site-1", "site-2", "site-3"]
    assert [x["epsilon"] for x in meta["dp"]["per_parent"]] == [2.0, 8.0, 4.0]
    assert meta["lora"]["rank"] == 3 + 3 + 4


@pytest.mark.parametrize("method", ["ffa", "ties", "dare"])
def test_ffa_family_outputs_load_with_peft(ffa, tmp_path, method):
    out = fusion_merge(ffa, tmp_path / method, method=method, weights=[1, 1, 1])
    plugin = load_plugin(out)
    logits = plugin.logits(X_test())
    assert np.isfinite(logits).all()
    assert plugin.meta["merge"]["weights"] == pytest.approx([1 / 3] * 3)
    if method == "ffa":
        f = [read_plugin(p) for p in ffa]
        m = next(iter(f[0].adapter.modules))
        merged = read_plugin(out).adapter
        torch.testing.assert_close(merged.B(m), sum(x.adapter.B(m) for x in f) / 3, rtol=1e-5, atol=1e-6)


def test_lineage_of_a_merge_of_merges(ffa, plain, tmp_path):
    first = fusion_merge(ffa[:2], tmp_path / "m1", method="ffa")
    second = fusion_merge([first, ffa[2]], tmp_path / "m2", method="ffa")
    tree = lineage_tree(second)
    assert tree["kind"] == "merged" and tree["method"] == "ffa"
    assert [c["site"] for c in tree["parents"]] == ["merged", "site-3"]
    assert [g["site"] for g in tree["parents"][0]["parents"]] == ["site-1", "site-2"]
    text = "\n".join(lineage_lines(tree))
    assert "site-1" in text and "└──" in text and "method=ffa" in text


def test_different_base_digests_are_refused(plain, tmp_path, make_plugin, base):
    from forge_secure.plugins.base_builders import write_base
    from forge_secure.plugins.bases import load_base

    write_base("tabular-mlp", tmp_path / "seed-1", seed=1)  # another seed: another base, built into a directory
    other = load_base(tmp_path / "seed-1")
    odd = make_plugin(tmp_path / "odd", 5, rank=3, the_base=other)
    with pytest.raises(ForgeDataError, match="different base models") as e:
        fusion_merge([plain[0], odd], tmp_path / "out", method="exact")
    assert e.value.code == "merge.different_bases"
    assert not (tmp_path / "out").exists()


def test_ffa_method_refuses_plain_plugins(plain, ffa, tmp_path):
    with pytest.raises(ForgeDataError, match="mixture of FFA and plain LoRA"):
        fusion_merge([ffa[0], plain[0]], tmp_path / "out", method="ffa")
    assert not (tmp_path / "out").exists()


def test_sequential_refuses_different_ranks(plain, tmp_path):
    with pytest.raises(ForgeValueError, match="tune-on"):
        fusion_merge(plain, tmp_path / "out", method="sequential")


def test_tampered_truncated_and_wrong_type_inputs(plain, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(plain[0], bad)
    f = bad / "adapter_model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(ForgeIntegrityError, match="tampered"):
        fusion_merge([bad, plain[1]], tmp_path / "o1")
    # truncated file with a matching recorded digest removed: safetensors refuses it
    meta = json.loads((bad / "forge.json").read_text())
    meta.pop("adapter")
    (bad / "forge.json").write_text(json.dumps(meta))
    f.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(ForgeIntegrityError, match="safetensors") as e:  # the gateway's code, as load_plugin's
        fusion_merge([bad, plain[1]], tmp_path / "o2")
    assert e.value.code == "plugin.adapter_corrupt"
    (bad / "forge.json").write_text("{not json")
    with pytest.raises(ForgeDataError, match="not valid JSON"):
        fusion_merge([bad, plain[1]], tmp_path / "o3")
    with pytest.raises(ForgeFileError, match="not a directory"):
        fusion_merge([plain[0] / "forge.json", plain[1]], tmp_path / "o4")
    with pytest.raises(ForgeFileError, match="does not exist"):
        fusion_merge([tmp_path / "nope", plain[1]], tmp_path / "o5")
    with pytest.raises(ForgeValueError, match="at least two"):
        fusion_merge([plain[0]], tmp_path / "o6")
    for o in ("o1", "o2", "o3", "o4", "o5", "o6"):
        assert not (tmp_path / o).exists()


def test_existing_output_is_not_overwritten(plain, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ForgeError):
        fusion_merge(plain[:2], out)
    assert (out / "keep.txt").read_text() == "x"


def test_merge_stage_for_the_demo(ffa, tmp_path):
    from forge_secure.merge import merge_stage
    from forge_secure.merge.mixture import load_mixture

    out = merge_stage(ffa, tmp_path)
    assert set(out) == {"fusion-exact", "fusion-ffa", "fusion-ckks", "mixture-static"}
    X = X_test()
    ckks, ffa_plain = load_plugin(out["fusion-ckks"]), load_plugin(out["fusion-ffa"])
    np.testing.assert_allclose(ckks.logits(X), ffa_plain.logits(X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(load_plugin(out["fusion-exact"]).logits(X), ffa_plain.logits(X), rtol=1e-4, atol=1e-4)
    assert np.allclose(load_mixture(out["mixture-static"]).predict_proba(X).sum(1), 1.0)
