"""The hub's admin endpoints: tokens, enrolled nodes, the audit log and nodes' audit heads."""

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from fastapi import FastAPI, Query
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.hub.anchors import node_heads
from consortia.hub.auth import Principal, create_token
from consortia.hub.db import NodeRow
from consortia.hub.schemas import TokenRequest, TokenResponse

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
        with Session(engine) as s:
            token = create_token(s, body.role, body.name)
            s.commit()
        audit.append(f"admin:{who.name}", "token.create", {"role": body.role, "name": body.name})
        return TokenResponse(role=body.role, name=body.name, token=token)

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
