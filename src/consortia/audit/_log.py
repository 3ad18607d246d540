"""The :class:`AuditLog`: appends to and reads from the hash-chained log in SQL.

See :mod:`consortia.audit` for the chain, the head record and what :meth:`AuditLog.verify`
guarantees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from consortia.audit._chain import (
    _ENTRY_DOMAIN,
    _HEAD_DOMAIN,
    _MAX_DETAILS,
    _TS_FORMAT,
    GENESIS_HASH,
    AuditEntry,
    _check_label,
    _entry_hash,
    _head_message,
    _mac,
    _to_entry,
    canonical_json,
)
from consortia.audit._keys import _MIN_KEY
from consortia.audit._store import (
    _RETRIES,
    _backoff,
    _create_tables,
    _engine_lock,
    _iter_rows,
    _probe_tables,
    _read_head_in,
    _read_retrying,
    _retryable,
    audit_tables,
)
from consortia.audit._verify import AuditReport, _verify_rows
from consortia.errors import AuditError, ValidationError

__all__ = ["AuditLog"]

_T = TypeVar("_T")


class AuditLog:
    """An append-only, hash-chained audit log stored through SQLAlchemy.

    Parameters
    ----------
    engine
        A SQLAlchemy engine (SQLite file or PostgreSQL; an in-memory SQLite only with a
        single-connection pool).  The tables ``audit_log`` and ``audit_log_head`` are
        created if missing, in their own metadata (schema translation maps apply).
    key
        Secret key (>= 16 bytes) for the entry and head HMACs; without it the log is only
        hash-chained (see :mod:`consortia.audit` for what that guarantees).
    table
        Name of the entries table (the head table is ``<table>_head``).
    create
        Create missing tables; with ``False`` a missing table raises :class:`ValidationError`
        (for read-only inspection).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        key: bytes | None = None,
        table: str = "audit_log",
        create: bool = True,
    ) -> None:
        if key is not None and (not isinstance(key, bytes) or len(key) < _MIN_KEY):
            raise ValidationError(f"audit key must be bytes of length >= {_MIN_KEY}")
        self._engine = engine
        self._key = key
        self._lock = _engine_lock(engine)
        metadata = sa.MetaData()
        self._log, self._head = audit_tables(metadata, table)
        # the append path's statements, built once with bound parameters (hot on nodes)
        head = self._head
        self._stmt_lock = sa.update(head).where(head.c.id == 1).values(version=head.c.version + 1)
        self._stmt_head = sa.select(head.c.seq, head.c.hash).where(head.c.id == 1)
        self._stmt_insert = sa.insert(self._log)
        self._stmt_move = (
            sa.update(head)
            .where(head.c.id == 1)
            .values(
                seq=sa.bindparam("new_seq"),
                hash=sa.bindparam("new_hash"),
                mac=sa.bindparam("new_mac"),
            )
        )
        if create:
            self._create(metadata)
        else:
            _probe_tables(engine, self._log, self._head, table)

    # -- setup ---------------------------------------------------------------------------

    def _create(self, metadata: sa.MetaData) -> None:
        _create_tables(self._engine, metadata)
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    if conn.execute(sa.select(self._head.c.id)).first() is not None:
                        return
                    if conn.execute(sa.select(self._log.c.seq).limit(1)).first() is not None:
                        return  # entries but no head: tampering, left for verify to report
                    conn.execute(
                        sa.insert(self._head).values(
                            id=1,
                            seq=0,
                            hash=GENESIS_HASH,
                            mac=self._head_mac(0, GENESIS_HASH),
                            version=0,
                        )
                    )
            except IntegrityError:
                pass  # created by another process

    @property
    def engine(self) -> sa.Engine:
        """The database of the log (an ``append(..., connection=...)`` must use it)."""
        return self._engine

    def _head_mac(self, seq: int, hash_: str) -> str | None:
        if self._key is None:
            return None
        return _mac(self._key, _HEAD_DOMAIN, _head_message(seq, hash_))

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        actor: str,
        action: str,
        details: Mapping[str, Any],
        *,
        connection: sa.Connection | None = None,
    ) -> AuditEntry:
        """Append one entry and return it.

        Parameters
        ----------
        actor
            Who acted (``"researcher:alice"``, ``"node:site-a"``, ``"hub"``).
        action
            What happened (``"study.submit"``, ``"release"``...).
        details
            JSON-serialisable mapping: names and shapes, ids, policy.  Never values.
        connection
            Append inside this connection's open transaction (same database as the engine),
            so that the entry commits or rolls back with the caller's own writes.  The caller
            commits; no retry is attempted (a lock conflict raises the database error).
            Without it the append runs and commits in its own transaction, retried on lock
            contention.

        Raises
        ------
        ValidationError
            Empty/overlong actor or action, details not a JSON-serialisable mapping.
        AuditError
            The head record is missing (the log was tampered with) or the database stayed
            locked through every retry.
        """
        _check_label("actor", actor)
        _check_label("action", action)
        if not isinstance(details, Mapping):
            raise ValidationError("audit details must be a mapping")
        details_json = canonical_json(dict(details))
        if len(details_json) > _MAX_DETAILS:
            raise ValidationError(f"audit details exceed {_MAX_DETAILS} bytes of JSON")
        details_obj = json.loads(details_json)
        if connection is not None:
            return self._append_in(connection, actor, action, details_json, details_obj)
        last_exc: Exception | None = None
        with self._lock:
            for attempt in range(_RETRIES):
                try:
                    with self._engine.begin() as conn:
                        return self._append_in(conn, actor, action, details_json, details_obj)
                except DBAPIError as exc:
                    if not _retryable(exc):
                        raise
                    last_exc = exc
                    time.sleep(_backoff(attempt))
        raise AuditError(f"audit append failed after {_RETRIES} retries: {last_exc}")

    def _append_in(
        self, conn: sa.Connection, actor: str, action: str, details_json: str, details_obj: Any
    ) -> AuditEntry:
        # Take the write lock first: a row lock in PostgreSQL, the database lock in SQLite.
        bumped = conn.execute(self._stmt_lock)
        if bumped.rowcount != 1:
            raise AuditError(
                "audit log head record is missing: the log was tampered with; run verify"
            )
        row = conn.execute(self._stmt_head).one()
        seq = int(row.seq) + 1
        prev_hash = str(row.hash)
        timestamp = datetime.now(UTC).strftime(_TS_FORMAT)
        hash_ = _entry_hash(seq, timestamp, actor, action, details_obj, prev_hash)
        mac = None if self._key is None else _mac(self._key, _ENTRY_DOMAIN, hash_)
        conn.execute(
            self._stmt_insert,
            {
                "seq": seq,
                "timestamp": timestamp,
                "actor": actor,
                "action": action,
                "details": details_json,
                "prev_hash": prev_hash,
                "hash": hash_,
                "mac": mac,
            },
        )
        conn.execute(
            self._stmt_move,
            {"new_seq": seq, "new_hash": hash_, "new_mac": self._head_mac(seq, hash_)},
        )
        return AuditEntry(seq, timestamp, actor, action, details_obj, prev_hash, hash_, mac)

    # -- reading -------------------------------------------------------------------------

    def _read(self, what: str, work: Callable[[sa.Connection], _T]) -> _T:
        """Run ``work`` on a snapshot; retry while another writer holds a lock."""
        return _read_retrying(self._engine, what, work)

    def entries(self, *, since: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Return the entries with ``seq > since`` in order, at most ``limit`` of them.

        Raises
        ------
        AuditError
            The database could not be read (see :meth:`verify`).
        """
        query = sa.select(self._log).where(self._log.c.seq > since).order_by(self._log.c.seq)
        if limit is not None:
            query = query.limit(max(0, int(limit)))
        return self._read("entries", lambda conn: [_to_entry(row) for row in conn.execute(query)])

    def tail(self, n: int) -> list[AuditEntry]:
        """Return the last ``n`` entries (by ``seq``) in order."""
        query = sa.select(self._log).order_by(self._log.c.seq.desc()).limit(max(0, int(n)))
        rows = self._read("tail", lambda conn: conn.execute(query).all())
        return [_to_entry(row) for row in reversed(rows)]

    def _iter_rows(
        self, conn: sa.Connection, since: int | None = None, upto: int | None = None
    ) -> Iterator[Any]:
        return _iter_rows(conn, self._log, since, upto)

    def _read_head_in(self, conn: sa.Connection) -> tuple[int, str, str | None] | None:
        return _read_head_in(conn, self._head)

    def _read_head(self) -> tuple[int, str, str | None] | None:
        return self._read("head record", self._read_head_in)

    def head(self) -> tuple[int, str]:
        """Return ``(seq, hash)`` of the last entry per the head record (``(0, GENESIS_HASH)``
        for an empty log).  Publish it elsewhere to detect rollbacks (see ``verify(anchor=)``).
        """
        row = self._read(
            "head record",
            lambda conn: conn.execute(sa.select(self._head.c.seq, self._head.c.hash)).first(),
        )
        if row is None:
            raise AuditError("audit log head record is missing: the log was tampered with")
        return int(row.seq), str(row.hash)

    @property
    def keyed(self) -> bool:
        """Whether the log was written with a key (its head record carries a MAC)."""
        head = self._read_head()
        return head is not None and head[2] is not None

    def __len__(self) -> int:
        count = sa.select(sa.func.count()).select_from(self._log)
        return int(self._read("count", lambda conn: conn.execute(count).scalar()) or 0)

    # -- verification --------------------------------------------------------------------

    def verify(
        self,
        *,
        anchor: tuple[int, str] | None = None,
        anchors: Iterable[tuple[int, str]] = (),
    ) -> AuditReport:
        """Check the whole log and return an :class:`AuditReport`.

        Detects edited entries (hash or MAC mismatch), reordered entries, deleted entries
        (sequence gaps, broken chain), forged entries (MAC, with a key) and a truncated tail
        (head record).  See :mod:`consortia.audit` for the exact guarantees.  Safe to run while
        other threads or processes append: the head record and every entry are read in one
        snapshot of the database (entries appended meanwhile are left to the next check),
        and a lock held by a writer is waited for and retried.

        Parameters
        ----------
        anchor
            A ``(seq, hash)`` from an earlier :meth:`head`, kept outside the database: the
            log must still hold that entry unchanged (detects rollbacks).
        anchors
            More such heads (for example those a hub recorded): each must still be in the
            log unchanged, so a truncated log, or one rewritten and re-chained, fails.

        Raises
        ------
        AuditError
            The log could not be read: the database stayed locked by other writers through
            every retry, or a table is missing or unreadable.
        """
        pins = dict(anchors)
        if anchor is not None:
            pins[int(anchor[0])] = anchor[1]
        # One snapshot: the head record and the rows are read as of the same moment, so
        # appends by other processes during the check neither disturb it nor are seen.
        return self._read("verify", lambda conn: self._verify_in(conn, pins))

    def _verify_in(self, conn: sa.Connection, pins: dict[int, str]) -> AuditReport:
        head = self._read_head_in(conn)
        return _verify_rows(self._key, pins, head, self._iter_rows(conn))
