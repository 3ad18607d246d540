"""The body of both migration environments' ``env.py`` (online migrations only)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

__all__ = ["run"]


def run() -> None:
    """Run the migrations on the connection :func:`consortia.migrations.upgrade` passed.

    Without one (Alembic's own commands, for a developer drafting a revision) the
    configuration's ``sqlalchemy.url`` is opened.
    """
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection, None)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use consortia.migrations")
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn, config.attributes.get("database"))
            conn.commit()
    finally:
        engine.dispose()


def _run(connection: sa.Connection, database: str | None) -> None:
    """Migrate on ``connection``; with ``database`` named, autogenerate compares its models."""
    target = None
    if database is not None:
        from consortia.migrations import metadata

        target = metadata(database)  # type: ignore[arg-type]
    context.configure(
        connection=connection,
        target_metadata=target,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
