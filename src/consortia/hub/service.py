"""The hub's study engine: drives each study's coordinator over the database.

Every state change is one database transaction, committed before the HTTP
request that caused it is acknowledged:

* a node's masked vector is added into the attempt's running masked sum (kept
  in memory as a :class:`~consortia.privacy.SecureAggregator` and persisted,
  with the set of nodes received, in the same transaction);
* once every participant's vector is in, the round enters its *reveal* phase:
  each node is asked for its self-mask seed (persisted as it arrives);
* the last seed finishes the sum, which is stored as the round's SUMS in the
  same transaction that opens the next round (or finishes the study).

After a crash the engine rebuilds every running study's coordinator with
:meth:`consortia.protocol.Coordinator.replay` over the persisted sums and the
open attempt's aggregator from its persisted running sum, so no round is lost
or repeated.  A node that does not answer within ``node_timeout`` is excluded
and the round re-runs among the survivors as a new attempt with fresh masks.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.errors import ConsortiaError, ProtocolError, ValidationError
from consortia.hub.db import DatasetRow, NodeRow, RoundRow, StudyRow, TaskRow
from consortia.privacy.keys import PeerKey
from consortia.privacy.secagg import Layout, MaskedContribution, RoundContext, SecureAggregator
from consortia.protocol import Coordinator, algorithm_from_spec
from consortia.wire import pack_arrays, unpack_arrays

__all__ = ["HubError", "StudyEngine"]

TERMINAL = ("finished", "failed", "cancelled")


class HubError(Exception):
    """A request the hub refuses: ``status`` is the HTTP status code to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Live:
    """In-memory state of a running study (rebuilt from the database after a restart)."""

    coord: Coordinator
    agg: SecureAggregator | None = None
    agg_attempt: int = -1
    deadline: float = 0.0


def _masked_sum(agg: SecureAggregator) -> np.ndarray:
    # SecureAggregator has no public accessor for its running sum yet (see report).
    return agg._acc  # type: ignore[attr-defined,return-value]


def _restore_aggregator(
    ctx: RoundContext, layout: Layout | None, acc: bytes | None, received: list[str]
) -> SecureAggregator:
    """Rebuild an aggregator from its persisted running sum through its public ``add``."""
    agg = SecureAggregator(ctx)
    if not received:
        return agg
    assert layout is not None and acc is not None
    total = np.frombuffer(acc, dtype=np.uint64).copy()
    agg.add(
        MaskedContribution(ctx.study_id, ctx.round_index, ctx.attempt, received[0], layout, total)
    )
    zeros = np.zeros(layout.size, dtype=np.uint64)
    for site in received[1:]:
        agg.add(MaskedContribution(ctx.study_id, ctx.round_index, ctx.attempt, site, layout, zeros))
    return agg


