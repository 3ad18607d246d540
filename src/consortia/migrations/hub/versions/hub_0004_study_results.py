"""Results at the hub: each finished study's result, stored once as a result-codec frame.

Revision ID: hub_0004
Revises: hub_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hub_0004"
down_revision = "hub_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_results",
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), primary_key=True),
        sa.Column("result", sa.LargeBinary, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("encoded_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("study_results")
