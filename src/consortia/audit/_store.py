"""The audit log's SQL storage: its two tables, lock contention and retried snapshot reads.

Appends serialise on the head record (see :mod:`consortia.audit`); readers take one
consistent snapshot of the database and retry, with jittered exponential backoff, while
another writer holds a lock ("database is locked" in SQLite, a serialisation failure in
PostgreSQL).  Errors name the operation and the driver's first line, never row values.
"""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from consortia.audit._chain import _MAX_LABEL
from consortia.errors import AuditError, ValidationError

__all__ = ["audit_tables"]

_RETRIES = 60
_READ_RETRIES = 120
_BATCH = 1000

_T = TypeVar("_T")

_LOCKS: weakref.WeakKeyDictionary[sa.Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _engine_lock(engine: sa.Engine) -> threading.Lock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(engine)
        if lock is None:
            lock = _LOCKS[engine] = threading.Lock()
        return lock


def _contended(exc: DBAPIError) -> bool:
    """Whether a database error means "someone else holds a lock": worth retrying."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(word in text for word in ("locked", "busy", "serializ", "deadlock"))


def _retryable(exc: DBAPIError) -> bool:
    return isinstance(exc, IntegrityError) or _contended(exc)


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (exponential to 0.2-0.6 s, with jitter)."""
    return min(0.4, 0.002 * 2 ** min(attempt, 8)) * (0.5 + secrets.randbelow(100) / 100)


def _db_reason(exc: DBAPIError) -> str:
    """The first line of the driver's message (table and lock names, never row values)."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def audit_tables(metadata: sa.MetaData, table: str = "audit_log") -> tuple[sa.Table, sa.Table]:
    """Define the entries table ``table`` and its head record ``<table>_head`` in ``metadata``.

    The hub's and the node's database migrations create them (see
    :mod:`consortia.migrations`); :class:`AuditLog` creates them itself in any other database.
    """
    log = sa.Table(
        table,
        metadata,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("timestamp", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(_MAX_LABEL), nullable=False),
        sa.Column("action", sa.String(_MAX_LABEL), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("mac", sa.String(64), nullable=True),
    )
    head = sa.Table(
        f"{table}_head",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    return log, head


def _create_tables(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Create the tables of ``metadata`` if missing, retried while another process holds
    the lock or creates them concurrently."""
    for attempt in range(_RETRIES):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except DBAPIError as exc:  # another process created them, or holds the lock
            if attempt == _RETRIES - 1:
                raise AuditError(f"cannot create the audit log tables: {_db_reason(exc)}") from exc
            time.sleep(_backoff(attempt))


def _probe_tables(engine: sa.Engine, log: sa.Table, head: sa.Table, table: str) -> None:
    """Check that the tables exist (a query rather than the inspector: schema
    translation maps apply), waiting out another process's lock."""
    for attempt in range(_READ_RETRIES):
        try:
            with engine.connect() as conn:
                conn.execute(sa.select(log.c.seq).limit(1)).all()
                conn.execute(sa.select(head.c.id).limit(1)).all()
            return
        except DBAPIError as exc:
            if not _contended(exc):
                raise ValidationError(f"no audit log table {table!r} in this database") from exc
            time.sleep(_backoff(attempt))
    raise AuditError(
        f"cannot read the audit log table {table!r}: the database stayed locked by "
        f"another writer through {_READ_RETRIES} retries"
    )


@contextmanager
def _snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection reading one consistent snapshot of the database, then rolled back.

    PostgreSQL: a ``REPEATABLE READ`` transaction.  SQLite: an explicit ``BEGIN`` (the
    Python driver opens no transaction for a ``SELECT``), so that every read after the
    first sees the same state: in WAL mode other processes keep appending meanwhile.
    """
    with engine.connect() as conn:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        conn.begin()
        if dialect == "sqlite":
            raw = conn.connection.driver_connection
            if raw is not None and not getattr(raw, "in_transaction", True):
                conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


def _read_retrying(engine: sa.Engine, what: str, work: Callable[[sa.Connection], _T]) -> _T:
    """Run ``work`` on a snapshot; retry while another writer holds a lock.

    SQLite answers "database is locked" when a writer holds the lock longer than the
    connection's busy timeout (or during WAL recovery), PostgreSQL may report a
    serialisation failure: both are retried with backoff, ``_READ_RETRIES`` times
    (over a minute in all, on top of each connection's own busy timeout).

    Raises
    ------
    AuditError
        The database stayed locked through every retry, or could not be read at all;
        the message names the operation and the driver's reason.
    """
    last: DBAPIError | None = None
    for attempt in range(_READ_RETRIES):
        try:
            with _snapshot(engine) as conn:
                return work(conn)
        except DBAPIError as exc:
            if not _contended(exc):
                raise AuditError(f"cannot read the audit log ({what}): {_db_reason(exc)}") from exc
            last = exc
            time.sleep(_backoff(attempt))
    assert last is not None
    raise AuditError(
        f"cannot read the audit log ({what}): the database stayed locked by another "
        f"writer through {_READ_RETRIES} retries: {_db_reason(last)}"
    ) from last


def _iter_rows(
    conn: sa.Connection, log: sa.Table, since: int | None = None, upto: int | None = None
) -> Iterator[Any]:
    """The entry rows with ``since < seq <= upto`` in ``seq`` order, read in batches."""
    while True:
        query = sa.select(log).order_by(log.c.seq).limit(_BATCH)
        if since is not None:
            query = query.where(log.c.seq > since)
        if upto is not None:
            query = query.where(log.c.seq <= upto)
        rows = conn.execute(query).all()
        yield from rows
        if len(rows) < _BATCH:
            return
        since = int(rows[-1].seq)


def _read_head_in(conn: sa.Connection, head: sa.Table) -> tuple[int, str, str | None] | None:
    """``(seq, hash, mac)`` of the head record, ``None`` when missing or duplicated."""
    rows = conn.execute(sa.select(head.c.seq, head.c.hash, head.c.mac)).all()
    if len(rows) != 1:
        return None
    return int(rows[0].seq), str(rows[0].hash), rows[0].mac
