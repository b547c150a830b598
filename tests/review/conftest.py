"""The console's fixtures: one database per test, on SQLite and on a real PostgreSQL the session starts.

Every test that asks for ``database_url`` (or ``sessions``) runs on both. Without PostgreSQL server
binaries the PostgreSQL half skips with the reason, except where ``MODERATION_TEST_REQUIRE_POSTGRES=1``
(CI sets it, having installed them): there it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.review import postgres

REQUIRE_POSTGRES_ENV = "MODERATION_TEST_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.PostgresCluster]:
    reason = postgres.unavailable_reason()
    if reason:
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{REQUIRE_POSTGRES_ENV}=1 but {reason}")
        pytest.skip(reason)
    cluster = postgres.PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"review_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def engine(database_url):
    from moderation_worker.review.store import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    from moderation_worker.review.store import session_factory

    return session_factory(engine)
