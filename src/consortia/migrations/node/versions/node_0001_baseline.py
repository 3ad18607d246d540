"""Baseline: the node's tables as consortia 0.1 made them with ``create_all``.

Ledger (``secagg_*``, ``peers``), releases and privacy spend (:mod:`consortia.node.releases`),
owner approvals and the audit log.  A database made by that release (no
``alembic_version``) is adopted: the tables it lacks are created, the others are
checked and kept.

Revision ID: node_0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa

from consortia.migrations._baseline import create_missing

revision = "node_0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> sa.MetaData:
    """The schema frozen as it was: later changes belong in later revisions."""
    m = sa.MetaData()
    sa.Table(
        "secagg_seeds",
        m,
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("round_index", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("seed", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "secagg_reveals",
        m,
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("round_index", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=False),
    )
    sa.Table(
        "peers",
        m,
        sa.Column("site", sa.String(128), primary_key=True),
        sa.Column("identity_key", sa.String(64), nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
    )
    sa.Table(
        "release_keys",
        m,
        sa.Column("dataset", sa.String(256), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("participants", sa.Text, nullable=False),
    )
    sa.Table(
        "releases",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(256), nullable=False, index=True),
        sa.Column("study_id", sa.String(64), nullable=False),
        sa.Column("researcher", sa.String(256), nullable=False),
        sa.Column("query", sa.String(64), nullable=False),
        sa.Column("content", sa.String(64), nullable=False),
        sa.Column("participants", sa.Text, nullable=False),
        sa.Column("cohort", sa.String(64), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("round_index", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Index("ix_releases_attempt", "study_id", "round_index", "attempt"),
        sa.Index("ix_releases_researcher", "researcher", "dataset", "time"),
    )
    sa.Table(
        "cohorts",
        m,
        sa.Column("dataset", sa.String(256), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("ids", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "privacy_charges",
        m,
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("dataset", sa.String(256), primary_key=True),
        sa.Column("researcher", sa.String(256), nullable=False, index=True),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
    )
    sa.Table(
        "refusals",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("researcher", sa.String(256), nullable=False, index=True),
        sa.Column("dataset", sa.String(256), nullable=False),
        sa.Column("study_id", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
    )
    sa.Table(
        "reference_grids",
        m,
        sa.Column("dataset", sa.String(256), primary_key=True),
        sa.Column("cohort", sa.String(64), primary_key=True),
        sa.Column("column", sa.String(256), primary_key=True),
        sa.Column("grid", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "pins",
        m,
        sa.Column("site", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("added", sa.Float, nullable=False),
    )
    sa.Table(
        "approvals",
        m,
        sa.Column("study_id", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("algorithm", sa.JSON, nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("researcher", sa.String(128), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("decided_at", sa.Float, nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
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
