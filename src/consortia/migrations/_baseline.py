"""Helpers of the baseline revisions: adopt a database made before migrations existed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from consortia.errors import MigrationError

__all__ = ["create_missing"]


def create_missing(metadata: sa.MetaData) -> None:
    """Create the tables of ``metadata`` that the database lacks, with their indexes.

    A new database gets them all.  A database made by consortia 0.1 (tables made
    with ``create_all``, no ``alembic_version``) may lack some (a table appeared
    when its module was first used); the tables it has must have every column
    of the baseline, or :class:`~consortia.errors.MigrationError` is raised.
    """
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing = sorted(c.name for c in table.columns if c.name not in have)
        if missing:
            raise MigrationError(
                f"table {table.name!r} lacks the columns {missing}: this database was not "
                "made by consortia 0.1 or later, or was altered by hand"
            )
