"""Read-side of the hub's study engine: study state, rounds, sums and the catalogue."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.hub.db import DatasetRow, RoundRow, RoundSumsRow, StudyRow
from consortia.hub.state import LiveStudy
from consortia.messages import StudyStatusMessage

__all__ = ["HubError", "StudyQueries"]


class HubError(Exception):
    """A request the hub refuses: ``status`` is the HTTP status code to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StudyQueries:
    """Queries a researcher (or the catalogue) needs; mixed into the study engine."""

    engine: Engine
    audit: AuditLog
    lock: threading.RLock
    changed: threading.Condition
    _live: dict[str, LiveStudy]
    _study_version: dict[str, int]
    _stop: threading.Event

    def _owned(self, s: Session, study_id: str, researcher: str | None) -> StudyRow:
        study = s.get(StudyRow, study_id)
        if study is None or (researcher is not None and study.researcher != researcher):
            raise HubError(404, f"no study {study_id!r}")
        return study

    def status(self, study_id: str, researcher: str | None) -> dict[str, Any]:
        """The study's public state (``researcher=None``: any study, for admins).

        The JSON of a :class:`~consortia.messages.StudyStatusMessage`.
        """
        with Session(self.engine) as s:
            study = self._owned(s, study_id, researcher)
            out: dict[str, Any] = {
                "id": study.id,
                "researcher": study.researcher,
                "algorithm": study.algorithm,
                "dataset": study.dataset,
                "frac_bits": study.frac_bits,
                "status": study.status,
                "participants": list(study.participants),
                "rounds_done": study.n_rounds,
                "error": study.error,
                "error_rule": study.error_rule,
                "error_site": study.error_site,
                "error_detail": study.error_detail,
                "current": None,
            }
        with self.lock:
            live = self._live.get(study_id)
            if out["status"] == "running" and live is not None:
                rnd = live.round
                out["current"] = {
                    "round_index": rnd.index,
                    "step": rnd.step,
                    "attempt": rnd.attempt,
                    "phase": rnd.phase,
                    "received": sorted(rnd.received),
                    "progress": dict(sorted(live.progress.items())),
                    "waiting_approval": sorted(live.waiting),
                }
        return StudyStatusMessage.model_validate(out).model_dump(mode="json")

    def wait_status(
        self, study_id: str, researcher: str | None, known: int | None, timeout: float
    ) -> dict[str, Any]:
        """Long-poll: return once the study's version differs from ``known`` (or on timeout).

        The version changes when a round finishes, an attempt is re-run or the
        study ends.
        """
        with self.lock:
            live = self._live.get(study_id)
            owned = live is not None and researcher in (None, live.researcher)
        if not owned:
            self.status(study_id, researcher)  # ownership check (404 if not theirs)
        end = time.monotonic() + max(0.0, min(timeout, 60.0))
        with self.changed:
            while (
                known is not None
                and self._study_version.get(study_id, 0) == known
                and not self._stop.is_set()
            ):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            version = self._study_version.get(study_id, 0)
        out = self.status(study_id, researcher)
        out["version"] = version
        return out

    def list_studies(self, researcher: str | None) -> list[dict[str, Any]]:
        """Studies of ``researcher`` (all for ``None``), newest first.

        Each: id, status, dataset, algorithm (its spec), rounds done, participants
        and the submission time (seconds since the epoch).
        """
        with Session(self.engine) as s:
            q = select(StudyRow).order_by(StudyRow.created_at.desc())
            if researcher is not None:
                q = q.where(StudyRow.researcher == researcher)
            return [
                {
                    "id": r.id,
                    "status": r.status,
                    "dataset": r.dataset,
                    "algorithm": r.algorithm,
                    "rounds_done": r.n_rounds,
                    "participants": list(r.participants),
                    "created_at": r.created_at,
                }
                for r in s.scalars(q)
            ]

    def round_list(
        self, study_id: str, researcher: str | None, start: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Finished rounds from ``start``: index, step, attempt and participants."""
        with Session(self.engine) as s:
            self._owned(s, study_id, researcher)
            rows = s.scalars(
                select(RoundRow)
                .where(
                    RoundRow.study_id == study_id,
                    RoundRow.round_index >= start,
                    RoundRow.done.is_(True),
                )
                .order_by(RoundRow.round_index)
                .limit(max(1, min(limit, 1000)))
            ).all()
            return [
                {
                    "round_index": r.round_index,
                    "step": r.step,
                    "attempt": r.attempt,
                    "participants": list(r.participants),
                    "finished_at": r.finished_at,
                }
                for r in rows
            ]

    def round_sums(self, study_id: str, researcher: str | None, round_index: int) -> bytes:
        """The aggregated sums of one finished round (a consortia.wire message)."""
        with Session(self.engine) as s:
            self._owned(s, study_id, researcher)
            raw = s.scalar(
                select(RoundSumsRow.sums).where(
                    RoundSumsRow.study_id == study_id, RoundSumsRow.round_index == round_index
                )
            )
            if raw is None:
                raise HubError(404, f"round {round_index} of study {study_id!r} is not finished")
            return bytes(raw)

    def publish(self, node: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the node's published catalogue."""
        with self.lock, Session(self.engine) as s:
            for old in s.scalars(select(DatasetRow).where(DatasetRow.node == node)):
                s.delete(old)
            s.flush()
            for name, entry in datasets.items():
                s.add(DatasetRow(node=node, name=name, catalogue=dict(entry)))
            s.commit()
        self.audit.append(f"node:{node}", "catalogue.publish", {"datasets": sorted(datasets)})

    def catalogue(self) -> dict[str, dict[str, Any]]:
        """Published catalogue: node -> dataset name -> entry."""
        with Session(self.engine) as s:
            out: dict[str, dict[str, Any]] = {}
            for row in s.scalars(select(DatasetRow).order_by(DatasetRow.node, DatasetRow.name)):
                out.setdefault(row.node, {})[row.name] = row.catalogue
            return out
