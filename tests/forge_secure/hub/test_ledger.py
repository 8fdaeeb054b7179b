"""The consortium ledger (re-derived DP records, budgets enforced at push, in the log) and
signed write requests (admin key, freshness, no replay)."""

from __future__ import annotations

import base64
import json

import pytest

from forge_secure.crypto import load_signing_key
from forge_secure.fileio import canonical_json
from forge_secure.hub.auth import sign_request
from forge_secure.privacy.accountants import compute_epsilon


def _error(resp, status, code):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["fix"], err
    return err


def test_budget_refuses_the_push_that_would_exceed_it(hub_factory):
    delta = 1e-5
    one = compute_epsilon([(1.1, 0.25, 40)], delta, "prv")
    two = compute_epsilon([(1.1, 0.25, 80)], delta, "prv")
    env = hub_factory(budgets={"site-1": (one + two) / 2}, ledger_delta=delta)
    c = env.consortium
    ok = env.push(c.seal("site-1"))
    assert ok.status_code == 200, ok.text
    led = json.loads(ok.json()["entry"])["ledger"]
    assert float(led["spent_after"]) == pytest.approx(one, rel=1e-9) and float(led["budget"]) == pytest.approx((one + two) / 2)
    before = env.state()
    err = _error(env.push(c.seal("site-1")), 409, "budget.exceeded")
    assert "site-1" in err["message"]
    assert env.state() == before
    # site-2 has no budget: accepted, and the ledger shows both sites
    assert env.push(c.seal("site-2")).status_code == 200
    ledgers = {x["site"]: x for x in env.client.get("/v1/ledger").json()["sites"]}
    assert ledgers["site-1"]["spent"] == pytest.approx(one) and ledgers["site-1"]["budget"] == pytest.approx((one + two) / 2)
    assert ledgers["site-2"]["budget"] is None


def test_understated_claim_and_no_dp_refused(hub_factory, tmp_path):
    env = hub_factory(default_budget=100.0)
    c = env.consortium
    plugin = c.plugin("site-1", seed=3)
    meta = json.loads((plugin / "forge.json").read_text())
    meta["dp"]["epsilon"] = meta["dp"]["epsilon"] / 2  # the site claims half of what its record gives
    (plugin / "forge.json").write_text(json.dumps(meta))
    before = env.state()
    _error(env.push(c.seal("site-1", plugin=plugin)), 400, "hub.dp_claim")
    meta["dp"]["history"] = [["x", 0.2, 3]]
    (plugin / "forge.json").write_text(json.dumps(meta))
    _error(env.push(c.seal("site-1", plugin=plugin)), 400, "hub.dp_record")
    no_dp = c.plugin("site-1", dp=False)
    _error(env.push(c.seal("site-1", plugin=no_dp)), 409, "budget.exceeded")
    assert env.state() == before


def test_signed_budget_change_by_admin_only_fresh_and_once(hub_env):
    c, hub = hub_env.consortium, hub_env.hub
    admin = load_signing_key(c.keys["admin-1"].signing)
    req = sign_request(admin, "set-budget", {"site": "site-1", "epsilon": "5.0"}, hub.origin)
    resp = hub_env.client.post("/v1/budgets", json=req)
    assert resp.status_code == 200, resp.text
    entry = json.loads(resp.json()["receipt"]["entry"])
    assert entry["kind"] == "budget" and entry["site"] == "site-1" and entry["request"] == req
    _error(hub_env.client.post("/v1/budgets", json=req), 409, "hub.replay")
    site_key = load_signing_key(c.keys["site-1"].signing)
    _error(hub_env.client.post("/v1/budgets", json=sign_request(site_key, "set-budget", {"site": "site-1", "epsilon": "99"},
                                                                hub.origin)), 403, "hub.forbidden")
    _error(hub_env.client.post("/v1/budgets", json=sign_request(admin, "set-budget", {"site": "site-1", "epsilon": "9"},
                                                                hub.origin, now=hub.now() - 3600)), 401, "hub.stale")
    _error(hub_env.client.post("/v1/budgets", json=sign_request(admin, "set-budget", {"site": "site-1", "epsilon": "9"},
                                                                "another-hub/x")), 401, "hub.auth")
    _error(hub_env.client.post("/v1/budgets", json=sign_request(admin, "publish", {"site": "site-1", "epsilon": "9"},
                                                                hub.origin)), 401, "hub.auth")
    forged = sign_request(admin, "set-budget", {"site": "site-1", "epsilon": "9"}, hub.origin)
    body = json.loads(base64.b64decode(forged["payload"]))
    body["params"]["epsilon"] = "900"
    forged["payload"] = base64.b64encode(canonical_json(body)).decode()
    _error(hub_env.client.post("/v1/budgets", json=forged), 401, "hub.signature")
    for junk in (b"", b"{", b"[]", b'{"payload": 3, "signatures": []}', b"\xff\xfe"):
        r = hub_env.client.post("/v1/budgets", content=junk)
        assert 400 <= r.status_code < 500 and r.json()["error"]["code"].startswith("hub.")
    from forge_secure.hub import db
    with db.read(hub.engine) as conn:
        assert hub.budget(conn, "site-1") == 5.0
