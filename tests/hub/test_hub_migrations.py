"""The hub's database under migrations: a database of the release before them upgrades in
place and keeps serving; migrations and models agree; concurrent starts are safe."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hubutil import bearer
from racer import open_hub_database
from sqlalchemy.pool import NullPool

from consortia.cli import main
from consortia.errors import MigrationError
from consortia.hub import HubSettings, create_app
from consortia.hub.db import make_engine
from consortia.migrations import current, head, metadata, upgrade
from consortia.privacy.keys import SiteIdentity

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SECRETS = json.loads((FIXTURES / "legacy_secrets.json").read_text())


def _url(hub_url: str) -> str:
    return hub_url if "://" in hub_url else f"sqlite:///{hub_url}"


def _engine(hub_url: str) -> sa.Engine:
    """A plain engine (no migrations) to look at the database as it is."""
    return sa.create_engine(_url(hub_url), poolclass=NullPool)


def _load_legacy(hub_url: str) -> dict:
    """Put the database of the release before migrations at ``hub_url``; return its secrets."""
    if "://" not in hub_url:
        shutil.copy(FIXTURES / "legacy_hub.sqlite", hub_url)
        return SECRETS
    # pg_dump's psql meta-commands (\restrict) are not SQL
    script = "\n".join(
        line
        for line in (FIXTURES / "legacy_hub.pg.sql").read_text().splitlines()
        if not line.startswith("\\")
    )
    eng = _engine(hub_url)
    raw = eng.raw_connection()
    try:
        raw.cursor().execute(script)
        raw.commit()
    finally:
        raw.close()
        eng.dispose()
    return SECRETS["postgres"]


def _columns(eng: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(eng).get_columns(table)}


_NEWER = {"hint", "expires_at", "revoked_at", "bundles", "lost", "shares"}
"""Columns that later revisions added to the old release's tables."""


def _dump(eng: sa.Engine) -> dict[str, list[tuple]]:
    """Every row of the tables the old release made, in their old columns."""
    out = {}
    with eng.connect() as c:
        for table in ("tokens", "nodes", "datasets", "studies", "rounds", "tasks", "audit_log"):
            cols = sorted(_columns(eng, table) - _NEWER)
            sel = ", ".join(f'"{col}"' for col in cols)
            out[table] = sorted(map(tuple, c.exec_driver_sql(f"SELECT {sel} FROM {table}")))
    return out


def _diff(eng: sa.Engine) -> list:
    with eng.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True})
        return compare_metadata(ctx, metadata("hub"))


def test_a_hub_database_of_the_release_before_migrations_upgrades_in_place(hub_url):
    secrets = _load_legacy(hub_url)
    plain = _engine(hub_url)
    assert current(plain) is None  # made by create_all: no alembic_version
    assert "expires_at" not in _columns(plain, "tokens")
    before = _dump(plain)
    assert len(before["tokens"]) == 5 and len(before["audit_log"]) == 8

    app = create_app(HubSettings(db=hub_url))
    with TestClient(app) as c:
        assert current(plain) == head("hub")
        assert {"hint", "expires_at", "revoked_at"} <= _columns(plain, "tokens")
        assert _diff(plain) == []  # the upgraded schema is exactly what the models say
        # every old row kept; its tokens never expire and are not revoked
        after = _dump(plain)
        assert after["tokens"] == before["tokens"] and after["nodes"] == before["nodes"]
        assert after["studies"] == before["studies"]
        # a round's packed public arrays moved into the blobs, named by their digest
        assert len(after["rounds"]) == len(before["rounds"])
        at = sorted(_columns(plain, "rounds") - _NEWER).index("public")
        for old, new in zip(before["rounds"], after["rounds"], strict=True):
            raw, digest = bytes(old[at]), new[at]
            assert digest == hashlib.sha256(raw).hexdigest()
            assert old[:at] + old[at + 1 :] == new[:at] + new[at + 1 :]
            with plain.connect() as conn:
                data = conn.execute(
                    sa.text("SELECT data FROM blobs WHERE sha256 = :d"), {"d": digest}
                ).scalar_one()
            assert bytes(data) == raw
        assert set(before["audit_log"]) <= set(after["audit_log"])
        with plain.connect() as conn:
            old = conn.exec_driver_sql("SELECT expires_at, revoked_at FROM tokens").all()
        assert old and all(row == (None, None) for row in old)
        # the hub serves the old tokens and credential
        for role, name in (("admin", "ops"), ("researcher", "alice"), ("node", "hosp-a")):
            r = c.get("/v1/whoami", headers=bearer(secrets[role]))
            assert r.status_code == 200 and r.json() == {"role": role, "name": name}, r.text
        r = c.get(f"/v1/studies/{secrets['study_id']}", headers=bearer(secrets["researcher"]))
        assert r.status_code == 200 and r.json()["algorithm"]["name"] == "stats.count"
        verdict = c.get("/v1/audit/verify", headers=bearer(secrets["admin"])).json()
        assert verdict["ok"] and verdict["n_entries"] >= 8, verdict
        # the old unused enrolment token still enrols; the spent one stays spent
        ident = SiteIdentity.generate()
        body = {"name": "hosp-b", "peer_key": ident.peer_key("hosp-b").to_json()}
        r = c.post("/v1/enrol", json=body, headers=bearer(secrets["unused_enrolment"]))
        assert r.status_code == 200, r.text
        assert (
            c.post("/v1/enrol", json=body, headers=bearer(secrets["unused_enrolment"])).status_code
            == 401
        )
        # an old token can be revoked (by its id: old tokens have no hint) at once
        r = CliRunner().invoke(main, ["token", "revoke", "2", "--db", hub_url])
        assert r.exit_code == 0 and "alice" in r.output, r.output
        r = c.get("/v1/whoami", headers=bearer(secrets["researcher"]))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        assert c.get("/v1/whoami", headers=bearer(secrets["researcher_bob"])).status_code == 200
    app.state.db.dispose()
    plain.dispose()


