"""`forge demo`: three bundled hospitals train DP plugins; rerunnable, never touches other data."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_clean_error


@pytest.fixture
def forge(tmp_path_factory, monkeypatch, capsys):
    """`forge` in this process (same parser and handlers as the entry point), private FORGE_HOME."""
    from forge_secure.cli import main

    home = tmp_path_factory.mktemp("demo-home")
    monkeypatch.setenv("FORGE_HOME", str(home))

    class R:
        pass

    def run(*args):
        capsys.readouterr()
        r = R()
        r.code = main([str(a) for a in args])
        r.out, r.err = capsys.readouterr()
        return r

    run.home = home
    return run


def test_demo_trains_three_dp_sites_and_replaces_its_own_output(forge, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()  # a previous demo run: marker plus a stale file that must disappear
    (out / ".forge-demo.json").write_text("{}")
    (out / "stale.txt").write_text("old")
    r = forge("demo", "--out", out, "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert not (out / "stale.txt").exists()
    assert (out / ".forge-demo.json").is_file() and json.loads((out / "summary.json").read_text())["sites"] == summary["sites"]
    sites = summary["sites"]
    assert [s["site"] for s in sites] == ["site-1", "site-2", "site-3"]
    from forge_secure.plugins.data import bundled_splits
    from forge_secure.plugins.plugin import load_plugin

    for s in sites:
        assert 0 < s["epsilon"] <= 8.0 + 1e-6 and 0 < s["delta"] < 1 / s["train_rows"]
        assert s["train_rows"] == len(bundled_splits().site(s["site"]).train())
        p = load_plugin(out / "plugins" / s["site"])
        assert p.meta["lora"]["ffa"] is True and p.meta["dp"]["enabled"] is True
        assert 0.5 < s["accuracy"] <= 1.0 and s["accuracy_ci95"][0] <= s["accuracy"] <= s["accuracy_ci95"][1]
    # the demo's ledgers are inside the demo directory, not in the user's FORGE_HOME
    assert any((out / "ledgers").rglob("*")) and not (forge.home / "ledgers").exists()
    assert not [p for p in tmp_path.iterdir() if p.name != "demo"]  # no temporary siblings left


def test_demo_refuses_a_directory_it_did_not_write(forge, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "patients.csv").write_text("id\n1\n")
    r = forge("demo", "--out", out)
    assert_clean_error(r, "not written by forge demo")
    assert sorted(p.name for p in out.iterdir()) == ["patients.csv"]
    f = tmp_path / "file"
    f.write_text("x")
    assert_clean_error(forge("demo", "--out", f), "not a directory")


@pytest.mark.slow
def test_demo_entry_point_prints_the_table(forge_cli, tmp_path):
    r = forge_cli("demo", "--out", tmp_path / "d", cwd=tmp_path)
    assert r.code == 0, r
    assert "site-1" in r.out and "site-3" in r.out and "forge plugin show" in r.out
    r2 = forge_cli("demo", "--out", tmp_path / "d", cwd=tmp_path)  # rerun replaces it
    assert r2.code == 0, r2
