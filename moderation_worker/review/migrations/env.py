"""Alembic's environment for the console: it runs on the connection the caller hands in
(``store.migrate``), inside the caller's transaction and lock; there is no alembic.ini."""

from __future__ import annotations

from alembic import context

from moderation_worker.review.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through moderation_worker.review.store.migrate (or review migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
context.run_migrations()
