"""A node's own SQLite database: secure-aggregation ledger, known peers, audit log.

The ledger persists every self-mask seed *before* the masked vector that uses it
leaves the node, and every reveal, so the one-reveal-per-round rule of
:mod:`consortia.privacy.secagg` holds across node restarts.
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from consortia.audit import AuditLog
from consortia.errors import KeyVerificationError
from consortia.privacy.keys import PeerKey
from consortia.privacy.secagg import Ledger

__all__ = ["NodeStore", "SqlLedger"]

_meta = sa.MetaData()
_seeds = sa.Table(
    "secagg_seeds",
    _meta,
    sa.Column("study_id", sa.String(64), primary_key=True),
    sa.Column("round_index", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("seed", sa.LargeBinary, nullable=False),
)
_reveals = sa.Table(
    "secagg_reveals",
    _meta,
    sa.Column("study_id", sa.String(64), primary_key=True),
    sa.Column("round_index", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
)
_peers = sa.Table(
    "peers",
    _meta,
    sa.Column("site", sa.String(128), primary_key=True),
    sa.Column("identity_key", sa.String(64), nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
)


class SqlLedger(Ledger):
    """A :class:`~consortia.privacy.secagg.Ledger` in the node's database (durable)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def seeds(self, study_id: str, round_index: int) -> dict[int, bytes]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(_seeds.c.attempt, _seeds.c.seed).where(
                    _seeds.c.study_id == study_id, _seeds.c.round_index == round_index
                )
            ).all()
        return {int(a): bytes(s) for a, s in rows}

    def add_seed(self, study_id: str, round_index: int, attempt: int, seed: bytes) -> None:
        with self.engine.begin() as c:
            c.execute(
                _seeds.insert().values(
                    study_id=study_id, round_index=round_index, attempt=attempt, seed=seed
                )
            )

    def revealed(self, study_id: str, round_index: int) -> int | None:
        with self.engine.connect() as c:
            return c.scalar(
                sa.select(_reveals.c.attempt).where(
                    _reveals.c.study_id == study_id, _reveals.c.round_index == round_index
                )
            )

    def set_revealed(self, study_id: str, round_index: int, attempt: int) -> None:
        with self.engine.begin() as c:
            if self.revealed(study_id, round_index) is None:
                c.execute(
                    _reveals.insert().values(
                        study_id=study_id, round_index=round_index, attempt=attempt
                    )
                )


class NodeStore:
    """The node's database at ``data_dir/node.sqlite``: ledger, peers and audit log.

    Parameters
    ----------
    data_dir
        The node's private folder.
    audit_key
        Optional HMAC key of the audit log.
    fsync
        Synchronous writes (``PRAGMA synchronous=FULL``); ``False`` keeps writes durable
        across a crash of the node process but not of the machine.
    """

    def __init__(
        self, data_dir: Path, *, audit_key: bytes | None = None, fsync: bool = True
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "node.sqlite"
        self.engine = sa.create_engine(
            f"sqlite:///{self.path}", connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a seed is on disk before the vector it masks leaves (power loss included);
            # NORMAL: durable across a crash of the node process only, and faster
            cur.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            cur.close()

        _meta.create_all(self.engine)
        self.path.chmod(0o600)
        self.ledger = SqlLedger(self.engine)
        self._known: dict[str, bytes] = {}  # peers already bound (cache of the peers table)
        self.audit = AuditLog(self.engine, key=audit_key)

    def check_peers(self, peers: tuple[PeerKey, ...], pinned: dict[str, str]) -> dict[str, bytes]:
        """Bind each peer's identity: pinned fingerprint, else the one first seen (TOFU).

        Returns the trusted identity keys by site; raises
        :class:`~consortia.errors.KeyVerificationError` on a changed identity.
        """
        from consortia.node.identity import fingerprint

        known_all = self._known
        if all(known_all.get(p.site) == p.identity_key and p.site not in pinned for p in peers):
            return {p.site: p.identity_key for p in peers}
        trusted: dict[str, bytes] = {}
        with self.engine.begin() as c:
            for peer in peers:
                fp = fingerprint(peer.identity_key)
                if peer.site in pinned:
                    if pinned[peer.site] != fp:
                        raise KeyVerificationError(
                            f"the identity of site {peer.site!r} does not match its pinned "
                            "fingerprint"
                        )
                else:
                    known = c.scalar(
                        sa.select(_peers.c.identity_key).where(_peers.c.site == peer.site)
                    )
                    if known is None:
                        c.execute(
                            _peers.insert().values(
                                site=peer.site,
                                identity_key=peer.identity_key.hex(),
                                first_seen=time.time(),
                            )
                        )
                    elif known != peer.identity_key.hex():
                        raise KeyVerificationError(
                            f"the identity of site {peer.site!r} changed since it was first seen"
                        )
                trusted[peer.site] = peer.identity_key
        for site, key in trusted.items():
            if site not in pinned:
                self._known[site] = key
        return trusted

    def close(self) -> None:
        """Release the database."""
        self.engine.dispose()
