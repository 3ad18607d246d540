"""The hub's study engine: drives each study's coordinator over the hub's store.

:class:`StudyEngine` wires small collaborators, each owning one concept:

========================================  ==============================================
:class:`~consortia.hub.store.StudyStore`  persistence (SQLAlchemy: :mod:`~.sqlstore`)
:class:`~consortia.hub.registry.StudyRegistry`  running studies; the hub-wide lock
:class:`~consortia.hub.studies.Studies`   submit, cancel, fail, rebuild after a restart
:class:`~consortia.hub.rounds.RoundService`  vectors, seeds, shares, refusals, heartbeats
:class:`~consortia.hub.finishing.Finisher`  unmasking and ``coordinate()``, off requests
:class:`~consortia.hub.approvals.Approvals`  nodes waiting for their owner
:class:`~consortia.hub.timeouts.Timeouts`  silent nodes excluded, rounds re-run
:class:`~consortia.hub.tasks.TaskBoard`   a node's tasks and its long-poll
:class:`~consortia.hub.queries.Queries`   study status, rounds, sums, catalogue
========================================  ==============================================

Every state change is one store transaction, committed before the request that
caused it is acknowledged:

* a node's masked vector is added into the attempt's running masked sum (a
  :class:`~consortia.privacy.SecureAggregator` in memory) and the set of nodes
  received (with each vector's digest) is persisted; the sum itself is
  persisted with the last vector, in the transaction that opens the reveal;
* once every participant's vector is in, the round enters its *reveal* phase:
  each node is asked for its self-mask seed (persisted as it arrives);
* the last seed finishes the sum, which is stored as the round's SUMS in the
  same transaction that opens the next round (or finishes the study).

Locks: a study's state changes under its own lock; the registry's hub-wide lock
guards only which studies run and the versions long-polls wait on.  The unmasking
and ``coordinate()`` hold neither (see :mod:`consortia.hub.finishing`).

After a crash, every running study is rebuilt from the store
(:func:`consortia.hub.state.load_live`): no finished round is lost or repeated.
An attempt that was collecting vectors when the hub stopped is abandoned and re-run
among the same participants with fresh masks (nothing of it was revealed).  A node
that does not post its vector within ``node_timeout`` is excluded and the round
re-runs among the survivors as a new attempt with fresh masks.

One hub process serves one database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine

from consortia.audit import AuditLog
from consortia.hub import settings as defaults
from consortia.hub.approvals import DEFAULT_APPROVAL_TIMEOUT, Approvals
from consortia.hub.context import AuditQueue, HubConfig, HubContext
from consortia.hub.errors import HubError
from consortia.hub.finishing import Finisher
from consortia.hub.queries import Queries
from consortia.hub.registry import StudyRegistry
from consortia.hub.rounds import RoundService
from consortia.hub.sqlstore import SqlStudyStore
from consortia.hub.state import LiveStudy
from consortia.hub.store import StudyStore
from consortia.hub.studies import Studies
from consortia.hub.tasks import TaskBoard
from consortia.hub.timeouts import Timeouts

__all__ = ["DEFAULT_STEP_TIMEOUT", "HubError", "StudyEngine"]

DEFAULT_STEP_TIMEOUT = 6 * 3600.0
"""Seconds a live (heartbeating) node may spend on one step's local work by default."""

log = logging.getLogger("consortia.hub")


