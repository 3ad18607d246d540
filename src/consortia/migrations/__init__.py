"""Alembic migrations of the hub's and the node's databases, run at startup.

Each database has its own migration environment in this package (``hub/`` and
``node/``: an ``env.py`` and a ``versions/`` folder of revisions), configured in
code: no ``alembic.ini`` is needed at run time.  :func:`upgrade` brings a database
to the newest revision:

* a new (empty) database is created by the migrations;
* a database made before migrations existed (consortia 0.1's tables, no
  ``alembic_version`` table) is adopted: the baseline revision creates the tables
  it lacks and checks the columns of the ones it has, then the later revisions
  run as for any other database;
* a database at an older revision is upgraded in place; one at a revision this
  release does not know (made by a newer release) is refused.

Concurrent starts on one database are serialised: SQLite takes its write lock
(``BEGIN IMMEDIATE``) before reading the version, PostgreSQL an advisory lock, so
exactly one process migrates and the others find the database up to date.

Adding a revision
-----------------
Write ``<database>/versions/<database>_<NNNN>_<slug>.py`` with ``revision =
"<database>_<NNNN>"`` and ``down_revision`` the previous one (see the existing
files), and change the models in the same commit: ``tests/test_migrations.py``
fails while the models and the migrations disagree.  To draft one from the
models, run alembic with :func:`alembic_config`::

    from alembic import command
    from consortia.migrations import alembic_config
    command.revision(alembic_config("hub", "sqlite:///draft.sqlite"),
                     message="what changes", autogenerate=True, rev_id="hub_0003")

(upgrade ``draft.sqlite`` to the previous head first).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from consortia.errors import MigrationError

__all__ = [
    "DATABASES",
    "Database",
    "alembic_config",
    "current",
    "head",
    "metadata",
    "upgrade",
    "upgrade_hub",
    "upgrade_node",
]

Database = Literal["hub", "node"]
DATABASES: tuple[Database, ...] = ("hub", "node")

_HERE = Path(__file__).resolve().parent
_LOCK_KEYS = {"hub": 0x636F6E736F727401, "node": 0x636F6E736F727402}  # pg advisory locks
_log = logging.getLogger(__name__)


def alembic_config(database: Database, url: str | None = None) -> Config:
    """The Alembic configuration of ``database`` (``"hub"`` or ``"node"``), built in code.

    ``url`` is only needed to run Alembic's own commands against a database
    (drafting a revision); :func:`upgrade` passes its connection instead.
    """
    if database not in DATABASES:
        raise MigrationError(f"database must be one of {DATABASES}, not {database!r}")
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / database))
    cfg.attributes["database"] = database
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def _script(database: Database) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(database))


def head(database: Database) -> str:
    """The newest revision of ``database``'s migrations (``"hub_0002"``...)."""
    heads = _script(database).get_heads()
    if len(heads) != 1:  # two revisions with the same parent: a merge is missing
        raise MigrationError(f"the {database} migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current(engine: sa.Engine) -> str | None:
    """The revision a database is at, or None (empty, or made before migrations)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return None
    if len(rows) > 1:
        raise MigrationError("the database's alembic_version table has more than one row")
    return rows[0][0] if rows else None


def upgrade(engine: sa.Engine, database: Database, revision: str = "head") -> None:
    """Bring ``engine``'s database to ``revision`` (the newest by default).

    Parameters
    ----------
    engine
        The database's engine (SQLite or PostgreSQL), with its connect-time settings:
        the migrations run on one of its connections.
    database
        Which schema: ``"hub"`` or ``"node"``.
    revision
        Target revision (tests upgrade step by step).

    Raises
    ------
    MigrationError
        The database is at a revision this release does not know (made by a newer
        release), or it holds a table of the baseline with columns missing.
    """
    target = head(database) if revision == "head" else revision
    if current(engine) == target:  # the common case: one query, no lock
        return
    script = _script(database)
    with _locked(engine, database) as conn:
        inspector = sa.inspect(conn)
        now = None
        if inspector.has_table("alembic_version"):
            now = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        if now == target:
            return  # another process migrated it while this one waited for the lock
        if now is not None:
            try:
                script.get_revision(now)
            except (CommandError, RevisionError) as exc:
                raise MigrationError(
                    f"the {database} database is at revision {now!r}, which this release "
                    f"does not know (newest: {head(database)!r}): it was made by a newer "
                    "release of consortia"
                ) from exc
        elif inspector.get_table_names():
            _log.info("adopting a %s database made before migrations", database)
        cfg = alembic_config(database)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


def upgrade_hub(engine: sa.Engine) -> None:
    """Bring a hub database to the newest revision (run by :func:`consortia.hub.db.make_engine`)."""
    upgrade(engine, "hub")


def upgrade_node(engine: sa.Engine) -> None:
    """Bring a node database to the newest revision (run by ``NodeStore``)."""
    upgrade(engine, "node")


@contextmanager
def _locked(engine: sa.Engine, database: Database) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds the database's migration lock."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            raw = conn.connection.driver_connection
            saved = raw.isolation_level  # type: ignore[union-attr]
            # pysqlite would begin a deferred transaction on the first write (and none
            # for DDL): take the write lock now, before the version is read
            raw.isolation_level = None  # type: ignore[union-attr]
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            finally:
                raw.isolation_level = saved  # type: ignore[union-attr]
        else:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _LOCK_KEYS[database]},
                    )
                yield conn


def metadata(database: Database) -> sa.MetaData:
    """All the tables of ``database`` as this release's code defines them.

    The newest revision must create exactly these (``tests/test_migrations.py``
    compares them); Alembic's autogenerate drafts a revision from them.
    """
    from consortia.audit import audit_tables

    meta = sa.MetaData()
    if database == "hub":
        import consortia.hub.budget  # noqa: F401  (registers node_budgets on Base)
        from consortia.hub.db import Base

        sources = [Base.metadata]
    else:
        from consortia.node import approvals, releases, store

        sources = [store._meta, releases._meta, approvals._meta]
    for source in sources:
        for table in source.tables.values():
            table.to_metadata(meta)
    audit_tables(meta)
    return meta
