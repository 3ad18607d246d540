"""A researcher's endpoints: the catalogue, and submitting, following and reading studies."""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from consortia.hub.auth import Principal
from consortia.hub.checks import MAX_INDEX
from consortia.hub.results import DIGEST_HEADER
from consortia.hub.routes.auth import Roles
from consortia.hub.schemas import StudyRequest
from consortia.hub.service import StudyEngine
from consortia.messages import StudyStatusMessage
from consortia.wire import CONTENT_TYPE

__all__ = ["studies_router"]

Index = Annotated[int, PathParam(ge=0, le=MAX_INDEX)]  # a round index


def _scope(who: Principal) -> str | None:
    return None if who.role == "admin" else who.name


def studies_router(studies: StudyEngine, roles: Roles) -> APIRouter:
    """``/v1/catalogue`` and ``/v1/studies/...``."""
    if TYPE_CHECKING:  # the roles' types are ``Annotated[Principal, Depends(...)]``
        Researcher: TypeAlias = Principal
    else:  # FastAPI reads the routes' annotations at runtime
        Researcher = roles.researcher
    router = APIRouter(tags=["researcher"])
    binary: dict[int | str, dict[str, Any]] = {200: {"content": {CONTENT_TYPE: {}}}}

    @router.get("/v1/catalogue")
    def catalogue(who: Researcher) -> dict[str, Any]:
        """The published catalogue: node -> dataset -> description."""
        return studies.catalogue()

    @router.post("/v1/studies", response_model=StudyStatusMessage)
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

    @router.get("/v1/studies")
    def list_studies(who: Researcher) -> list[dict[str, Any]]:
        """The caller's studies (all studies for an admin)."""
        return studies.list_studies(_scope(who))

    @router.get("/v1/studies/{study_id}", response_model=StudyStatusMessage)
    def study(
        study_id: str,
        who: Researcher,
        version: int | None = None,
        wait: Annotated[float, Query(ge=0, le=60)] = 0.0,
    ) -> dict[str, Any]:
        """A study's state; with ``version`` and ``wait``, waits for a change (long-poll)."""
        return studies.wait_status(study_id, _scope(who), version, wait)

    @router.get("/v1/studies/{study_id}/rounds")
    def rounds(
        study_id: str,
        who: Researcher,
        start: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Finished rounds: index, step, attempt and participants."""
        return studies.round_list(study_id, _scope(who), start, limit)

    @router.get(
        "/v1/studies/{study_id}/rounds/{round_index}/sums",
        response_class=Response,
        responses=binary,
    )
    def round_sums(study_id: str, round_index: Index, who: Researcher) -> Response:
        """One finished round's securely aggregated sums (a consortia.wire message)."""
        data = studies.round_sums(study_id, _scope(who), round_index)
        return Response(content=data, media_type=CONTENT_TYPE)

    @router.get("/v1/studies/{study_id}/result", response_class=Response, responses=binary)
    def study_result(study_id: str, who: Researcher) -> Response:
        """A finished study's result (a consortia.resultcodec frame) and its sha256 digest."""
        frame, digest = studies.result(study_id, _scope(who))
        return Response(content=frame, media_type=CONTENT_TYPE, headers={DIGEST_HEADER: digest})

    @router.post("/v1/studies/{study_id}/cancel", response_model=StudyStatusMessage)
    def cancel(study_id: str, who: Researcher) -> dict[str, Any]:
        """Cancel a running study."""
        return studies.cancel(study_id, _scope(who), f"{who.role}:{who.name}")

    return router