class StudyEngine:
    """Studies, rounds and tasks of one hub, over one store.

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
    store
        The storage of studies, rounds, blobs and results (a
        :class:`~consortia.hub.sqlstore.SqlStudyStore` on ``engine`` if omitted).
    background
        Finish complete rounds (unmasking, ``coordinate()``) on threads of their own,
        so that the request that completed a round is answered at once (the HTTP hub
        does); by default they are finished in the calling thread.
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
        store: StudyStore | None = None,
        background: bool = False,
    ) -> None:
        if recovery is not None and (
            isinstance(recovery, bool) or not isinstance(recovery, int) or recovery < 0
        ):
            raise ValueError("recovery must be None (a majority), 0 (off) or a threshold >= 2")
        self.engine = engine
        self.audit = audit if audit is not None else AuditLog(engine)
        self.store: StudyStore = store if store is not None else SqlStudyStore(engine, self.audit)
        self.registry = StudyRegistry()
        config = HubConfig(
            node_timeout=float(node_timeout),
            reveal_timeout=float(reveal_timeout),
            step_timeout=float(step_timeout),
            approval_timeout=float(approval_timeout),
            max_payload=int(max_payload),
            recovery=recovery,
        )
        self.ctx = HubContext(self.store, self.registry, AuditQueue(self.audit), config, clock)
        self.studies = Studies(self.ctx)
        self.finisher = Finisher(self.ctx, self.studies, background=background)
        self.rounds = RoundService(self.ctx, self.studies, self.finisher)
        self.approvals = Approvals(self.ctx, self.studies)
        self.timeouts = Timeouts(self.ctx, self.studies, self.approvals)
        self.tasks = TaskBoard(self.ctx, self.studies)
        self.queries = Queries(self.ctx, self.studies)
        self.studies.resume_finish = self._resume_finish
        self._monitor: threading.Thread | None = None
        self.registry.mark_stale(self.store.running_ids())

    # the limits, as given
    @property
    def config(self) -> HubConfig:
        """The engine's limits (timeouts, largest payload, seed recovery)."""
        return self.ctx.config

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    @property
    def node_timeout(self) -> float:
        return self.ctx.config.node_timeout

    @node_timeout.setter
    def node_timeout(self, value: float) -> None:
        self.ctx.config.node_timeout = float(value)

    @property
    def reveal_timeout(self) -> float:
        return self.ctx.config.reveal_timeout

    @property
    def approval_timeout(self) -> float:
        return self.ctx.config.approval_timeout

    @property
    def max_payload(self) -> int:
        return self.ctx.config.max_payload

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Resume every running study from the store and start the timeout monitor."""
        self.studies.refresh()
        self._monitor = threading.Thread(target=self._monitor_loop, daemon=True, name="hub-monitor")
        self._monitor.start()

    def stop(self) -> None:
        """Stop the monitor thread, wake every waiting long-poll, let finishing rounds end.

        A round still being finished after a few seconds (a coordinator that does not
        return) is left to its thread: its seeds are committed, and the next start
        finishes it.
        """
        self.registry.stop()
        if self._monitor is not None:
            self._monitor.join(timeout=2)
        self.finisher.wait_idle(5.0)

    def _resume_finish(self, live: LiveStudy) -> None:
        """Finish a round whose every seed was committed before a restart."""
        with live.lock:
            self.finisher.begin(live)
        self.finisher.submit(live)

    def _monitor_loop(self) -> None:
        while not self.registry.stopped.wait(0.1):
            try:
                self.studies.refresh(blocking=False)  # studies to rebuild: off the requests
                self.check_timeouts()
            except Exception:  # pragma: no cover - keep the monitor alive
                log.exception("timeout monitor failed")

    def check_timeouts(self) -> None:
        """Exclude nodes that missed their deadline; re-run the round among the survivors."""
        self.timeouts.check()

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
        return self.studies.submit(researcher, algorithm, dataset, nodes=nodes, frac_bits=frac_bits)

    def cancel(self, study_id: str, researcher: str | None, actor: str) -> dict[str, Any]:
        """Cancel a running study (idempotent; a finished study stays finished)."""
        self.studies.cancel(study_id, researcher, actor)
        return self.status(study_id, researcher)

    def status(self, study_id: str, researcher: str | None) -> dict[str, Any]:
        """The study's public state (see :meth:`consortia.hub.queries.Queries.status`)."""
        return self.queries.status(study_id, researcher)

    def wait_status(
        self, study_id: str, researcher: str | None, known: int | None, timeout: float
    ) -> dict[str, Any]:
        """Long-poll a study's state (see :meth:`consortia.hub.queries.Queries.wait_status`)."""
        return self.queries.wait_status(study_id, researcher, known, timeout)

    def list_studies(self, researcher: str | None) -> list[dict[str, Any]]:
        """Studies of ``researcher`` (all for ``None``), newest first."""
        return self.queries.list_studies(researcher)

    def round_list(
        self, study_id: str, researcher: str | None, start: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Finished rounds from ``start``: index, step, attempt and participants."""
        return self.queries.round_list(study_id, researcher, start, limit)

    def round_sums(self, study_id: str, researcher: str | None, round_index: int) -> bytes:
        """The aggregated sums of one finished round (a consortia.wire message)."""
        return self.queries.round_sums(study_id, researcher, round_index)

    def result(self, study_id: str, researcher: str | None) -> tuple[bytes, str]:
        """A finished study's stored result frame and its digest."""
        return self.queries.result(study_id, researcher)

    def publish(self, node: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the node's published catalogue."""
        self.queries.publish(node, datasets)

    def catalogue(self) -> dict[str, dict[str, Any]]:
        """Published catalogue: node -> dataset name -> entry."""
        return self.queries.catalogue()

    # ------------------------------------------------------------------ node side

    def tasks_for(self, node: str) -> list[dict[str, Any]]:
        """The node's open tasks (see :meth:`consortia.hub.tasks.TaskBoard.tasks_for`)."""
        return self.tasks.tasks_for(node)

    def wait_tasks(self, node: str, timeout: float) -> list[dict[str, Any]]:
        """Long-poll for the node's tasks, at most ``timeout`` seconds."""
        return self.tasks.wait_tasks(node, timeout)

    def contribute(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        layout_json: Any,
        body: bytes | bytearray,
        bundle: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add a node's masked vector into the attempt's running sum (persisted, then acked).

        ``bundle`` is the encrypted shares of the node's self-mask seed
        (:meth:`SeedShares.to_json <consortia.privacy.recovery.SeedShares.to_json>`),
        required when the attempt shares seeds; the hub keeps and forwards it but
        cannot read it.
        """
        return self.rounds.contribute(
            node, study_id, round_index, attempt, layout_json, body, bundle
        )

    def reveal(
        self, node: str, study_id: str, round_index: int, attempt: int, seed_hex: str
    ) -> dict[str, Any]:
        """Record a node's self-mask seed; the last one finishes the round."""
        return self.rounds.reveal(node, study_id, round_index, attempt, seed_hex)

    def share(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        seed_hex: str,
        shares: Mapping[str, str],
    ) -> dict[str, Any]:
        """Record a survivor's seed and its shares of the lost seeds; the last one finishes."""
        return self.rounds.share(node, study_id, round_index, attempt, seed_hex, shares)

    def refuse(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        rule: str,
        message: str,
        *,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """A node's policy refused the task: the study fails naming the rule."""
        return self.rounds.refuse(
            node, study_id, round_index, attempt, rule, message, anonymous=anonymous
        )

    def heartbeat(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        progress: float | None = None,
    ) -> dict[str, Any]:
        """A participant is alive and still computing its contribution (not persisted)."""
        return self.rounds.heartbeat(node, study_id, round_index, attempt, progress)

    def await_approval(
        self, node: str, study_id: str, round_index: int, attempt: int, digest: str
    ) -> dict[str, Any]:
        """Mark ``node`` as waiting for its owner in the open attempt (idempotent)."""
        return self.approvals.await_approval(node, study_id, round_index, attempt, digest)
