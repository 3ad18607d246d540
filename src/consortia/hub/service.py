"""The hub's study engine: drives each study's coordinator over the database.

Every state change is one database transaction, committed before the HTTP
request that caused it is acknowledged:

* a node's masked vector is added into the attempt's running masked sum (a
  :class:`~consortia.privacy.SecureAggregator` in memory) and the set of nodes
  received (with each vector's digest) is persisted; the sum itself is
  persisted with the last vector, in the transaction that opens the reveal;
* once every participant's vector is in, the round enters its *reveal* phase:
  each node is asked for its self-mask seed (persisted as it arrives);
* the last seed finishes the sum, which is stored as the round's SUMS in the
  same transaction that opens the next round (or finishes the study).

After a crash, every running study is rebuilt from the database
(:func:`consortia.hub.state.load_live`): no finished round is lost or repeated.
The running masked sum is persisted only with an attempt's last vector (not on
every upload), so an attempt that was collecting vectors when the hub stopped is
abandoned and re-run among the same participants with fresh masks (nothing of it
was revealed).  A node
that does not post its vector within ``node_timeout`` is excluded and the round
re-runs among the survivors as a new attempt with fresh masks.

One hub process serves one database.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.errors import ConsortiaError
from consortia.hub import settings as defaults
from consortia.hub.approvals import DEFAULT_APPROVAL_TIMEOUT, ApprovalHandling
from consortia.hub.checks import check_params, to_json
from consortia.hub.db import (
    DatasetRow,
    NodeRow,
    StudyRow,
)
from consortia.hub.payloads import store_public, submit_details, task_message
from consortia.hub.queries import HubError, StudyQueries
from consortia.hub.rounds import RoundHandling
from consortia.hub.state import (
    LiveRound,
    LiveStudy,
    interrupted,
    load_live,
)
from consortia.hub.statements import ACC, ROUNDS, SET_TASK, TASKS, round_update
from consortia.messages import TaskKind
from consortia.privacy.keys import PeerKey
from consortia.privacy.secagg import (
    RoundContext,
)
from consortia.protocol import Coordinator, algorithm_from_spec
from consortia.runtime.rounds import AttemptAbandoned, Outcome, RoundState, SitesSilent, apply

__all__ = ["DEFAULT_STEP_TIMEOUT", "HubError", "StudyEngine"]

DEFAULT_STEP_TIMEOUT = 6 * 3600.0
"""Seconds a live (heartbeating) node may spend on one step's local work by default."""

log = logging.getLogger("consortia.hub")


