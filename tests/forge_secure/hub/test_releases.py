"""Releases: publish (signed by a roster admin, lineage to accepted submissions, audit report)
and fetch through TUF; rollback, freeze and mix-and-match of the release metadata are refused,
and so is a release not signed by an admin of the site's own roster."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from forge_secure.crypto import init_roster, load_signing_key, sign_roster
from forge_secure.errors import ForgeError
from forge_secure.hub import client, client_release
from forge_secure.hub.auth import sign_request


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


def _published(env, url, tmp_path, n=1, audit=True):
    c = env.consortium
    for site in ("site-1", "site-2"):
        client.push(c.seal(site), url)
    pulled = client.pull(url, tmp_path / "inbox")
    report = tmp_path / "report.html"
    report.write_text("<html><body><h1>audit: pass</h1></body></html>")
    out = []
    for v in range(n):
        out.append(
            client_release.publish(
                url,
                c.plugin("site-1", seed=10 + v),
                c.keys["admin-1"].signing,
                pulled=tmp_path / "inbox" / "pulled.json",
                audit=report if audit else None,
                notes=f"version {v + 1}",
            )
        )
    return pulled, out


def test_publish_and_fetch_with_lineage(live_hub, tmp_path):
    env, url = live_hub()
    pulled, (res,) = _published(env, url, tmp_path)
    assert res["version"] == 1 and "releases/1/audit.html" in res["targets"]
    got = client_release.fetch(url, 1, tmp_path / "v1", env.consortium.roster)
    assert {x["submission_id"] for x in got["lineage"]} == {s["submission_id"] for s in pulled["submissions"]}
    src = env.consortium.plugin("site-1", seed=10)
    assert (tmp_path / "v1" / "adapter_model.safetensors").read_bytes() == (src / "adapter_model.safetensors").read_bytes()
    assert httpx.get(f"{url}/audit/1").text.startswith("<html>")
    entries = httpx.get(f"{url}/v1/log/entries").json()["entries"]
    release = [e for e in entries if e["kind"] == "release"][0]
    assert release["lineage"] == got["lineage"] and release["audit"]["sha256"] == got["audit"]["sha256"]
    with pytest.raises(ForgeError) as e:
        client_release.fetch(url, 2, tmp_path / "v2", env.consortium.roster)
    assert e.value.code == "hub.no_release"


def test_publish_refusals(live_hub, tmp_path):
    env, url = live_hub()
    c = env.consortium
    _published(env, url, tmp_path)
    origin = env.hub.origin
    releases = httpx.get(f"{url}/v1/releases").json()["releases"]
    params = {"version": 2, "plugin": releases[0]["plugin"], "audit": None, "lineage": releases[0]["lineage"], "notes": ""}

    def post(key, p):
        return httpx.post(f"{url}/v1/releases", json=sign_request(load_signing_key(c.keys[key].signing), "publish", p, origin))

    assert post("site-1", params).json()["error"]["code"] == "hub.forbidden"
    assert post("admin-1", {**params, "version": 3}).json()["error"]["code"] == "hub.version"
    assert post("admin-1", {**params, "lineage": [{"submission_id": "0" * 32}]}).json()["error"]["code"] == "hub.lineage"
    assert post("admin-1", {**params, "plugin": {"sha256": "ab" * 32, "size": 3}}).json()["error"]["code"] == "hub.missing_blob"
    req = sign_request(load_signing_key(c.keys["admin-1"].signing), "blob", {"sha256": "ab" * 32, "size": 5}, origin)
    import base64

    from forge_secure.fileio import canonical_json

    r = httpx.post(f"{url}/v1/blobs", content=b"hello", headers={"forge-request": base64.b64encode(canonical_json(req)).decode()})
    assert r.status_code == 400 and r.json()["error"]["code"] == "hub.digest"
    r = httpx.post(f"{url}/v1/blobs", content=b"hello", headers={"forge-request": "%%%"})
    assert r.status_code == 401
    before = env.state()
    site_req = sign_request(load_signing_key(c.keys["site-1"].signing), "blob", {"sha256": "ab" * 32, "size": 5}, origin)
    r = httpx.post(f"{url}/v1/blobs", content=b"hello", headers={"forge-request": base64.b64encode(canonical_json(site_req)).decode()})
    assert r.status_code == 403 and r.json()["error"]["code"] == "hub.forbidden"  # refused before the body is stored
    assert env.state() == before
    assert post("admin-1", params).status_code == 200


def test_release_signed_by_a_foreign_admin_is_refused(live_hub, tmp_path):
    env, url = live_hub()
    _published(env, url, tmp_path)
    c = env.consortium
    other = tmp_path / "other-roster.json"
    init_roster(other, "elsewhere", [c.keys["stranger"].public_key], expires=int(time.time()) + 86400)
    sign_roster(other, load_signing_key(c.keys["stranger"].signing))
    with pytest.raises(ForgeError) as e:
        client_release.fetch(url, 1, tmp_path / "v1", other)
    assert e.value.code == "hub.release_signature"
    assert not (tmp_path / "v1").exists()


def _versions(url):
    ts = json.loads(httpx.get(f"{url}/tuf/metadata/timestamp.json").content)["signed"]
    return ts["version"], ts["meta"]["snapshot.json"]["version"]


def test_tuf_rollback_and_mix_and_match_refused(live_hub, make_proxy, tmp_path, monkeypatch):
    env, url = live_hub()
    _published(env, url, tmp_path)
    proxy = make_proxy(url)
    try:
        _, snap1 = _versions(url)
        old = proxy.snapshot("timestamp.json", f"{snap1}.snapshot.json", f"{snap1}.targets.json")
        c = env.consortium
        client_release.publish(url, c.plugin("site-1", seed=11), c.keys["admin-1"].signing, pulled=tmp_path / "inbox" / "pulled.json")
        assert client_release.fetch(proxy.url, 2, tmp_path / "v2", c.roster)["version"] == 2  # the site saw version 2
        # rollback: the old timestamp (valid signature, not expired) is served again
        proxy.overrides = {"/tuf/metadata/timestamp.json": old["/tuf/metadata/timestamp.json"]}
        with pytest.raises(ForgeError) as e:
            client_release.fetch(proxy.url, 2, tmp_path / "v2b", c.roster)
        assert e.value.code == "tuf.rollback"
        # mix and match, to a site that has no cached metadata yet: the current timestamp and
        # snapshot with the previous targets metadata
        monkeypatch.setenv("FORGE_HOME", str(tmp_path / "new-site-home"))
        from forge_secure.crypto import pin_root

        pin_root(c.roster)  # a new site pins the consortium's root once, obtained out of band
        _, snap2 = _versions(url)
        proxy.overrides = {f"/tuf/metadata/{snap2}.targets.json": old[f"/tuf/metadata/{snap1}.targets.json"]}
        with pytest.raises(ForgeError) as e:
            client_release.fetch(proxy.url, 2, tmp_path / "v2c", c.roster)
        assert e.value.code.startswith("tuf.")
        assert not (tmp_path / "v2b").exists() and not (tmp_path / "v2c").exists()
    finally:
        proxy.server.stop()


def test_tuf_freeze_refused(live_hub, make_proxy, tmp_path):
    env, url = live_hub(tuf_lifetimes={"timestamp": 2})
    _published(env, url, tmp_path)
    proxy = make_proxy(url)
    try:
        frozen = proxy.snapshot("timestamp.json")
        time.sleep(2.5)  # the frozen timestamp expires; the live hub re-signs its own
        assert client_release.fetch(url, 1, tmp_path / "live", env.consortium.roster)["version"] == 1
        proxy.overrides = frozen
        with pytest.raises(ForgeError) as e:
            client_release.fetch(proxy.url, 1, tmp_path / "frozen", env.consortium.roster)
        assert e.value.code == "tuf.expired"
    finally:
        proxy.server.stop()
