"""The hub's HTTP API (FastAPI): enrolment, tokens, catalogue, studies, node tasks.

Every endpoint under ``/v1`` needs a bearer token; roles are ``admin``,
``researcher``, ``node`` (its enrolled credential) and ``enrolment`` (one-time).
A node sees only its own tasks, a researcher only their own studies.  Arrays
travel as :mod:`consortia.wire` frames; control messages are pydantic models.
Refused requests (4xx other than 401) are written to the audit log; a request
without a valid token is answered 401 and leaves no trace.
"""

import asyncio
import gc
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import or_, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.types import Message, Receive, Scope, Send

from consortia import __version__
from consortia.audit import AuditLog
from consortia.errors import (
    AuthenticationError,
    KeyVerificationError,
    ProtocolError,
    ValidationError,
)
from consortia.hub.admin import add_admin_routes
from consortia.hub.anchors import anchor_head
from consortia.hub.approvals import approval_router
from consortia.hub.auth import (
    Principal,
    bootstrap_token,
    hash_token,
    new_secret,
    resolve,
)
from consortia.hub.budget import add_budget_routes
from consortia.hub.checks import MAX_INDEX
from consortia.hub.db import NodeRow, TokenRow, make_engine
from consortia.hub.fastpath import HOT_PATH, FastPath, wait_param
from consortia.hub.guard import RequestGuard, read_body
from consortia.hub.payloads import read_blob
from consortia.hub.results import DIGEST_HEADER, stored_result
from consortia.hub.schemas import (
    CatalogueRequest,
    EnrolRequest,
    EnrolResponse,
    HeartbeatRequest,
    RefusalRequest,
    RevealRequest,
    StudyRequest,
)
from consortia.hub.service import HubError, StudyEngine
from consortia.hub.settings import HubSettings
from consortia.messages import (
    ContributionHeader,
    ShareMessage,
    StudyStatusMessage,
    TaskMessage,
)
from consortia.privacy.keys import PeerKey
from consortia.wire import CONTENT_TYPE

__all__ = ["HubSettings", "bootstrap_token", "create_app"]


_bearer = HTTPBearer(auto_error=False)
Index = Annotated[int, PathParam(ge=0, le=MAX_INDEX)]  # a round index or attempt number


