"""Bearer tokens and node credentials: created random, stored hashed, resolved to a principal."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortia.errors import ValidationError
from consortia.hub.db import NodeRow, TokenRow, make_engine

__all__ = [
    "ROLES",
    "Principal",
    "bootstrap_token",
    "create_token",
    "hash_token",
    "new_secret",
    "resolve",
]

ROLES = ("admin", "researcher", "enrolment")
_PREFIX = {"admin": "cad_", "researcher": "cre_", "enrolment": "cen_", "node": "cno_"}


def new_secret(role: str) -> str:
    """A fresh random token (256 bits) with a readable role prefix."""
    return _PREFIX[role] + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token (tokens are random: no salt or stretching needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``role`` is admin, researcher, enrolment or node; ``name`` identifies it."""

    role: str
    name: str
    token_id: int | None = None


def create_token(session: Session, role: str, name: str) -> str:
    """Create and store (hashed) a token; return the clear token, shown once."""
    if role not in ROLES:
        raise ValidationError(f"role must be one of {ROLES}, not {role!r}")
    if not name or len(name) > 128:
        raise ValidationError("a token name must have 1 to 128 characters")
    token = new_secret(role)
    session.add(TokenRow(token_hash=hash_token(token), role=role, name=name))
    return token


def resolve(session: Session, token: str | None) -> Principal | None:
    """The principal a bearer token belongs to, or None if it is unknown or spent."""
    if not token or len(token) > 256:
        return None
    digest = hash_token(token)
    if token.startswith(_PREFIX["node"]):  # most requests: one query, on the right table
        name = session.scalar(select(NodeRow.name).where(NodeRow.credential_hash == digest))
        return Principal("node", name) if name is not None else None
    row = session.scalar(select(TokenRow).where(TokenRow.token_hash == digest))
    if row is not None:
        if row.role == "enrolment" and row.used:
            return None
        return Principal(row.role, row.name, row.id)
    return None


def bootstrap_token(db: str, role: str, name: str, *, audit_key: bytes | None = None) -> str:
    """Create a token directly in the hub database (no server needed); return it.

    Parameters
    ----------
    db
        The hub's database URL or SQLite path.
    role, name
        The token's role (admin, researcher, enrolment) and whom it is for.
    audit_key
        The hub's audit HMAC key: its ``token.create`` entry carries a MAC, as every
        entry of a hub started with ``--audit-key-file`` must.

    Raises
    ------
    ValidationError
        The hub's audit log is keyed and no ``audit_key`` was given (the entry would
        make the log verify as tampered), or the role or name is invalid.
    """
    from consortia.audit import AuditLog

    engine = make_engine(db)
    try:
        audit = AuditLog(engine, key=audit_key)
        if audit_key is None and audit.keyed:
            raise ValidationError(
                "the hub's audit log is keyed: give its audit key file (--audit-key-file)"
            )
        with Session(engine) as s:
            token = create_token(s, role, name)
            s.commit()
        audit.append("operator", "token.create", {"role": role, "name": name})
        return token
    finally:
        engine.dispose()
