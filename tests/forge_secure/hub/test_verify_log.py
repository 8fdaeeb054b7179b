"""Receipts and `forge hub verify-log`: inclusion of a receipt's entry, consistency of each
new checkpoint with the one saved before; a rewritten, forked or rolled-back log, a tampered
receipt and a substituted hub key are all detected."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from forge_secure.errors import ForgeError
from forge_secure.hub import client, db, merkle


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):  # the log checks do not depend on the database; SQLite keeps them quick
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


def test_receipt_and_consistency_over_time(live_hub, tmp_path):
    env, url = live_hub()
    c = env.consortium
    res = client.push(c.seal("site-1"), url, receipt_out=tmp_path / "r1.json")
    first = client.verify_log(url, receipt=tmp_path / "r1.json")
    assert first["previous"] is None and first["receipt"]["index"] == res["index"]
    for site in ("site-2", "site-1", "site-2"):
        client.push(c.seal(site), url)
        again = client.verify_log(url, receipt=tmp_path / "r1.json")
        assert again["previous"] == first["size"] and again["size"] > first["size"]
        first = again


def _rewrite(env, index: int, change) -> None:
    """The hub operator rewrites entry ``index`` of the history (and its leaf hash)."""
    with db.write(env.hub.engine) as conn:
        body = json.loads(conn.execute(sa.select(db.log_entries.c.body).where(db.log_entries.c.idx == index)).scalar())
        change(body)
        from forge_secure.fileio import canonical_json

        data = canonical_json(body)
        conn.execute(
            db.log_entries.update().where(db.log_entries.c.idx == index).values(body=data.decode(), leaf_hash=merkle.leaf_hash(data).hex())
        )
    env.hub.log.cache = type(env.hub.log.cache)()  # a fresh process would read the rewritten leaves


def test_rewritten_history_detected(live_hub, tmp_path):
    env, url = live_hub()
    c = env.consortium
    client.push(c.seal("site-1"), url, receipt_out=tmp_path / "r.json")
    client.verify_log(url)
    _rewrite(env, 2, lambda b: b.update(site="site-2"))  # the operator hides who submitted
    client.push(c.seal("site-2"), url)
    with pytest.raises(ForgeError) as e:
        client.verify_log(url)
    assert e.value.code == "log.fork"


def test_receipt_no_longer_in_a_forked_log(live_hub, tmp_path):
    env, url = live_hub()
    c = env.consortium
    client.push(c.seal("site-1"), url, receipt_out=tmp_path / "r.json")
    _rewrite(env, 2, lambda b: b.update(sequence=99))
    with pytest.raises(ForgeError) as e:
        client.verify_log(url, receipt=tmp_path / "r.json")
    assert e.value.code == "log.fork"


def test_rolled_back_log_detected(live_hub, tmp_path):
    env, url = live_hub()
    c = env.consortium
    client.push(c.seal("site-1"), url)
    client.push(c.seal("site-1"), url)
    client.verify_log(url)
    with db.write(env.hub.engine) as conn:  # drop the newest entry: an older view of the log
        conn.execute(db.log_entries.delete().where(db.log_entries.c.idx == 3))
        conn.execute(db.submissions.delete().where(db.submissions.c.log_index == 3))
        conn.execute(db.log_head.update().values(size=3))
    env.hub.log.cache = type(env.hub.log.cache)()
    with pytest.raises(ForgeError) as e:
        client.verify_log(url)
    assert e.value.code == "log.rollback"


def test_tampered_receipt_and_other_hub_key(live_hub, tmp_path):
    env, url = live_hub()
    res = client.push(env.consortium.seal("site-1"), url, receipt_out=tmp_path / "r.json")
    receipt = res["receipt"]
    key = env.hub.keys.verifier
    client.verify_receipt(receipt, key)
    forged = dict(receipt, entry=receipt["entry"].replace('"site-1"', '"site-2"'))
    with pytest.raises(ForgeError) as e:
        client.verify_receipt(forged, key)
    assert e.value.code == "log.receipt"
    with pytest.raises(ForgeError) as e:
        client.verify_receipt(dict(receipt, index=receipt["index"] + 1), key)
    assert e.value.code.startswith("log.")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from forge_secure.hub.note import NoteSigner

    other = NoteSigner(key.split("+")[0], Ed25519PrivateKey.generate()).verifier.encode()
    with pytest.raises(ForgeError) as e:
        client.verify_receipt(receipt, other)
    assert e.value.code == "log.key_mismatch"
    with pytest.raises(ForgeError) as e:
        client.verify_log(url, hub_key=other)
    assert e.value.code == "log.key_mismatch"


def _lying_log(monkeypatch, change) -> None:
    """The hub (holding its log key, so its receipts verify) logs and signs a submission entry
    changed by ``change`` instead of the one it verified."""
    from forge_secure.hub import log as logmod

    honest = logmod.append

    def append(conn, kind, body, now):
        if kind == "submission":
            body = dict(body)
            change(body)
        return honest(conn, kind, body, now)

    monkeypatch.setattr(logmod, "append", append)


@pytest.mark.parametrize("field", ["payload_sha256", "envelope_sha256", "size", "submission_id", "all-of-another-bundle"])
def test_receipt_naming_other_bytes_refused_by_the_pusher(live_hub, tmp_path, monkeypatch, field):
    """A receipt whose entry names another bundle than the one sent -- by its signed payload
    digest, its envelope, its size or its id, or wholly another bundle's name -- is refused,
    though its signature and inclusion proof verify; nothing is saved as the receipt."""
    env, url = live_hub()
    c = env.consortium
    other = c.seal("site-2")
    from forge_secure.hub.naming import name_of

    with open(other, "rb") as f:
        theirs = name_of(f)

    def change(body):
        if field == "all-of-another-bundle":
            body.update({k: getattr(theirs, k) for k in theirs.FIELDS})
        else:
            body[field] = {"size": body["size"] - 1, "submission_id": theirs.submission_id}.get(field, "ab" * 32)

    _lying_log(monkeypatch, change)
    with pytest.raises(ForgeError) as e:
        client.push(c.seal("site-1"), url, receipt_out=tmp_path / "r.json")
    assert e.value.code == "log.receipt" and "other bytes" in e.value.message
    assert not (tmp_path / "r.json").exists()


def test_pull_refuses_bytes_stored_under_a_lying_address(live_hub, tmp_path, monkeypatch):
    """The hub logs a submission under the content address of another bundle it holds (a valid
    bundle of another site) and serves that bundle for it: its sha256 matches the logged
    address, but not the signed payload digest and envelope the entry names, so pull refuses it."""
    from forge_secure.hub import store

    env, url = live_hub()
    c = env.consortium
    decoy = client.push(c.seal("site-2"), url)["entry"]["bundle_sha256"]
    monkeypatch.setattr(store.Incoming, "sha256", property(lambda self: decoy))
    res = client.push(c.seal("site-1"), url)  # the receipt names the bundle sent by its signed digests
    assert res["entry"]["bundle_sha256"] == decoy
    monkeypatch.undo()
    with pytest.raises(ForgeError) as e:
        client.pull(url, tmp_path / "inbox", site="site-1")
    assert e.value.code == "hub.digest"
    assert not list((tmp_path / "inbox").glob("*.forge"))


@pytest.mark.parametrize("lie", [False, True])
def test_receipt_of_a_hub_that_names_only_the_file_digest(live_hub, tmp_path, monkeypatch, lie):
    """An entry without payload and envelope digests (a hub from before they were logged) is
    checked by the sha256 of the whole file, as before: accepted when it names the bytes sent,
    refused when it names others."""
    env, url = live_hub()

    def change(body):
        del body["payload_sha256"], body["envelope_sha256"]
        if lie:
            body["bundle_sha256"] = "ab" * 32

    _lying_log(monkeypatch, change)
    bundle = env.consortium.seal("site-1")
    if lie:
        with pytest.raises(ForgeError) as e:
            client.push(bundle, url)
        assert e.value.code == "log.receipt" and "bundle_sha256" in e.value.message
    else:
        import hashlib

        assert client.push(bundle, url)["entry"]["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
