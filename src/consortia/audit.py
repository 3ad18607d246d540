"""Append-only, hash-chained audit log in a SQL database (SQLite or PostgreSQL).

Every entry records who (``actor``) did what (``action``) with which JSON ``details`` (names
and shapes of released arrays, study ids, policy...: never values).  Entries are numbered
``seq = 1, 2, ...`` and chained::

    hash_n = SHA-256(canonical JSON of {seq, timestamp, actor, action, details, prev_hash})
    prev_hash_n = hash_{n-1}        (64 zeros for the first entry)

With a secret ``key`` (kept in a file outside the database, see :func:`write_key_file`) every
entry also carries ``mac = HMAC-SHA256(key, hash)``, and a one-row *head record* (table
``<table>_head``) holds the last ``seq`` and ``hash`` with its own HMAC.  The head record is
also the lock that serialises appends: each append first updates it (a row lock in PostgreSQL,
the write lock in SQLite), then reads the previous hash, inserts the entry (``seq`` is the
primary key, so a forked chain is impossible) and moves the head, all in one transaction,
retried on lock contention.

Guarantees of :meth:`AuditLog.verify`
-------------------------------------
* Without a key: any edit, reordering or deletion of entries made *without* recomputing the
  hashes is detected (hash mismatch, broken chain, sequence gap), and a tail truncation is
  detected unless the head record is also rewritten.  Someone who can write to the database
  can rebuild a consistent chain, since SHA-256 is public: the hash chain alone protects
  against accidents and careless tampering only.
* With the key: an attacker without the key cannot forge, edit, reorder or delete any entry,
  nor truncate the tail, without ``verify`` failing at the first affected ``seq``, because
  neither entry MACs nor the head MAC can be recomputed.  The one attack left is a *rollback*:
  restoring an older copy of the whole database (or of the head row together with deleting
  the entries after it).  Detect it by publishing :meth:`AuditLog.head` elsewhere (a node
  sends its head with every contribution and the hub keeps them, see
  ``GET /v1/nodes/{node}/audit-heads``) and passing them as ``anchors`` to ``verify``.
  Emptying both tables (or deleting the whole database) is likewise only detectable from
  outside: an empty log with no head record is initialised afresh when next opened.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from consortia.errors import AuditError, ValidationError

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "AuditReport",
    "audit_tables",
    "canonical_json",
    "generate_key",
    "read_key_file",
    "write_key_file",
]

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry."""

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_MAX_LABEL = 200
_MAX_DETAILS = 1 << 20
_MIN_KEY = 16
_ENTRY_DOMAIN = b"consortia-audit-entry\x00"
_HEAD_DOMAIN = b"consortia-audit-head\x00"
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


