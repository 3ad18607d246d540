"""A node's own SQLite database: secure-aggregation ledger, peers, releases, audit log.

The ledger persists every self-mask seed *before* the masked vector that uses it
leaves the node, and every reveal, so the one-reveal-per-round rule of
:mod:`consortia.privacy.secagg` holds across node restarts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from consortia.audit import AuditLog
from consortia.errors import KeyVerificationError, SecureAggregationError
from consortia.migrations import upgrade_node
from consortia.node.releases import PinStore, SqlReleaseLedger
from consortia.privacy.keys import PeerKey
from consortia.privacy.ledger import AttemptRecord
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
_attempts = sa.Table(  # attempts whose seed was split into shares (privacy.recovery)
    "secagg_attempts",
    _meta,
    sa.Column("study_id", sa.String(64), primary_key=True),
    sa.Column("round_index", sa.Integer, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("participants", sa.JSON, nullable=False),
    sa.Column("threshold", sa.Integer, nullable=False),
)
_peers = sa.Table(
    "peers",
    _meta,
    sa.Column("site", sa.String(128), primary_key=True),
    sa.Column("identity_key", sa.String(64), nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
)


_INSERT_SEED = _seeds.insert()  # built once: parameters are bound at execution
_INSERT_REVEAL = _reveals.insert()
_INSERTS = {"seed": _INSERT_SEED, "reveal": _INSERT_REVEAL, "attempt": _attempts.insert()}


class _RoundLedger:
    """The cached ledger state of one round: seeds by attempt and the revealed attempt."""

    __slots__ = ("attempts", "revealed", "seeds")

    def __init__(
        self, seeds: dict[int, bytes], revealed: int | None, attempts: dict[int, AttemptRecord]
    ) -> None:
        self.seeds = seeds
        self.revealed = revealed
        self.attempts = attempts


class SqlLedger(Ledger):
    """A :class:`~consortia.privacy.secagg.Ledger` in the node's database (durable).

    The SQLite tables are the source of truth; the state of the rounds last used is
    cached in memory (loaded with one query, updated only with the writes that are
    committed), so answering a task reads nothing from disk.

    Inside :meth:`deferred`, writes are buffered and reach the database only with
    :meth:`flush` in the caller's transaction (the node commits a task's ledger change
    and its audit entry together, before anything leaves); :meth:`discard` drops them.
    Outside it, each write commits at once.

    Parameters
    ----------
    engine
        The node's database.
    cache_rounds
        How many rounds' states are kept in memory.
    """

    def __init__(self, engine: sa.Engine, *, cache_rounds: int = 64) -> None:
        self.engine = engine
        self.cache_rounds = int(cache_rounds)
        self._cache: OrderedDict[tuple[str, int], _RoundLedger] = OrderedDict()
        self._pending: list[tuple[str, dict]] | None = None
        self._touched: set[tuple[str, int]] = set()

    def _state(self, study_id: str, round_index: int) -> _RoundLedger:
        key = (study_id, round_index)
        state = self._cache.get(key)
        if state is not None:
            self._cache.move_to_end(key)
            return state
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(_seeds.c.attempt, _seeds.c.seed).where(
                    _seeds.c.study_id == study_id, _seeds.c.round_index == round_index
                )
            ).all()
            revealed = c.scalar(
                sa.select(_reveals.c.attempt).where(
                    _reveals.c.study_id == study_id, _reveals.c.round_index == round_index
                )
            )
            shared = c.execute(
                sa.select(
                    _attempts.c.attempt, _attempts.c.participants, _attempts.c.threshold
                ).where(_attempts.c.study_id == study_id, _attempts.c.round_index == round_index)
            ).all()
        attempts = {int(a): (tuple(p), int(t)) for a, p, t in shared}
        state = _RoundLedger({int(a): bytes(s) for a, s in rows}, revealed, attempts)
        self._cache[key] = state
        while len(self._cache) > self.cache_rounds:
            old = next(iter(self._cache))
            if old in self._touched:  # never evict a state with unflushed writes
                break
            self._cache.popitem(last=False)
        return state

    def seeds(self, study_id: str, round_index: int) -> dict[int, bytes]:
        return dict(self._state(study_id, round_index).seeds)

    def revealed(self, study_id: str, round_index: int) -> int | None:
        return self._state(study_id, round_index).revealed

    def _write(self, kind: str, row: dict) -> None:
        if self._pending is not None:
            self._pending.append((kind, row))
            self._touched.add((row["study_id"], row["round_index"]))
            return
        with self.engine.begin() as c:
            self._insert(c, kind, row)

    @staticmethod
    def _insert(c: sa.Connection, kind: str, row: dict) -> None:
        c.execute(_INSERTS[kind], row)

    def add_seed(self, study_id: str, round_index: int, attempt: int, seed: bytes) -> None:
        state = self._state(study_id, round_index)
        if attempt in state.seeds:
            raise SecureAggregationError("a seed is already recorded for this attempt")
        row = {"study_id": study_id, "round_index": round_index, "attempt": attempt, "seed": seed}
        self._write("seed", row)
        state.seeds[attempt] = seed

    def set_revealed(self, study_id: str, round_index: int, attempt: int) -> None:
        state = self._state(study_id, round_index)
        if state.revealed is not None:
            return
        row = {"study_id": study_id, "round_index": round_index, "attempt": attempt}
        self._write("reveal", row)
        state.revealed = attempt

    def attempts(self, study_id: str, round_index: int) -> dict[int, AttemptRecord]:
        return dict(self._state(study_id, round_index).attempts)

    def add_attempt(
        self,
        study_id: str,
        round_index: int,
        attempt: int,
        participants: tuple[str, ...],
        threshold: int,
    ) -> None:
        state = self._state(study_id, round_index)
        if attempt in state.attempts:
            return
        row = {"study_id": study_id, "round_index": round_index, "attempt": attempt}
        self._write("attempt", {**row, "participants": list(participants), "threshold": threshold})
        state.attempts[attempt] = (tuple(participants), int(threshold))

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Buffer the writes made in this block until :meth:`flush` (or :meth:`discard`)."""
        if self._pending is not None:
            raise RuntimeError("the ledger is already deferring its writes")
        self._pending = []
        try:
            yield
        finally:
            if self._pending is not None:  # not committed by NodeStore.record
                self.discard()

    def flush(self, connection: sa.Connection) -> None:
        """Write the buffered records in ``connection``'s transaction (the caller commits)."""
        for kind, row in self._pending or ():
            self._insert(connection, kind, row)

    def committed(self) -> None:
        """The transaction holding the flushed records committed: stop deferring."""
        self._pending = None
        self._touched.clear()

    def discard(self) -> None:
        """Drop the buffered records (and forget the cached states they changed)."""
        for key in self._touched:
            self._cache.pop(key, None)
        self._pending = None
        self._touched.clear()


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

        upgrade_node(self.engine)  # tables made, or upgraded in place, by the migrations
        self.path.chmod(0o600)
        self.ledger = SqlLedger(self.engine)
        self._known: dict[str, bytes] = {}  # peers already bound (cache of the peers table)
        self.audit = AuditLog(self.engine, key=audit_key)
        self.releases = SqlReleaseLedger(self.engine)
        self.pins = PinStore(self.engine)

    def check_peers(
        self,
        peers: tuple[PeerKey, ...],
        pinned: Mapping[str, str],
        *,
        trust_on_first_use: bool = False,
    ) -> dict[str, bytes]:
        """The identities of the participants this node's owner trusts, by site.

        A peer is trusted when its identity matches the fingerprint its owner
        pinned (``pinned``: the configuration's ``[peers]`` merged with the pins
        added by ``consortia node peers add``).  With ``trust_on_first_use``, a peer
        that is not pinned is bound to the identity first seen and trusted after.
        Any other peer is left out of the result: it may take part in a round but
        does not count as a trusted site.  Raises
        :class:`~consortia.errors.KeyVerificationError` when a pinned (or, with
        trust on first use, known) site presents another identity.
        """
        from consortia.node.identity import fingerprint

        known_all = self._known
        if trust_on_first_use and all(
            known_all.get(p.site) == p.identity_key and p.site not in pinned for p in peers
        ):
            return {p.site: p.identity_key for p in peers}
        trusted: dict[str, bytes] = {}
        for peer in peers:
            if peer.site in pinned:
                if pinned[peer.site] != fingerprint(peer.identity_key):
                    raise KeyVerificationError(
                        f"the identity of site {peer.site!r} does not match its pinned fingerprint"
                    )
                trusted[peer.site] = peer.identity_key
        if not trust_on_first_use:
            return trusted
        with self.engine.begin() as c:
            for peer in peers:
                if peer.site in pinned:
                    continue
                known = c.scalar(sa.select(_peers.c.identity_key).where(_peers.c.site == peer.site))
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
                self._known[peer.site] = peer.identity_key
        return trusted

    def record(self, actor: str, action: str, details: Mapping[str, Any]) -> None:
        """Commit the ledger's deferred writes and one audit entry in one transaction.

        Called before anything of the task leaves the node: the self-mask seed (or the
        reveal) and the audit entry of a release are on disk together, or neither is.
        """
        try:
            with self.engine.begin() as c:
                self.ledger.flush(c)
                self.releases.flush(c)
                self.audit.append(actor, action, details, connection=c)
        except BaseException:
            self.ledger.discard()
            raise
        self.ledger.committed()

    def close(self) -> None:
        """Release the database."""
        self.engine.dispose()
