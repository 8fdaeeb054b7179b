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
