"""The hub's :class:`~consortia.hub.store.StudyStore` over SQLAlchemy (SQLite or PostgreSQL).

Each write method is one transaction.  Payload-sized blobs (running masked sums,
round sums, public arrays, results) are written by :mod:`consortia.hub.blobs`
(in place on SQLite); the small, frequent round updates are prebuilt Core
statements (:mod:`consortia.hub.statements`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.hub.blobs import put_acc, put_sums
from consortia.hub.db import (
    BlobRow,
    DatasetRow,
    NodeRow,
    RoundAccRow,
    RoundRow,
    RoundSumsRow,
    StudyRow,
    TaskRow,
)
from consortia.hub.payloads import allowed_blob, store_blob_once
from consortia.hub.results import RESULTS, store_result
from consortia.hub.sqlrows import (
    close_tasks,
    fail_study,
    insert_round,
    insert_tasks,
    round_record,
    set_task,
    study_record,
    update_round,
)
from consortia.hub.statements import ACC, STUDIES, TASKS
from consortia.hub.store import (
    AuditEntry,
    NewStudy,
    RoundEnd,
    RoundRecord,
    StudyRecord,
    StudyStore,
)
from consortia.privacy.keys import PeerKey
from consortia.runtime.rounds import RoundState

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["SqlStudyStore"]


class SqlStudyStore(StudyStore):
    """A :class:`~consortia.hub.store.StudyStore` on one SQLAlchemy engine.

    Parameters
    ----------
    engine
        The hub database (made by :func:`consortia.hub.db.make_engine`).
    audit
        The hub's audit log: a study's submit entry commits with the study when the
        log is on ``engine``.
    """

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = audit
        # content-addressed blobs are shared between studies: their check-then-insert is
        # serialised in this process (one hub process serves one database)
        self._blob_lock = threading.Lock()

    # ------------------------------------------------------------------ reads

    def running_ids(self) -> list[str]:
        with Session(self.engine) as s:
            q = select(StudyRow.id).where(StudyRow.status == "running")
            return sorted(s.scalars(q).all())

    def study(self, study_id: str) -> StudyRecord | None:
        with Session(self.engine) as s:
            row = s.get(StudyRow, study_id)
            return None if row is None else study_record(row)

    def list_studies(self, researcher: str | None) -> list[StudyRecord]:
        with Session(self.engine) as s:
            q = select(StudyRow).order_by(StudyRow.created_at.desc())
            if researcher is not None:
                q = q.where(StudyRow.researcher == researcher)
            return [study_record(r) for r in s.scalars(q)]

    def round(self, study_id: str, index: int) -> RoundRecord | None:
        with Session(self.engine) as s:
            row = s.get(RoundRow, (study_id, index))
            return None if row is None else round_record(s, row)

    def open_round(self, study_id: str) -> RoundRecord | None:
        with Session(self.engine) as s:
            q = select(RoundRow).where(RoundRow.study_id == study_id, RoundRow.done.is_(False))
            row = s.scalar(q)
            return None if row is None else round_record(s, row)

    def finished_rounds(self, study_id: str, start: int, limit: int) -> list[RoundRecord]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(RoundRow)
                .where(
                    RoundRow.study_id == study_id,
                    RoundRow.round_index >= start,
                    RoundRow.done.is_(True),
                )
                .order_by(RoundRow.round_index)
                .limit(limit)
            ).all()
            return [round_record(s, r) for r in rows]

    def sums(self, study_id: str, index: int) -> bytes | None:
        with Session(self.engine) as s:
            raw = s.scalar(
                select(RoundSumsRow.sums).where(
                    RoundSumsRow.study_id == study_id, RoundSumsRow.round_index == index
                )
            )
            return None if raw is None else bytes(raw)

    def replay_sums(self, study_id: str) -> Iterator[tuple[int, bytes]]:
        with Session(self.engine) as s:
            indices = s.scalars(
                select(RoundRow.round_index)
                .where(RoundRow.study_id == study_id, RoundRow.done.is_(True))
                .order_by(RoundRow.round_index)
            ).all()
        for index in indices:  # one round's sums in memory at a time
            raw = self.sums(study_id, index)
            yield index, (b"" if raw is None else raw)

    def members(self, study_id: str) -> set[str]:
        with Session(self.engine) as s:
            q = select(TaskRow.node).where(TaskRow.study_id == study_id).distinct()
            return set(s.scalars(q).all())

    def has_task(self, study_id: str, node: str) -> bool:
        with Session(self.engine) as s:
            hit = s.scalar(
                select(TaskRow.node)
                .where(TaskRow.study_id == study_id, TaskRow.node == node)
                .limit(1)
            )
            return hit is not None

    def acc_attempt(self, study_id: str, index: int) -> int | None:
        with Session(self.engine) as s:
            return s.scalar(  # not the blob: only whether it is there
                select(RoundAccRow.attempt).where(
                    RoundAccRow.study_id == study_id, RoundAccRow.round_index == index
                )
            )

    def acc(self, study_id: str, index: int, attempt: int) -> bytes | None:
        with Session(self.engine) as s:
            return s.scalar(
                select(ACC.c.acc).where(
                    ACC.c.study_id == study_id,
                    ACC.c.round_index == index,
                    ACC.c.attempt == attempt,
                )
            )

    def peer(self, name: str) -> PeerKey | None:
        with Session(self.engine) as s:
            row = s.get(NodeRow, name)
            if row is None:
                return None
            return PeerKey(
                site=row.name,
                mask_key=bytes.fromhex(row.mask_key),
                identity_key=bytes.fromhex(row.identity_key),
                signature=bytes.fromhex(row.signature),
            )

    def holders(self, dataset: str) -> list[str]:
        with Session(self.engine) as s:
            return sorted(  # a node lists a dataset that failed to load as unavailable
                row.node
                for row in s.scalars(select(DatasetRow).where(DatasetRow.name == dataset))
                if not (isinstance(row.catalogue, dict) and row.catalogue.get("available") is False)
            )

    def catalogue(self) -> dict[str, dict[str, Any]]:
        with Session(self.engine) as s:
            out: dict[str, dict[str, Any]] = {}
            for row in s.scalars(select(DatasetRow).order_by(DatasetRow.node, DatasetRow.name)):
                out.setdefault(row.node, {})[row.name] = row.catalogue
            return out

    def blob_size(self, digest: str) -> int | None:
        with Session(self.engine) as s:
            size = s.scalar(select(BlobRow.size).where(BlobRow.sha256 == digest))
            return None if size is None else int(size)

    def blob_for(self, node: str, digest: str) -> bytes | None:
        return allowed_blob(self.engine, node, digest)

    def result(self, study_id: str) -> tuple[bytes, str] | None:
        with Session(self.engine) as s:
            row = s.execute(
                select(RESULTS.c.result, RESULTS.c.digest).where(RESULTS.c.study_id == study_id)
            ).first()
            return None if row is None else (bytes(row.result), str(row.digest))

    # ------------------------------------------------------------------ writes

    def publish(self, node: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        with Session(self.engine) as s:
            for old in s.scalars(select(DatasetRow).where(DatasetRow.node == node)):
                s.delete(old)
            s.flush()
            for name, entry in datasets.items():
                s.add(DatasetRow(node=node, name=name, catalogue=dict(entry)))
            s.commit()

    def put_blob(self, data: bytes) -> str:
        with self._blob_lock, Session(self.engine) as s:
            digest = store_blob_once(s, data)
            s.commit()
        return digest

    def create_study(self, new: NewStudy, audit: AuditEntry) -> None:
        r = new.record
        same = self.audit.engine is self.engine
        with Session(self.engine) as s:
            s.add(
                StudyRow(
                    id=r.id,
                    researcher=r.researcher,
                    algorithm=r.algorithm,
                    dataset=r.dataset,
                    frac_bits=r.frac_bits,
                    status=r.status,
                    participants=list(r.participants),
                    n_rounds=0,
                )
            )
            s.flush()  # the study row before its rounds (foreign key)
            if new.state is not None:
                assert new.step is not None and new.public is not None
                insert_round(s, r.id, new.step, new.public, new.state)
            if same:  # the audit entry (digests, never arrays) commits with the study
                self.audit.append(*audit, connection=s.connection())
            s.commit()
        if not same:
            self.audit.append(*audit)

    def cancel(self, study_id: str, actor: str) -> bool:
        with Session(self.engine) as s:
            study = s.get(StudyRow, study_id)
            if study is None or study.status != "running":
                return False
            study.status, study.updated_at = "cancelled", time.time()
            study.error = f"cancelled by {actor}"
            close_tasks(s, study_id, "cancelled")
            s.commit()
            return True

    def fail(
        self,
        study_id: str,
        reason: str,
        rule: str | None = None,
        *,
        site: str | None = None,
        detail: str | None = None,
    ) -> bool:
        with Session(self.engine) as s:
            done = fail_study(s, study_id, reason, rule, site, detail)
            s.commit()
        return done

    def new_attempt(
        self, study_id: str, old: RoundState, new: RoundState, excluded: Sequence[str]
    ) -> None:
        now = time.time()
        key = (
            TASKS.c.study_id == study_id,
            TASKS.c.round_index == old.index,
            TASKS.c.attempt == old.attempt,
        )
        with Session(self.engine) as s:
            s.execute(update(TASKS).where(*key).values(state="superseded", updated_at=now))
            if excluded:
                s.execute(
                    update(TASKS).where(*key, TASKS.c.node.in_(excluded)).values(state="excluded")
                )
            s.execute(delete(ACC).where(ACC.c.study_id == study_id, ACC.c.round_index == old.index))
            update_round(
                s,
                study_id,
                old.index,
                attempt=new.attempt,
                participants=list(new.participants),
                layout=None,
                received={},
                seeds={},
                bundles={},
                lost=[],
                shares={},
                phase=str(new.phase),
                opened_at=now,
            )
            insert_tasks(s, study_id, new, now)
            if excluded:
                s.execute(
                    update(STUDIES)
                    .where(STUDIES.c.id == study_id)
                    .values(participants=list(new.participants))
                )
            s.commit()

    def record_vector(
        self,
        study_id: str,
        state: RoundState,
        node: str,
        layout: list,
        bundles: Mapping[str, dict] | None,
        masked_sum: np.ndarray | None,
    ) -> None:
        extra = {} if bundles is None else {"bundles": dict(bundles)}
        with Session(self.engine) as s:
            update_round(
                s,
                study_id,
                state.index,
                layout=layout,
                received=dict(state.received),
                phase=str(state.phase),
                **extra,
            )
            if masked_sum is not None:  # written from the array, no copy
                put_acc(s, study_id, state.index, state.attempt, masked_sum, first=True)
            set_task(s, study_id, state, node, "contributed")
            s.commit()

    def record_seed(
        self,
        study_id: str,
        state: RoundState,
        node: str,
        shares: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        extra = {} if shares is None else {"shares": {k: dict(v) for k, v in shares.items()}}
        with Session(self.engine) as s:
            update_round(s, study_id, state.index, seeds=dict(state.seeds), **extra)
            set_task(s, study_id, state, node, "revealed")
            s.commit()

    def open_recovery(self, study_id: str, state: RoundState) -> None:
        with Session(self.engine) as s:
            update_round(s, study_id, state.index, phase=str(state.phase), lost=list(state.lost))
            s.commit()

    def set_task(self, study_id: str, state: RoundState, node: str, task_state: str) -> None:
        with Session(self.engine) as s:
            set_task(s, study_id, state, node, task_state)
            s.commit()

    def finish_round(
        self,
        study_id: str,
        state: RoundState,
        packed: Sequence[Buffer],
        end: RoundEnd,
    ) -> str | None:
        now = time.time()
        digest = None
        where = STUDIES.c.id == study_id
        with Session(self.engine) as s:
            # stored from the sums' own memory (the running sum's, decoded in place): no copy
            put_sums(s, study_id, state.index, packed)
            update_round(
                s,
                study_id,
                state.index,
                seeds=dict(state.seeds),
                done=True,
                phase="done",
                finished_at=now,
            )
            s.execute(update(STUDIES).where(where).values(n_rounds=state.index + 1, updated_at=now))
            if end.failure is not None:
                fail_study(s, study_id, end.failure, None, None, None)
            elif end.finished:
                s.execute(update(STUDIES).where(where).values(status="finished"))
                digest = store_result(s, study_id, end.result)  # None: not encodable
            else:
                assert end.step is not None and end.public is not None and end.state is not None
                if state.lost:  # nodes lost at the reveal take no part in later rounds
                    survivors = list(state.survivors)
                    s.execute(update(STUDIES).where(where).values(participants=survivors))
                insert_round(s, study_id, end.step, end.public, end.state)
            s.commit()
        return digest
