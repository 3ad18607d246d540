"""Bearer tokens and node credentials: created random, stored hashed, resolved to a principal.

Tokens expire and can be revoked.  Unless told otherwise a token expires after
:data:`DEFAULT_EXPIRY` of its role: 90 days for researchers and admins, 7 days for
a one-time enrolment token (``expires_in=None``: never).  Tokens made before
expiry existed (a database of consortia 0.1, upgraded) never expire until revoked.
A revoked or expired token is refused with 401 at its next request: tokens are
looked up in the database on every request, never cached.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortia.errors import AuthenticationError, ValidationError
from consortia.hub.db import NodeRow, TokenRow, make_engine

__all__ = [
    "DEFAULT_EXPIRY",
    "ROLES",
    "ROLE_DEFAULT",
    "Principal",
    "bootstrap_token",
    "create_token",
    "hash_token",
    "new_secret",
    "resolve",
]

ROLES = ("admin", "researcher", "enrolment")
_PREFIX = {"admin": "cad_", "researcher": "cre_", "enrolment": "cen_", "node": "cno_"}
_DAY = 86400.0
DEFAULT_EXPIRY: Final[dict[str, float]] = {
    "admin": 90 * _DAY,
    "researcher": 90 * _DAY,
    "enrolment": 7 * _DAY,
}
"""Seconds a new token of each role lives unless its creator chooses."""
ROLE_DEFAULT: Final = "role-default"
"""``expires_in`` of :func:`create_token`: the role's :data:`DEFAULT_EXPIRY`."""
HINT_LENGTH = 12
"""Characters of a token kept in clear to name it in listings: its role prefix and 8
random characters (48 of its 256 random bits)."""
REVOKED = "this bearer token has been revoked"
EXPIRED = "this bearer token has expired"

Expiry = float | Literal["role-default"] | None
"""Seconds a token lives, ``None`` (never expires) or :data:`ROLE_DEFAULT`."""


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


def expiry_time(role: str, expires_in: Expiry, now: float) -> float | None:
    """The UNIX time a token of ``role`` made at ``now`` expires (None: never)."""
    if expires_in == ROLE_DEFAULT:
        return now + DEFAULT_EXPIRY[role]
    if expires_in is None:
        return None
    if not isinstance(expires_in, int | float) or not expires_in > 0:
        raise ValidationError(f"expires_in must be a positive number of seconds: {expires_in!r}")
    return now + float(expires_in)


def create_token(
    session: Session, role: str, name: str, *, expires_in: Expiry = ROLE_DEFAULT
) -> str:
    """Create and store (hashed) a token; return the clear token, shown once.

    Parameters
    ----------
    session
        A session on the hub's database (the caller commits).
    role, name
        The token's role (admin, researcher, enrolment) and whom it is for.
    expires_in
        Seconds the token lives; ``None``: it never expires; by default the role's
        :data:`DEFAULT_EXPIRY`.
    """
    if role not in ROLES:
        raise ValidationError(f"role must be one of {ROLES}, not {role!r}")
    if not name or len(name) > 128:
        raise ValidationError("a token name must have 1 to 128 characters")
    now = time.time()
    expires_at = expiry_time(role, expires_in, now)
    token = new_secret(role)
    session.add(
        TokenRow(
            token_hash=hash_token(token),
            role=role,
            name=name,
            created_at=now,
            hint=token[:HINT_LENGTH],
            expires_at=expires_at,
        )
    )
    return token


def resolve(session: Session, token: str | None, *, now: float | None = None) -> Principal | None:
    """The principal a bearer token belongs to, or None if it is unknown or spent.

    Raises
    ------
    AuthenticationError
        The token is known but revoked or expired (its message says which, and
        nothing else about the token).
    """
    if not token or len(token) > 256:
        return None
    digest = hash_token(token)
    if token.startswith(_PREFIX["node"]):  # most requests: one query, on the right table
        name = session.scalar(select(NodeRow.name).where(NodeRow.credential_hash == digest))
        return Principal("node", name) if name is not None else None
    row = session.scalar(select(TokenRow).where(TokenRow.token_hash == digest))
    if row is None:
        return None
    if row.revoked_at is not None:
        raise AuthenticationError(REVOKED)
    if row.expires_at is not None and row.expires_at <= (time.time() if now is None else now):
        raise AuthenticationError(EXPIRED)
    if row.role == "enrolment" and row.used:
        return None
    return Principal(row.role, row.name, row.id)


def bootstrap_token(
    db: str,
    role: str,
    name: str,
    *,
    audit_key: bytes | None = None,
    expires_in: Expiry = ROLE_DEFAULT,
) -> str:
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
    expires_in
        Seconds the token lives (``None``: never); by default :data:`DEFAULT_EXPIRY`.

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
            token = create_token(s, role, name, expires_in=expires_in)
            s.commit()
        audit.append("operator", "token.create", {"role": role, "name": name})
        return token
    finally:
        engine.dispose()
