"""Liveness at the reveal: a round keeps its participants' encrypted seed shares.

``bundles`` holds, per node, the encrypted Shamir shares of its self-mask seed that
came with its vector; ``lost`` the participants that fell silent after their vector;
``shares`` what each survivor revealed of the lost seeds (see
:mod:`consortia.privacy.recovery`).  Rounds of an older hub get empty values.

Revision ID: hub_0005
Revises: hub_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hub_0005"
down_revision = "hub_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("bundles", sa.JSON, nullable=True))
        batch.add_column(sa.Column("lost", sa.JSON, nullable=True))
        batch.add_column(sa.Column("shares", sa.JSON, nullable=True))
    rounds = sa.table(
        "rounds",
        sa.column("bundles", sa.JSON),
        sa.column("lost", sa.JSON),
        sa.column("shares", sa.JSON),
    )
    op.execute(rounds.update().values(bundles={}, lost=[], shares={}))
    with op.batch_alter_table("rounds") as batch:
        batch.alter_column("bundles", existing_type=sa.JSON, nullable=False)
        batch.alter_column("lost", existing_type=sa.JSON, nullable=False)
        batch.alter_column("shares", existing_type=sa.JSON, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("shares")
        batch.drop_column("lost")
        batch.drop_column("bundles")
