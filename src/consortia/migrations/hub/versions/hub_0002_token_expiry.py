"""Tokens expire and can be revoked; a short non-secret hint names them in listings.

``expires_at`` and ``revoked_at`` are UNIX times (NULL: never expires, not revoked);
``hint`` is the token's first characters (its role prefix and 8 random ones, about
48 of its 256 random bits), NULL for tokens made before this revision.  Tokens of
an adopted database keep working: they have no expiry.

Revision ID: hub_0002
Revises: hub_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hub_0002"
down_revision = "hub_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("hint", sa.String(16), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("expires_at")
        batch.drop_column("hint")