class StudyEngine:
    """Studies, rounds and tasks of one hub, over one SQLAlchemy engine.

    Parameters
    ----------
    engine
        The hub database.
    node_timeout
        Seconds a participant may take to post its masked vector for an attempt
        before it is excluded and the round re-runs among the survivors.
    reveal_timeout
        Seconds a participant may take to reveal its self-mask seed once every
        vector is in; past it the study fails (seeds already revealed forbid a
        new attempt of that round).
    max_payload
        Largest accepted contribution, in bytes.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        node_timeout: float = 30.0,
        reveal_timeout: float = 120.0,
        max_payload: int = 256 * 2**20,
        audit: AuditLog | None = None,
    ) -> None:
        self.engine = engine
        self.node_timeout = float(node_timeout)
        self.reveal_timeout = float(reveal_timeout)
        self.max_payload = int(max_payload)
        self.audit = audit if audit is not None else AuditLog(engine)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._live: dict[str, _Live] = {}
        self._node_version: dict[str, int] = {}
        self._study_version: dict[str, int] = {}
        self._peer_cache: dict[str, PeerKey] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._audit_queue: list[tuple[str, str, dict[str, Any]]] = []

    def _later(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Queue an audit entry, written after the current transaction commits."""
        self._audit_queue.append((actor, action, details))

    def _flush_audit(self) -> None:
        queue, self._audit_queue = self._audit_queue, []
        for actor, action, details in queue:
            self.audit.append(actor, action, details)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Resume every running study from the database and start the timeout monitor."""
        with self.lock, Session(self.engine) as s:
            for study in s.scalars(select(StudyRow).where(StudyRow.status == "running")):
                try:
                    self._load(s, study)
                except ConsortiaError as exc:
                    self._fail(s, study, f"could not resume after a restart: {exc}")
                    s.commit()
            self._flush_audit()
        self._monitor = threading.Thread(target=self._monitor_loop, daemon=True, name="hub-monitor")
        self._monitor.start()

    def stop(self) -> None:
        """Stop the monitor thread and wake every waiting long-poll."""
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        if self._monitor is not None:
            self._monitor.join(timeout=2)

    def _load(self, s: Session, study: StudyRow) -> _Live:
        live = self._live.get(study.id)
        if live is not None:
            return live
        algo = algorithm_from_spec(study.algorithm)
        indices = s.scalars(
            select(RoundRow.round_index)
            .where(RoundRow.study_id == study.id, RoundRow.done.is_(True))
            .order_by(RoundRow.round_index)
        ).all()
        coord = Coordinator(algo)
        for index in indices:  # one round's sums in memory at a time
            raw = s.scalar(
                select(RoundRow.sums).where(
                    RoundRow.study_id == study.id, RoundRow.round_index == index
                )
            )
            if index != coord.round_index or raw is None:
                raise ProtocolError(f"study {study.id}: round {coord.round_index} is missing")
            coord.advance(unpack_arrays(raw, max_bytes=2**62))
            coord.history[-1] = {}  # the database keeps the sums; memory need not
        current = self._current_round(s, study.id)
        if current is not None and current.round_index != coord.round_index:
            raise ProtocolError(f"study {study.id}: round {coord.round_index} is missing")
        wait = self.reveal_timeout if current is not None and current.phase == "reveal" else None
        live = _Live(coord=coord, deadline=time.monotonic() + (wait or self.node_timeout))
        self._live[study.id] = live
        return live

    # ------------------------------------------------------------------ helpers

    def _bump(self, nodes: list[str] | tuple[str, ...], study_id: str | None = None) -> None:
        for n in nodes:
            self._node_version[n] = self._node_version.get(n, 0) + 1
        if study_id is not None:
            self._study_version[study_id] = self._study_version.get(study_id, 0) + 1
        self.changed.notify_all()

    def _peer(self, s: Session, name: str) -> PeerKey:
        peer = self._peer_cache.get(name)
        if peer is None:
            row = s.get(NodeRow, name)
            if row is None:
                raise HubError(409, f"node {name!r} is not enrolled")
            peer = PeerKey(
                site=row.name,
                mask_key=bytes.fromhex(row.mask_key),
                identity_key=bytes.fromhex(row.identity_key),
                signature=bytes.fromhex(row.signature),
            )
            self._peer_cache[name] = peer
        return peer

    def _ctx(self, s: Session, study: StudyRow, row: RoundRow) -> RoundContext:
        return RoundContext(
            study_id=study.id,
            round_index=row.round_index,
            attempt=row.attempt,
            participants=tuple(self._peer(s, n) for n in row.participants),
            frac_bits=study.frac_bits,
        )

    def _current_round(self, s: Session, study_id: str) -> RoundRow | None:
        return s.scalar(
            select(RoundRow)
            .where(RoundRow.study_id == study_id, RoundRow.done.is_(False))
            .order_by(RoundRow.round_index.desc())
            .limit(1)
        )

    def _open_round(self, s: Session, study: StudyRow, live: _Live) -> None:
        rnd = live.coord.current
        assert rnd is not None
        index = live.coord.round_index
        s.add(
            RoundRow(
                study_id=study.id,
                round_index=index,
                step=rnd.step,
                public=pack_arrays(dict(rnd.public)),
                attempt=0,
                participants=list(study.participants),
                phase="collect",
                received={},
                seeds={},
                opened_at=time.time(),
            )
        )
        for n in study.participants:
            s.add(TaskRow(study_id=study.id, round_index=index, attempt=0, node=n, state="pending"))
        live.agg, live.agg_attempt = None, -1
        live.deadline = time.monotonic() + self.node_timeout

    def _close_tasks(self, s: Session, study_id: str, state: str) -> None:
        for t in s.scalars(
            select(TaskRow).where(
                TaskRow.study_id == study_id, TaskRow.state.in_(("pending", "contributed"))
            )
        ):
            t.state, t.updated_at = state, time.time()

    def _fail(self, s: Session, study: StudyRow, reason: str, rule: str | None = None) -> None:
        study.status, study.error, study.error_rule = "failed", reason, rule
        study.updated_at = time.time()
        self._close_tasks(s, study.id, "cancelled")
        self._live.pop(study.id, None)
        self._bump(study.participants, study.id)
        self._later("hub", "study.failed", {"study": study.id, "reason": reason, "rule": rule})

    # ------------------------------------------------------------------ researcher side

    def submit(
        self,
        researcher: str,
        algorithm: Mapping[str, Any],
        dataset: str,
        *,
        nodes: list[str] | None = None,
        frac_bits: int = 24,
    ) -> str:
        """Create a study over every node publishing ``dataset`` (or the named ``nodes``)."""
        try:
            algo = algorithm_from_spec(algorithm)
            spec = algo.spec()
        except ConsortiaError as exc:
            raise HubError(422, str(exc)) from None
        if not 0 <= int(frac_bits) <= 52:
            raise HubError(422, "frac_bits must be an integer in [0, 52]")
        with self.lock, Session(self.engine) as s:
            holders = sorted(
                s.scalars(select(DatasetRow.node).where(DatasetRow.name == dataset)).all()
            )
            if nodes is not None:
                unknown = sorted(set(nodes) - set(holders))
                if unknown:
                    raise HubError(
                        422, f"nodes {unknown} do not publish a dataset named {dataset!r}"
                    )
                holders = sorted(set(nodes))
            if not holders:
                raise HubError(422, f"no enrolled node publishes a dataset named {dataset!r}")
            try:
                coord = Coordinator(algo)
            except ConsortiaError as exc:
                raise HubError(422, f"the algorithm could not start: {exc}") from None
            study = StudyRow(
                id=uuid.uuid4().hex,
                researcher=researcher,
                algorithm=spec,
                dataset=dataset,
                frac_bits=int(frac_bits),
                status="running",
                participants=holders,
                n_rounds=0,
            )
            s.add(study)
            s.flush()  # the study row before its rounds (foreign key)
            live = _Live(coord=coord)
            if coord.done:
                study.status = "finished"
            else:
                self._live[study.id] = live
                self._open_round(s, study, live)
            s.commit()
            self._bump(holders, study.id)
            self.audit.append(
                f"researcher:{researcher}",
                "study.submit",
                {"study": study.id, "algorithm": spec, "dataset": dataset, "nodes": holders},
            )
            return study.id

    def _owned(self, s: Session, study_id: str, researcher: str | None) -> StudyRow:
        study = s.get(StudyRow, study_id)
        if study is None or (researcher is not None and study.researcher != researcher):
            raise HubError(404, f"no study {study_id!r}")
        return study

    def status(self, study_id: str, researcher: str | None) -> dict[str, Any]:
        """The study's public state (``researcher=None``: any study, for admins)."""
        with Session(self.engine) as s:
            study = self._owned(s, study_id, researcher)
            out = {
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
            if study.status == "running":
                row = self._current_round(s, study.id)
                if row is not None:
                    out["current"] = {
                        "round_index": row.round_index,
                        "step": row.step,
                        "attempt": row.attempt,
                        "phase": row.phase,
                        "received": sorted(row.received),
                    }
            return out

    def wait_status(
        self, study_id: str, researcher: str | None, known: int | None, timeout: float
    ) -> dict[str, Any]:
        """Long-poll: return once the study's version differs from ``known`` (or on timeout)."""
        self.status(study_id, researcher)  # ownership check
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
        """Studies of ``researcher`` (all for ``None``), newest first."""
        with Session(self.engine) as s:
            q = select(StudyRow).order_by(StudyRow.created_at.desc())
            if researcher is not None:
                q = q.where(StudyRow.researcher == researcher)
            return [
                {"id": r.id, "status": r.status, "dataset": r.dataset, "algorithm": r.algorithm}
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
                select(RoundRow.sums).where(
                    RoundRow.study_id == study_id,
                    RoundRow.round_index == round_index,
                    RoundRow.done.is_(True),
                )
            )
            if raw is None:
                raise HubError(404, f"round {round_index} of study {study_id!r} is not finished")
            return bytes(raw)

    def cancel(self, study_id: str, researcher: str | None, actor: str) -> dict[str, Any]:
        """Cancel a running study (idempotent; a finished study stays finished)."""
        with self.lock, Session(self.engine) as s:
            study = self._owned(s, study_id, researcher)
            if study.status == "running":
                study.status, study.updated_at = "cancelled", time.time()
                study.error = f"cancelled by {actor}"
                self._close_tasks(s, study.id, "cancelled")
                s.commit()
                self._live.pop(study.id, None)
                self._bump(study.participants, study.id)
                self.audit.append(actor, "study.cancel", {"study": study.id})
        return self.status(study_id, researcher)

    # ------------------------------------------------------------------ node side

    def tasks_for(self, node: str) -> list[dict[str, Any]]:
        """The node's open tasks: ``contribute`` (collect phase) or ``reveal``."""
        with self.lock, Session(self.engine) as s:
            rows = s.execute(
                select(TaskRow, RoundRow, StudyRow)
                .join(
                    RoundRow,
                    (RoundRow.study_id == TaskRow.study_id)
                    & (RoundRow.round_index == TaskRow.round_index)
                    & (RoundRow.attempt == TaskRow.attempt),
                )
                .join(StudyRow, StudyRow.id == TaskRow.study_id)
                .where(
                    TaskRow.node == node,
                    TaskRow.state.in_(("pending", "contributed")),
                    StudyRow.status == "running",
                )
                .order_by(StudyRow.created_at, TaskRow.round_index)
            ).all()
            out = []
            for task, rnd, study in rows:
                if task.state == "pending" and rnd.phase == "collect":
                    kind = "contribute"
                elif task.state == "contributed" and rnd.phase == "reveal":
                    kind = "reveal"
                else:
                    continue
                out.append(
                    {
                        "kind": kind,
                        "study_id": study.id,
                        "round_index": rnd.round_index,
                        "attempt": rnd.attempt,
                        "algorithm": study.algorithm,
                        "dataset": study.dataset,
                        "step": rnd.step,
                        "public": base64.b64encode(rnd.public).decode(),
                        "participants": [self._peer(s, n).to_json() for n in rnd.participants],
                        "frac_bits": study.frac_bits,
                        "researcher": study.researcher,
                    }
                )
            return out

    def wait_tasks(self, node: str, timeout: float) -> list[dict[str, Any]]:
        """Long-poll for the node's tasks, at most ``timeout`` seconds."""
        end = time.monotonic() + max(0.0, min(timeout, 60.0))
        while True:
            with self.changed:
                version = self._node_version.get(node, 0)
            tasks = self.tasks_for(node)
            if tasks:
                return tasks
            with self.changed:
                while self._node_version.get(node, 0) == version and not self._stop.is_set():
                    left = end - time.monotonic()
                    if left <= 0:
                        return []
                    self.changed.wait(left)
            if self._stop.is_set():
                return []

    def _attempt_rows(
        self, s: Session, node: str, study_id: str, round_index: int
    ) -> tuple[StudyRow, RoundRow]:
        study = s.get(StudyRow, study_id)
        if study is None or node not in set(study.participants) | self._past_participants(
            s, study_id, node
        ):
            raise HubError(404, f"no task of this node in study {study_id!r}")
        row = s.get(RoundRow, (study_id, round_index))
        if row is None:
            raise HubError(409, f"round {round_index} of study {study_id!r} is not open")
        return study, row

    def _past_participants(self, s: Session, study_id: str, node: str) -> set[str]:
        hit = s.scalar(
            select(TaskRow.node).where(TaskRow.study_id == study_id, TaskRow.node == node).limit(1)
        )
        return {hit} if hit else set()

    def contribute(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        layout_json: Any,
        body: bytes,
    ) -> dict[str, Any]:
        """Add a node's masked vector into the attempt's running sum (persisted, then acked)."""
        digest = hashlib.sha256(body).hexdigest()
        with self.lock, Session(self.engine) as s:
            study, row = self._attempt_rows(s, node, study_id, round_index)
            if row.attempt == attempt and row.received.get(node) == digest:
                return {"status": "duplicate", "round_index": round_index, "attempt": attempt}
            if study.status != "running":
                raise HubError(409, f"study {study_id!r} is {study.status}")
            if row.done or row.attempt != attempt:
                raise HubError(
                    409, f"attempt {attempt} of round {round_index} is not the open attempt"
                )
            if node not in row.participants:
                raise HubError(409, f"node {node!r} is not a participant of this attempt")
            if node in row.received:
                raise HubError(409, "this node already sent a different vector for this attempt")
            if row.phase != "collect":
                raise HubError(409, "this attempt no longer accepts contributions")
            try:
                layout = Layout.from_json(layout_json)
                arrays = unpack_arrays(body, max_bytes=self.max_payload)
            except ConsortiaError as exc:
                raise HubError(400, f"malformed contribution: {exc}") from None
            data = arrays.get("masked")
            if set(arrays) != {"masked"} or data is None:
                raise HubError(400, "a contribution holds exactly one array named 'masked'")
            if data.dtype != np.uint64 or data.ndim != 1 or data.size != layout.size:
                raise HubError(400, "the masked vector is not a uint64 vector of its layout's size")
            live = self._load(s, study)
            if live.agg is None or live.agg_attempt != attempt:
                live.agg = _restore_aggregator(
                    self._ctx(s, study, row),
                    Layout.from_json(row.layout) if row.layout is not None else None,
                    row.acc,
                    list(row.received),
                )
                live.agg_attempt = attempt
            agg = live.agg
            try:
                agg.add(MaskedContribution(study_id, round_index, attempt, node, layout, data))
            except ProtocolError as exc:
                raise HubError(400, f"malformed contribution: {exc}") from None
            try:
                row.acc = _masked_sum(agg).tobytes()
                row.layout = layout.to_json()
                row.received = {**row.received, node: digest}
                if not agg.missing:
                    row.phase = "reveal"
                    live.deadline = time.monotonic() + self.reveal_timeout
                task = s.get(TaskRow, (study_id, round_index, attempt, node))
                if task is not None:
                    task.state, task.updated_at = "contributed", time.time()
                s.commit()
            except Exception:
                live.agg, live.agg_attempt = None, -1  # rebuilt from the database next time
                raise
            self._bump(row.participants if row.phase == "reveal" else [node], study_id)
            return {"status": "accepted", "round_index": round_index, "attempt": attempt}

    def reveal(
        self, node: str, study_id: str, round_index: int, attempt: int, seed_hex: str
    ) -> dict[str, Any]:
        """Record a node's self-mask seed; the last one finishes the round."""
        try:
            seed = bytes.fromhex(seed_hex)
        except (ValueError, TypeError):
            raise HubError(400, "a seed is hex-encoded") from None
        if len(seed) != 32:
            raise HubError(400, "a seed is 32 bytes")
        with self.lock, Session(self.engine) as s:
            study, row = self._attempt_rows(s, node, study_id, round_index)
            if row.attempt == attempt and row.seeds.get(node) == seed_hex:
                return {"status": "duplicate", "round_index": round_index, "attempt": attempt}
            if study.status != "running":
                raise HubError(409, f"study {study_id!r} is {study.status}")
            if row.attempt != attempt or row.phase != "reveal" or node not in row.received:
                raise HubError(409, "this attempt is not waiting for this node's seed")
            if node in row.seeds:
                raise HubError(409, "this node already revealed another seed")
            row.seeds = {**row.seeds, node: seed_hex}
            task = s.get(TaskRow, (study_id, round_index, attempt, node))
            if task is not None:
                task.state, task.updated_at = "revealed", time.time()
            finished = set(row.seeds) == set(row.participants)
            try:
                if finished:
                    self._finish_round(s, study, row)
                s.commit()
            except Exception:
                self._live.pop(study_id, None)  # rebuilt from the database next time
                self._audit_queue.clear()
                raise
            self._flush_audit()
            self._bump(study.participants if finished else [node], study_id)
            return {"status": "accepted", "round_index": round_index, "attempt": attempt}

    def _finish_round(self, s: Session, study: StudyRow, row: RoundRow) -> None:
        live = self._load(s, study)
        ctx = self._ctx(s, study, row)
        if live.agg is None or live.agg_attempt != row.attempt:
            live.agg = _restore_aggregator(
                ctx, Layout.from_json(row.layout), row.acc, list(row.received)
            )
            live.agg_attempt = row.attempt
        sums = live.agg.finish({n: bytes.fromhex(h) for n, h in row.seeds.items()})
        row.sums, row.acc, row.done = pack_arrays(sums), None, True
        row.phase, row.finished_at = "done", time.time()
        study.n_rounds, study.updated_at = row.round_index + 1, time.time()
        self._later(
            "hub",
            "round.finished",
            {
                "study": study.id,
                "round": row.round_index,
                "attempt": row.attempt,
                "step": row.step,
                "participants": list(row.participants),
                "arrays": {k: list(np.shape(v)) for k, v in sums.items()},
                "digests": dict(row.received),
            },
        )
        try:
            live.coord.advance(sums)
            live.coord.history[-1] = {}
        except ConsortiaError as exc:
            self._fail(s, study, f"the algorithm failed after round {row.round_index}: {exc}")
            return
        if live.coord.done:
            study.status = "finished"
            self._live.pop(study.id, None)
            self._later("hub", "study.finished", {"study": study.id, "rounds": study.n_rounds})
        else:
            self._open_round(s, study, live)

    def refuse(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        rule: str,
        message: str,
    ) -> dict[str, Any]:
        """A node's policy (or privacy layer) refused the task: the study fails naming the rule."""
        with self.lock, Session(self.engine) as s:
            study, row = self._attempt_rows(s, node, study_id, round_index)
            if study.status != "running":
                return {"status": study.status}
            if row.attempt != attempt or node not in row.participants:
                raise HubError(409, "this attempt is not open for this node")
            reason = f"site {node!r}: policy rule {rule!r} refused the release: {message}"
            study.error_site, study.error_detail = node, message
            self._fail(s, study, reason, rule)
            s.commit()
            self._flush_audit()
            return {"status": "failed"}

    # ------------------------------------------------------------------ timeouts

    def _monitor_loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.check_timeouts()
            except Exception:  # pragma: no cover - keep the monitor alive
                import logging

                logging.getLogger("consortia.hub").exception("timeout monitor failed")

    def check_timeouts(self) -> None:
        """Exclude nodes that missed their deadline; re-run the round among the survivors."""
        now = time.monotonic()
        with self.lock:
            late = [sid for sid, live in self._live.items() if live.deadline < now]
            if not late:
                return
            with Session(self.engine) as s:
                for sid in late:
                    study = s.get(StudyRow, sid)
                    row = self._current_round(s, sid)
                    if study is None or study.status != "running" or row is None:
                        self._live.pop(sid, None)
                        continue
                    live = self._live[sid]
                    if row.phase == "reveal":
                        missing = sorted(set(row.participants) - set(row.seeds))
                        self._fail(
                            s,
                            study,
                            f"nodes {missing} did not reveal their self-mask seed in time; "
                            f"round {row.round_index} cannot be finished",
                        )
                        s.commit()
                        self._flush_audit()
                        continue
                    missing = sorted(set(row.participants) - set(row.received))
                    survivors = [n for n in row.participants if n not in missing]
                    if not survivors:
                        self._fail(s, study, "every node dropped out")
                        s.commit()
                        self._flush_audit()
                        continue
                    for t in s.scalars(
                        select(TaskRow).where(
                            TaskRow.study_id == sid,
                            TaskRow.round_index == row.round_index,
                            TaskRow.attempt == row.attempt,
                        )
                    ):
                        t.state = "excluded" if t.node in missing else "superseded"
                    row.attempt += 1
                    row.participants = survivors
                    row.acc, row.layout, row.received, row.seeds = None, None, {}, {}
                    row.phase, row.opened_at = "collect", time.time()
                    study.participants = survivors
                    for n in survivors:
                        s.add(
                            TaskRow(
                                study_id=sid,
                                round_index=row.round_index,
                                attempt=row.attempt,
                                node=n,
                                state="pending",
                            )
                        )
                    s.commit()
                    live.agg, live.agg_attempt = None, -1
                    live.deadline = time.monotonic() + self.node_timeout
                    self._bump([*survivors, *missing], sid)
                    self.audit.append(
                        "hub",
                        "nodes.excluded",
                        {
                            "study": sid,
                            "round": row.round_index,
                            "excluded": missing,
                            "new_attempt": row.attempt,
                        },
                    )

    # ------------------------------------------------------------------ catalogue

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


def validate_name(name: str, what: str) -> str:
    """A node or token name: 1-64 characters, letters, digits, ``-``, ``_`` and ``.``."""
    ok = 0 < len(name) <= 64 and all(c.isalnum() or c in "-_." for c in name)
    if not ok:
        raise ValidationError(f"{what} must be 1-64 letters, digits, '-', '_' or '.'")
    return name
