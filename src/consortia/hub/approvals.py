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

:class:`Approvals` is one of the collaborators of
:class:`~consortia.hub.service.StudyEngine`; it changes a study's state under that
study's lock.
"""

# no ``from __future__ import annotations``: FastAPI reads the route's annotations at runtime

from typing import Any, Protocol

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from consortia.hub.context import HubContext
from consortia.hub.errors import HubError
from consortia.hub.settings import APPROVAL_TIMEOUT
from consortia.hub.state import LiveStudy
from consortia.hub.studies import Studies

__all__ = ["Approvals", "PendingRequest", "approval_router"]

DEFAULT_APPROVAL_TIMEOUT = APPROVAL_TIMEOUT
"""Seconds a study waits for a node's owner before it fails (see :mod:`consortia.hub.settings`)."""


class PendingRequest(BaseModel):
    """A node's notice that its owner has not yet approved the study it was asked for."""

    model_config = ConfigDict(extra="forbid")

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class Approvals:
    """Nodes waiting for their owner's approval, per running study.

    Parameters
    ----------
    ctx
        The engine's shared parts.
    studies
        Access to running studies (and failing one).
    """

    def __init__(self, ctx: HubContext, studies: Studies) -> None:
        self.ctx = ctx
        self.studies = studies

    @property
    def timeout(self) -> float:
        """Seconds a study waits for a node's owner before it fails."""
        return self.ctx.config.approval_timeout

    def await_approval(
        self, node: str, study_id: str, round_index: int, attempt: int, digest: str
    ) -> dict[str, Any]:
        """Mark ``node`` as waiting for its owner in the open attempt (idempotent)."""
        ctx = self.ctx
        with self.studies.hold(node, study_id) as live:
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
                live.waiting[node] = ctx.clock() + self.timeout
                ctx.store.set_task(study_id, rnd.state, node, "waiting_approval")
                ctx.audit.log.append(
                    f"node:{node}",
                    "study.waiting_approval",
                    {"study": study_id, "round": round_index, "digest": digest},
                )
                ctx.registry.bump((), study_id)
            return {"status": "waiting", "approval_timeout": self.timeout}

    def hold(self, live: LiveStudy, missing: list[str]) -> list[str] | None:
        """The round's deadline passed: which missing nodes to exclude (None: none now).

        Nodes waiting for their owner are not excluded; one that waited past the
        approval timeout fails the study.  When only waiting nodes are missing, the
        round's deadline moves to the first approval deadline.  The caller holds the
        study's lock.
        """
        waiting = [n for n in missing if n in live.waiting]
        if not waiting:
            return missing
        now = self.ctx.clock()
        expired = [n for n in waiting if live.waiting[n] <= now]
        if expired:
            reason = f"node {expired[0]}'s owner did not approve within {self.timeout:g} s"
            self.studies.fail(live.id, reason, "approval_timeout", site=expired[0])
            return None
        others = [n for n in missing if n not in live.waiting]
        if others:
            return others
        live.deadline = min(live.waiting[n] for n in waiting)
        return None


class _Awaits(Protocol):
    def await_approval(
        self, node: str, study_id: str, round_index: int, attempt: int, digest: str
    ) -> dict[str, Any]: ...


def approval_router(studies: _Awaits, node: Any) -> APIRouter:
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