def test_the_baseline_is_exactly_the_schema_the_old_release_made(tmp_path):
    """Revision 1 on an empty database writes the same CREATE statements as create_all did."""

    def schema(path: Path) -> dict[str, str]:
        eng = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
        with eng.connect() as c:
            rows = c.exec_driver_sql("SELECT name, sql FROM sqlite_master").all()
        eng.dispose()
        return {n: s for n, s in rows if "alembic_version" not in n}

    eng = sa.create_engine(f"sqlite:///{tmp_path / 'r1.sqlite'}", poolclass=NullPool)
    upgrade(eng, "hub", "hub_0001")
    assert current(eng) == "hub_0001"
    eng.dispose()
    assert schema(tmp_path / "r1.sqlite") == schema(FIXTURES / "legacy_hub.sqlite")


def test_a_new_database_is_made_by_the_migrations(hub_url):
    eng = make_engine(hub_url)
    try:
        assert current(eng) == head("hub")
        assert _diff(eng) == []
        make_engine(hub_url).dispose()  # opening it again changes nothing
        assert current(eng) == head("hub")
    finally:
        eng.dispose()


def test_revision_by_revision_keeps_the_rows(hub_url):
    eng = sa.create_engine(_url(hub_url), poolclass=NullPool)
    upgrade(eng, "hub", "hub_0001")
    with eng.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO tokens (token_hash, role, name, used, created_at) "
            "VALUES ('" + "a" * 64 + "', 'researcher', 'carol', false, 1.0)"
        )
    upgrade(eng, "hub", "head")
    with eng.connect() as c:
        row = c.exec_driver_sql("SELECT name, expires_at, revoked_at FROM tokens").one()
    assert tuple(row) == ("carol", None, None)
    eng.dispose()


def test_a_database_of_a_newer_release_is_refused(hub_url):
    make_engine(hub_url).dispose()
    eng = _engine(hub_url)
    with eng.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = 'hub_9999'")
    with pytest.raises(MigrationError, match="hub_9999.*newer release"):
        make_engine(hub_url)
    eng.dispose()


def test_a_database_that_is_not_the_old_release_is_refused(tmp_path):
    db = tmp_path / "other.sqlite"
    eng = sa.create_engine(f"sqlite:///{db}", poolclass=NullPool)
    with eng.begin() as c:
        c.exec_driver_sql("CREATE TABLE tokens (id INTEGER PRIMARY KEY, name VARCHAR(128))")
    eng.dispose()
    with pytest.raises(MigrationError, match=r"'tokens' lacks the columns \['created_at'"):
        make_engine(str(db))


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "legacy"])
def test_hubs_starting_at_once_on_one_database_migrate_it_once(hub_url, legacy):
    if legacy:
        _load_legacy(hub_url)
    ctx = mp.get_context("spawn")
    n = 3
    start, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=open_hub_database, args=(hub_url, start, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * n
    eng = _engine(hub_url)
    assert current(eng) == head("hub") and _diff(eng) == []
    with eng.connect() as c:
        racers = c.exec_driver_sql("SELECT count(*) FROM tokens WHERE name = 'racer'").scalar()
        assert racers == n
        assert c.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    eng.dispose()
