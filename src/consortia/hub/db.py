"""The hub's database: SQLAlchemy 2 models and engine creation.

SQLite (a file, in WAL mode) is the embedded default; any SQLAlchemy URL, for
example ``postgresql+psycopg://user@host/db``, works without code change.

Tables
------
``nodes``            enrolled nodes: name, identity and signed masking key, hashed credential
``tokens``           researcher, admin and one-time enrolment tokens (hashed), their expiry
                     and revocation
``datasets``         the catalogue each node published (names, columns, rounded counts; no values)
``studies``          algorithm spec, dataset, researcher, status, participants, error
``rounds``           one row per round: step, the SHA-256 of its public arrays (in ``blobs``),
                     the open attempt, the received set and revealed seeds (small columns only:
                     updated on every request)
``round_acc``        the open attempt's running masked sum (one big blob per open round)
``round_sums``       the SUMS of each finished round (written once)
``study_results``    each finished study's result (a consortia.resultcodec frame, written once)
``tasks``            per-node task state of every attempt
``blobs``            payloads stored once, content-addressed: rounds' public arrays (packed
                     consortia.wire frames, named by the SHA-256 of their bytes)
``blob_refs``        which studies use which blob (a node may fetch the blobs of its studies)
``node_audit_heads`` each node's audit-log heads as anchored with its contributions (append-only)
``audit_log``        written by :class:`consortia.audit.AuditLog` on the same engine

The tables are made and upgraded by the migrations of :mod:`consortia.migrations`
(``migrations/hub/versions``): a model changed here needs a revision there.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "BlobRefRow",
    "BlobRow",
    "DatasetRow",
    "NodeAuditHeadRow",
    "NodeRow",
    "RoundAccRow",
    "RoundRow",
    "RoundSumsRow",
    "StudyResultRow",
    "StudyRow",
    "TaskRow",
    "TokenRow",
    "make_engine",
]


class Base(DeclarativeBase):
    """Declarative base of the hub's tables."""


def _now() -> float:
    return time.time()


class NodeRow(Base):
    """An enrolled node."""

    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    identity_key: Mapped[str] = mapped_column(String(64))
    mask_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    enrolled_at: Mapped[float] = mapped_column(Float, default=_now)
    last_seen: Mapped[float] = mapped_column(Float, default=_now)


class TokenRow(Base):
    """A bearer token: role ``admin``, ``researcher`` or ``enrolment`` (one-time)."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    hint: Mapped[str | None] = mapped_column(String(16), nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DatasetRow(Base):
    """One dataset in one node's published catalogue."""

    __tablename__ = "datasets"
    node: Mapped[str] = mapped_column(ForeignKey("nodes.name"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    catalogue: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float, default=_now)


class StudyRow(Base):
    """A study submitted by a researcher."""

    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    researcher: Mapped[str] = mapped_column(String(128), index=True)
    algorithm: Mapped[dict] = mapped_column(JSON)
    dataset: Mapped[str] = mapped_column(String(128))
    frac_bits: Mapped[int] = mapped_column(Integer, default=24)
    status: Mapped[str] = mapped_column(String(16), index=True)
    participants: Mapped[list] = mapped_column(JSON)
    n_rounds: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_rule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=_now)
    updated_at: Mapped[float] = mapped_column(Float, default=_now)


class RoundRow(Base):
    """One round of a study (one row per round index: a duplicate round cannot exist)."""

    __tablename__ = "rounds"
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    round_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[str] = mapped_column(String(128))
    public: Mapped[str] = mapped_column(String(64))  # sha256 of the packed arrays (in blobs)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    participants: Mapped[list] = mapped_column(JSON)
    phase: Mapped[str] = mapped_column(String(16), default="collect")
    layout: Mapped[list | None] = mapped_column(JSON, nullable=True)
    received: Mapped[dict] = mapped_column(JSON, default=dict)
    seeds: Mapped[dict] = mapped_column(JSON, default=dict)
    # seed recovery (consortia.privacy.recovery): node -> the encrypted shares of its seed
    # that came with its vector; the participants lost at the reveal; and, per survivor,
    # the shares of the lost seeds it revealed (holder -> {lost node -> share hex})
    bundles: Mapped[dict] = mapped_column(JSON, default=dict)
    lost: Mapped[list] = mapped_column(JSON, default=list)
    shares: Mapped[dict] = mapped_column(JSON, default=dict)
    done: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    opened_at: Mapped[float] = mapped_column(Float, default=_now)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RoundAccRow(Base):
    """The running masked sum of a round's open attempt.

    Kept apart from :class:`RoundRow` so that the many small updates of a round
    (received set, seeds, phase) never rewrite a payload-sized blob.
    """

    __tablename__ = "round_acc"
    study_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    acc: Mapped[bytes] = mapped_column(LargeBinary)


class RoundSumsRow(Base):
    """The aggregated SUMS of a finished round (a consortia.wire message), written once."""

    __tablename__ = "round_sums"
    study_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    sums: Mapped[bytes] = mapped_column(LargeBinary)


class BlobRow(Base):
    """A payload stored once, named by the SHA-256 (hex) of its bytes."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float, default=_now)


class BlobRefRow(Base):
    """A study that uses a blob: its nodes may fetch it."""

    __tablename__ = "blob_refs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class StudyResultRow(Base):
    """The result of a finished study (a :mod:`consortia.resultcodec` frame), written once.

    Stored in the transaction that marks the study finished; a study whose result
    could not be encoded has no row (its result is rebuilt from ``round_sums``).
    """

    __tablename__ = "study_results"
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    result: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of ``result``, hex
    size: Mapped[int] = mapped_column(BigInteger)
    encoded_at: Mapped[float] = mapped_column(Float, default=_now)


class TaskRow(Base):
    """The state of one node's work on one attempt: pending, contributed, revealed, ..."""

    __tablename__ = "tasks"
    study_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    updated_at: Mapped[float] = mapped_column(Float, default=_now)


class NodeAuditHeadRow(Base):
    """A head (sequence number and hash) of a node's audit log, sent with a contribution.

    Rows are only ever inserted, each with a higher ``seq`` than the node's previous
    one: ``consortia audit verify`` checks a node's log against them.
    """

    __tablename__ = "node_audit_heads"
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[float] = mapped_column(Float, default=_now)


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` and bring its database to the newest schema.

    A bare path (no ``://``) is taken as a SQLite file; a new SQLite file is created
    readable by its owner only (0600; SQLite gives its WAL files the same mode).
    SQLite files are put in WAL mode with ``synchronous=NORMAL``: a committed transaction survives a
    crash of the hub process (``kill -9``).  The tables are made or upgraded in place by
    :func:`consortia.migrations.upgrade_hub` (a database of a release before migrations
    included).
    """
    if "://" not in url:
        url = f"sqlite:///{url}"
    _create_private(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=False
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            # big pages for a new file (no effect on an existing one): a payload-sized blob
            # costs 3-4x less CPU to write in 64 KiB pages than in the default 4 KiB ones
            cur.execute("PRAGMA page_size=65536")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    from consortia.migrations import upgrade_hub

    upgrade_hub(engine)
    return engine


def _create_private(url: str) -> None:
    """Create a SQLite database file that does not exist yet with mode 0600."""
    parsed = make_url(url)
    path = parsed.database
    if not parsed.drivername.startswith("sqlite") or not path or path == ":memory:":
        return
    if path.startswith("file:"):  # a URI filename: left to SQLite
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
