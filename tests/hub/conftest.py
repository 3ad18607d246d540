"""A hub database per test: SQLite, and PostgreSQL when CONSORTIA_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

PG_ENV = "CONSORTIA_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite"] + (["postgres"] if os.environ.get(PG_ENV) else []))
def hub_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "hub.sqlite")
        return
    base = sa.engine.make_url(os.environ[PG_ENV])
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"consortia_h_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
