"""The hash-chained audit log, on SQLite files and (when configured) on PostgreSQL.

Set ``CONSORTIA_TEST_POSTGRES_URL`` (for example
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) to also run every test on PostgreSQL;
each test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import sqlalchemy as sa

from consortia.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditLog,
    read_key_file,
    write_key_file,
)
from consortia.audit._chain import _entry_hash
from consortia.errors import AuditError, ValidationError

PG_URL = os.environ.get("CONSORTIA_TEST_POSTGRES_URL")
KEY = bytes(range(32))


@dataclass
class DB:
    """An engine plus what raw SQL needs to address the tables."""

    engine: sa.Engine
    prefix: str  # schema qualifier for raw SQL ("" for SQLite)
    make_engine: object  # () -> Engine, for other processes

    def sql(self, statement: str, **params: object) -> None:
        statement = statement.replace("{t}", f"{self.prefix}audit_log")
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement), params)

    def rows(self) -> list:
        with self.engine.connect() as conn:
            query = f"SELECT * FROM {self.prefix}audit_log ORDER BY seq"
            return list(conn.execute(sa.text(query)))


def _sqlite_engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def _pg_engine(url: str, schema: str) -> sa.Engine:
    return sa.create_engine(url).execution_options(schema_translate_map={None: schema})


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Iterator[DB]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        engine = _sqlite_engine(url)
        yield DB(engine, "", lambda: _sqlite_engine(url))
        engine.dispose()
        return
    if not PG_URL:
        pytest.skip("CONSORTIA_TEST_POSTGRES_URL is not set")
    schema = f"audit_test_{uuid.uuid4().hex[:12]}"
    base = sa.create_engine(PG_URL)
    with base.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = base.execution_options(schema_translate_map={None: schema})
    try:
        yield DB(engine, f'"{schema}".', lambda: _pg_engine(PG_URL, schema))
    finally:
        with base.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        base.dispose()


def _fill(log: AuditLog, n: int = 5) -> list[AuditEntry]:
    return [
        log.append(
            f"node:site-{i % 3}", "release", {"study": "s1", "arrays": {"xtx": [3, 3]}, "i": i}
        )
        for i in range(n)
    ]


def test_append_builds_a_chain_and_verifies(db):
    log = AuditLog(db.engine, key=KEY)
    entries = _fill(log, 5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert all(e.mac and len(e.mac) == 64 for e in entries)
    assert entries[2].details == {"study": "s1", "arrays": {"xtx": [3, 3]}, "i": 2}
    assert entries[0].time.tzinfo is not None and entries[0].timestamp.endswith("Z")
    assert log.entries() == entries
    assert log.entries(since=2, limit=2) == entries[2:4]
    assert log.head() == (5, entries[-1].hash)
    assert len(log) == 5
    report = log.verify()
    assert report.ok and report.n_entries == 5 and report.first_bad_seq is None
    assert "intact" in report.reason and "MACs verified" in report.reason
    # a second instance on the same database continues the same chain
    again = AuditLog(db.engine, key=KEY)
    assert again.append("hub", "study.submit", {}).prev_hash == entries[-1].hash
    assert again.verify().ok


def test_empty_log_and_log_without_key(db):
    log = AuditLog(db.engine)
    assert log.verify().ok and log.verify().n_entries == 0
    assert log.head() == (0, GENESIS_HASH)
    entries = _fill(log, 3)
    assert all(e.mac is None for e in entries)
    report = log.verify()
    assert report.ok and "MACs not checked" in report.reason
    # checking that log with a key fails: its entries carry no MAC
    bad = AuditLog(db.engine, key=KEY).verify()
    assert not bad.ok and bad.first_bad_seq == 1 and "no MAC" in bad.reason


def test_bad_input_is_refused(db):
    log = AuditLog(db.engine, key=KEY)
    with pytest.raises(ValidationError, match="JSON-serialisable"):
        log.append("hub", "release", {"values": np.zeros(3)})
    with pytest.raises(ValidationError, match="JSON-serialisable"):
        log.append("hub", "release", {"x": float("nan")})
    with pytest.raises(ValidationError, match="actor"):
        log.append("", "release", {})
    with pytest.raises(ValidationError, match="action"):
        log.append("hub", "x" * 201, {})
    with pytest.raises(ValidationError, match="mapping"):
        log.append("hub", "release", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least 16 bytes|length >= 16"):
        AuditLog(db.engine, key=b"short")
    assert len(log) == 0 and log.verify().ok


@pytest.mark.parametrize(
    ("edit", "bad_seq", "reason"),
    [
        ('UPDATE {t} SET details = \'{"study":"s2"}\' WHERE seq = 3', 3, "altered|edited"),
        ("UPDATE {t} SET actor = 'node:evil' WHERE seq = 2", 2, "edited"),
        ("UPDATE {t} SET timestamp = '2020-01-01T00:00:00.000000Z' WHERE seq = 4", 4, "edited"),
        ("DELETE FROM {t} WHERE seq = 3", 3, "missing"),
        ("DELETE FROM {t} WHERE seq = 5", 5, "truncated"),
        ("UPDATE {t} SET prev_hash = hash WHERE seq = 4", 4, "edited"),
    ],
    ids=["details", "actor", "timestamp", "delete-middle", "delete-tail", "prev-hash"],
)
@pytest.mark.parametrize("keyed", [True, False], ids=["key", "nokey"])
def test_tampering_is_detected(db, edit, bad_seq, reason, keyed):
    log = AuditLog(db.engine, key=KEY if keyed else None)
    _fill(log, 5)
    db.sql(edit)
    report = log.verify()
    assert not report.ok
    assert report.first_bad_seq == bad_seq
    assert re.search(reason, report.reason)


def test_reordered_entries_are_detected(db):
    log = AuditLog(db.engine, key=KEY)
    _fill(log, 5)
    db.sql("UPDATE {t} SET seq = -1 WHERE seq = 2")
    db.sql("UPDATE {t} SET seq = 2 WHERE seq = 3")
    db.sql("UPDATE {t} SET seq = 3 WHERE seq = -1")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 2 and "edited" in report.reason


def _forge_append(db: DB, log: AuditLog, details: dict) -> int:
    """What an attacker with database access but no key can do: a well-chained entry."""
    seq, prev = log.head()
    ts = "2030-01-01T00:00:00.000000Z"
    digest = _entry_hash(seq + 1, ts, "hub", "release", details, prev)
    db.sql(
        "INSERT INTO {t} (seq, timestamp, actor, action, details, prev_hash, hash, mac) "
        "VALUES (:seq, :ts, 'hub', 'release', :details, :prev, :hash, :mac)",
        seq=seq + 1,
        ts=ts,
        details=json.dumps(details, sort_keys=True, separators=(",", ":")),
        prev=prev,
        hash=digest,
        mac="0" * 64,
    )
    db.sql("UPDATE {t}_head SET seq = :seq, hash = :hash, mac = NULL", seq=seq + 1, hash=digest)
    return seq + 1


def test_forged_entry_without_the_key_is_detected(db):
    log = AuditLog(db.engine, key=KEY)
    _fill(log, 4)
    forged = _forge_append(db, log, {"study": "fake"})
    report = log.verify()
    assert not report.ok and report.first_bad_seq == forged == 5
    assert "invalid MAC" in report.reason
    # without the key the forgery is indistinguishable: the documented limit of a bare chain
    assert AuditLog(db.engine).verify().ok


def test_rewritten_history_and_wrong_key(db):
    log = AuditLog(db.engine, key=KEY)
    _fill(log, 5)
    # an attacker edits entry 2 and recomputes every hash after it (no key: no valid MACs)
    rows = db.rows()
    prev = rows[0].hash
    for row in rows[1:]:
        details = {"study": "rewritten"} if row.seq == 2 else json.loads(row.details)
        digest = _entry_hash(row.seq, row.timestamp, row.actor, row.action, details, prev)
        db.sql(
            "UPDATE {t} SET details = :d, prev_hash = :p, hash = :h WHERE seq = :s",
            d=json.dumps(details, sort_keys=True, separators=(",", ":")),
            p=prev,
            h=digest,
            s=row.seq,
        )
        prev = digest
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 2 and "MAC" in report.reason
    wrong = AuditLog(db.engine, key=b"another key of 32 bytes........").verify()
    assert not wrong.ok and wrong.first_bad_seq == 1


def test_tail_truncation_with_key_and_rollback_needs_an_anchor(db):
    log = AuditLog(db.engine, key=KEY)
    _fill(log, 3)
    anchor_old = log.head()
    with db.engine.connect() as conn:
        old_head = conn.execute(sa.text(f"SELECT * FROM {db.prefix}audit_log_head")).one()
    _fill(log, 2)
    anchor_new = log.head()
    assert log.verify(anchor=anchor_new).ok and log.verify(anchor=anchor_old).ok
    # truncate the tail and move the head back without the key: the head MAC fails
    db.sql("DELETE FROM {t} WHERE seq > 3")
    db.sql("UPDATE {t}_head SET seq = 3, hash = :h", h=anchor_old[1])
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 4 and "head" in report.reason
    # a full rollback to a copied head record passes on its own, but not against an anchor
    db.sql("UPDATE {t}_head SET mac = :m", m=old_head.mac)
    assert log.verify().ok
    report = log.verify(anchor=anchor_new)
    assert not report.ok and report.first_bad_seq == 4 and "anchor" in report.reason


def test_missing_head_record(db):
    log = AuditLog(db.engine, key=KEY)
    _fill(log, 2)
    db.sql("DELETE FROM {t}_head")
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and "head record" in report.reason
    with pytest.raises(AuditError, match="head record is missing"):
        log.append("hub", "x", {})
    # reopening does not silently recreate a head over existing entries
    assert not AuditLog(db.engine, key=KEY).verify().ok


def test_create_false_requires_an_existing_log(db):
    with pytest.raises(ValidationError, match="no audit log table"):
        AuditLog(db.engine, create=False)
    AuditLog(db.engine)
    assert AuditLog(db.engine, create=False).verify().ok


def test_concurrent_appends_from_threads_do_not_fork_the_chain(db):
    log = AuditLog(db.engine, key=KEY)

    def work(i: int) -> None:
        own = AuditLog(db.engine, key=KEY) if i % 2 else log
        for j in range(15):
            own.append(f"t{i}", "release", {"j": j})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = log.verify()
    assert report.ok and report.n_entries == 90
    assert [e.seq for e in log.entries()] == list(range(1, 91))


def _process_worker(make_engine, n: int, tag: int) -> None:
    engine = make_engine()
    log = AuditLog(engine, key=KEY)
    for j in range(n):
        log.append(f"p{tag}", "release", {"j": j})
    engine.dispose()


def test_concurrent_appends_from_processes_do_not_fork_the_chain(db):
    AuditLog(db.engine, key=KEY)
    ctx = multiprocessing.get_context("fork")
    db.engine.dispose()
    procs = [ctx.Process(target=_process_worker, args=(db.make_engine, 15, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    log = AuditLog(db.engine, key=KEY)
    report = log.verify()
    assert report.ok and report.n_entries == 45


def test_key_files(tmp_path):
    path = tmp_path / "audit.key"
    key = write_key_file(path)
    assert len(key) == 32 and read_key_file(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValidationError, match="exists"):
        write_key_file(path)
    assert write_key_file(path, KEY, overwrite=True) == KEY == read_key_file(path)
    with pytest.raises(ValidationError, match="not found"):
        read_key_file(tmp_path / "missing.key")
    (tmp_path / "bad.key").write_text("not hex")
    with pytest.raises(ValidationError, match="hex key"):
        read_key_file(tmp_path / "bad.key")
    (tmp_path / "short.key").write_text("abcd")
    with pytest.raises(ValidationError, match="shorter"):
        read_key_file(tmp_path / "short.key")


def test_append_inside_the_callers_transaction(db):
    log = AuditLog(db.engine, key=KEY)
    _fill(log, 2)
    with pytest.raises(RuntimeError), db.engine.begin() as conn:
        log.append("hub", "round.persist", {"round": 3}, connection=conn)
        raise RuntimeError("the caller's transaction fails")
    assert len(log) == 2 and log.verify().ok  # rolled back with the caller's writes
    with db.engine.begin() as conn:
        entry = log.append("hub", "round.persist", {"round": 3}, connection=conn)
    assert entry.seq == 3 and log.entries(since=2) == [entry]
    assert log.verify().ok


def test_verify_while_others_append_never_raises_a_false_alarm(db):
    log = AuditLog(db.engine, key=KEY)
    _fill(log, 3)
    stop, writing = threading.Event(), threading.Event()

    def writer() -> None:
        own = AuditLog(db.make_engine(), key=KEY)
        while not stop.is_set():
            entry = own.append("hub", "round", {})
            if entry.seq >= 6:
                writing.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(300)  # three entries appended by the writer: it is under way
        reports = [log.verify() for _ in range(15)]
    finally:
        stop.set()
        thread.join()
    assert all(r.ok for r in reports), [r.reason for r in reports if not r.ok]
    assert reports[-1].n_entries > 3


def test_entries_added_behind_the_head_are_detected(db):
    log = AuditLog(db.engine)
    _fill(log, 3)
    seq, prev = log.head()
    ts = "2030-01-01T00:00:00.000000Z"
    digest = _entry_hash(seq + 1, ts, "hub", "release", {}, prev)
    db.sql(
        "INSERT INTO {t} (seq, timestamp, actor, action, details, prev_hash, hash) "
        "VALUES (:s, :ts, 'hub', 'release', '{}', :p, :h)",
        s=seq + 1,
        ts=ts,
        p=prev,
        h=digest,
    )
    report = log.verify()
    assert not report.ok and report.first_bad_seq == 4 and "after the head" in report.reason


def _hold_exclusive_lock(path, release: threading.Event, held: threading.Event) -> None:
    """Another writer: takes SQLite's exclusive lock and keeps it until ``release``."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        release.wait(120)
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_verify_waits_out_a_writer_that_holds_the_lock_past_the_busy_timeout(tmp_path):
    path = tmp_path / "audit.db"
    log = AuditLog(sa.create_engine(f"sqlite:///{path}"), key=KEY)
    _fill(log, 4)
    # a reader that gives up on a lock after 50 ms: every wait beyond is the log's retries
    impatient = AuditLog(
        sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05}),
        key=KEY,
        create=False,
    )
    release, held = threading.Event(), threading.Event()
    writer = threading.Thread(target=_hold_exclusive_lock, args=(path, release, held))
    writer.start()
    try:
        assert held.wait(60)
        raw = impatient._engine.connect()
        with pytest.raises(sa.exc.OperationalError, match="locked"):  # the raw failure
            raw.execute(sa.text("SELECT count(*) FROM audit_log")).all()
        raw.close()
        threading.Timer(1.0, release.set).start()  # the writer commits a second later
        report = impatient.verify()
    finally:
        release.set()
        writer.join()
    assert report.ok and report.n_entries == 4


def test_verify_raises_a_typed_error_when_the_log_cannot_be_read(tmp_path, monkeypatch):
    path = tmp_path / "audit.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    log = AuditLog(engine, key=KEY)
    _fill(log, 2)
    monkeypatch.setattr("consortia.audit._store._READ_RETRIES", 3)
    release, held = threading.Event(), threading.Event()
    writer = threading.Thread(target=_hold_exclusive_lock, args=(path, release, held))
    writer.start()
    try:
        assert held.wait(60)
        with pytest.raises(AuditError, match=r"verify.*stayed locked.*3 retries"):
            log.verify()
    finally:
        release.set()
        writer.join()
    assert log.verify().ok
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_log"))
    with pytest.raises(AuditError, match=r"cannot read the audit log \(verify\): no such table"):
        log.verify()
