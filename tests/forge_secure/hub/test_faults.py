"""Faults against real hub processes (``forge hub serve``), on SQLite and PostgreSQL:
concurrent clients, a SIGKILL in the middle of an upload, two hub processes on one
PostgreSQL database. Every valid push is accepted exactly once and is in the log."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from forge_secure.hub import client, db


def _sites(n: int) -> tuple[str, ...]:
    return tuple(f"site-{i}" for i in range(1, n + 1))


def _seal_all(c, per_site: int) -> dict[str, list[Path]]:
    # plugins without DP (no budget is set here): the hub then never loads the accountant
    return {site: [c.seal(site, dp=False) for _ in range(per_site)] for site in c.sites}


def _push_concurrently(urls: list[str], bundles: dict[str, list[Path]]) -> list[dict]:
    """One client thread per site, each pushing its bundles in order, spread over ``urls``."""
    results, errors = [], []
    lock = threading.Lock()

    def run(k: int, site: str):
        for j, b in enumerate(bundles[site]):
            try:
                r = client.push(b, urls[(k + j) % len(urls)])
                with lock:
                    results.append(r)
            except Exception as e:  # pragma: no cover - reported below
                with lock:
                    errors.append((site, j, repr(e)))

    with ThreadPoolExecutor(len(bundles)) as pool:
        list(pool.map(lambda a: run(*a), enumerate(sorted(bundles))))
    assert not errors, errors[:5]
    return results


def _check_log(url: str, bundles: dict[str, list[Path]], results: list[dict]) -> None:
    from forge_secure.fileio import sha256_file

    expected = {sha256_file(b) for bs in bundles.values() for b in bs}
    entries = []
    start = 0
    while True:
        page = httpx.get(f"{url}/v1/log/entries", params={"start": start, "limit": 1000}).json()["entries"]
        if not page:
            break
        entries += page
        start += len(page)
    assert [e["index"] for e in entries] == list(range(len(entries)))  # dense: no lost or doubled index
    logged = [e["bundle_sha256"] for e in entries if e["kind"] == "submission"]
    assert len(logged) == len(set(logged)) == len(expected) and set(logged) == expected  # each once
    assert sorted(r["index"] for r in results) == sorted(e["index"] for e in entries if e["kind"] == "submission")
    client.verify_log(url)  # the checkpoint is signed and consistent with the receipts' ones
    for r in results[:: max(1, len(results) // 10)]:
        client.check_consistency(
            url,
            client.verify_receipt(r["receipt"], r["receipt"]["hub_key"])["checkpoint"],
            client.fetch_checkpoint(url, client.pinned(url)),
        )


def _concurrent(kit, tmp_path, db_url, per_site):
    c = kit.build_consortium(tmp_path / "c", sites=_sites(8))
    bundles = _seal_all(c, per_site)
    proc, url = kit.start_hub_process(tmp_path, roster=c.roster, db=db_url, store=tmp_path / "store", keys=tmp_path / "keys")
    try:
        results = _push_concurrently([url], bundles)
        _check_log(url, bundles, results)
    finally:
        proc.kill()
        proc.wait()


def test_eight_concurrent_clients(hubkit, tmp_path, db_url):
    _concurrent(hubkit, tmp_path, db_url, per_site=5)


@pytest.mark.slow
def test_eight_concurrent_clients_fifty_bundles_each(hubkit, tmp_path, db_url):
    _concurrent(hubkit, tmp_path, db_url, per_site=50)


def _big_plugin(c, site: str):
    return c.plugin(site, rows=1 << 15, dp=False)  # ~1 MiB of weights: the upload takes many packets


def test_sigkill_mid_upload_then_retry(hubkit, tmp_path, db_url):
    c = hubkit.build_consortium(tmp_path / "c")
    bundle = c.seal("site-1", plugin=_big_plugin(c, "site-1"))
    data = bundle.read_bytes()
    proc, url = hubkit.start_hub_process(tmp_path, roster=c.roster, db=db_url, store=tmp_path / "store", keys=tmp_path / "keys")
    port = int(url.rsplit(":", 1)[1])
    before = httpx.get(f"{url}/v1/info").json()["log_size"]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST /v1/push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data[: len(data) // 2]
    )
    import time

    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    sock.close()
    proc, url = hubkit.start_hub_process(tmp_path, roster=None, db=db_url, store=tmp_path / "store", keys=tmp_path / "keys", port=port)
    try:
        assert httpx.get(f"{url}/v1/info").json()["log_size"] == before  # no partial record
        assert httpx.get(f"{url}/v1/submissions").json()["submissions"] == []
        assert list((tmp_path / "store" / "incoming").iterdir()) == []  # the killed upload's partial file: swept at start-up
        assert not list((tmp_path / "store" / "sha256").rglob("*.*")) and all(
            p.stat().st_size != len(data) for p in (tmp_path / "store" / "sha256").rglob("*") if p.is_file()
        )
        res = client.push(bundle, url)  # the client's retry
        assert res["entry"]["site"] == "site-1"
        with pytest.raises(client.HubError) as e:
            client.push(bundle, url)
        assert e.value.code == "bundle.replay"
        subs = httpx.get(f"{url}/v1/submissions").json()["submissions"]
        assert len(subs) == 1
        client.verify_log(url)
    finally:
        proc.kill()
        proc.wait()


def test_two_hub_processes_on_one_postgresql(hubkit, tmp_path, postgres_server):
    url_db = postgres_server()
    c = hubkit.build_consortium(tmp_path / "c", sites=_sites(4))
    bundles = _seal_all(c, 4)
    common = dict(db=url_db, store=tmp_path / "store", keys=tmp_path / "keys")
    p1, u1 = hubkit.start_hub_process(tmp_path / "a", roster=c.roster, **common)
    p2, u2 = hubkit.start_hub_process(tmp_path / "b", roster=c.roster, **common)
    try:
        results = _push_concurrently([u1, u2], bundles)
        _check_log(u1, bundles, results)
        assert httpx.get(f"{u1}/v1/log/checkpoint").text == httpx.get(f"{u2}/v1/log/checkpoint").text
        engine = db.make_engine(url_db)
        with db.read(engine) as conn:
            rows = conn.execute(sa.select(db.log_entries.c.idx, db.log_entries.c.body)).all()
        engine.dispose()
        assert len({json.loads(b).get("bundle_sha256") for _, b in rows if "bundle_sha256" in b}) == 16
    finally:
        for p in (p1, p2):
            p.kill()
            p.wait()
