"""Rows of the hub's tables to the store's records, and the statements a store
transaction is made of (see :class:`consortia.hub.sqlstore.SqlStudyStore`)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from consortia.hub.db import RoundRow, StudyRow
from consortia.hub.payloads import round_public, use_blob
from consortia.hub.statements import ROUNDS, SET_TASK, TASKS, round_update
from consortia.hub.store import RoundRecord, StudyRecord
from consortia.runtime.rounds import RoundState

__all__ = [
    "close_tasks",
    "fail_study",
    "insert_round",
    "insert_tasks",
    "round_record",
    "set_task",
    "study_record",
    "update_round",
]

_OPEN_TASKS = ("pending", "contributed", "waiting_approval")


def study_record(row: StudyRow) -> StudyRecord:
    """A plain copy of a study row."""
    return StudyRecord(
        id=row.id,
        researcher=row.researcher,
        algorithm=dict(row.algorithm),
        dataset=row.dataset,
        frac_bits=row.frac_bits,
        status=row.status,
        participants=list(row.participants),
        n_rounds=row.n_rounds,
        error=row.error,
        error_rule=row.error_rule,
        error_site=row.error_site,
        error_detail=row.error_detail,
        created_at=row.created_at,
    )


def round_record(s: Session, row: RoundRow) -> RoundRecord:
    """A plain copy of a round row (an older hub's inline public arrays become a blob)."""
    return RoundRecord(
        study_id=row.study_id,
        index=row.round_index,
        step=row.step,
        public=round_public(s, row.study_id, row.public),
        attempt=row.attempt,
        participants=tuple(row.participants),
        phase=row.phase,
        done=bool(row.done),
        received=dict(row.received or {}),
        seeds=dict(row.seeds or {}),
        layout=row.layout,
        bundles=dict(row.bundles or {}),
        lost=tuple(row.lost or ()),
        shares=dict(row.shares or {}),
        finished_at=row.finished_at,
    )


def insert_round(s: Session, study_id: str, step: str, public: str, state: RoundState) -> None:
    """Insert a new round (its opening ``state``) and its tasks; its nodes may fetch ``public``."""
    now = time.time()
    use_blob(s, study_id, public)  # the round's nodes may fetch its public arrays
    s.execute(
        insert(ROUNDS),
        {
            "study_id": study_id,
            "round_index": state.index,
            "step": step,
            "public": public,
            "attempt": state.attempt,
            "participants": list(state.participants),
            "phase": str(state.phase),
            "received": {},
            "seeds": {},
            "done": False,
            "opened_at": now,
        },
    )
    insert_tasks(s, study_id, state, now)


def insert_tasks(s: Session, study_id: str, state: RoundState, now: float) -> None:
    """Insert a pending task for each participant of the attempt ``state``."""
    s.execute(
        insert(TASKS),
        [
            {
                "study_id": study_id,
                "round_index": state.index,
                "attempt": state.attempt,
                "node": n,
                "state": "pending",
                "updated_at": now,
            }
            for n in state.participants
        ],
    )


def close_tasks(s: Session, study_id: str, state: str) -> None:
    """Set every open task of the study to ``state``."""
    s.execute(
        update(TASKS)
        .where(TASKS.c.study_id == study_id, TASKS.c.state.in_(_OPEN_TASKS))
        .values(state=state, updated_at=time.time())
    )


def fail_study(
    s: Session,
    study_id: str,
    reason: str,
    rule: str | None,
    site: str | None,
    detail: str | None,
) -> bool:
    """Mark a running study failed and close its tasks (False: it was not running)."""
    study = s.get(StudyRow, study_id)
    if study is None or study.status != "running":
        return False
    study.status, study.error, study.error_rule = "failed", reason, rule
    if site is not None or detail is not None:
        study.error_site, study.error_detail = site, detail
    study.updated_at = time.time()
    close_tasks(s, study_id, "cancelled")
    return True


def update_round(s: Session, study_id: str, index: int, **values: Any) -> None:
    """``UPDATE rounds SET <values>`` of one round (prebuilt statements)."""
    params = {f"v_{k}": v for k, v in values.items()}
    s.execute(round_update(tuple(values)), {"k_study": study_id, "k_round": index, **params})


def set_task(s: Session, study_id: str, state: RoundState, node: str, task: str) -> None:
    """Set ``node``'s task of the attempt ``state`` to ``task``."""
    s.execute(
        SET_TASK,
        {
            "k_study": study_id,
            "k_round": state.index,
            "k_attempt": state.attempt,
            "k_node": node,
            "v_state": task,
            "v_time": time.time(),
        },
    )
