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
    _error(
        hub_env.client.post("/v1/budgets", json=sign_request(site_key, "set-budget", {"site": "site-1", "epsilon": "99"}, hub.origin)),
        403,
        "hub.forbidden",
    )
    _error(
        hub_env.client.post(
            "/v1/budgets", json=sign_request(admin, "set-budget", {"site": "site-1", "epsilon": "9"}, hub.origin, now=hub.now() - 3600)
        ),
        401,
        "hub.stale",
    )
    _error(
        hub_env.client.post("/v1/budgets", json=sign_request(admin, "set-budget", {"site": "site-1", "epsilon": "9"}, "another-hub/x")),
        401,
        "hub.auth",
    )
    _error(
        hub_env.client.post("/v1/budgets", json=sign_request(admin, "publish", {"site": "site-1", "epsilon": "9"}, hub.origin)),
        401,
        "hub.auth",
    )
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


# --------------------------------------------------------------------------- homomorphic Fusion


def _ffa_plugin(out, *, site: str, seed: int, sigma=1.1, q=0.25, steps=40, delta=1e-5):
    """A real FFA-LoRA PEFT plugin (seeded tensors) whose forge.json carries a training run's DP
    record as 'forge train' writes it, with the run's randomness commitment."""
    import secrets

    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from forge_secure.plugins.bases import fresh_copy, load_base
    from forge_secure.plugins.plugin import new_meta, save_plugin
    from forge_secure.privacy.train import randomness_record

    base = load_base("tabular-mlp")
    model = get_peft_model(fresh_copy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "fc2"], init_lora_weights=False))
    state = get_peft_model_state_dict(model)
    g, ga = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(1234)
    set_peft_model_state_dict(
        model, {k: torch.randn(v.shape, generator=ga if ".lora_A." in k else g) * 0.3 for k, v in sorted(state.items())}
    )
    history = [[sigma, q, steps]]
    dp = {
        "enabled": True,
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": steps,
        "max_grad_norm": 1.0,
        "accountant": "prv",
        "epsilon": compute_epsilon(history, delta, "prv"),
        "delta": delta,
        "history": history,
        "sampling": "poisson",
        "randomness": randomness_record(secrets.token_bytes(32), supplied=False),
    }
    meta = new_meta(
        site=site,
        base=base,
        dp=dp,
        lora={"rank": 4, "alpha": 8, "targets": ["fc1", "fc2"], "ffa": True, "ffa_seed": 1234, "dropout": 0.0},
        training={"epochs": 1, "batch_size": 16, "lr": 0.1, "optimizer": "sgd", "seed": seed},
        data={"name": f"bundled:{site}", "kind": "tabular", "rows": 40, "n_classes": 2},
    )
    return save_plugin(model, meta, out)


@pytest.fixture(scope="module")
def he_keys(tmp_path_factory):
    from forge_secure.merge.he import keygen

    return keygen(tmp_path_factory.mktemp("he") / "keys")


def test_ckks_contribution_of_a_pushed_plugin_is_counted_once(hub_factory, he_keys, tmp_path):
    """The demo's cycle: a site pushes its plugin, then its CKKS contribution (weight x B of the
    same plugin, encrypted) for homomorphic Fusion. Both carry the same training run's DP record;
    the contribution is post-processing of that one release, so the site's consortium spend is
    that run's epsilon, not the composition of it with itself."""
    from forge_secure.merge.he import encrypt_plugin

    delta = 1e-5
    one = compute_epsilon([(1.1, 0.25, 40)], delta, "prv")
    twice = compute_epsilon([(1.1, 0.25, 40)] * 2, delta, "prv")
    env = hub_factory(budgets={"site-1": one * 1.05}, ledger_delta=delta)  # room for one run, not two
    c = env.consortium
    plugin = _ffa_plugin(tmp_path / "p1", site="site-1", seed=1)
    contribution = encrypt_plugin(plugin, he_keys.path / "public.ctx", tmp_path / "p1-ckks").path
    assert json.loads((contribution / "forge.json").read_text())["dp"] == json.loads((plugin / "forge.json").read_text())["dp"]

    first = env.push(c.seal("site-1", plugin=plugin))
    assert first.status_code == 200, first.text
    second = env.push(c.seal("site-1", plugin=contribution))
    assert second.status_code == 200, second.text  # was: budget.exceeded, the run counted twice
    led = json.loads(second.json()["entry"])["ledger"]
    assert float(led["spent_before"]) == pytest.approx(one, rel=1e-9)
    assert float(led["spent_after"]) == pytest.approx(one, rel=1e-9)
    site = {x["site"]: x for x in env.client.get("/v1/ledger").json()["sites"]}["site-1"]
    assert [p["spent"] for p in site["entries"]] == pytest.approx([one, one], rel=1e-9)
    assert site["spent"] == pytest.approx(one, rel=1e-9) and twice > one * 1.05

    # a second training run (its own randomness) is new spending: composed, and here refused
    other = _ffa_plugin(tmp_path / "p2", site="site-1", seed=2)
    before = env.state()
    _error(env.push(c.seal("site-1", plugin=other)), 409, "budget.exceeded")
    assert env.state() == before


def test_same_run_with_another_dp_record_is_refused(hub_factory, tmp_path):
    """A bundle naming a training run already in the ledger with a different record is
    inconsistent (one run has one accountant history): refused, nothing stored, whether or
    not the site has a budget."""
    env = hub_factory()
    c = env.consortium
    plugin = _ffa_plugin(tmp_path / "p1", site="site-1", seed=1)
    assert env.push(c.seal("site-1", plugin=plugin)).status_code == 200
    meta = json.loads((plugin / "forge.json").read_text())
    meta["dp"]["history"] = [[1.1, 0.25, 20]]  # fewer steps under the same run's commitment
    meta["dp"]["steps"] = 20
    meta["dp"]["epsilon"] = compute_epsilon([(1.1, 0.25, 20)], 1e-5, "prv")
    (plugin / "forge.json").write_text(json.dumps(meta))
    before = env.state()
    err = _error(env.push(c.seal("site-1", plugin=plugin)), 409, "hub.dp_conflict")
    assert "training run" in err["message"]
    assert env.state() == before
    # another site may not borrow the run either: its own ledger has nothing of it, so it counts there
    other = _ffa_plugin(tmp_path / "p3", site="site-2", seed=3)
    assert env.push(c.seal("site-2", plugin=other)).status_code == 200
