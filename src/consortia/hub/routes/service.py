"""Liveness, ``whoami`` and node enrolment (a one-time token binds a name to a key)."""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime

import time
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from fastapi import APIRouter, HTTPException
from sqlalchemy import or_, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consortia import __version__
from consortia.audit import AuditLog
from consortia.errors import KeyVerificationError, ValidationError
from consortia.hub.auth import Principal, hash_token, new_secret
from consortia.hub.db import NodeRow, TokenRow
from consortia.hub.errors import HubError
from consortia.hub.routes.auth import Roles
from consortia.hub.schemas import EnrolRequest, EnrolResponse
from consortia.privacy.keys import PeerKey

__all__ = ["service_router"]


def service_router(engine: Engine, audit: AuditLog, roles: Roles) -> APIRouter:
    """``/healthz``, ``/v1/whoami`` and ``/v1/enrol``."""
    if TYPE_CHECKING:  # the roles' types are ``Annotated[Principal, Depends(...)]``
        Anyone: TypeAlias = Principal
        Enrolment: TypeAlias = Principal
    else:  # FastAPI reads the routes' annotations at runtime
        Anyone, Enrolment = roles.anyone, roles.enrolment
    router = APIRouter()

    @router.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness probe (no authentication, no data)."""
        return {"ok": True, "version": __version__}

    @router.get("/v1/whoami", tags=["service"])
    def whoami(who: Anyone) -> dict[str, str]:
        """The role and name of the caller's token."""
        return {"role": who.role, "name": who.name}

    @router.post("/v1/enrol", tags=["node"])
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

    return router
