"""Fixtures of the networked tests (helpers in netutil.py)."""

from __future__ import annotations

import pytest
from netutil import BACKENDS, create_pg_database, drop_pg_database


@pytest.fixture(scope="module", params=BACKENDS)
def hub_db(request, tmp_path_factory):
    """A database URL for one hub: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("hubdb") / "hub.sqlite")
    else:
        url = create_pg_database()
        try:
            yield url
        finally:
            drop_pg_database(url)
