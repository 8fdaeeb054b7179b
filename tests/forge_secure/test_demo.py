"""`forge demo`: the whole mission on the bundled data; rerunnable, never touches other data."""

from __future__ import annotations

import json
import os

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


def test_demo_up_to_the_merge_trains_seals_opens_and_merges(forge, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()  # a previous demo run: marker plus a stale file that must disappear
    (out / ".forge-demo.json").write_text("{}")
    (out / "stale.txt").write_text("old")
    r = forge("demo", "--out", out, "--stop-after", "merge", "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert not (out / "stale.txt").exists()
    assert (out / ".forge-demo.json").is_file() and json.loads((out / "summary.json").read_text())["sites"] == summary["sites"]
    assert summary["stages"] == ["keys", "sites", "seal", "open", "merge"] and set(summary["stage_seconds"]) == set(summary["stages"])

    # stage 2: three DP FFA-LoRA plugins, trained with the auditor's canaries from a fresh secret, each with its envelope
    sites = summary["sites"]
    assert [s["site"] for s in sites] == ["site-1", "site-2", "site-3"]
    from forge_secure.plugins.data import bundled_splits
    from forge_secure.plugins.plugin import load_plugin

    for s in sites:
        assert 0 < s["epsilon"] <= 8.0 + 1e-6 and 0 < s["delta"] < 1 / s["train_rows"]
        assert s["train_rows"] == len(bundled_splits().site(s["site"]).train())
        assert 0 < s["canaries_inserted"] < s["canaries_issued"] == 256
        p = load_plugin(out / "plugins" / s["site"])
        assert p.meta["data"]["rows"] == s["train_rows"] + s["canaries_inserted"]
        assert p.meta["lora"]["ffa"] is True and p.meta["dp"]["enabled"] is True
        assert p.meta["dp"]["randomness"]["source"] == "os" and "digest" not in p.meta["data"]
        assert (out / "plugins" / f"{s['site']}.replay.forge").is_file()
        assert (out / "auditor" / f"canaries-{s['site']}.json").stat().st_mode & 0o077 == 0
        assert 0.5 < s["accuracy"] <= 1.0 and s["accuracy_ci95"][0] <= s["accuracy"] <= s["accuracy_ci95"][1]

    # stages 2-4: the bundles verify against the demo's roster, and were opened to the same plugins
    from forge_secure.crypto import verify
    from forge_secure.plugins.plugin import adapter_digest

    assert summary["keys"]["roster"]["sites"] == ["site-1", "site-2", "site-3"]
    for s in ("site-1", "site-2", "site-3"):
        v = verify(
            out / "evidence" / "bundles" / f"{s}.forge",
            out / "roster.json",
            state_dir=tmp_path / "verifier-state",
            root=out / "roster.json",
        )
        assert v.site == s and v.dp["enabled"] is True
        assert adapter_digest(out / "evidence" / "plugins" / s) == adapter_digest(out / "plugins" / s)
        assert (out / "maintainer" / "contributions" / s / "ciphertexts.bin").is_file()
    assert [o["sequence"] for o in summary["open"]] == [1, 2] * 3

    # stage 5: the CKKS merge equals the plaintext FFA merge; the mixture is there; utility is reported
    merge = summary["merge"]
    assert merge["fusion_ckks"]["contributions"] == 3 and merge["fusion_ckks"]["max_abs_diff_vs_plaintext_ffa"] < 1e-5
    merged = load_plugin(out / "evidence" / "merged" / "fusion-ckks")
    assert merged.meta["kind"] == "merged" and merged.meta["merge"]["method"] == "ffa-ckks"
    assert (out / "maintainer" / "mixture-static" / "mixture.json").is_file()
    for name, e in merge["evaluation"]["models"].items():
        assert 0.5 < e["accuracy"] <= 1.0, name

    # keys, roster state, replay store, sequence counters and ledgers stay in the demo directory
    assert any((out / "ledgers").rglob("*.jsonl")) and (out / "maintainer" / "replay" / "accepted.json").is_file()
    assert not any(forge.home.iterdir()), sorted(p.name for p in forge.home.iterdir())
    assert os.environ["FORGE_HOME"] == str(forge.home)  # restored after the run
    assert not [p for p in tmp_path.iterdir() if p.name not in ("demo", "verifier-state")]  # no temporary siblings left


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
    assert_clean_error(forge("demo", "--out", tmp_path / "new", "--references", "0"), "--references")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_full_demo_through_the_forge_command(forge_cli, tmp_path):
    out = tmp_path / "d"
    r = forge_cli("demo", "--out", out, cwd=tmp_path, timeout=1500)
    assert r.code == 0, r
    for stage in range(1, 9):
        assert f"Stage {stage}" in r.out
    assert "Audit verdict:" in r.out and "report.html" in r.out and "forge verify-report" in r.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"] == ["keys", "sites", "seal", "open", "merge", "attacks", "audit", "hub"]
    # both attack suites ran on the site plugin and on the merged model, or say why not
    for suite in ("membership", "reconstruction"):
        for target in ("site-1", "fusion-ckks"):
            res = summary["attacks"][suite][target]
            if res.get("skipped"):
                assert res["reason"] and any(s["what"] == f"{suite} attack on {target}" for s in summary["skipped"])
                assert f"{suite} on {target}: SKIPPED" in r.out
            else:
                assert (out / "auditor" / "attacks").is_dir()
    m = summary["attacks"]["membership"]["site-1"]
    assert not m.get("skipped") and 0 <= m["auc"] <= 1 and m["references"] == 4
    # the signed report: JSON, HTML, PDF; the verdict printed is the report's own
    audit = summary["audit"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert {"report.json", "report.html", "report.pdf", "report.sig.json"} <= set(audit["files"])
    assert report["verdict"].upper() == audit["verdict"].upper() and f"Audit verdict: {audit['verdict'].upper()}" in r.out
    assert audit["checks"]["replay"] == "pass" and audit["checks"]["dp-randomness"] == "pass"  # verified by replay, on site
    assert summary["hub"]["version"] == 1 and summary["hub"]["pushed"] == 6
    v = forge_cli("verify-report", out / "report", "--key", out / "keys" / "auditor" / "public.json", cwd=tmp_path)
    assert v.code == 0, v
