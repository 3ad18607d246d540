"""A node's endpoints: its catalogue, its tasks (long-poll), payloads, and its posts.

:class:`NodeCalls` holds what a node's posts share with the fast path
(:mod:`consortia.hub.fastpath`): a contribution is read into a bounded number of
upload slots and stored in one thread hop; a reveal is stored and the node's next
tasks waited for in one.  :func:`node_router` is the FastAPI side of every node
endpoint.
"""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import anyio
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.errors import ProtocolError
from consortia.hub.anchors import anchor_head
from consortia.hub.auth import Principal
from consortia.hub.checks import MAX_INDEX
from consortia.hub.db import NodeRow
from consortia.hub.errors import HubError
from consortia.hub.guard import read_body
from consortia.hub.payloads import read_blob
from consortia.hub.routes.auth import Roles
from consortia.hub.schemas import CatalogueRequest, HeartbeatRequest, RefusalRequest, RevealRequest
from consortia.hub.service import StudyEngine
from consortia.hub.settings import HubSettings
from consortia.messages import ContributionHeader, ShareMessage, TaskMessage
from consortia.wire import CONTENT_TYPE

__all__ = ["BASE", "RETRY_AFTER", "SLOT_WAIT", "NodeCalls", "node_router"]

Index = Annotated[int, PathParam(ge=0, le=MAX_INDEX)]  # a round index or attempt number
Wait = Annotated[float, Query(ge=0, le=60)]
BASE = "/v1/node/studies/{study_id}/rounds/{round_index}/attempts/{attempt}"

SMALL_BODY = 1 << 16  # contributions up to this size are not counted in the upload slots
RETRY_AFTER = 1
"""Seconds (``Retry-After``) after which a node told that every upload slot is busy tries again."""
SLOT_WAIT = 2.0
"""Seconds an announced upload waits for a free slot before it is answered ``503``."""


def _expects_continue(request: Request) -> bool:
    """Whether the client waits for ``100 Continue`` before it sends the body."""
    return request.headers.get("expect", "").strip().lower() == "100-continue"


def _busy() -> Response:
    """Every upload slot is taken: try again after :data:`RETRY_AFTER` (nothing audited).

    The connection is closed: the body the client announced was never asked for.
    """
    return JSONResponse(
        {"detail": "every upload slot of the hub is busy; try again"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER), "Connection": "close"},
    )