class StudyEngine(StudyQueries, RoundHandling, ApprovalHandling):
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
    audit
        The hub's audit log (created on ``engine`` if omitted).
    approval_timeout
        Seconds a study waits for a node's data owner to approve it before it fails
        (see :mod:`consortia.hub.approvals`).
    step_timeout
        The most seconds a participant that keeps sending heartbeats may spend on a
        step's local work, unless the step says otherwise
        (:attr:`consortia.protocol.Round.timeout`).  A node heartbeats at a third of
        ``node_timeout``: a site that is alive and computing is excluded only past
        this limit.
    clock
        The monotonic clock the deadlines are read from (tests may drive it).
    recovery
        Seed recovery at the reveal (:mod:`consortia.privacy.recovery`): each
        participant shares its self-mask seed among the others, so that a node that
        dies after its vector and before its reveal does not stall the round.  None
        (default) for a majority threshold in every attempt, 0 for no sharing, else
        the threshold.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        node_timeout: float = defaults.NODE_TIMEOUT,
        reveal_timeout: float = defaults.REVEAL_TIMEOUT,
        max_payload: int = defaults.MAX_PAYLOAD,
        audit: AuditLog | None = None,
        approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        recovery: int | None = None,
    ) -> None:
        if recovery is not None and (
            isinstance(recovery, bool) or not isinstance(recovery, int) or recovery < 0
        ):
            raise ValueError("recovery must be None (a majority), 0 (off) or a threshold >= 2")
        self.recovery = recovery
        self.engine = engine
        self.clock = clock
        self.step_timeout = float(step_timeout)
        self.approval_timeout = float(approval_timeout)
        self.node_timeout = float(node_timeout)
        self.reveal_timeout = float(reveal_timeout)
        self.max_payload = int(max_payload)
        self.audit = audit if audit is not None else AuditLog(engine)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._live: dict[str, LiveStudy] = {}
        self._stale: set[str] = set()
        self._node_version: dict[str, int] = {}
        self._study_version: dict[str, int] = {}
        self._peers: dict[str, PeerKey] = {}
        self._peer_json: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._audit_queue: list[tuple[str, str, dict[str, Any]]] = []
        with Session(engine) as s:
            self._stale.update(
                s.scalars(select(StudyRow.id).where(StudyRow.status == "running")).all()
            )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Resume every running study from the database and start the timeout monitor."""
        with self.lock:
            self._refresh()
        self._monitor = threading.Thread(target=self._monitor_loop, daemon=True, name="hub-monitor")
        self._monitor.start()

    def stop(self) -> None:
        """Stop the monitor thread and wake every waiting long-poll."""
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        if self._monitor is not None:
            self._monitor.join(timeout=2)

    def _refresh(self) -> None:
        """Rebuild the in-memory state of studies marked stale (after a restart or an error)."""
        if not self._stale:
            return
        finish: list[LiveStudy] = []
        with Session(self.engine) as s:
            for sid in sorted(self._stale):
                study = s.get(StudyRow, sid)
                if study is None or study.status != "running":
                    continue
                try:
                    live = load_live(
                        s,
                        study,
                        node_timeout=self.node_timeout,
                        reveal_timeout=self.reveal_timeout,
                        recovery=self.recovery,
                    )
                    if interrupted(s, live):
                        self._abandon(s, live)
                    self._arm(live)  # a resumed phase gets its full deadlines again
                    self._live[sid] = live
                    if live.round.phase in ("reveal", "recover") and not live.round.state.awaiting:
                        finish.append(live)  # every seed was committed before a restart
                except ConsortiaError as exc:
                    self._fail(s, study, f"could not resume: {exc}")
                    s.commit()
            self._stale.clear()
        self._flush_audit()
        for live in finish:
            self._begin_finish(live)
            self._finish_round(live)
        self.changed.notify_all()

    def _open_attempt(
        self, s: Session, live: LiveStudy, new: RoundState, *, excluded: Sequence[str]
    ) -> None:
        """Persist ``new``, the next attempt of the open round (the caller commits).

        The old attempt's tasks are superseded (``excluded`` ones marked so), its running
        sum dropped, the round row reset to the new attempt and its tasks created.
        """
        rnd = live.round
        now = time.time()
        old = (
            TASKS.c.study_id == live.id,
            TASKS.c.round_index == rnd.index,
            TASKS.c.attempt == rnd.attempt,
        )
        s.execute(update(TASKS).where(*old).values(state="superseded", updated_at=now))
        if excluded:
            s.execute(
                update(TASKS).where(*old, TASKS.c.node.in_(excluded)).values(state="excluded")
            )
        s.execute(delete(ACC).where(ACC.c.study_id == live.id, ACC.c.round_index == rnd.index))
        self._update_round(
            s,
            live,
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
        s.execute(
            insert(TASKS),
            [
                {
                    "study_id": live.id,
                    "round_index": new.index,
                    "attempt": new.attempt,
                    "node": n,
                    "state": "pending",
                    "updated_at": now,
                }
                for n in new.participants
            ],
        )

    def _abandon(self, s: Session, live: LiveStudy) -> None:
        """Give up an attempt whose running sum was lost while collecting; commit.

        Nothing of it was revealed: the round re-runs among the same participants with
        fresh masks (:class:`~consortia.runtime.rounds.AttemptAbandoned`).
        """
        rnd = live.round
        t = apply(rnd.state, AttemptAbandoned(rnd.attempt))
        new = t.state
        self._open_attempt(s, live, new, excluded=())
        s.commit()
        live.round = LiveRound(step=rnd.step, public=rnd.public, state=new)
        live.agg, live.agg_attempt = None, -1
        self._bump(new.participants, live.id)
        self._later(
            "hub",
            "attempt.abandoned",
            {
                "study": live.id,
                "round": rnd.index,
                "attempt": rnd.attempt,
                "received": sorted(rnd.received),
                "new_attempt": new.attempt,
                "reason": "the hub restarted while the attempt collected vectors",
            },
        )

    def _invalidate(self, study_id: str) -> None:
        """Forget a study's in-memory state; it is rebuilt from the database when next needed."""
        self._live.pop(study_id, None)
        self._stale.add(study_id)

    def _later(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Queue an audit entry, written after the current transaction commits."""
        self._audit_queue.append((actor, action, details))

    def _flush_audit(self) -> None:
        queue, self._audit_queue = self._audit_queue, []
        for actor, action, details in queue:
            self.audit.append(actor, action, details)

    def _bump(self, nodes: list[str] | tuple[str, ...] | set[str], study_id: str | None = None):
        for n in nodes:
            self._node_version[n] = self._node_version.get(n, 0) + 1
        if study_id is not None:
            self._study_version[study_id] = self._study_version.get(study_id, 0) + 1
        self.changed.notify_all()

    # ------------------------------------------------------------------ helpers

    def _peer(self, name: str) -> PeerKey:
        peer = self._peers.get(name)
        if peer is None:
            with Session(self.engine) as s:
                row = s.get(NodeRow, name)
                if row is None:
                    raise HubError(409, f"node {name!r} is not enrolled")
                peer = PeerKey(
                    site=row.name,
                    mask_key=bytes.fromhex(row.mask_key),
                    identity_key=bytes.fromhex(row.identity_key),
                    signature=bytes.fromhex(row.signature),
                )
            self._peers[name] = peer
            self._peer_json[name] = peer.to_json()
        return peer

    def _ctx(self, live: LiveStudy) -> RoundContext:
        rnd = live.round
        return RoundContext(
            study_id=live.id,
            round_index=rnd.index,
            attempt=rnd.attempt,
            participants=tuple(self._peer(n) for n in rnd.participants),
            frac_bits=live.frac_bits,
        )

    def _new_round(self, s: Session, live: LiveStudy, participants: Sequence[str]) -> LiveRound:
        rnd = live.coord.current
        assert rnd is not None
        new = LiveRound(
            step=rnd.step,
            public=store_public(s, live.id, rnd.public),
            state=RoundState.open(live.coord.round_index, participants, recovery=self.recovery),
        )
        now = time.time()
        s.execute(
            insert(ROUNDS),
            {
                "study_id": live.id,
                "round_index": new.index,
                "step": new.step,
                "public": new.public,
                "attempt": 0,
                "participants": list(new.participants),
                "phase": "collect",
                "received": {},
                "seeds": {},
                "done": False,
                "opened_at": now,
            },
        )
        s.execute(
            insert(TASKS),
            [
                {
                    "study_id": live.id,
                    "round_index": new.index,
                    "attempt": 0,
                    "node": n,
                    "state": "pending",
                    "updated_at": now,
                }
                for n in participants
            ],
        )
        return new

    def _close_tasks(self, s: Session, study_id: str, state: str) -> None:
        s.execute(
            update(TASKS)
            .where(
                TASKS.c.study_id == study_id,
                TASKS.c.state.in_(("pending", "contributed", "waiting_approval")),
            )
            .values(state=state, updated_at=time.time())
        )

    def _fail(self, s: Session, study: StudyRow, reason: str, rule: str | None = None) -> None:
        study.status, study.error, study.error_rule = "failed", reason, rule
        study.updated_at = time.time()
        self._close_tasks(s, study.id, "cancelled")
        live = self._live.pop(study.id, None)
        self._bump(live.members if live else study.participants, study.id)
        self._later("hub", "study.failed", {"study": study.id, "reason": reason, "rule": rule})

    def _set_task(self, s: Session, live: LiveStudy, node: str, state: str) -> None:
        rnd = live.round
        s.execute(
            SET_TASK,
            {
                "k_study": live.id,
                "k_round": rnd.index,
                "k_attempt": rnd.attempt,
                "k_node": node,
                "v_state": state,
                "v_time": time.time(),
            },
        )

    def _update_round(self, s: Session, live: LiveStudy, **values: Any) -> None:
        params = {f"v_{k}": v for k, v in values.items()}
        s.execute(
            round_update(tuple(values)),
            {"k_study": live.id, "k_round": live.round.index, **params},
        )

    # ------------------------------------------------------------------ deadlines

    def _node_deadline(self, live: LiveStudy, node: str) -> float:
        """When ``node`` counts as silent in the open collect phase.

        Silent = no vector and no heartbeat for ``node_timeout`` seconds, or the
        step's own limit passed since the attempt opened.
        """
        current = live.coord.current
        limit = current.timeout if current is not None and current.timeout else None
        seen = max(live.opened, live.beats.get(node, live.opened))
        return min(seen + self.node_timeout, live.opened + (limit or self.step_timeout))

    def _deadline(self, live: LiveStudy) -> float:
        """The earliest moment at which a participant of the open phase may be silent."""
        if live.round.phase in ("reveal", "recover"):
            return live.opened + self.reveal_timeout
        awaiting = [n for n in live.round.state.awaiting if n not in live.waiting]
        if not awaiting:
            return live.opened + self.node_timeout
        return min(self._node_deadline(live, n) for n in awaiting)

    def _arm(self, live: LiveStudy) -> None:
        """A phase (or an attempt) opened now: start its deadlines afresh."""
        live.opened = self.clock()
        live.beats.clear()
        live.progress.clear()
        live.deadline = self._deadline(live)

    def heartbeat(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        progress: float | None = None,
    ) -> dict[str, Any]:
        """A participant is alive and still computing its contribution (not persisted)."""
        with self.lock:
            live = self._live_for(node, study_id)
            if live is None:
                return {"status": "not running"}
            rnd = live.round
            if (
                rnd.index != round_index
                or rnd.attempt != attempt
                or node not in rnd.state.awaiting
                or rnd.phase != "collect"
            ):
                raise HubError(409, "this attempt is not waiting for this node's contribution")
            live.beats[node] = self.clock()
            if progress is not None:
                live.progress[node] = min(max(float(progress), 0.0), 1.0)
            live.deadline = self._deadline(live)
            return {"status": "alive", "round_index": round_index, "attempt": attempt}

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
        """Create a study over every node publishing ``dataset`` (or the named ``nodes``).

        Parameters are checked first (finite numbers, bounded names and nesting): a
        refused study leaves nothing behind.
        """
        check_params(algorithm.get("params", {}) if isinstance(algorithm, Mapping) else None)
        try:
            algo = algorithm_from_spec(algorithm)
            spec = algo.spec()
            coord = Coordinator(algo, keep_history=False)
        except ConsortiaError as exc:
            raise HubError(422, f"the algorithm could not start: {exc}") from None
        except (MemoryError, OverflowError):
            raise HubError(422, "the algorithm's parameters ask for too much memory") from None
        to_json(spec, "the algorithm's parameters")
        if not 0 <= int(frac_bits) <= 52:
            raise HubError(422, "frac_bits must be an integer in [0, 52]")
        with self.lock, Session(self.engine) as s:
            holders = sorted(  # a node lists a dataset that failed to load as unavailable
                row.node
                for row in s.scalars(select(DatasetRow).where(DatasetRow.name == dataset))
                if not (isinstance(row.catalogue, dict) and row.catalogue.get("available") is False)
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
            study = StudyRow(
                id=uuid.uuid4().hex,
                researcher=researcher,
                algorithm=spec,
                dataset=dataset,
                frac_bits=int(frac_bits),
                status="finished" if coord.done else "running",
                participants=holders,
                n_rounds=0,
            )
            s.add(study)
            s.flush()  # the study row before its rounds (foreign key)
            live = None
            if not coord.done:
                live = LiveStudy(
                    id=study.id,
                    researcher=researcher,
                    spec=spec,
                    dataset=dataset,
                    frac_bits=int(frac_bits),
                    members=set(holders),
                    coord=coord,
                    round=None,  # type: ignore[arg-type]
                    deadline=0.0,
                )
                live.round = self._new_round(s, live, holders)
                self._arm(live)
            # the audit entry (digests, never arrays) commits with the study, or neither does
            submitted = ("researcher:" + researcher, "study.submit")
            details = submit_details(study.id, spec, dataset, holders)
            same = self.audit.engine is self.engine
            if same:
                self.audit.append(*submitted, details, connection=s.connection())
            s.commit()
            if live is not None:
                self._live[study.id] = live
            self._bump(holders, study.id)
            sid = study.id
        if not same:
            self.audit.append(*submitted, details)
        return sid

    def cancel(self, study_id: str, researcher: str | None, actor: str) -> dict[str, Any]:
        """Cancel a running study (idempotent; a finished study stays finished)."""
        with self.lock, Session(self.engine) as s:
            study = self._owned(s, study_id, researcher)
            if study.status == "running":
                study.status, study.updated_at = "cancelled", time.time()
                study.error = f"cancelled by {actor}"
                self._close_tasks(s, study.id, "cancelled")
                s.commit()
                live = self._live.pop(study.id, None)
                self._stale.discard(study.id)
                self._bump(live.members if live else study.participants, study.id)
                self.audit.append(actor, "study.cancel", {"study": study.id})
        return self.status(study_id, researcher)

    # ------------------------------------------------------------------ node side

    def tasks_for(self, node: str) -> list[dict[str, Any]]:
        """The node's open tasks: ``contribute`` (collect phase) or ``reveal``.

        Each is the JSON of a :class:`~consortia.messages.TaskMessage`; the round's
        public arrays travel by reference (``GET /v1/node/blobs/{sha256}``).
        """
        out = []
        broken: list[str] = []
        with self.lock:
            self._refresh()
            for live in self._live.values():
                rnd = live.round
                if node not in rnd.participants:
                    continue
                extra: dict[str, Any] = {}
                if rnd.phase == "collect" and node not in rnd.received:
                    kind = TaskKind.CONTRIBUTE
                elif rnd.phase == "reveal" and node in rnd.received and node not in rnd.seeds:
                    kind = TaskKind.REVEAL
                elif rnd.phase == "recover" and node in rnd.state.awaiting:
                    kind = TaskKind.SHARE  # its seed, and its shares of the lost seeds
                    extra = {
                        "lost": list(rnd.state.lost),
                        "ciphertexts": {
                            x: rnd.bundles[x]["ciphertexts"][node] for x in rnd.state.lost
                        },
                    }
                else:
                    continue
                for n in rnd.participants:
                    self._peer(n)
                try:  # a spec that is not strict JSON must not break every node's poll
                    to_json(live.spec, "spec")
                except HubError:
                    broken.append(live.id)
                    continue
                out.append(
                    task_message(
                        self.engine,
                        live,
                        kind,
                        [self._peer_json[n] for n in rnd.participants],
                        waiting=node in live.waiting,  # for its owner's approval
                        # seconds between the heartbeats of a node still computing
                        heartbeat=self.node_timeout / 3 or None,
                    )
                    | extra
                )
            for sid in broken:
                self._fail_unsendable(sid)
        return out

    def _fail_unsendable(self, study_id: str) -> None:
        """Fail a study whose task cannot be serialised (its spec holds NaN or infinity)."""
        log.error("study %s: its parameters are not strict JSON; the study fails", study_id)
        with Session(self.engine) as s:
            study = s.get(StudyRow, study_id)
            if study is not None and study.status == "running":
                self._fail(s, study, "the study's parameters cannot be sent to nodes")
                s.commit()
        self._live.pop(study_id, None)
        self._flush_audit()

    def wait_tasks(self, node: str, timeout: float) -> list[dict[str, Any]]:
        """Long-poll for the node's tasks, at most ``timeout`` seconds."""
        end = time.monotonic() + max(0.0, min(timeout, 60.0))
        while True:
            with self.changed:
                version = self._node_version.get(node, 0)
                tasks = self.tasks_for(node)
                # a task waiting for the node's owner comes back at the end of each poll
                if not all(t["waiting"] for t in tasks):
                    return tasks
                while self._node_version.get(node, 0) == version and not self._stop.is_set():
                    left = end - time.monotonic()
                    if left <= 0:
                        return tasks
                    self.changed.wait(left)
            if self._stop.is_set():
                return []

    def _monitor_loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.check_timeouts()
            except Exception:  # pragma: no cover - keep the monitor alive
                log.exception("timeout monitor failed")

    def check_timeouts(self) -> None:
        """Exclude nodes that missed their deadline; re-run the round among the survivors."""
        now = self.clock()
        with self.lock:
            for live in [lv for lv in self._live.values() if lv.deadline < now]:
                try:
                    self._time_out(live)
                except Exception:
                    self._invalidate(live.id)
                    self._audit_queue.clear()
                    raise
                self._flush_audit()

    def _time_out(self, live: LiveStudy) -> None:
        """The open attempt's deadline passed: the silent nodes, through the state machine."""
        rnd = live.round
        silent = list(rnd.state.awaiting)
        if rnd.phase == "collect":  # a node that heartbeats within its limits is not silent
            now = self.clock()
            silent = [n for n in silent if n in live.waiting or self._node_deadline(live, n) <= now]
            if not silent:
                live.deadline = self._deadline(live)
                return
        with Session(self.engine) as s:
            study = s.get(StudyRow, live.id)
            assert study is not None
            if rnd.phase == "collect":
                held = self._hold_for_approval(s, study, live, silent)
                if held is None:  # nodes wait for their owners (or the study failed)
                    s.commit()
                    return
                silent = held
            t = apply(rnd.state, SitesSilent(tuple(silent)))
            if t.outcome is Outcome.NOTHING:
                return
            if t.outcome is Outcome.FAILED:
                self._fail(s, study, t.state.failure or "the round failed")
                s.commit()
                return
            if t.outcome is Outcome.RECOVERY_OPENED:  # lost after their vector: rebuild
                self._update_round(s, live, phase=str(t.state.phase), lost=list(t.state.lost))
                s.commit()
                rnd.state = t.state
                self._arm(live)
                self._bump(rnd.participants, live.id)
                self._later(
                    "hub",
                    "nodes.lost",
                    {"study": live.id, "round": rnd.index, "lost": list(t.excluded)},
                )
                return
            new = t.state
            self._open_attempt(s, live, new, excluded=t.excluded)
            study.participants = list(new.participants)
            s.commit()
        live.round = LiveRound(step=rnd.step, public=rnd.public, state=new)
        live.agg, live.agg_attempt = None, -1
        self._arm(live)
        self._bump([*new.participants, *t.excluded], live.id)
        self._later(
            "hub",
            "nodes.excluded",
            {
                "study": live.id,
                "round": rnd.index,
                "excluded": list(t.excluded),
                "new_attempt": new.attempt,
            },
        )
