"""Migrations, on SQLite and PostgreSQL: the schema comes up once, replicas starting together agree,
and the audit log refuses to be rewritten."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError

from moderation_worker.review.audit import record
from moderation_worker.review.store import (
    current_revision,
    head_revision,
    make_engine,
    migrate,
    migrations_current,
    transaction,
)


def test_migrating_creates_every_table_and_migrating_again_changes_nothing(engine):
    tables = set(inspect(engine).get_table_names())
    assert {"users", "sessions", "verdicts", "items", "decisions", "labels", "outbox", "audit"} <= tables
    assert current_revision(engine) == head_revision() and migrations_current(engine)
    assert migrate(engine) == head_revision()


def test_replicas_migrating_together_migrate_once(database_url):
    # Given four console replicas starting at the same moment against a new database
    engines = [make_engine(database_url) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def start_replica(engine) -> None:
        try:
            start.wait()
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_replica, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # I expect every one to succeed and the schema at the newest revision, created once
    assert errors == []
    assert all(current_revision(engine) == head_revision() for engine in engines)
    for engine in engines:
        engine.dispose()


def test_the_audit_log_refuses_updates_and_deletes(sessions):
    with transaction(sessions) as session:
        record(session, actor="alice", action="login")
    for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(DatabaseError, match="append-only"), transaction(sessions) as session:
            session.execute(text(statement))
    with transaction(sessions) as session:
        assert session.execute(text("SELECT actor FROM audit")).scalars().all() == ["alice"]
