"""`forge push` and `forge hub ...` through the real entry point: results, --json, and the
hub's refusals printed as one clean line with the hub's own code and fix (exit 2)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


def _clean(res, code: str) -> None:
    assert res.code == 2, res
    assert "Traceback" not in res.err + res.out
    assert f"({code})" in res.err, res


def test_push_verify_pull_publish_fetch(live_hub, forge_inproc, tmp_path):
    env, url = live_hub()
    c = env.consortium
    bundle = c.seal("site-1")
    res = forge_inproc("push", bundle, "--hub", url, "--receipt", tmp_path / "r.json", "--json")
    assert res.code == 0, res
    out = json.loads(res.out)
    assert out["entry"]["site"] == "site-1" and (tmp_path / "r.json").is_file()
    res = forge_inproc("hub", "verify-log", "--hub", url, "--receipt", tmp_path / "r.json")
    assert res.code == 0 and "is in the log" in res.out, res
    # the same bundle again: the hub's refusal, with its code and fix, on one line
    res = forge_inproc("push", bundle, "--hub", url)
    _clean(res, "bundle.replay")
    assert "already accepted" in res.err
    res = forge_inproc("push", bundle, "--hub", url, "--json")
    assert res.code == 2 and json.loads(res.out)["error"]["code"] == "bundle.replay"
    res = forge_inproc("hub", "pull", "--hub", url, "--out", tmp_path / "inbox")
    assert res.code == 0 and (tmp_path / "inbox" / "pulled.json").is_file(), res
    res = forge_inproc(
        "hub",
        "publish",
        "--hub",
        url,
        "--plugin",
        c.plugin("site-1"),
        "--key",
        c.keys["admin-1"].signing,
        "--pulled",
        tmp_path / "inbox" / "pulled.json",
    )
    assert res.code == 0 and "release published" in res.out, res
    res = forge_inproc("hub", "fetch", "1", "--hub", url, "--out", tmp_path / "v1", "--roster", c.roster, "--json")
    assert res.code == 0 and json.loads(res.out)["version"] == 1, res
    _clean(forge_inproc("hub", "fetch", "1", "--hub", url, "--out", tmp_path / "v1", "--roster", c.roster), "file.exists")
    _clean(
        forge_inproc(
            "hub",
            "publish",
            "--hub",
            url,
            "--plugin",
            c.plugin("site-1"),
            "--key",
            c.keys["site-1"].signing,
            "--pulled",
            tmp_path / "inbox" / "pulled.json",
        ),
        "hub.forbidden",
    )
    res = forge_inproc("hub", "budget", "--hub", url, "--site", "site-1", "--epsilon", "4", "--key", c.keys["admin-1"].signing)
    assert res.code == 0, res
    res = forge_inproc("hub", "info", "--hub", url, "--json")
    assert json.loads(res.out)["consortium"] == "medforge"


def test_bad_inputs(live_hub, forge_inproc, tmp_path):
    env, url = live_hub()
    bundle = env.consortium.seal("site-1")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.forge"
    bad.write_bytes(bytes(data))
    res = forge_inproc("push", bad, "--hub", url)
    assert res.code == 2 and "(bundle." in res.err and "Traceback" not in res.err, res
    _clean(forge_inproc("push", tmp_path / "missing.forge", "--hub", url), "file.missing")
    _clean(forge_inproc("push", bundle, "--hub", "ftp://x"), "hub.url")
    _clean(forge_inproc("push", bundle, "--hub", "http://127.0.0.1:9"), "hub.unreachable")
    (tmp_path / "junk.json").write_text("{not json")
    _clean(forge_inproc("hub", "verify-log", "--hub", url, "--receipt", tmp_path / "junk.json"), "log.receipt")
    _clean(forge_inproc("push", bundle, "--hub", url, "--hub-key", "nope"), "log.key_mismatch")


def test_serve_refuses_a_public_plain_http_address(forge_inproc, tmp_path, consortium):
    res = forge_inproc(
        "hub",
        "serve",
        "--host",
        "0.0.0.0",
        "--store",
        tmp_path / "s",
        "--key-dir",
        tmp_path / "k",
        "--db",
        f"sqlite:///{tmp_path / 'h.db'}",
        "--roster",
        consortium.roster,
    )
    _clean(res, "hub.insecure")
