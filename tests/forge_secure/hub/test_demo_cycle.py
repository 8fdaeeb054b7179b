"""`run_hub_cycle`: the demo's cycle through an embedded hub (push, pull, publish, fetch, verify)."""

from __future__ import annotations

import json

from forge_secure.hub.demo import run_hub_cycle


def test_run_hub_cycle(consortium, tmp_path):
    c = consortium
    bundles = {"site-1": [c.seal("site-1"), c.seal("site-1")], "site-2": [c.seal("site-2")]}
    merged = c.plugin("site-1", seed=42)
    audit = tmp_path / "report.html"
    audit.write_text("<html><body>audit passed</body></html>")
    s = run_hub_cycle(tmp_path / "work", c.roster, bundles, c.keys["admin-1"].signing, merged, audit=audit, budgets={"site-1": 50.0})
    assert [p["site"] for p in s["pushed"]] == ["site-1", "site-1", "site-2"] and s["pulled"] == 3 and s["version"] == 1
    assert {f["site"] for f in s["fetched"]} == {"site-1", "site-2"}
    for f in s["fetched"]:
        assert (tmp_path / "work" / "sites" / f["site"] / "v1" / "adapter_model.safetensors").read_bytes() == (
            merged / "adapter_model.safetensors"
        ).read_bytes()
        assert f["lineage"] == 3 and len(f["receipts_in_log"]) == len(bundles[f["site"]])
    assert s["log_size"] == 2 + 1 + 3 + 1  # hub, roster, site-1 budget, three submissions, the release
    ledger = {x["site"]: x for x in s["ledger"]}
    assert ledger["site-1"]["budget"] == 50.0 and len(ledger["site-1"]["entries"]) == 2
    assert json.loads((tmp_path / "work" / "maintainer" / "inbox" / "pulled.json").read_text())["submissions"]