def create_app(settings: HubSettings) -> FastAPI:
    """Build the hub's FastAPI application for ``settings``."""
    engine = make_engine(settings.db)
    key = None
    if settings.audit_key_file:
        from consortia.audit import read_key_file

        key = read_key_file(settings.audit_key_file)
    audit = AuditLog(engine, key=key)
    studies = StudyEngine(
        engine,
        node_timeout=settings.node_timeout,
        reveal_timeout=settings.reveal_timeout,
        max_payload=settings.max_payload,
        audit=audit,
        approval_timeout=settings.approval_timeout,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        app.state.upload_slots = asyncio.Semaphore(max(1, settings.max_concurrent_uploads))
        studies.start()
        # what was loaded at start (modules, the app) leaves the collector's generations:
        # full collections no longer walk it on every few hundred requests
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            studies.stop()

    app = FastAPI(
        title="consortia hub",
        version=__version__,
        description=(
            "Coordinates federated studies: nodes enrol, publish catalogues and long-poll for "
            "tasks; researchers submit studies and read their securely aggregated sums."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.studies = studies
    app.state.audit = audit
    app.state.db = engine

    def _lookup(token: str | None) -> Principal | None:
        with Session(engine) as s:
            return resolve(s, token)

    async def lookup(token: str | None) -> Principal | None:
        # no cache: a token revoked (or deleted) stops working at its next request; a
        # revoked or expired one raises AuthenticationError (answered 401, saying which)
        if not token:
            return None
        return await anyio.to_thread.run_sync(_lookup, token)

    async def principal(
        request: Request,
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        # RequestGuard resolved the token of every /v1 request before its body was read
        who = getattr(request.state, "principal", None)
        if who is None:
            try:
                who = await lookup(cred.credentials if cred is not None else None)
            except AuthenticationError as exc:
                raise HTTPException(401, str(exc)) from None
        if who is None:
            raise HTTPException(401, "missing or invalid bearer token")
        request.state.principal = who
        return who

    def role(*allowed: str):
        async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if who.role not in allowed:
                raise HubError(403, f"this endpoint needs the role {' or '.join(allowed)}")
            return who

        return check

    Admin = Annotated[Principal, Depends(role("admin"))]
    Researcher = Annotated[Principal, Depends(role("researcher", "admin"))]
    Node = Annotated[Principal, Depends(role("node"))]
    Enrolment = Annotated[Principal, Depends(role("enrolment"))]
    add_budget_routes(app, engine, role("node"), role("researcher", "admin"))

    def _rejected(request: Request, status: int, reason: str) -> None:
        who = getattr(request.state, "principal", None)
        if who is not None:
            _reject(who, request.method, request.url.path, status, reason)

    def _reject(who: Principal, method: str, path: str, status: int, reason: str) -> None:
        details = {"method": method, "path": path[:200], "status": status, "reason": reason}
        audit.append(f"{who.role}:{who.name}", "request.rejected", details)

    async def rejected(who: Principal, method: str, path: str, status: int, reason: str) -> None:
        await anyio.to_thread.run_sync(_reject, who, method, path, status, reason)

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> JSONResponse:
        await anyio.to_thread.run_sync(_rejected, request, exc.status, exc.message)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        reason = f"invalid request fields: {fields}"
        await anyio.to_thread.run_sync(_rejected, request, 422, reason)
        return JSONResponse({"detail": reason}, status_code=422)

    # ---------------------------------------------------------------- service

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness probe (no authentication, no data)."""
        return {"ok": True, "version": __version__}

    @app.get("/v1/whoami", tags=["service"])
    def whoami(who: Annotated[Principal, Depends(principal)]) -> dict[str, str]:
        """The role and name of the caller's token."""
        return {"role": who.role, "name": who.name}

    add_admin_routes(app, engine, audit, Admin)

    # ---------------------------------------------------------------- enrolment

    @app.post("/v1/enrol", tags=["node"])
    def enrol(body: EnrolRequest, who: Enrolment) -> EnrolResponse:
        """Enrol a node with a one-time token: bind its name to its identity key."""
        try:
            peer = PeerKey.from_json(body.peer_key.model_dump())
            if peer.site != body.name:
                raise ValidationError("the signed key names another site")
            peer.verify()
        except (KeyVerificationError, ValidationError) as exc:
            raise HubError(422, str(exc)) from None
        if who.name not in ("*", body.name):
            raise HubError(403, f"this enrolment token is for node {who.name!r}")
        credential = new_secret("node")
        taken = f"a node named {body.name!r} is already enrolled"
        with Session(engine) as s:
            # consume the one-time token first, atomically: of concurrent requests with the
            # same token exactly one sees used = false (the others wait for its commit)
            spend = (
                update(TokenRow)
                .where(
                    TokenRow.id == who.token_id,
                    TokenRow.used.is_(False),
                    TokenRow.revoked_at.is_(None),  # revoked or expired since it was read
                    or_(TokenRow.expires_at.is_(None), TokenRow.expires_at > time.time()),
                )
                .values(used=True)
            )
            # an UPDATE's result is a CursorResult (typed as a plain Result)
            if cast("CursorResult[Any]", s.execute(spend)).rowcount != 1:
                s.rollback()
                raise HTTPException(401, "missing or invalid bearer token")
            if s.get(NodeRow, body.name) is not None:
                s.rollback()  # the token stays unused
                raise HubError(409, taken)
            s.add(
                NodeRow(
                    name=body.name,
                    identity_key=peer.identity_key.hex(),
                    mask_key=peer.mask_key.hex(),
                    signature=peer.signature.hex(),
                    credential_hash=hash_token(credential),
                )
            )
            try:
                s.commit()
            except IntegrityError:  # the same name enrolled concurrently with another token
                s.rollback()
                raise HubError(409, taken) from None
        audit.append(
            f"enrolment:{who.name}",
            "node.enrol",
            {"node": body.name, "identity_key": peer.identity_key.hex()},
        )
        return EnrolResponse(name=body.name, credential=credential)

    # ---------------------------------------------------------------- catalogue

    @app.put("/v1/node/catalogue", tags=["node"])
    def publish(body: CatalogueRequest, who: Node) -> dict[str, Any]:
        """Replace this node's published catalogue (names, columns, rounded counts)."""
        studies.publish(who.name, body.datasets)
        return {"datasets": sorted(body.datasets)}

    @app.get("/v1/catalogue", tags=["researcher"])
    def catalogue(who: Researcher) -> dict[str, Any]:
        """The published catalogue: node -> dataset -> description."""
        return studies.catalogue()

    # ---------------------------------------------------------------- node tasks

    seen: dict[str, float] = {}  # node -> last time its last_seen was written

    @app.get("/v1/node/tasks", tags=["node"], response_model=list[TaskMessage])
    def tasks(who: Node, wait: Annotated[float, Query(ge=0, le=60)] = 0.0) -> Response:
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

    @app.get(
        "/v1/node/blobs/{sha256}",
        tags=["node"],
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

    base = "/v1/node/studies/{study_id}/rounds/{round_index}/attempts/{attempt}"

    async def post_contribution(
        request: Request, who: Principal, study_id: str, round_index: int, attempt: int, wait: float
    ) -> dict[str, Any] | Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_payload):
            raise HubError(413, f"contribution larger than {settings.max_payload} bytes")
        try:
            header = ContributionHeader.from_headers(request.headers)
        except ProtocolError as exc:
            raise HubError(400, str(exc)) from None
        layout, head = header.layout_json(), header.audit_head
        args = (who.name, study_id, round_index, attempt, layout)
        if length is not None and int(length) <= _SMALL_BODY:
            # a small body needs no upload slot: store it and wait, in one thread hop
            small = [await read_body(request, length, settings.max_payload)]
            return await anyio.to_thread.run_sync(
                contribute_and_wait, *args, small, wait, head, header.seed_shares
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
            box.append(await read_body(request, length, settings.max_payload))
            out = await anyio.to_thread.run_sync(
                contribute_and_wait, *args, box, 0.0, head, header.seed_shares
            )
        finally:
            box.clear()  # the body is freed before the slot is: one body in memory per slot
            slots.release()
        if wait > 0:
            out["tasks"] = await anyio.to_thread.run_sync(studies.wait_tasks, who.name, wait)
        return out

    def contribute_and_wait(
        node: str,
        study_id: str,
        round_index: Index,
        attempt: Index,
        layout: Any,
        box: list[bytearray],
        wait: float,
        head: tuple[int, str] | None,
        bundle: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # the body comes boxed and is taken out: an idle worker thread keeps the arguments
        # of its last call alive, and must not keep a payload-sized body with them
        out = studies.contribute(node, study_id, round_index, attempt, layout, box.pop(), bundle)
        if head is not None:  # anchored once the contribution is accepted
            anchor_head(engine, audit, node, head)
        if wait > 0:
            out["tasks"] = studies.wait_tasks(node, wait)
        return out

    def post_reveal(
        who: Principal, study_id: str, round_index: int, attempt: int, seed: str, wait: float
    ) -> dict[str, Any]:
        out = studies.reveal(who.name, study_id, round_index, attempt, seed)
        if wait > 0:
            out["tasks"] = studies.wait_tasks(who.name, wait)
        return out

    @app.post(base + "/contribution", tags=["node"], response_model=dict[str, Any])
    async def contribution(
        request: Request,
        study_id: str,
        round_index: Index,
        attempt: Index,
        who: Node,
        wait: Annotated[float, Query(ge=0, le=60)] = 0.0,
    ) -> Response:
        """Post this node's masked vector (body: a consortia.wire frame with ``masked``).

        The layout (array names and shapes) travels in the ``X-Consortia-Layout``
        header as JSON; the node's audit head (``<seq>:<hash>``), anchored at the hub,
        in ``X-Consortia-Audit-Head`` (optional).  The contribution is persisted before
        the answer.  The answer's ``tasks`` are the node's next tasks (waiting up to ``wait`` s).
        """
        out = await post_contribution(request, who, study_id, round_index, attempt, wait)
        return out if isinstance(out, Response) else JSONResponse(out)

    @app.post(base + "/reveal", tags=["node"], response_model=dict[str, Any])
    def reveal(
        study_id: str,
        round_index: Index,
        attempt: Index,
        body: RevealRequest,
        who: Node,
        wait: Annotated[float, Query(ge=0, le=60)] = 0.0,
    ) -> Response:
        """Reveal this node's self-mask seed once every vector of the attempt is in.

        The answer's ``tasks`` are the node's next tasks (waiting up to ``wait`` s).
        """
        return JSONResponse(post_reveal(who, study_id, round_index, attempt, body.seed, wait))

    @app.post(base + "/shares", tags=["node"], response_model=dict[str, Any])
    def shares(
        study_id: str,
        round_index: Index,
        attempt: Index,
        body: ShareMessage,
        who: Node,
        wait: Annotated[float, Query(ge=0, le=60)] = 0.0,
    ) -> Response:
        """Reveal this node's seed with its shares of the seeds of participants lost at
        the reveal (a ``share`` task); the last survivor's answer finishes the round."""
        out = studies.share(who.name, study_id, round_index, attempt, body.seed, body.shares)
        if wait > 0:
            out["tasks"] = studies.wait_tasks(who.name, wait)
        return JSONResponse(out)

    @app.post(base + "/heartbeat", tags=["node"], response_model=dict[str, Any])
    def heartbeat(
        study_id: str, round_index: Index, attempt: Index, body: HeartbeatRequest, who: Node
    ) -> dict[str, Any]:
        """This node is alive and still computing its contribution to the attempt.

        A node that heartbeats is not excluded for being slow, up to the step's
        own limit (see :class:`consortia.hub.service.StudyEngine`).
        """
        return studies.heartbeat(who.name, study_id, round_index, attempt, body.progress)

    async def fast_node_call(scope: Scope, receive: Receive, send: Send) -> list[Message] | None:
        """Serve a well-formed contribution or reveal of a known node without FastAPI.

        These two calls are most of a round's requests.  Anything unusual (unknown
        token, other role, odd query or path, invalid reveal body) is declined before
        it is answered, and FastAPI serves it (its validation, errors and audit); an
        answer here is exactly what the FastAPI route would give.
        """
        m = HOT_PATH.fullmatch(scope["path"])
        if m is None:
            return []
        wait = wait_param(scope["query_string"])
        who = scope.get("state", {}).get("principal")  # set by RequestGuard
        if wait is None or who is None or who.role != "node":
            return []
        study_id, round_index, attempt = m["study"], int(m["round"]), int(m["attempt"])
        request = Request(scope, receive)
        request.state.principal = who
        try:
            out: dict[str, Any] | Response
            if m["kind"] == "contribution":
                out = await post_contribution(request, who, study_id, round_index, attempt, wait)
            else:
                raw = await request.body()
                try:
                    seed = RevealRequest.model_validate_json(raw).seed
                except PydanticValidationError:  # FastAPI answers 422 (the body is replayed)
                    return [{"type": "http.request", "body": raw, "more_body": False}]
                out = await anyio.to_thread.run_sync(
                    post_reveal, who, study_id, round_index, attempt, seed, wait
                )
            response: Response = out if isinstance(out, Response) else JSONResponse(out)
        except HubError as exc:
            response = await _hub_error(request, exc)
        app.state.fast_calls += 1
        await response(scope, receive, send)
        return None

    app.state.fast_calls = 0  # calls answered by fast_node_call (observability, tests)
    app.add_middleware(FastPath, handler=fast_node_call)

    def body_limit(path: str) -> int:
        if HOT_PATH.fullmatch(path) is not None and path.endswith("/contribution"):
            return settings.max_payload
        return settings.max_json_body

    # outermost: nothing reads a body before the caller is known and its size bounded
    app.add_middleware(RequestGuard, resolve=lookup, limit=body_limit, rejected=rejected)

    @app.post(base + "/refusal", tags=["node"])
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

    app.include_router(approval_router(studies, Node))

    # ---------------------------------------------------------------- studies

    def _scope(who: Principal) -> str | None:
        return None if who.role == "admin" else who.name

    @app.post("/v1/studies", tags=["researcher"], response_model=StudyStatusMessage)
    def submit(body: StudyRequest, who: Researcher) -> dict[str, Any]:
        """Submit a study; it starts at once over every node publishing the dataset."""
        sid = studies.submit(
            who.name,
            body.algorithm.model_dump(),
            body.dataset,
            nodes=body.nodes,
            frac_bits=body.frac_bits,
        )
        return studies.status(sid, who.name)

    @app.get("/v1/studies", tags=["researcher"])
    def list_studies(who: Researcher) -> list[dict[str, Any]]:
        """The caller's studies (all studies for an admin)."""
        return studies.list_studies(_scope(who))

    @app.get("/v1/studies/{study_id}", tags=["researcher"], response_model=StudyStatusMessage)
    def study(
        study_id: str,
        who: Researcher,
        version: int | None = None,
        wait: Annotated[float, Query(ge=0, le=60)] = 0.0,
    ) -> dict[str, Any]:
        """A study's state; with ``version`` and ``wait``, waits for a change (long-poll)."""
        return studies.wait_status(study_id, _scope(who), version, wait)

    @app.get("/v1/studies/{study_id}/rounds", tags=["researcher"])
    def rounds(
        study_id: str,
        who: Researcher,
        start: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Finished rounds: index, step, attempt and participants."""
        return studies.round_list(study_id, _scope(who), start, limit)

    @app.get(
        "/v1/studies/{study_id}/rounds/{round_index}/sums",
        tags=["researcher"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}}},
    )
    def round_sums(study_id: str, round_index: Index, who: Researcher) -> Response:
        """One finished round's securely aggregated sums (a consortia.wire message)."""
        data = studies.round_sums(study_id, _scope(who), round_index)
        return Response(content=data, media_type=CONTENT_TYPE)

    @app.get(
        "/v1/studies/{study_id}/result",
        tags=["researcher"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}}},
    )
    def study_result(study_id: str, who: Researcher) -> Response:
        """A finished study's result (a consortia.resultcodec frame) and its sha256 digest."""
        frame, digest = stored_result(studies.engine, study_id, _scope(who))
        return Response(content=frame, media_type=CONTENT_TYPE, headers={DIGEST_HEADER: digest})

    @app.post(
        "/v1/studies/{study_id}/cancel", tags=["researcher"], response_model=StudyStatusMessage
    )
    def cancel(study_id: str, who: Researcher) -> dict[str, Any]:
        """Cancel a running study."""
        return studies.cancel(study_id, _scope(who), f"{who.role}:{who.name}")

    return app


_SMALL_BODY = 1 << 16  # contributions up to this size are not counted in the upload slots
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


def read_secret_file(path: str | Path) -> str:
    """Read a token from a file (whitespace stripped)."""
    return Path(path).read_text().strip()
