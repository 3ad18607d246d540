"""Public arrays by reference: content-addressed ``blobs``; a round names its arrays by digest.

Rounds written before this revision hold their packed public arrays in
``rounds.public``; each is moved into ``blobs`` (once per distinct content, with a
``blob_refs`` row for its study) and the column then holds the SHA-256 (hex).

Revision ID: hub_0003
Revises: hub_0002
"""

from __future__ import annotations

import hashlib
import time

import sqlalchemy as sa
from alembic import op

revision = "hub_0003"
down_revision = "hub_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "blob_refs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("study_id", sa.String(64), primary_key=True),
    )
    op.create_index("ix_blob_refs_study_id", "blob_refs", ["study_id"])
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("public_sha256", sa.String(64), nullable=True))
    bind = op.get_bind()
    rounds = sa.table(
        "rounds",
        sa.column("study_id", sa.String),
        sa.column("round_index", sa.Integer),
        sa.column("public", sa.LargeBinary),
        sa.column("public_sha256", sa.String),
    )
    blobs = sa.table(
        "blobs",
        sa.column("sha256", sa.String),
        sa.column("size", sa.BigInteger),
        sa.column("data", sa.LargeBinary),
        sa.column("created_at", sa.Float),
    )
    refs = sa.table("blob_refs", sa.column("sha256", sa.String), sa.column("study_id", sa.String))
    seen: set[str] = set()
    linked: set[tuple[str, str]] = set()
    keys = bind.execute(sa.select(rounds.c.study_id, rounds.c.round_index)).all()
    for study_id, round_index in keys:  # one round's arrays in memory at a time
        where = (rounds.c.study_id == study_id) & (rounds.c.round_index == round_index)
        raw = bytes(bind.execute(sa.select(rounds.c.public).where(where)).scalar_one())
        digest = hashlib.sha256(raw).hexdigest()
        if digest not in seen:
            bind.execute(
                sa.insert(blobs).values(
                    sha256=digest, size=len(raw), data=raw, created_at=time.time()
                )
            )
            seen.add(digest)
        if (digest, study_id) not in linked:
            bind.execute(sa.insert(refs).values(sha256=digest, study_id=study_id))
            linked.add((digest, study_id))
        bind.execute(sa.update(rounds).where(where).values(public_sha256=digest))
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("public")
    with op.batch_alter_table("rounds") as batch:
        batch.alter_column(
            "public_sha256", new_column_name="public", existing_type=sa.String(64), nullable=False
        )


def downgrade() -> None:  # pragma: no cover - downgrades are not supported
    raise NotImplementedError("hub_0003 cannot be downgraded")
