"""The console's database: engines, sessions and migrations, the same code on SQLite and PostgreSQL.

SQLite is the embedded default: WAL mode (readers never wait for the writer), a busy timeout (a
writer waits for another instead of failing), foreign keys on. PostgreSQL is for production (psycopg
3), where several console replicas share one database. Migrations (Alembic, in ``migrations/``) run
at start under a lock, so replicas starting together migrate once: an advisory lock on PostgreSQL,
the database file's write lock on SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

log = structlog.get_logger(__name__)

# Any fixed 64-bit number: the advisory lock every console replica takes around its migrations.
_MIGRATION_LOCK = 0x6D6F646572617465


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite opens transactions lazily and commits DDL implicitly; take BEGIN ourselves so a
        # transaction (a claim, a decision with its audit and outbox rows) is one write lock.
        event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # autocommit at the driver: SQLAlchemy's BEGIN decides
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")  # first: the pragmas below may wait on a lock too
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.close()


def _switch_to_wal(cursor, *, attempts: int = 50) -> None:
    # Switching a new database to WAL takes an exclusive lock, and SQLite answers "database is
    # locked" at once (without its busy handler) when replicas starting together all try: retry.
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed at the end of the block, rolled back if it raises."""
    with sessions() as session, session.begin():
        yield session


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("moderation_worker.review") / "migrations"))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision, once across replicas; returns the revision."""
    config = _alembic_config()
    with engine.begin() as connection:
        if is_postgresql(engine):
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        # SQLite: BEGIN IMMEDIATE (make_engine) already holds the database's write lock.
        config.attributes["connection"] = connection
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(config, "head")
        after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        log.info("review_database_migrated", before=before, after=after)
    return after or ""


def migrations_current(engine: Engine) -> bool:
    try:
        return current_revision(engine) == head_revision()
    except Exception:  # unreachable database: readiness says so through this check
        return False
