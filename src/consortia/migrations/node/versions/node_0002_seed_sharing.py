"""Seed recovery at the reveal: the attempts whose self-mask seed a node split into shares.

The node remembers, per attempt, the participants and threshold of the shares it
sent (see :mod:`consortia.privacy.recovery`), so that after a restart it still
refuses a later attempt that leaves out too many of them.

Revision ID: node_0002
Revises: node_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "node_0002"
down_revision = "node_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secagg_attempts",
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("round_index", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("participants", sa.JSON, nullable=False),
        sa.Column("threshold", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("secagg_attempts")
