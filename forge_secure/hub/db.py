"""The hub's state in SQL: SQLite by default (one file under ``$FORGE_HOME``), PostgreSQL
with a ``postgresql://`` URL. The tables are declared here for queries; the schema itself
is created and changed only by the Alembic migrations in ``migrations/versions``.

Writers are serialised: on SQLite every transaction starts with ``BEGIN IMMEDIATE`` (WAL
mode, so readers are not blocked); on PostgreSQL a writer locks the single ``log_head``
row (``SELECT ... FOR UPDATE``) before it reads anything it decides on. Two hub processes on
one database therefore append to the log one after the other, never both at index n.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from ..errors import ForgeValueError
from ..home import forge_home

METADATA = sa.MetaData()
hub_meta = sa.Table("hub_meta", METADATA, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text, nullable=False))
log_head = sa.Table(
    "log_head", METADATA, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), sa.Column("size", sa.Integer, nullable=False)
)
log_entries = sa.Table(
    "log_entries",
    METADATA,
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16)),
    sa.Column("leaf_hash", sa.String(64)),
    sa.Column("body", sa.Text),
    sa.Column("created", sa.BigInteger),
)
rosters = sa.Table(
    "rosters",
    METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("consortium", sa.String(64)),
    sa.Column("digest", sa.String(64)),
    sa.Column("document", sa.Text),
    sa.Column("log_index", sa.Integer),
)
submissions = sa.Table(
    "submissions",
    METADATA,
    sa.Column("submission_id", sa.String(32), primary_key=True),
    sa.Column("site", sa.String(64)),
    sa.Column("sequence", sa.BigInteger),
    sa.Column("bundle_sha256", sa.String(64)),
    sa.Column("size", sa.BigInteger),
    sa.Column("signer", sa.String(64)),
    sa.Column("created", sa.String(32)),
    sa.Column("accepted", sa.BigInteger),
    sa.Column("log_index", sa.Integer),
    sa.Column("dp", sa.Text),
    sa.Column("epsilon", sa.Float),
    sa.Column("dp_run", sa.String(64)),
)
budgets = sa.Table(
    "budgets",
    METADATA,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("epsilon", sa.Float),
    sa.Column("log_index", sa.Integer),
)
nonces = sa.Table(
    "nonces",
    METADATA,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(64)),
    sa.Column("issued", sa.BigInteger),
)
blobs = sa.Table(
    "blobs",
    METADATA,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger),
    sa.Column("media_type", sa.String(128)),
    sa.Column("key_id", sa.String(64)),
    sa.Column("uploaded", sa.BigInteger),
)
releases = sa.Table(
    "releases",
    METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("statement", sa.Text),
    sa.Column("log_index", sa.Integer),
    sa.Column("created", sa.BigInteger),
)
tuf_files = sa.Table("tuf_files", METADATA, sa.Column("name", sa.String(128), primary_key=True), sa.Column("body", sa.LargeBinary))

MIGRATIONS = Path(__file__).with_name("migrations")


def default_url() -> str:
    return f"sqlite:///{forge_home() / 'hub' / 'hub.sqlite3'}"


def make_engine(url: str | None = None) -> sa.Engine:
    """An engine for ``url`` (default: the SQLite file under ``$FORGE_HOME/hub``)."""
    url = url or default_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ForgeValueError(
            f"--db {url!r} is not a database URL", fix="give sqlite:///PATH or postgresql://USER@HOST:PORT/DB", code="hub.db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed, connect_args={"timeout": 120, "check_same_thread": False}, pool_size=8, max_overflow=16, poolclass=sa.pool.QueuePool
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=120000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")
    elif parsed.get_backend_name() == "postgresql":
        engine = sa.create_engine(parsed, pool_size=8, max_overflow=16, pool_pre_ping=True)
    else:
        raise ForgeValueError(
            f"--db {url!r}: only SQLite and PostgreSQL are supported", fix="give sqlite:///PATH or postgresql://...", code="hub.db"
        )
    return engine


_MIGRATE = threading.Lock()  # Alembic's command API keeps global state: one migration per process at a time


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (Alembic), one process at a time: a
    PostgreSQL advisory lock, or a file lock beside the SQLite file."""
    from alembic import command
    from alembic.config import Config
    from filelock import FileLock

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    path = sqlite_path(engine)
    between_processes = FileLock(path + ".migrate.lock", timeout=300) if path and path != ":memory:" else contextlib.nullcontext()
    with _MIGRATE, between_processes, engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_lock(917013)")
            conn.commit()
        else:
            conn.info["write"] = True  # BEGIN IMMEDIATE
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_unlock(917013)")
                conn.commit()
            conn.info.pop("write", None)
    with write(engine) as conn:
        if conn.execute(sa.select(log_head.c.size).where(log_head.c.id == 1)).first() is None:
            conn.execute(log_head.insert().values(id=1, size=0))


_LOCKS: dict[int, threading.Lock] = {}


@contextlib.contextmanager
def write(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction holding the hub's one writer lock; commits on success. On SQLite
    the threads of one process queue on a lock first (SQLite's own busy handler, which
    serialises processes, sleeps in steps of up to 100 ms)."""
    if engine.dialect.name == "sqlite":
        lock = _LOCKS.setdefault(id(engine), threading.Lock())
        with lock:
            with _write(engine) as conn:
                yield conn
    else:
        with _write(engine) as conn:
            yield conn


def on_abort(conn: sa.Connection, undo) -> None:
    """Run ``undo()`` if the write transaction of ``conn`` does not commit (an in-memory cache
    that read the transaction's own uncommitted rows forgets them)."""
    conn.info.setdefault("on_abort", []).append(undo)


@contextlib.contextmanager
def _write(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        conn.info["write"] = True
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.select(log_head.c.size).where(log_head.c.id == 1).with_for_update())
                yield conn
        except BaseException:  # rolled back (or the commit failed): undo what caches took from it
            for undo in reversed(conn.info.get("on_abort", [])):
                undo()
            raise
        finally:
            conn.info.pop("write", None)
            conn.info.pop("on_abort", None)


@contextlib.contextmanager
def read(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def sqlite_path(engine: sa.Engine) -> str | None:
    return engine.url.database if engine.dialect.name == "sqlite" else None


__all__ = [
    "METADATA",
    "blobs",
    "budgets",
    "default_url",
    "hub_meta",
    "log_entries",
    "log_head",
    "make_engine",
    "migrate",
    "nonces",
    "read",
    "releases",
    "rosters",
    "submissions",
    "tuf_files",
    "write",
]