class NodeCalls:
    """A node's contribution and reveal, shared by FastAPI's routes and the fast path.

    Parameters
    ----------
    studies
        The hub's study engine.
    engine
        The hub database (node audit heads are anchored in it).
    audit
        The hub's audit log.
    settings
        The hub's settings (payload limit).
    """

    def __init__(
        self, studies: StudyEngine, engine: Engine, audit: AuditLog, settings: HubSettings
    ) -> None:
        self.studies = studies
        self.engine = engine
        self.audit = audit
        self.settings = settings

    async def post_contribution(
        self,
        request: Request,
        who: Principal,
        study_id: str,
        round_index: int,
        attempt: int,
        wait: float,
    ) -> dict[str, Any] | Response:
        """Read a contribution's body (in an upload slot if it is large) and store it."""
        max_payload = self.settings.max_payload
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_payload):
            raise HubError(413, f"contribution larger than {max_payload} bytes")
        try:
            header = ContributionHeader.from_headers(request.headers)
        except ProtocolError as exc:
            raise HubError(400, str(exc)) from None
        layout, head = header.layout_json(), header.audit_head
        args = (who.name, study_id, round_index, attempt, layout)
        if length is not None and int(length) <= SMALL_BODY:
            # a small body needs no upload slot: store it and wait, in one thread hop
            small = [await read_body(request, length, max_payload)]
            return await anyio.to_thread.run_sync(
                self.contribute_and_wait, *args, small, wait, head, header.seed_shares
            )
        slots: asyncio.Semaphore = request.app.state.upload_slots
        if _expects_continue(request):
            # the node has not sent its body yet: it waits a little for a slot, then is
            # told to try again later (nothing is read), well within its socket timeout
            try:
                await asyncio.wait_for(slots.acquire(), SLOT_WAIT)
            except TimeoutError:
                return _busy()
        else:
            await slots.acquire()
        box: list[bytearray] = []
        try:
            box.append(await read_body(request, length, max_payload))
            out = await anyio.to_thread.run_sync(
                self.contribute_and_wait, *args, box, 0.0, head, header.seed_shares
            )
        finally:
            box.clear()  # the body is freed before the slot is: one body in memory per slot
            slots.release()
        if wait > 0:
            out["tasks"] = await anyio.to_thread.run_sync(self.studies.wait_tasks, who.name, wait)
        return out

    def contribute_and_wait(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        layout: Any,
        box: list[bytearray],
        wait: float,
        head: tuple[int, str] | None,
        bundle: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a contribution, anchor the node's audit head, wait for the next tasks."""
        # the body comes boxed and is taken out: an idle worker thread keeps the arguments
        # of its last call alive, and must not keep a payload-sized body with them
        studies = self.studies
        out = studies.contribute(node, study_id, round_index, attempt, layout, box.pop(), bundle)
        if head is not None:  # anchored once the contribution is accepted
            anchor_head(self.engine, self.audit, node, head)
        if wait > 0:
            out["tasks"] = studies.wait_tasks(node, wait)
        return out

    def post_reveal(
        self, who: Principal, study_id: str, round_index: int, attempt: int, seed: str, wait: float
    ) -> dict[str, Any]:
        """Store a seed, then wait up to ``wait`` seconds for the node's next tasks."""
        out = self.studies.reveal(who.name, study_id, round_index, attempt, seed)
        if wait > 0:
            out["tasks"] = self.studies.wait_tasks(who.name, wait)
        return out


def node_router(calls: NodeCalls, roles: Roles) -> APIRouter:
    """Every ``/v1/node/...`` endpoint but the budget's and the approvals'."""
    if TYPE_CHECKING:  # the roles' types are ``Annotated[Principal, Depends(...)]``
        Node: TypeAlias = Principal
    else:  # FastAPI reads the routes' annotations at runtime
        Node = roles.node
    studies, engine = calls.studies, calls.engine
    router = APIRouter(tags=["node"])
    seen: dict[str, float] = {}  # node -> last time its last_seen was written

    @router.put("/v1/node/catalogue")
    def publish(body: CatalogueRequest, who: Node) -> dict[str, Any]:
        """Replace this node's published catalogue (names, columns, rounded counts)."""
        studies.publish(who.name, body.datasets)
        return {"datasets": sorted(body.datasets)}

    @router.get("/v1/node/tasks", response_model=list[TaskMessage])
    def tasks(who: Node, wait: Wait = 0.0) -> Response:
        """This node's open tasks; waits up to ``wait`` seconds for one (long-poll).

        Each task names its round's public arrays by reference (``public``: SHA-256
        and size, ``null`` when there are none): fetch them from
        ``GET /v1/node/blobs/{sha256}``.
        """
        now = time.time()
        if now - seen.get(who.name, 0.0) > 5:
            with Session(engine) as s:
                row = s.get(NodeRow, who.name)
                if row is not None and now - row.last_seen > 5:
                    row.last_seen = now
                    s.commit()
            seen[who.name] = now
        return JSONResponse(studies.wait_tasks(who.name, wait))

    @router.get(
        "/v1/node/blobs/{sha256}",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}}},
    )
    def blob(sha256: Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")], who: Node) -> Response:
        """A payload of one of this node's studies, by the SHA-256 of its bytes.

        The answer is a consortia.wire frame (a round's public arrays); a digest that
        none of the node's studies uses is answered 404, like an unknown one.
        """
        data = read_blob(engine, who.name, sha256)
        return Response(
            content=data,
            media_type=CONTENT_TYPE,
            headers={"Cache-Control": "private, max-age=31536000, immutable"},
        )

    @router.post(BASE + "/contribution", response_model=dict[str, Any])
    async def contribution(
        request: Request,
        study_id: str,
        round_index: Index,
        attempt: Index,
        who: Node,
        wait: Wait = 0.0,
    ) -> Response:
        """Post this node's masked vector (body: a consortia.wire frame with ``masked``).

        The layout (array names and shapes) travels in the ``X-Consortia-Layout``
        header as JSON; the node's audit head (``<seq>:<hash>``), anchored at the hub,
        in ``X-Consortia-Audit-Head`` (optional).  The contribution is persisted before
        the answer.  The answer's ``tasks`` are the node's next tasks (waiting up to ``wait`` s).
        """
        out = await calls.post_contribution(request, who, study_id, round_index, attempt, wait)
        return out if isinstance(out, Response) else JSONResponse(out)

    @router.post(BASE + "/reveal", response_model=dict[str, Any])
    def reveal(
        study_id: str,
        round_index: Index,
        attempt: Index,
        body: RevealRequest,
        who: Node,
        wait: Wait = 0.0,
    ) -> Response:
        """Reveal this node's self-mask seed once every vector of the attempt is in.

        The answer's ``tasks`` are the node's next tasks (waiting up to ``wait`` s).
        """
        return JSONResponse(calls.post_reveal(who, study_id, round_index, attempt, body.seed, wait))

    @router.post(BASE + "/shares", response_model=dict[str, Any])
    def shares(
        study_id: str,
        round_index: Index,
        attempt: Index,
        body: ShareMessage,
        who: Node,
        wait: Wait = 0.0,
    ) -> Response:
        """Reveal this node's seed with its shares of the seeds of participants lost at
        the reveal (a ``share`` task); the last survivor's answer finishes the round."""
        out = studies.share(who.name, study_id, round_index, attempt, body.seed, body.shares)
        if wait > 0:
            out["tasks"] = studies.wait_tasks(who.name, wait)
        return JSONResponse(out)

    @router.post(BASE + "/heartbeat", response_model=dict[str, Any])
    def heartbeat(
        study_id: str, round_index: Index, attempt: Index, body: HeartbeatRequest, who: Node
    ) -> dict[str, Any]:
        """This node is alive and still computing its contribution to the attempt.

        A node that heartbeats is not excluded for being slow, up to the step's
        own limit (see :class:`consortia.hub.service.StudyEngine`).
        """
        return studies.heartbeat(who.name, study_id, round_index, attempt, body.progress)

    @router.post(BASE + "/refusal")
    def refusal(
        study_id: str, round_index: Index, attempt: Index, body: RefusalRequest, who: Node
    ) -> dict[str, Any]:
        """Report that this node's policy refused the task (the study fails naming the rule)."""
        return studies.refuse(
            who.name,
            study_id,
            round_index,
            attempt,
            body.rule,
            body.message,
            anonymous=body.anonymous,
        )

    return router
