"""Managing the hub's tokens: list them (never their secrets) and revoke them.

A token is named by its ``id`` (``consortia token list``), by its hint (the first
characters of the token, kept in clear: ``cre_AbCd1234``) or by the whole token
(hashed, then looked up).  Revocation takes effect at the token's next request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from consortia.errors import ValidationError
from consortia.hub.auth import _PREFIX, HINT_LENGTH, hash_token
from consortia.hub.db import TokenRow, make_engine

__all__ = ["TokenInfo", "find_token", "list_tokens", "revoke_token"]

_MIN_HINT = 8


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never its secret or its hash.

    Attributes
    ----------
    id
        Its number, to revoke it by.
    role, name
        Its role and whom it is for.
    hint
        Its first characters (None for a token made before hints existed).
    created_at, expires_at, revoked_at
        UNIX times; ``expires_at`` None: never expires; ``revoked_at`` None: not revoked.
    used
        A one-time enrolment token that was spent.
    """

    id: int
    role: str
    name: str
    hint: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    used: bool

    def state(self, now: float | None = None) -> str:
        """``revoked``, ``expired``, ``used`` or ``active``."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.role == "enrolment" and self.used:
            return "used"
        return "active"

    @classmethod
    def of(cls, row: TokenRow) -> TokenInfo:
        """The shown part of a stored token."""
        return cls(
            row.id,
            row.role,
            row.name,
            row.hint,
            row.created_at,
            row.expires_at,
            row.revoked_at,
            bool(row.used),
        )


def find_token(session: Session, ref: str) -> TokenRow:
    """The stored token ``ref`` names: an id, a hint prefix (8+ characters) or the token.

    Raises
    ------
    ValidationError
        No token, or more than one, matches ``ref``.
    """
    ref = ref.strip()
    if ref.isdigit():
        row = session.get(TokenRow, int(ref))
    elif ref[:4] in _PREFIX.values() and len(ref) > HINT_LENGTH:
        row = session.scalar(select(TokenRow).where(TokenRow.token_hash == hash_token(ref)))
    elif len(ref) >= _MIN_HINT:
        hint = TokenRow.hint.startswith(ref[:HINT_LENGTH], autoescape=True)
        rows = session.scalars(select(TokenRow).where(hint).limit(2)).all()
        if len(rows) > 1:
            raise ValidationError(f"more than one token starts with {ref!r}: give its id")
        row = rows[0] if rows else None
    else:
        raise ValidationError(
            f"name a token by its id, by at least {_MIN_HINT} of its first characters, "
            "or by the whole token"
        )
    if row is None:
        raise ValidationError(f"no token matches {ref!r} (see `consortia token list`)")
    return row


def list_tokens(db: str, *, include_inactive: bool = True) -> list[TokenInfo]:
    """The hub's tokens, oldest first (``db``: its database URL or SQLite path)."""
    engine = make_engine(db)
    try:
        with Session(engine) as s:
            infos = [TokenInfo.of(r) for r in s.scalars(select(TokenRow).order_by(TokenRow.id))]
    finally:
        engine.dispose()
    if not include_inactive:
        now = time.time()
        infos = [i for i in infos if i.state(now) == "active"]
    return infos


def revoke_token(db: str, ref: str, *, audit_key: bytes | None = None) -> TokenInfo:
    """Revoke the token ``ref`` names (see :func:`find_token`); return it as revoked.

    Revoking a revoked token changes nothing (its first revocation time is kept).
    The revocation is written to the hub's audit log (``token.revoke``).

    Raises
    ------
    ValidationError
        ``ref`` names no token or several, or the hub's audit log is keyed and no
        ``audit_key`` was given.
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
            row = find_token(s, ref)
            first = row.revoked_at is None
            if first:
                row.revoked_at = time.time()
            info = TokenInfo.of(row)
            s.commit()
        if first:
            details = {"id": info.id, "role": info.role, "name": info.name}
            audit.append("operator", "token.revoke", details)
        return info
    finally:
        engine.dispose()
