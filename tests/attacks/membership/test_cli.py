"""`forge attack mia`: one real run through the command, and bad input of every kind."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def forge_inproc(forge_inproc, mia_home):
    """``forge`` in this process (tests/conftest.py) with the membership tests' home."""
    return forge_inproc


@pytest.mark.slow
def test_cli_run_writes_results_and_plot(forge_cli, small_plugin, tmp_path):
    out, plot = tmp_path / "results.json", tmp_path / "roc.svg"
    r = forge_cli(
        "attack",
        "mia",
        "--target",
        small_plugin,
        "--data",
        "bundled:site-1",
        "--attack",
        "lira",
        "--references",
        "4",
        "--fixed-variance",
        "--workers",
        "1",
        "--n-boot",
        "100",
        "--out",
        out,
        "--plot",
        plot,
        "--json",
    )
    assert r.code == 0, r
    summary = json.loads(r.out)
    assert summary["attack"] == "lira" and "auc" in summary["metrics"]
    data = json.loads(out.read_text())
    assert data["format"] == "forge-mia-results/1" and len(data["scores"]) == len(data["labels"])
    assert data["empirical_epsilon"]["claimed"] == "inf"
    assert "<svg" in plot.read_text()


def test_cli_text_summary(forge_inproc, small_plugin, tmp_path):
    r = forge_inproc(
        "attack",
        "mia",
        "--target",
        small_plugin,
        "--data",
        "bundled:site-1",
        "--attack",
        "lira",
        "--references",
        "4",
        "--fixed-variance",
        "--workers",
        "1",
        "--n-boot",
        "50",
        "--out",
        tmp_path / "r.json",
        "--plot",
        tmp_path / "roc.png",
    )
    assert r.code == 0, r
    assert "ROC AUC" in r.out and "TPR at 0.1% FPR" in r.out and "claimed epsilon inf" in r.out and "4 reference models" in r.out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["references"]["trained"] + data["references"]["cached"] == 4
    assert data["settings"]["fixed_variance"] is True and len(data["scores"]) == data["data"]["candidates"]["rows"]
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


def _broken_copy(src, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_cli_bad_inputs(forge_inproc, small_plugin, tmp_path):
    out = tmp_path / "results.json"
    base = ["attack", "mia", "--data", "bundled:site-1", "--attack", "loss", "--out", out, "--n-boot", "20"]

    def check(result, *words):
        assert result.code == 2, result
        assert "Traceback" not in result.err + result.out, result
        text = (result.err + result.out).lower()
        for w in words:
            assert w.lower() in text, (w, result)
        assert not out.exists(), "no output may be left behind on error"

    check(forge_inproc(*base, "--target", tmp_path / "nope"), "does not exist")
    (tmp_path / "file").write_text("x")
    check(forge_inproc(*base, "--target", tmp_path / "file"), "not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    check(forge_inproc(*base, "--target", empty), "forge.json")

    truncated = _broken_copy(small_plugin, tmp_path, "truncated")
    raw = (truncated / "forge.json").read_bytes()
    (truncated / "forge.json").write_bytes(raw[: len(raw) // 2])
    check(forge_inproc(*base, "--target", truncated), "not valid json")

    tampered = _broken_copy(small_plugin, tmp_path, "tampered")
    ad = tampered / "adapter_model.safetensors"
    blob = bytearray(ad.read_bytes())
    blob[-1] ^= 0xFF
    ad.write_bytes(bytes(blob))
    check(forge_inproc(*base, "--target", tampered), "tampered")

    wrong_type = _broken_copy(small_plugin, tmp_path, "wrongtype")
    (wrong_type / "forge.json").write_text(json.dumps(["not", "an", "object"]))
    check(forge_inproc(*base, "--target", wrong_type), "forge.json")

    other_base = _broken_copy(small_plugin, tmp_path, "otherbase")
    meta = json.loads((other_base / "forge.json").read_text())
    meta["base"]["digest"] = "0" * 64
    (other_base / "forge.json").write_text(json.dumps(meta))
    check(forge_inproc(*base, "--target", other_base), "digest")

    t = ["--target", small_plugin]
    check(forge_inproc(*base[:4], *t, "--attack", "lira", "--references", "2", "--out", out), "at least 4", "--references")
    check(forge_inproc(*base, *t, "--attack", "shadow"), "lira, loss, reference, rmia")
    check(forge_inproc(*base, *t, "--plot", tmp_path / "roc.gif"), ".png")
    check(forge_inproc("attack", "mia", *t, "--data", "bundled:site-2", "--out", out, "--attack", "loss"), "commitment")
    wrong_cols = tmp_path / "cols.csv"
    wrong_cols.write_text("a,b,label\n1,2,0\n3,4,1\n")
    check(forge_inproc("attack", "mia", *t, "--data", wrong_cols, "--membership-seed", "1", "--attack", "loss", "--out", out), "columns")
    check(
        forge_inproc("attack", "mia", *t, "--data", tmp_path / "missing.csv", "--membership-seed", "1", "--attack", "loss", "--out", out),
        "does not exist",
    )
    check(forge_inproc(*base, *t, "--attack", "reference", "--references", "2", "--ray", "127.0.0.1:9", "--no-cache"), "cannot reach")
    (tmp_path / "outdir").mkdir()
    r = forge_inproc("attack", "mia", *t, "--data", "bundled:site-1", "--attack", "loss", "--out", tmp_path / "outdir")
    assert r.code == 2 and "directory" in r.err


def test_results_file_checks(tmp_path, small_plugin, forge_inproc):
    from attacks.membership.run import load_results
    from forge_secure.errors import ForgeDataError, ForgeFileError

    out = tmp_path / "r.json"
    assert (
        forge_inproc(
            "attack", "mia", "--target", small_plugin, "--data", "bundled:site-1", "--attack", "loss", "--n-boot", "20", "--out", out
        ).code
        == 0
    )
    good = json.loads(out.read_text())
    assert load_results(out)["attack"] == "loss"
    bad = tmp_path / "bad.json"
    bad.write_text(out.read_text()[:200])
    with pytest.raises(ForgeDataError, match="not valid JSON"):
        load_results(bad)
    bad.write_text(json.dumps({**good, "labels": good["labels"][:-1]}))
    with pytest.raises(ForgeDataError, match="labels"):
        load_results(bad)
    bad.write_text(json.dumps({**good, "format": "forge-plugin/1"}))
    with pytest.raises(ForgeDataError, match="format"):
        load_results(bad)
    bad.write_text(json.dumps({**good, "labels": [2] * len(good["labels"])}))
    with pytest.raises(ForgeDataError, match="invalid"):
        load_results(bad)
    with pytest.raises(ForgeFileError):
        load_results(tmp_path / "missing.json")
