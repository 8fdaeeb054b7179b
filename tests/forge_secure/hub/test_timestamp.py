"""The signed timestamp the hub serves (GET /v1/timestamp, `forge hub timestamp`): issued by
the hub's timestamp key for its current roster, re-issued after half its lifetime or a roster
change, and refused by the verifier when expired or when it names another roster."""

from __future__ import annotations

import json
import shutil

import pytest

from forge_secure.crypto import BundleError, load_signing_key, new_keys, read_roster, revoke_key, sign_roster, verify
from forge_secure.crypto.roster import add_timestamp_key
from forge_secure.crypto.timestamp import timestamp_from_bytes, verify_timestamp

HOUR = 3600


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


class Clock:
    def __init__(self):
        import time

        self.t = float(int(time.time()))

    def __call__(self):
        return self.t


@pytest.fixture
def ts_keys(tmp_path):
    return new_keys("hub-timestamps", tmp_path / "hub-ts")


def _admin_edit(c, edit) -> None:
    """An admin edits the roster file (a new version) and signs it."""
    edit(c.roster)
    sign_roster(c.roster, load_signing_key(c.keys["admin-1"].signing))


def _list_key(env, ts_keys):
    _admin_edit(env.consortium, lambda r: add_timestamp_key(r, ts_keys.public_key))
    env.hub.update_roster(read_roster(env.consortium.roster))
    return read_roster(env.consortium.roster)


def _get(env):
    res = env.client.get("/v1/timestamp")
    return res, (timestamp_from_bytes(res.content, "served") if res.status_code == 200 else None)


def test_no_key_or_unlisted_key_is_a_clean_404(hub_factory, ts_keys):
    env = hub_factory()
    res, _ = _get(env)
    assert res.status_code == 404 and res.json()["error"]["code"] == "hub.no_timestamp"
    assert "--timestamp-key" in res.json()["error"]["fix"]
    env = hub_factory(timestamp_key=load_signing_key(ts_keys.signing))
    res, _ = _get(env)
    assert res.status_code == 404 and res.json()["error"]["code"] == "hub.timestamp_unlisted"
    assert "forge roster add --timestamp-key" in res.json()["error"]["fix"]


def test_served_timestamp_verifies_and_is_reissued_after_half_its_lifetime(hub_factory, ts_keys):
    clock = Clock()
    env = hub_factory(timestamp_key=load_signing_key(ts_keys.signing), timestamp_lifetime=2 * HOUR, clock=clock)
    roster = _list_key(env, ts_keys)
    res, ts = _get(env)
    assert res.status_code == 200
    assert (ts.consortium, ts.roster_version, ts.roster_sha256) == ("medforge", roster.version, roster.digest)
    assert ts.issued == int(clock.t) and ts.expires == ts.issued + 2 * HOUR
    assert list(ts.signatures) == [ts_keys.public_key.key_id]
    verify_timestamp(ts, roster, now=int(clock.t))

    clock.t += HOUR - 1  # within half its lifetime: the same timestamp
    assert _get(env)[1] == ts and _get(env)[1].issued == ts.issued
    clock.t += 2  # older than half its lifetime: a new one
    again = _get(env)[1]
    assert again.issued == int(clock.t) and again.expires == again.issued + 2 * HOUR
    verify_timestamp(again, roster, now=int(clock.t))

    # the verifier refuses it once expired: a site kept from the hub notices within the lifetime
    with pytest.raises(BundleError) as e:
        verify_timestamp(again, roster, now=again.expires + 1)
    assert e.value.code == "timestamp.expired"


