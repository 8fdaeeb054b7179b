"""``forge bench`` through the real command: bad configs are refused before any work starts
(exit 2, one line, nothing written)."""

from __future__ import annotations

import json

import pytest


def _assert_clean(result, *words):
    assert result.code == 2, result
    assert "Traceback" not in result.err + result.out, result
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    text = (result.err + result.out).lower()
    for w in words:
        assert w.lower() in text, (w, result)


GOOD = """
[bench]
seeds = [0]
[grid]
epsilon = [8]
rank = [2]
lora = ["ffa"]
merge = ["none"]
attack = ["lira"]
[attack.lira]
references = 2
"""


@pytest.mark.parametrize(
    "text, words",
    [  # the three; every other bad value is covered at the library level (test_config.py)
        (GOOD.replace("[bench]", "[bench]\nfast = true"), ["unknown key 'fast'", "seeds"]),
        (
            GOOD.replace('attack = ["lira"]', 'attack = ["lira", "shadow-models"]'),
            ["unknown attack 'shadow-models'", "lira", "recon", "rmia"],
        ),
        (GOOD.replace("epsilon = [8]", "epsilon = []"), ["epsilon is empty"]),
    ],
)
def test_bad_config_is_refused_before_any_work(forge_cli, tmp_path, text, words):
    cfg = tmp_path / "bench.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    result = forge_cli("bench", "--config", cfg, "--out", out)
    _assert_clean(result, *words)
    assert not out.exists()
    assert not (forge_cli.home / "cache" / "bench").exists() or not any((forge_cli.home / "cache" / "bench").rglob("*.json"))


def test_missing_and_wrong_type_config(forge_cli, tmp_path):
    _assert_clean(forge_cli("bench", "--config", tmp_path / "nope.toml", "--out", tmp_path / "o"), "does not exist")
    png = tmp_path / "plot.toml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    _assert_clean(forge_cli("bench", "--config", png, "--out", tmp_path / "o"), "not valid toml")
    assert not (tmp_path / "o").exists()


def test_out_that_is_not_a_bench_output_is_refused(forge_cli, tmp_path):
    cfg = tmp_path / "bench.toml"
    cfg.write_text(GOOD)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not overwrite")
    _assert_clean(forge_cli("bench", "--config", cfg, "--out", out), "did not write")
    assert (out / "thesis.tex").read_text() == "do not overwrite"


def test_print_default_and_dry_run(forge_cli, tmp_path):
    result = forge_cli("bench", "--print-default")
    assert result.code == 0 and "[grid]" in result.out
    cfg = tmp_path / "copy.toml"
    cfg.write_text(result.out)
    dry = forge_cli("bench", "--config", cfg, "--dry-run", "--json")
    assert dry.code == 0, dry
    info = json.loads(dry.out)
    assert info["runs"] == info["to_run"] == info["cells"] * len(info["seeds"]) and info["cached"] == 0
    assert info["grid"]["epsilon"][-1] == "inf"
