"""Core SQL statements of the hub's hot path, built once.

Building and hashing a statement per request cost more than running it, so the
engine's per-round updates are module-level Core statements with bound parameters.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, update

from consortia.hub.db import (
    RoundAccRow,
    RoundRow,
    StudyRow,
    TaskRow,
)

__all__ = ["ACC", "ROUNDS", "SET_TASK", "STUDIES", "TASKS", "round_update"]

# ``__table__`` is typed as a FromClause: a declarative class's is a Table
ROUNDS = cast(Table, RoundRow.__table__)  # Core updates: no ORM bookkeeping on the hot path
TASKS = cast(Table, TaskRow.__table__)
STUDIES = cast(Table, StudyRow.__table__)
ACC = cast(Table, RoundAccRow.__table__)  # big blobs apart: a small update never rewrites them

# statements of the hot path, built once (building and hashing a statement per request
# cost more than running it)
SET_TASK = (
    update(TASKS)
    .where(
        TASKS.c.study_id == bindparam("k_study"),
        TASKS.c.round_index == bindparam("k_round"),
        TASKS.c.attempt == bindparam("k_attempt"),
        TASKS.c.node == bindparam("k_node"),
    )
    .values(state=bindparam("v_state"), updated_at=bindparam("v_time"))
)
_ROUND_UPDATES: dict[tuple[str, ...], Any] = {}


def round_update(columns: tuple[str, ...]) -> Any:
    """``UPDATE rounds SET <columns>`` of one round, built once per set of columns."""
    stmt = _ROUND_UPDATES.get(columns)
    if stmt is None:
        stmt = (
            update(ROUNDS)
            .where(
                ROUNDS.c.study_id == bindparam("k_study"),
                ROUNDS.c.round_index == bindparam("k_round"),
            )
            .values({c: bindparam(f"v_{c}", type_=ROUNDS.c[c].type) for c in columns})
        )
        _ROUND_UPDATES[columns] = stmt
    return stmt