def canonical_json(value: Any) -> str:
    """Serialise ``value`` as canonical JSON (sorted keys, no spaces, ASCII, no NaN).

    Raises
    ------
    ValidationError
        ``value`` is not JSON-serialisable (numpy arrays, NaN, sets...).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"audit details must be JSON-serialisable: {exc}") from exc


def _entry_hash(
    seq: int, timestamp: str, actor: str, action: str, details: Any, prev_hash: str
) -> str:
    payload = canonical_json(
        {
            "seq": seq,
            "timestamp": timestamp,
            "actor": actor,
            "action": action,
            "details": details,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _mac(key: bytes, domain: bytes, message: str) -> str:
    return hmac.new(key, domain + message.encode("utf-8"), hashlib.sha256).hexdigest()


def _head_message(seq: int, hash_: str) -> str:
    return canonical_json([seq, hash_])


def generate_key() -> bytes:
    """Return a fresh random 32-byte audit key."""
    return secrets.token_bytes(32)


def write_key_file(path: Path | str, key: bytes | None = None, *, overwrite: bool = False) -> bytes:
    """Write an audit key (hex text) to ``path`` with 0600 permissions and return the key.

    Parameters
    ----------
    path
        File to create.  Keep it outside the database and its backups.
    key
        The key; a fresh :func:`generate_key` when ``None``.
    overwrite
        Replace an existing file (otherwise refuse).
    """
    path = Path(path)
    key = generate_key() if key is None else key
    if len(key) < _MIN_KEY:
        raise ValidationError(f"audit key must be at least {_MIN_KEY} bytes")
    if path.exists() and not overwrite:
        raise ValidationError(f"audit key file {path} exists; pass overwrite=True to replace it")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    os.chmod(path, 0o600)
    return key


def read_key_file(path: Path | str) -> bytes:
    """Read an audit key written by :func:`write_key_file`.

    Raises
    ------
    ValidationError
        The file is missing or does not hold a hex key of at least 16 bytes.
    """
    path = Path(path)
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except FileNotFoundError as exc:
        raise ValidationError(f"audit key file {path} not found") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"audit key file {path} does not hold a hex key") from exc
    if len(key) < _MIN_KEY:
        raise ValidationError(f"audit key in {path} is shorter than {_MIN_KEY} bytes")
    return key


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry.

    Attributes
    ----------
    seq
        Position in the log, 1, 2, ...
    timestamp
        UTC time of the append, ISO 8601 with microseconds and a ``Z`` suffix (exactly the
        string that was hashed); :attr:`time` parses it.
    actor, action
        Who did what (for example ``"node:site-a"``, ``"release"``).
    details
        JSON details (names and shapes, ids, policy; never values).
    prev_hash, hash
        Hex SHA-256 of the previous entry and of this one.
    mac
        Hex HMAC-SHA256 of ``hash`` under the log's key, ``None`` for a log without key.
    """

    seq: int
    timestamp: str
    actor: str
    action: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str
    mac: str | None

    @property
    def time(self) -> datetime:
        """:attr:`timestamp` as an aware UTC datetime."""
        return datetime.strptime(self.timestamp, _TS_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuditReport:
    """The verdict of :meth:`AuditLog.verify`.

    Attributes
    ----------
    ok
        ``True`` when the log is intact.
    n_entries
        Entries read.
    first_bad_seq
        The first sequence number found edited, missing, forged or out of place (for a
        truncated tail, the first missing one); ``None`` when intact.
    reason
        One line explaining the verdict.
    """

    ok: bool
    n_entries: int
    first_bad_seq: int | None
    reason: str

    def __str__(self) -> str:
        return ("OK: " if self.ok else "TAMPERED: ") + self.reason


def _check_label(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_LABEL:
        raise ValidationError(f"audit {name} must be a non-empty string of <= {_MAX_LABEL} chars")
    return value


def _contended(exc: DBAPIError) -> bool:
    """Whether a database error means "someone else holds a lock": worth retrying."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(word in text for word in ("locked", "busy", "serializ", "deadlock"))


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


def _retryable(exc: DBAPIError) -> bool:
    return isinstance(exc, IntegrityError) or _contended(exc)


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (exponential to 0.2-0.6 s, with jitter)."""
    return min(0.4, 0.002 * 2 ** min(attempt, 8)) * (0.5 + secrets.randbelow(100) / 100)


def _db_reason(exc: DBAPIError) -> str:
    """The first line of the driver's message (table and lock names, never row values)."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


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
        hash-chained (see the module docstring for what that guarantees).
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
            self._probe(table)

    def _probe(self, table: str) -> None:
        """Check that the tables exist (a query rather than the inspector: schema
        translation maps apply), waiting out another process's lock."""
        for attempt in range(_READ_RETRIES):
            try:
                with self._engine.connect() as conn:
                    conn.execute(sa.select(self._log.c.seq).limit(1)).all()
                    conn.execute(sa.select(self._head.c.id).limit(1)).all()
                return
            except DBAPIError as exc:
                if not _contended(exc):
                    raise ValidationError(f"no audit log table {table!r} in this database") from exc
                time.sleep(_backoff(attempt))
        raise AuditError(
            f"cannot read the audit log table {table!r}: the database stayed locked by "
            f"another writer through {_READ_RETRIES} retries"
        )

    # -- setup ---------------------------------------------------------------------------

    def _create(self, metadata: sa.MetaData) -> None:
        for attempt in range(_RETRIES):
            try:
                metadata.create_all(self._engine, checkfirst=True)
                break
            except DBAPIError as exc:  # another process created them, or holds the lock
                if attempt == _RETRIES - 1:
                    raise AuditError(
                        f"cannot create the audit log tables: {_db_reason(exc)}"
                    ) from exc
                time.sleep(_backoff(attempt))
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

    @staticmethod
    def _to_entry(row: Any) -> AuditEntry:
        try:
            details = json.loads(row.details)
        except ValueError:
            details = {"<unparseable>": str(row.details)[:200]}
        return AuditEntry(
            int(row.seq),
            str(row.timestamp),
            str(row.actor),
            str(row.action),
            details,
            str(row.prev_hash),
            str(row.hash),
            None if row.mac is None else str(row.mac),
        )

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """A connection reading one consistent snapshot of the database, then rolled back.

        PostgreSQL: a ``REPEATABLE READ`` transaction.  SQLite: an explicit ``BEGIN`` (the
        Python driver opens no transaction for a ``SELECT``), so that every read after the
        first sees the same state: in WAL mode other processes keep appending meanwhile.
        """
        with self._engine.connect() as conn:
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

    def _read(self, what: str, work: Callable[[sa.Connection], _T]) -> _T:
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
                with self._snapshot() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if not _contended(exc):
                    raise AuditError(
                        f"cannot read the audit log ({what}): {_db_reason(exc)}"
                    ) from exc
                last = exc
                time.sleep(_backoff(attempt))
        assert last is not None
        raise AuditError(
            f"cannot read the audit log ({what}): the database stayed locked by another "
            f"writer through {_READ_RETRIES} retries: {_db_reason(last)}"
        ) from last

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
        return self._read(
            "entries", lambda conn: [self._to_entry(row) for row in conn.execute(query)]
        )

    def tail(self, n: int) -> list[AuditEntry]:
        """Return the last ``n`` entries (by ``seq``) in order."""
        query = sa.select(self._log).order_by(self._log.c.seq.desc()).limit(max(0, int(n)))
        rows = self._read("tail", lambda conn: conn.execute(query).all())
        return [self._to_entry(row) for row in reversed(rows)]

    def _iter_rows(
        self, conn: sa.Connection, since: int | None = None, upto: int | None = None
    ) -> Iterator[Any]:
        while True:
            query = sa.select(self._log).order_by(self._log.c.seq).limit(_BATCH)
            if since is not None:
                query = query.where(self._log.c.seq > since)
            if upto is not None:
                query = query.where(self._log.c.seq <= upto)
            rows = conn.execute(query).all()
            yield from rows
            if len(rows) < _BATCH:
                return
            since = int(rows[-1].seq)

    def _read_head_in(self, conn: sa.Connection) -> tuple[int, str, str | None] | None:
        rows = conn.execute(sa.select(self._head.c.seq, self._head.c.hash, self._head.c.mac)).all()
        if len(rows) != 1:
            return None
        return int(rows[0].seq), str(rows[0].hash), rows[0].mac

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
        (head record).  See the module docstring for the exact guarantees.  Safe to run while
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
        chain = _ChainCheck(self._key, pins)
        head = self._read_head_in(conn)
        bad = chain.feed(self._iter_rows(conn))
        if bad is not None:
            return bad
        last = chain.last_seq
        if head is None:
            return chain.bad(last + 1, "the head record is missing or duplicated")
        head_seq, head_hash, head_mac = head
        if self._key is not None:
            want = _mac(self._key, _HEAD_DOMAIN, _head_message(head_seq, head_hash))
            if head_mac is None or not hmac.compare_digest(str(head_mac), want):
                return chain.bad(min(head_seq, last) + 1, "the head record has an invalid MAC")
        if head_seq > last:
            return chain.bad(
                last + 1, f"the log was truncated: head says {head_seq} entries, {last} remain"
            )
        if head_seq < last:
            return chain.bad(head_seq + 1, f"entries after the head ({head_seq}) were added")
        if head_hash != chain.prev_hash:
            return chain.bad(last, f"entry {last} does not match the head record")
        if chain.pins and max(chain.pins) > last:
            lost = max(chain.pins)
            return chain.bad(
                last + 1, f"the log was truncated: it lost entry {lost} given as anchor"
            )
        n = chain.n
        checked = "hash chain and MACs verified" if self._key else "hash chain verified"
        if self._key is None:
            checked += ", no key: MACs not checked"
        return AuditReport(True, n, None, f"intact: {n} entries, {checked}")


class _ChainCheck:
    """Incremental verification of entries fed in ``seq`` order."""

    def __init__(self, key: bytes | None, pins: dict[int, str]) -> None:
        self.key = key
        self.pins = {seq: h for seq, h in pins.items() if seq > 0}
        self.prev_hash = GENESIS_HASH
        self.last_seq = 0
        self.n = 0

    def bad(self, seq: int, reason: str) -> AuditReport:
        return AuditReport(False, self.n, seq, reason)

    def feed(self, rows: Iterator[Any]) -> AuditReport | None:
        """Check ``rows``; return the failure report, or ``None`` if they all verify."""
        for row in rows:
            seq, expected = int(row.seq), self.last_seq + 1
            if seq != expected:
                if seq > expected:
                    return self.bad(expected, f"entry {expected} is missing (next is {seq})")
                return self.bad(seq, f"entry {seq} is out of order")
            self.n += 1
            try:
                details = json.loads(row.details)
                if canonical_json(details) != row.details:
                    raise ValueError("not canonical")
                computed = _entry_hash(
                    seq, row.timestamp, row.actor, row.action, details, row.prev_hash
                )
            except (ValueError, TypeError):  # ValidationError is a ValueError
                return self.bad(seq, f"entry {seq} has altered details")
            if computed != row.hash:
                return self.bad(seq, f"entry {seq} was edited (its hash does not match)")
            if row.prev_hash != self.prev_hash:
                return self.bad(seq, f"entry {seq} does not chain to entry {seq - 1}")
            if self.key is not None:
                if row.mac is None:
                    return self.bad(seq, f"entry {seq} has no MAC (forged or written without key)")
                if not hmac.compare_digest(str(row.mac), _mac(self.key, _ENTRY_DOMAIN, row.hash)):
                    return self.bad(seq, f"entry {seq} has an invalid MAC (forged or re-hashed)")
            pinned = self.pins.get(seq)
            if pinned is not None and row.hash != pinned:
                return self.bad(seq, f"entry {seq} differs from the anchor (rewritten)")
            self.prev_hash = str(row.hash)
            self.last_seq = seq
        return None
