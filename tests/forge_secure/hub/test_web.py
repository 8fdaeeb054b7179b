"""The hub's read-only web page, rendered by a real headless Chromium (Debian's package)."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from forge_secure.hub import client, client_release

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


def _chromium(args, tmp):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_page_in_headless_chromium(live_hub, tmp_path):
    from PIL import Image

    env, url = live_hub(budgets={"site-1": 40.0})
    c = env.consortium
    for site in ("site-1", "site-2", "site-1"):
        client.push(c.seal(site), url)
    client.pull(url, tmp_path / "inbox")
    report = tmp_path / "report.json"
    report.write_text('{"verdict": "pass"}')
    client_release.publish(
        url, c.plugin("site-1", seed=5), c.keys["admin-1"].signing, pulled=tmp_path / "inbox" / "pulled.json", audit=report
    )
    subs = httpx.get(f"{url}/v1/submissions").json()["submissions"]
    dom = _chromium(["--dump-dom", url + "/"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "forge-secure hub: medforge" in html
    assert html.count('class="release"') == 1 and 'href="/audit/1"' in html
    assert html.count('class="submission"') == 3 and all(s["submission_id"] in html for s in subs)
    assert html.count("<svg") >= 2 and "budget 40" in html  # one plot per site, the budget line labelled
    cp = httpx.get(f"{url}/v1/log/checkpoint").text
    assert cp.splitlines()[0] in html and cp.splitlines()[2] in html  # the latest checkpoint
    assert "ciphertext" not in html.lower() and ".forge" not in html  # metadata only
    shot = tmp_path / "hub.png"  # kept in the test's tmp_path for inspection
    res = _chromium([f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars", url + "/"], tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    colours = {img.getpixel((x, y)) for x in range(0, img.width, 13) for y in range(0, img.height, 13)}
    assert len(colours) > 20  # text, tables and plots were drawn, not a blank page


def test_page_of_an_empty_hub(hub_factory):
    env = hub_factory()
    page = env.client.get("/").text
    assert "No version published yet" in page and "No submission accepted yet" in page and "No ledger entry yet" in page
    assert env.client.get("/audit/1").json()["error"]["code"] == "hub.not_found"
