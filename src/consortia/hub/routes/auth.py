"""Bearer tokens to principals, and the role each endpoint needs.

:class:`Roles` resolves a request's token (no cache: a revoked token stops working
at its next request) and builds the ``Annotated`` dependency types the routes take
(``Admin``, ``Researcher``, ``Node``, ``Enrolment``).
"""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime

from typing import Annotated, Any

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.errors import AuthenticationError
from consortia.hub.auth import Principal, resolve
from consortia.hub.errors import HubError

__all__ = ["Roles"]

_bearer = HTTPBearer(auto_error=False)


class Roles:
    """The principals of the hub's requests, and the role checks of its endpoints.

    Parameters
    ----------
    engine
        The hub database (its tokens).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.admin: Any = Annotated[Principal, Depends(self.role("admin"))]
        self.researcher: Any = Annotated[Principal, Depends(self.role("researcher", "admin"))]
        self.node: Any = Annotated[Principal, Depends(self.role("node"))]
        self.enrolment: Any = Annotated[Principal, Depends(self.role("enrolment"))]
        self.anyone: Any = Annotated[Principal, Depends(self.principal)]

    def _lookup(self, token: str) -> Principal | None:
        with Session(self.engine) as s:
            return resolve(s, token)

    async def lookup(self, token: str | None) -> Principal | None:
        """The principal of ``token`` (None: no such token).

        No cache: a token revoked (or deleted) stops working at its next request; a
        revoked or expired one raises AuthenticationError (answered 401, saying which).
        """
        if not token:
            return None
        return await anyio.to_thread.run_sync(self._lookup, token)

    async def principal(
        self,
        request: Request,
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        """The caller (401 without a valid token)."""
        # RequestGuard resolved the token of every /v1 request before its body was read
        who = getattr(request.state, "principal", None)
        if who is None:
            try:
                who = await self.lookup(cred.credentials if cred is not None else None)
            except AuthenticationError as exc:
                raise HTTPException(401, str(exc)) from None
        if who is None:
            raise HTTPException(401, "missing or invalid bearer token")
        request.state.principal = who
        return who

    def role(self, *allowed: str) -> Any:
        """A dependency: the caller, if its role is one of ``allowed`` (else 403)."""

        async def check(who: Annotated[Principal, Depends(self.principal)]) -> Principal:
            if who.role not in allowed:
                raise HubError(403, f"this endpoint needs the role {' or '.join(allowed)}")
            return who

        return check
