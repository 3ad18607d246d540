"""Baseline: the hub's tables as consortia 0.1 made them with ``create_all``.

A database made by that release (no ``alembic_version``) is adopted: the tables it
lacks are created, the others are checked and kept.

Revision ID: hub_0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa

from consortia.migrations._baseline import create_missing

revision = "hub_0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> sa.MetaData:
    """The schema frozen as it was: later changes belong in later revisions."""
    m = sa.MetaData()
    sa.Table(
        "nodes",
        m,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("identity_key", sa.String(64), nullable=False),
        sa.Column("mask_key", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=False, unique=True, index=True),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    sa.Table(
        "tokens",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True, index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    sa.Table(
        "datasets",
        m,
        sa.Column("node", sa.String(128), sa.ForeignKey("nodes.name"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("catalogue", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "studies",
        m,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("researcher", sa.String(128), nullable=False, index=True),
        sa.Column("algorithm", sa.JSON, nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("frac_bits", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("participants", sa.JSON, nullable=False),
        sa.Column("n_rounds", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("error_rule", sa.String(64), nullable=True),
        sa.Column("error_site", sa.String(128), nullable=True),
        sa.Column("error_detail", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "rounds",
        m,
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), primary_key=True),
        sa.Column("round_index", sa.Integer, primary_key=True),
        sa.Column("step", sa.String(128), nullable=False),
        sa.Column("public", sa.LargeBinary, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("participants", sa.JSON, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("layout", sa.JSON, nullable=True),
        sa.Column("received", sa.JSON, nullable=False),
        sa.Column("seeds", sa.JSON, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False, index=True),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    sa.Table(
        "round_acc",
        m,
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("round_index", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("acc", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "round_sums",
        m,
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("round_index", sa.Integer, primary_key=True),
        sa.Column("sums", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "tasks",
        m,
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("round_index", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("node", sa.String(128), primary_key=True, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "node_audit_heads",
        m,
        sa.Column("node", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    sa.Table(
        "node_budgets",
        m,
        sa.Column("node", sa.String(128), primary_key=True),
        sa.Column("researcher", sa.String(256), primary_key=True),
        sa.Column("dataset", sa.String(256), primary_key=True),
        sa.Column("epsilon_spent", sa.Float, nullable=False),
        sa.Column("epsilon_cap", sa.Float, nullable=False),
        sa.Column("delta_spent", sa.Float, nullable=False),
        sa.Column("delta_cap", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "audit_log",
        m,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("timestamp", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("mac", sa.String(64), nullable=True),
    )
    sa.Table(
        "audit_log_head",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    return m


def upgrade() -> None:
    create_missing(_tables())


def downgrade() -> None:
    raise NotImplementedError("the baseline is not downgraded: restore a backup instead")
