"""`forge attack recon` end to end through the real command, and its bad-input handling."""

from __future__ import annotations

import json
import shutil

import pytest


def _assert_clean_error(result, *words):
    from tests.conftest import assert_clean_error

    assert_clean_error(result, *words)


@pytest.fixture(scope="module")
def plugin_dirs(tmp_path_factory):
    """A no-DP and a DP plugin written by `forge train`-equivalent library calls."""
    from forge_secure.plugins import load_data
    from forge_secure.privacy import TrainConfig, train_plugin

    root = tmp_path_factory.mktemp("recon-cli")
    data = load_data("bundled:site-1")
    train_plugin(TrainConfig(no_dp=True, epochs=5), data, site="site-1", out=root / "nodp")
    train_plugin(TrainConfig(noise_multiplier=1.0, epochs=5), data, site="site-1", out=root / "dp")
    return root


def test_gradient_attack_from_the_command_line(forge_cli, plugin_dirs, tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        plugin_dirs / "dp",
        "--kind",
        "gradient",
        "--data",
        "bundled:site-1/holdout",
        "--trials",
        "2",
        "--steps",
        "40",
        "--restarts",
        "2",
        "--bound-samples",
        "2000",
        "--out",
        out,
        "--plot",
        png,
    )
    assert r.code == 0, r
    res = json.loads(out.read_text())
    assert res["kind"] == "gradient" and res["target"]["dp"]["enabled"]
    fa = res["success"]["feature_accuracy"]
    assert 0 <= fa["ci"][0] <= fa["rate"] <= fa["ci"][1] <= 1
    assert "feature_accuracy" in res["baseline"] and res["bound"]["feature_accuracy"]["bound"] <= 1
    assert res["settings"]["trials"] == 2 and res["settings"]["inversion"]["steps"] == 40
    assert res["table_markdown"].startswith("| feature |")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "ReRo bound" in r.out


@pytest.mark.slow
def test_informed_attack_from_the_command_line_json(forge_cli, plugin_dirs, tmp_path):
    out = tmp_path / "i.json"
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        plugin_dirs / "dp",
        "--kind",
        "informed",
        "--mode",
        "model",
        "--trials",
        "3",
        "--candidates",
        "5",
        "--bound-samples",
        "2000",
        "--out",
        out,
        "--json",
    )
    assert r.code == 0, r
    printed = json.loads(r.out)
    assert printed["baseline"] == pytest.approx(0.2) and printed["bound"]["bound"] >= 0.2
    assert json.loads(out.read_text())["success"]["trials"] == 3


@pytest.mark.slow
def test_canary_attack_from_the_command_line(forge_cli, plugin_dirs, tmp_path):
    out = tmp_path / "c.json"
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        plugin_dirs / "nodp",
        "--kind",
        "canary",
        "--repetitions",
        "0,8",
        "--canaries",
        "2",
        "--canary-candidates",
        "16",
        "--out",
        out,
        "--plot",
        tmp_path / "c.png",
    )
    assert r.code == 0, r
    res = json.loads(out.read_text())
    assert [row["repetitions"] for row in res["success"]["by_repetition"]] == [0, 8]


def test_unknown_kind(forge_cli, plugin_dirs, tmp_path):
    r = forge_cli("attack", "recon", "--target", plugin_dirs / "nodp", "--kind", "telepathy", "--out", tmp_path / "x.json")
    _assert_clean_error(r, "telepathy", "gradient", "informed", "canary")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param("missing", marks=pytest.mark.slow),
        "empty_dir",
        pytest.param("file", marks=pytest.mark.slow),
        pytest.param("no_meta", marks=pytest.mark.slow),
        "bad_meta",
    ],
)
def test_target_that_is_not_a_plugin(forge_cli, tmp_path, make):
    target = tmp_path / "target"
    if make == "empty_dir":
        target.mkdir()
    elif make == "file":
        target.write_text("not a plugin")
    elif make == "no_meta":
        target.mkdir()
        (target / "adapter_config.json").write_text("{}")
    elif make == "bad_meta":
        target.mkdir()
        (target / "forge.json").write_text('{"format": "forge-plugin/1", "trunc')
    r = forge_cli("attack", "recon", "--target", target, "--kind", "gradient", "--out", tmp_path / "x.json")
    _assert_clean_error(r, str(target.name))
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("damage", ["truncate", pytest.param("tamper", marks=pytest.mark.slow)])
def test_damaged_adapter(forge_cli, plugin_dirs, tmp_path, damage):
    target = tmp_path / "p"
    shutil.copytree(plugin_dirs / "nodp", target)
    f = target / "adapter_model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else raw[:-8] + b"\x00" * 8)
    r = forge_cli("attack", "recon", "--target", target, "--kind", "gradient", "--out", tmp_path / "x.json")
    _assert_clean_error(r, "adapter")
    assert not (tmp_path / "x.json").exists()


def test_wrong_data_columns(forge_cli, plugin_dirs, tmp_path):
    csv = tmp_path / "five.csv"
    csv.write_text("a,b,c,d,e,label\n" + "\n".join("1,2,3,4,5,0" if i % 2 else "0,1,0,1,0,1" for i in range(10)) + "\n")
    r = forge_cli("attack", "recon", "--target", plugin_dirs / "nodp", "--kind", "gradient", "--data", csv, "--out", tmp_path / "x.json")
    _assert_clean_error(r, "columns", "(5,)", "(30,)")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_wrong_data_types(forge_cli, plugin_dirs, tmp_path):
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        plugin_dirs / "nodp",
        "--kind",
        "informed",
        "--data",
        "bundled-digits:site-1",
        "--out",
        tmp_path / "x.json",
    )
    _assert_clean_error(r, "image", "tabular")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01garbage")
    r = forge_cli("attack", "recon", "--target", plugin_dirs / "nodp", "--kind", "gradient", "--data", bad, "--out", tmp_path / "x.json")
    assert r.code == 2 and "Traceback" not in r.err
    assert not (tmp_path / "x.json").exists()


def test_bad_options(forge_cli, plugin_dirs, tmp_path):
    r = forge_cli("attack", "recon", "--target", plugin_dirs / "nodp", "--kind", "gradient", "--out", tmp_path)
    _assert_clean_error(r, "directory")
    r = forge_cli(
        "attack", "recon", "--target", plugin_dirs / "nodp", "--kind", "gradient", "--out", tmp_path / "x.json", "--trials", "500"
    )
    _assert_clean_error(r, "500", "records")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_more_bad_options(forge_cli, plugin_dirs, tmp_path):
    r = forge_cli(
        "attack",
        "recon",
        "--target",
        plugin_dirs / "nodp",
        "--kind",
        "gradient",
        "--out",
        tmp_path / "x.json",
        "--plot",
        tmp_path / "x.pdf",
    )
    _assert_clean_error(r, ".png")
    r = forge_cli(
        "attack", "recon", "--target", plugin_dirs / "nodp", "--kind", "gradient", "--out", tmp_path / "x.json", "--labels", "guess"
    )
    _assert_clean_error(r, "guess", "idlg")
    r = forge_cli("attack", "recon", "--target", plugin_dirs / "nodp", "--kind", "gradient", "--out", tmp_path / "x.json", "--trials", "0")
    assert r.code == 2 and "Traceback" not in r.err
    assert not (tmp_path / "x.json").exists()
