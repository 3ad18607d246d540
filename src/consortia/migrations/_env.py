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
        _run(connection, config.attributes.get("database"))
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
    target = None
    if database is not None and context.config.cmd_opts is not None:  # autogenerate
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
