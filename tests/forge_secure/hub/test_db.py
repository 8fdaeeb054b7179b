"""The hub's schema comes from its Alembic migrations (idempotent, safe to run from two
processes) and matches the tables the code queries; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from forge_secure.hub import db


def test_migrations_create_the_queried_schema(db_url):
    engine = db.make_engine(db_url)
    try:
        errors = []

        def run():
            try:
                db.migrate(engine)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        db.migrate(engine)  # again: nothing to do
        inspector = sa.inspect(engine)
        for table in db.METADATA.sorted_tables:
            assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}, table.name
        with db.read(engine) as conn:
            assert conn.execute(sa.select(db.log_head.c.size)).all() == [(0,)]
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0002"
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("submissions")}
        assert ("site", "sequence") in uniques
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_the_submissions(db_url):
    """A hub made before the ledger knew training runs: its rows survive the upgrade (run unknown)."""
    from alembic import command
    from alembic.config import Config

    engine = db.make_engine(db_url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(db.MIGRATIONS))
        with engine.connect() as conn:
            conn.info["write"] = True
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.commit()
            conn.info.pop("write")
        with db.write(engine) as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO submissions (submission_id, site, sequence, bundle_sha256, size, signer, created, "
                    "accepted, log_index, dp) VALUES ('s1', 'site-1', 1, 'ab', 10, 'k', 't', 1, 0, '{}')"
                )
            )
        db.migrate(engine)
        with db.read(engine) as conn:
            assert conn.execute(sa.select(db.submissions.c.submission_id, db.submissions.c.dp_run)).all() == [("s1", None)]
        uniques = {tuple(u["column_names"]) for u in sa.inspect(engine).get_unique_constraints("submissions")}
        assert ("site", "sequence") in uniques
    finally:
        engine.dispose()


def test_bad_database_urls(tmp_path):
    import pytest

    from forge_secure.errors import ForgeError

    for url in ("not a url", "mysql://x/y"):
        with pytest.raises(ForgeError) as e:
            db.make_engine(url)
        assert e.value.code == "hub.db"


def test_an_aborted_append_leaves_nothing_in_the_log_cache(db_url):
    """A push's transaction reads its own uncommitted entry for the receipt; when it then rolls
    back, the cached leaf and every subtree root over it are forgotten, so the next checkpoint is
    the root of what the database holds (a cache that kept the phantom leaf would sign a history
    that never existed)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from forge_secure.hub import log, merkle
    from forge_secure.hub.note import NoteSigner

    engine = db.make_engine(db_url)
    try:
        db.migrate(engine)
        lg = log.Log(NoteSigner("test-log", Ed25519PrivateKey.generate()), "test-log")
        for i in range(40):  # past Tree.MEMO, so that complete subtree roots are remembered
            with db.write(engine) as conn:
                lg.receipt(conn, log.append(conn, "test", {"i": i}, 0))
        try:
            with db.write(engine) as conn:
                index = log.append(conn, "test", {"phantom": True}, 0)
                lg.receipt(conn, index)  # caches the uncommitted leaf (and roots over it)
                raise RuntimeError("the push fails after its receipt was built")
        except RuntimeError:
            pass
        with db.write(engine) as conn:
            index = log.append(conn, "test", {"real": True}, 0)
            receipt = lg.receipt(conn, index)
        assert index == 40
        with db.read(engine) as conn:
            stored = [bytes.fromhex(h) for (h,) in conn.execute(sa.select(db.log_entries.c.leaf_hash).order_by(db.log_entries.c.idx))]
            checkpoint = lg.checkpoint(conn)
        assert len(stored) == 41 and checkpoint.size == 41
        assert checkpoint.root == merkle.root(stored)
        assert receipt["checkpoint"] == checkpoint.note  # the receipt's checkpoint is of the stored history
    finally:
        engine.dispose()
