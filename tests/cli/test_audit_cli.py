"""``consortia audit verify`` and ``consortia audit show``."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from consortia.audit import AuditLog, write_key_file
from consortia.cli import main


@pytest.fixture
def logged(tmp_path):
    """A SQLite file with a 6-entry keyed audit log, and its key file."""
    db = tmp_path / "node.db"
    key_file = tmp_path / "audit.key"
    key = write_key_file(key_file)
    engine = sa.create_engine(f"sqlite:///{db}")
    log = AuditLog(engine, key=key)
    for i in range(6):
        log.append("node:site-a", "release", {"study": "s1", "round": i, "arrays": {"s": [2]}})
    engine.dispose()
    return db, key_file


def _tamper(db, sql: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql)


def test_verify_intact_log(logged):
    db, key_file = logged
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "verify", "--db", str(db), "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: intact: 6 entries") and result.output.count("\n") == 1
    url = runner.invoke(main, ["audit", "verify", "--db", f"sqlite:///{db}"])
    assert url.exit_code == 0 and "MACs not checked" in url.output


def test_verify_detects_tampering(logged):
    db, key_file = logged
    _tamper(db, 'UPDATE audit_log SET details = \'{"study":"s9"}\' WHERE seq = 4')
    result = CliRunner().invoke(
        main, ["audit", "verify", "--db", str(db), "--key-file", str(key_file)]
    )
    assert result.exit_code == 1
    assert result.output.startswith("TAMPERED:") and "first bad seq 4" in result.output
    assert result.output.count("\n") == 1


def test_verify_detects_deletion_and_wrong_key(logged, tmp_path):
    db, _ = logged
    other_key = tmp_path / "other.key"
    write_key_file(other_key)
    runner = CliRunner()
    wrong = runner.invoke(main, ["audit", "verify", "--db", str(db), "--key-file", str(other_key)])
    assert wrong.exit_code == 1 and "first bad seq 1" in wrong.output
    _tamper(db, "DELETE FROM audit_log WHERE seq = 2")
    result = runner.invoke(main, ["audit", "verify", "--db", str(db)])
    assert result.exit_code == 1 and "entry 2 is missing" in result.output


def test_verify_with_anchor(logged):
    db, _ = logged
    engine = sa.create_engine(f"sqlite:///{db}")
    seq, digest = AuditLog(engine).head()
    engine.dispose()
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", "--db", str(db), "--anchor", f"{seq}:{digest}"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(main, ["audit", "verify", "--db", str(db), "--anchor", f"3:{'a' * 64}"])
    assert bad.exit_code == 1 and "anchor" in bad.output
    usage = runner.invoke(main, ["audit", "verify", "--db", str(db), "--anchor", "x"])
    assert usage.exit_code == 2 and "SEQ:HASH" in usage.output


def test_verify_reports_unusable_inputs(tmp_path, logged):
    runner = CliRunner()
    missing = runner.invoke(main, ["audit", "verify", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 1 and "no SQLite database" in missing.output
    assert not (tmp_path / "none.db").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    no_table = runner.invoke(main, ["audit", "verify", "--db", str(empty)])
    assert no_table.exit_code == 1 and "no audit log table" in no_table.output
    db, _ = logged
    no_key = runner.invoke(
        main, ["audit", "verify", "--db", str(db), "--key-file", str(tmp_path / "x.key")]
    )
    assert no_key.exit_code == 1 and "not found" in no_key.output


def test_verify_does_not_modify_the_database(logged):
    db, _ = logged
    before = (db.read_bytes(), os.stat(db).st_mtime_ns)
    assert CliRunner().invoke(main, ["audit", "verify", "--db", str(db)]).exit_code == 0
    assert (db.read_bytes(), os.stat(db).st_mtime_ns) == before


def test_show(logged):
    db, _ = logged
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "show", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 6 and "node:site-a" in lines[0] and '"round":0' in lines[0]
    last = runner.invoke(main, ["audit", "show", "--db", str(db), "--last", "2", "--json"])
    assert last.exit_code == 0
    rows = [json.loads(line) for line in last.output.splitlines()]
    assert [r["seq"] for r in rows] == [5, 6]
    assert rows[1]["details"] == {"study": "s1", "round": 5, "arrays": {"s": [2]}}
    assert rows[1]["prev_hash"] == rows[0]["hash"]


_APPENDER = """
import pathlib, sys
import sqlalchemy as sa
from consortia.audit import AuditLog, read_key_file
db, key_file, mode, stop, bound = sys.argv[1:6]
engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 30})
sa.event.listen(
    engine, "connect", lambda conn, _: conn.execute(f"PRAGMA journal_mode={mode}")
)
log = AuditLog(engine, key=read_key_file(key_file))
for i in range(int(bound)):
    log.append("node:site-a", "release", {"study": "s2", "round": i, "arrays": {"s": [2]}})
    if i == 50:
        print("ready", flush=True)
    if i % 10 == 0 and pathlib.Path(stop).exists():
        break
print(f"appended {i + 1}", flush=True)
"""


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_verify_never_fails_while_another_process_appends(logged, tmp_path, journal):
    """`audit verify` while a node process appends in a tight loop: every check is OK.

    The appender writes as fast as it can (bounded by a count, stopped by a file); the
    verifications run meanwhile, each reading one snapshot and waiting out the lock.
    """
    db, key_file = logged
    stop = tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(db), str(key_file), journal, str(stop), "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outputs = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"  # 51 entries appended: under way
        runner = CliRunner()
        for _ in range(6):
            result = runner.invoke(
                main, ["audit", "verify", "--db", str(db), "--key-file", str(key_file)]
            )
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
        still_appending = proc.poll() is None
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert still_appending  # the checks ran while the other process was writing
    counts = [int(re.search(r"intact: (\d+) entries", o).group(1)) for o in outputs]
    assert all(o.startswith("OK: ") for o in outputs)
    assert counts == sorted(counts) and counts[0] >= 6 + 51
    appended = int(out.split()[-1])
    final = CliRunner().invoke(main, ["audit", "verify", "--db", str(db)])
    assert final.exit_code == 0 and f"intact: {6 + appended} entries" in final.output


@pytest.mark.skipif(
    not os.environ.get("CONSORTIA_TEST_POSTGRES_URL"),
    reason="CONSORTIA_TEST_POSTGRES_URL is not set",
)
def test_verify_a_postgresql_log_by_url():
    url = os.environ["CONSORTIA_TEST_POSTGRES_URL"]
    schema = f"audit_cli_{uuid.uuid4().hex[:12]}"
    base = sa.create_engine(url)
    with base.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        engine = base.execution_options(schema_translate_map={None: schema})
        log = AuditLog(engine)
        for i in range(3):
            log.append("hub", "study.submit", {"study": f"s{i}"})
        sep = "&" if "?" in url else "?"
        scoped = f"{url}{sep}options=-csearch_path%3D{schema}"
        runner = CliRunner()
        result = runner.invoke(main, ["audit", "verify", "--db", scoped])
        assert result.exit_code == 0 and "intact: 3 entries" in result.output, result.output
        with base.begin() as conn:
            conn.execute(sa.text(f"UPDATE \"{schema}\".audit_log SET actor = 'x' WHERE seq = 2"))
        result = runner.invoke(main, ["audit", "verify", "--db", scoped])
        assert result.exit_code == 1 and "first bad seq 2" in result.output
    finally:
        with base.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        base.dispose()