def test_roster_change_reissues_and_old_rosters_are_refused(hub_factory, ts_keys, tmp_path):
    """A freeze attack: a site kept on the roster that still lists a revoked key. The hub's
    timestamp names the new roster at once; with it, the old roster is refused (and the
    timestamp for the old roster does not pass for the new one)."""
    clock = Clock()
    env = hub_factory(timestamp_key=load_signing_key(ts_keys.signing), clock=clock)
    c = env.consortium
    bundle = c.seal("site-2")  # sealed while site-2's key was good
    old = _list_key(env, ts_keys)
    old_file = tmp_path / "old-roster.json"
    shutil.copy(c.roster, old_file)
    _, before = _get(env)
    verify_timestamp(before, old, now=int(clock.t))

    clock.t += 60
    _admin_edit(c, lambda r: revoke_key(r, c.keys["site-2"].public_key.key_id, reason="key stolen"))
    env.hub.update_roster(read_roster(c.roster))
    new = read_roster(c.roster)
    _, after = _get(env)  # re-issued at once, though the first is far from half its lifetime
    assert after.roster_version == new.version == old.version + 1 and after.issued == int(clock.t)
    verify_timestamp(after, new, now=int(clock.t))

    for ts, roster in ((after, old), (before, new)):
        with pytest.raises(BundleError) as e:
            verify_timestamp(ts, roster, now=int(clock.t))
        assert e.value.code == "timestamp.stale_roster"

    # the frozen site: a fresh machine pinned to the old roster, given the hub's timestamp
    ts_file = tmp_path / "ts.json"
    ts_file.write_text(json.dumps(after.to_document()))
    site_state = tmp_path / "frozen-site"
    verify(bundle, old_file, state_dir=site_state, root=old_file, now=int(clock.t))  # without a timestamp: fooled
    with pytest.raises(BundleError) as e:
        verify(bundle, old_file, state_dir=site_state, root=old_file, now=int(clock.t), timestamp=ts_file)
    assert e.value.code == "timestamp.stale_roster"


def test_a_stored_timestamp_is_shared_by_hub_processes(hub_factory, ts_keys, consortium):
    """Two hub processes on one database serve the same timestamp (state lives in the database)."""
    clock = Clock()
    env = hub_factory(timestamp_key=load_signing_key(ts_keys.signing), clock=clock)
    _list_key(env, ts_keys)
    first = _get(env)[1]
    from forge_secure.hub.service import Hub

    sibling = Hub(env.hub.config)  # same database, store and keys: another process of the deployment
    try:
        from forge_secure.hub import freshness

        clock.t += 30
        assert timestamp_from_bytes(json.dumps(freshness.current(sibling)).encode(), "sibling") == first
    finally:
        sibling.engine.dispose()


def test_cli_fetches_checks_and_writes(live_hub, forge_inproc, ts_keys, tmp_path):
    env, url = live_hub(timestamp_key=load_signing_key(ts_keys.signing))
    c = env.consortium
    old_file = tmp_path / "old-roster.json"
    shutil.copy(c.roster, old_file)
    # no timestamp key in the roster yet: the hub's refusal, one clean line, exit 2
    res = forge_inproc("hub", "timestamp", "--hub", url, "--out", tmp_path / "ts.json")
    assert res.code == 2 and "(hub.timestamp_unlisted)" in res.err and "Traceback" not in res.err, res
    assert not (tmp_path / "ts.json").exists()
    roster = _list_key(env, ts_keys)

    res = forge_inproc("hub", "timestamp", "--hub", url, "--out", tmp_path / "ts.json", "--json")
    assert res.code == 0, res
    out = json.loads(res.out)
    assert out["roster_version"] == roster.version and out["out"] == str(tmp_path / "ts.json")
    ts = verify_timestamp(timestamp_from_bytes((tmp_path / "ts.json").read_bytes()), roster)
    res = forge_inproc("verify", c.seal("site-1"), "--roster", c.roster, "--timestamp", tmp_path / "ts.json")
    assert res.code == 0, res

    # checked against an older roster: refused, nothing written (this machine has trusted the newer
    # one, so it is a rollback; a machine that never saw it gets timestamp.stale_roster, see above)
    res = forge_inproc("hub", "timestamp", "--hub", url, "--out", tmp_path / "ts2.json", "--roster", old_file)
    assert res.code == 2 and "(roster.rollback)" in res.err, res
    assert not (tmp_path / "ts2.json").exists()
    assert ts.roster_version == roster.version


def test_forge_hub_serve_with_a_timestamp_key(hubkit, tmp_path, ts_keys):
    """`forge hub serve --timestamp-key KEY --timestamp-lifetime 2h`, roster listing the key."""
    import httpx

    c = hubkit.build_consortium(tmp_path / "c")
    _admin_edit(c, lambda r: add_timestamp_key(r, ts_keys.public_key))
    proc, url = hubkit.start_hub_process(
        tmp_path,
        roster=c.roster,
        db=f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        store=tmp_path / "store",
        keys=tmp_path / "keys",
        extra=["--timestamp-key", str(ts_keys.signing), "--timestamp-lifetime", "2h"],
    )
    try:
        ts = timestamp_from_bytes(httpx.get(f"{url}/v1/timestamp").content, "served")
        assert ts.expires - ts.issued == 2 * HOUR
        verify_timestamp(ts, read_roster(c.roster))
    finally:
        proc.kill()
        proc.wait()
