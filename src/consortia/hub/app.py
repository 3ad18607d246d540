"""The hub's HTTP API (FastAPI): enrolment, tokens, catalogue, studies, node tasks.

Every endpoint under ``/v1`` needs a bearer token; roles are ``admin``,
``researcher``, ``node`` (its enrolled credential) and ``enrolment`` (one-time).
A node sees only its own tasks, a researcher only their own studies.  Arrays
travel as :mod:`consortia.wire` frames; control messages are pydantic models.
Refused requests (4xx other than 401) are written to the audit log; a request
without a valid token is answered 401 and leaves no trace.

The routes live in :mod:`consortia.hub.routes` (one router per caller), all
included into the one application :func:`create_app` builds: one route table.
"""

import asyncio
import gc
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError as PydanticValidationError
from starlette.types import Message, Receive, Scope, Send

from consortia import __version__
from consortia.audit import AuditLog
from consortia.hub.admin import add_admin_routes
from consortia.hub.approvals import approval_router
from consortia.hub.auth import Principal, bootstrap_token
from consortia.hub.budget import add_budget_routes
from consortia.hub.db import make_engine
from consortia.hub.errors import HubError
from consortia.hub.fastpath import HOT_PATH, FastPath, wait_param
from consortia.hub.guard import RequestGuard
from consortia.hub.routes.auth import Roles
from consortia.hub.routes.node import RETRY_AFTER, SLOT_WAIT, NodeCalls, node_router
from consortia.hub.routes.service import service_router
from consortia.hub.routes.studies import studies_router
from consortia.hub.schemas import RevealRequest
from consortia.hub.service import StudyEngine
from consortia.hub.settings import HubSettings

__all__ = ["RETRY_AFTER", "SLOT_WAIT", "HubSettings", "bootstrap_token", "create_app"]


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
        background=True,  # unmasking and coordinate() off the request path
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
    roles = Roles(engine)

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

    # ---------------------------------------------------------------- the one route table

    calls = NodeCalls(studies, engine, audit, settings)
    add_budget_routes(app, engine, roles.role("node"), roles.role("researcher", "admin"))
    app.include_router(service_router(engine, audit, roles))
    add_admin_routes(app, engine, audit, roles.admin)
    app.include_router(node_router(calls, roles))
    app.include_router(approval_router(studies, roles.node))
    app.include_router(studies_router(studies, roles))

    # ---------------------------------------------------------------- fast path

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
                out = await calls.post_contribution(
                    request, who, study_id, round_index, attempt, wait
                )
            else:
                raw = await request.body()
                try:
                    seed = RevealRequest.model_validate_json(raw).seed
                except PydanticValidationError:  # FastAPI answers 422 (the body is replayed)
                    return [{"type": "http.request", "body": raw, "more_body": False}]
                out = await anyio.to_thread.run_sync(
                    calls.post_reveal, who, study_id, round_index, attempt, seed, wait
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
    app.add_middleware(RequestGuard, resolve=roles.lookup, limit=body_limit, rejected=rejected)
    return app


def read_secret_file(path: str | Path) -> str:
    """Read a token from a file (whitespace stripped)."""
    return Path(path).read_text().strip()
