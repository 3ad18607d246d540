"""The hub's admin endpoints: tokens (create, list, revoke), enrolled nodes, audit logs."""

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.hub.anchors import node_heads
from consortia.hub.auth import ROLE_DEFAULT, Expiry, Principal, create_token, hash_token
from consortia.hub.db import NodeRow, TokenRow
from consortia.hub.errors import HubError
from consortia.hub.schemas import TokenRequest, TokenResponse
from consortia.hub.tokens import TokenInfo

__all__ = ["add_admin_routes"]


def add_admin_routes(app: FastAPI, engine: Engine, audit: AuditLog, admin: Any) -> None:
    """Register the admin endpoints on ``app``; ``admin`` is the admin-only principal type."""
    if TYPE_CHECKING:  # ``admin`` is ``Annotated[Principal, Depends(...)]``
        Admin: TypeAlias = Principal
    else:  # FastAPI reads the routes' annotations at runtime
        Admin = admin

    @app.post("/v1/tokens", tags=["admin"])
    def new_token(body: TokenRequest, who: Admin) -> TokenResponse:
        """Create a researcher, admin or one-time enrolment token (shown once)."""
        expires_in: Expiry = ROLE_DEFAULT if body.expires_in is None else body.expires_in
        with Session(engine) as s:
            token = create_token(s, body.role, body.name, expires_in=expires_in)
            s.commit()
            mine = TokenRow.token_hash == hash_token(token)
            token_id, expires_at = s.execute(
                select(TokenRow.id, TokenRow.expires_at).where(mine)
            ).one()
        audit.append(f"admin:{who.name}", "token.create", {"role": body.role, "name": body.name})
        return TokenResponse(
            role=body.role, name=body.name, token=token, id=token_id, expires_at=expires_at
        )

    @app.get("/v1/tokens", tags=["admin"])
    def tokens(who: Admin) -> list[dict[str, Any]]:
        """Every token's id, role, name, hint, dates and state (never a secret)."""
        with Session(engine) as s:
            rows = [TokenInfo.of(r) for r in s.scalars(select(TokenRow).order_by(TokenRow.id))]
        return [asdict(i) | {"state": i.state()} for i in rows]

    @app.post("/v1/tokens/{token_id}/revoke", tags=["admin"])
    def revoke(token_id: Annotated[int, PathParam(ge=1)], who: Admin) -> dict[str, Any]:
        """Revoke a token at once (its next request is refused with 401)."""
        with Session(engine) as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise HubError(404, f"no token with id {token_id}")
            first = row.revoked_at is None
            if first:
                row.revoked_at = time.time()
            info = TokenInfo.of(row)
            s.commit()
        if first:
            details = {"id": info.id, "role": info.role, "name": info.name}
            audit.append(f"admin:{who.name}", "token.revoke", details)
        return asdict(info) | {"state": info.state()}

    @app.get("/v1/nodes", tags=["admin"])
    def nodes(who: Admin) -> list[dict[str, Any]]:
        """Enrolled nodes: name, identity key fingerprint, last contact (admins only)."""
        from consortia.node.identity import fingerprint

        with Session(engine) as s:
            return [
                {
                    "name": n.name,
                    "fingerprint": fingerprint(bytes.fromhex(n.identity_key)),
                    "last_seen": n.last_seen,
                }
                for n in s.scalars(select(NodeRow).order_by(NodeRow.name))
            ]

    @app.get("/v1/nodes/{node}/audit-heads", tags=["admin"])
    def audit_heads(node: str, who: Admin) -> list[dict[str, Any]]:
        """The heads (``seq``, ``hash``) of a node's audit log anchored at the hub, oldest
        first: ``consortia audit verify --hub`` checks the node's log against them."""
        return node_heads(engine, node)

    @app.get("/v1/audit", tags=["admin"])
    def audit_entries(
        who: Admin, since: int = 0, limit: Annotated[int, Query(ge=1, le=10000)] = 1000
    ) -> list[dict[str, Any]]:
        """Hub audit entries from sequence number ``since``."""
        return [
            {
                "seq": e.seq,
                "timestamp": e.timestamp,
                "actor": e.actor,
                "action": e.action,
                "details": dict(e.details),
                "hash": e.hash,
            }
            for e in audit.entries(since=since, limit=limit)
        ]

    @app.get("/v1/audit/verify", tags=["admin"])
    def audit_verify(who: Admin) -> dict[str, Any]:
        """Verify the hub's hash-chained audit log."""
        rep = audit.verify()
        return {
            "ok": rep.ok,
            "n_entries": rep.n_entries,
            "first_bad_seq": rep.first_bad_seq,
            "reason": rep.reason,
        }
