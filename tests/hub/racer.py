"""The body of a process that opens a hub database at the same time as others (spawned).

Kept apart from the test modules so that a spawned child imports only the hub's database code.
"""

from __future__ import annotations

from typing import Any


def open_hub_database(db: str, start: Any, out: Any) -> None:
    """Wait for every racer, open (migrate) ``db``, create a token; put "ok" or the error."""
    try:
        from consortia.hub.auth import bootstrap_token
        from consortia.hub.db import make_engine

        start.wait()
        make_engine(db).dispose()
        bootstrap_token(db, "researcher", "racer")
        out.put("ok")
    except Exception as exc:  # reported to the parent test
        out.put(repr(exc))
