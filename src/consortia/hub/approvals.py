"""The hub's side of owner approvals: a study waits while a node's data owner decides.

A node whose configuration says ``approval = "manual"`` does not compute a study
its owner has not approved; it posts ``POST .../attempts/{a}/pending`` instead
(:func:`approval_router`).  The hub then:

* shows the study as waiting: ``current.waiting_approval`` in the study status
  lists the nodes it waits for, and the node's task state is ``waiting_approval``;
* does not exclude a waiting node by the normal ``node_timeout`` (other silent
  nodes are excluded as usual, and the round re-runs with the waiting node kept);
* fails the study cleanly (rule ``approval_timeout``) once a node has waited
  ``approval_timeout`` seconds: "node X's owner did not approve within N s".

A denial reaches the hub as an ordinary refusal with rule ``owner_denied``.  The
waiting state lives in memory: after a hub restart the node's next poll gets its
task without the ``waiting`` flag and posts its notice again (the approval clock
restarts).

:class:`ApprovalHandling` is mixed into :class:`~consortia.hub.service.StudyEngine`
and uses its state (``_live``, ``lock``, ``engine``) and helpers (``_live_for``,
``_set_task``, ``_fail``, ``_bump``).
"""

# no ``from __future__ import annotations``: FastAPI reads the route's annotations at runtime

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.hub.db import StudyRow
from consortia.hub.queries import HubError
from consortia.hub.settings import APPROVAL_TIMEOUT
from consortia.hub.state import LiveStudy

__all__ = ["ApprovalHandling", "PendingRequest", "approval_router"]

DEFAULT_APPROVAL_TIMEOUT = APPROVAL_TIMEOUT
"""Seconds a study waits for a node's owner before it fails (see :mod:`consortia.hub.settings`)."""


class PendingRequest(BaseModel):
    """A node's notice that its owner has not yet approved the study it was asked for."""

    model_config = ConfigDict(extra="forbid")

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class ApprovalHandling:
    """Nodes waiting for their owner's approval, per running study (mixed into the engine)."""

    approval_timeout: float
    engine: Engine
    audit: AuditLog
    lock: threading.RLock
    _live: dict[str, LiveStudy]
    clock: Callable[[], float]

    if TYPE_CHECKING:  # the engine's helpers (see StudyEngine and RoundHandling)

        def _live_for(self, node: str, study_id: str) -> LiveStudy | None: ...
        def _set_task(self, s: Session, live: LiveStudy, node: str, state: str) -> None: ...
        def _bump(
            self, nodes: list[str] | tuple[str, ...] | set[str], study_id: str | None = None
        ) -> None: ...
        def _fail(
            self, s: Session, study: StudyRow, reason: str, rule: str | None = None
        ) -> None: ...

    def await_approval(
        self, node: str, study_id: str, round_index: int, attempt: int, digest: str
    ) -> dict[str, Any]:
        """Mark ``node`` as waiting for its owner in the open attempt (idempotent)."""
        with self.lock:
            live: LiveStudy | None = self._live_for(node, study_id)
            if live is None:
                return {"status": "not running"}
            rnd = live.round
            if (
                rnd.index != round_index
                or rnd.attempt != attempt
                or node not in rnd.participants
                or rnd.phase != "collect"
                or node in rnd.received
            ):
                raise HubError(409, "this attempt is not waiting for this node's contribution")
            if node not in live.waiting:
                live.waiting[node] = self.clock() + self.approval_timeout
                with Session(self.engine) as s:
                    self._set_task(s, live, node, "waiting_approval")
                    s.commit()
                self.audit.append(
                    f"node:{node}",
                    "study.waiting_approval",
                    {"study": study_id, "round": round_index, "digest": digest},
                )
                self._bump((), study_id)
            return {"status": "waiting", "approval_timeout": self.approval_timeout}

    def _hold_for_approval(
        self, s: Session, study: StudyRow, live: LiveStudy, missing: list[str]
    ) -> list[str] | None:
        """The round's deadline passed: which missing nodes to exclude (None: none now).

        Nodes waiting for their owner are not excluded; one that waited past the
        approval timeout fails the study (the caller commits).  When only waiting
        nodes are missing, the round's deadline moves to the first approval deadline.
        """
        waiting = [n for n in missing if n in live.waiting]
        if not waiting:
            return missing
        now = self.clock()
        expired = [n for n in waiting if live.waiting[n] <= now]
        if expired:
            study.error_site = expired[0]
            reason = f"node {expired[0]}'s owner did not approve within {self.approval_timeout:g} s"
            self._fail(s, study, reason, "approval_timeout")
            return None
        others = [n for n in missing if n not in live.waiting]
        if others:
            return others
        live.deadline = min(live.waiting[n] for n in waiting)
        return None


def approval_router(studies: ApprovalHandling, node: Any) -> APIRouter:
    """The node-facing endpoint of owner approvals.

    Parameters
    ----------
    studies
        The hub's study engine.
    node
        The dependency type that authenticates a node (``Annotated[Principal, ...]``).
    """
    router = APIRouter()

    @router.post(
        "/v1/node/studies/{study_id}/rounds/{round_index}/attempts/{attempt}/pending",
        tags=["node"],
    )
    def pending(
        study_id: str, round_index: int, attempt: int, body: PendingRequest, who: node
    ) -> dict[str, Any]:
        """Report that this node's owner has not yet approved the study (it waits).

        The study is shown as waiting for this node and the node is not excluded by
        the node timeout; past the hub's approval timeout the study fails.
        """
        return studies.await_approval(who.name, study_id, round_index, attempt, body.digest)

    return router
