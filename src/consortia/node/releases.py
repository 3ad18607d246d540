"""The node's durable memory of releases, privacy spend, refusals and pinned peers.

:class:`SqlReleaseLedger` implements :class:`~consortia.privacy.disclosure.ReleaseLedger`
in the node's own SQLite, so the rules of :mod:`consortia.privacy.disclosure` hold
across studies and restarts.  Cohorts are stored once per distinct cohort, as
sorted 64-bit row identities (zlib-compressed); they never leave the node.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from consortia.privacy.disclosure import ReleaseLedger, ReleaseRecord

__all__ = ["PinStore", "SqlReleaseLedger", "create_tables"]

_meta = sa.MetaData()
_release_keys = sa.Table(
    "release_keys",
    _meta,
    sa.Column("dataset", sa.String(256), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("study_id", sa.String(64), primary_key=True),
    sa.Column("participants", sa.Text, nullable=False),
)
_releases = sa.Table(
    "releases",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(256), nullable=False, index=True),
    sa.Column("study_id", sa.String(64), nullable=False),
    sa.Column("researcher", sa.String(256), nullable=False),
    sa.Column("query", sa.String(64), nullable=False),
    sa.Column("content", sa.String(64), nullable=False),
    sa.Column("participants", sa.Text, nullable=False),
    sa.Column("cohort", sa.String(64), nullable=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("round_index", sa.Integer, nullable=False, default=0),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Index("ix_releases_attempt", "study_id", "round_index", "attempt"),
    sa.Index("ix_releases_researcher", "researcher", "dataset", "time"),
)
_cohorts = sa.Table(
    "cohorts",
    _meta,
    sa.Column("dataset", sa.String(256), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("ids", sa.LargeBinary, nullable=False),
)
_charges = sa.Table(
    "privacy_charges",
    _meta,
    sa.Column("study_id", sa.String(64), primary_key=True),
    sa.Column("dataset", sa.String(256), primary_key=True),
    sa.Column("researcher", sa.String(256), nullable=False, index=True),
    sa.Column("epsilon", sa.Float, nullable=False),
    sa.Column("delta", sa.Float, nullable=False),
    sa.Column("time", sa.Float, nullable=False),
)
_refusals = sa.Table(
    "refusals",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("researcher", sa.String(256), nullable=False, index=True),
    sa.Column("dataset", sa.String(256), nullable=False),
    sa.Column("study_id", sa.String(64), nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("time", sa.Float, nullable=False),
)
_grids = sa.Table(
    "reference_grids",
    _meta,
    sa.Column("dataset", sa.String(256), primary_key=True),
    sa.Column("cohort", sa.String(64), primary_key=True),
    sa.Column("column", sa.String(256), primary_key=True),
    sa.Column("grid", sa.LargeBinary, nullable=False),
)
_pins = sa.Table(
    "pins",
    _meta,
    sa.Column("site", sa.String(128), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("added", sa.Float, nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    """Bring the node's database, this module's tables included, to the newest schema.

    The tables are made by the node's migrations (:func:`consortia.migrations.upgrade_node`,
    which :class:`~consortia.node.store.NodeStore` runs when it opens the database).
    """
    from consortia.migrations import upgrade_node

    upgrade_node(engine)


def _insert_once(c: sa.Connection, table: sa.Table, **values: object) -> None:
    """Insert a row unless one with the same primary key exists (the first one wins)."""
    c.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())


def _parts(participants: Iterable[str]) -> str:
    return json.dumps(sorted(participants))


class SqlReleaseLedger(ReleaseLedger):
    """A :class:`~consortia.privacy.disclosure.ReleaseLedger` in the node's SQLite.

    Inside :meth:`deferred`, the per-round writes (a release's record, a reveal's
    keys) are buffered and reach the database with :meth:`flush`, in the caller's
    transaction (the node commits them with the task's ledger change and audit
    entry); a task that does not commit (refused, failed) drops them: it released
    nothing.  The rare writes (cohorts, grids, charges, refusals) commit at once.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine  # migrated by NodeStore (or create_tables)
        self._queue: list[tuple[str, dict]] | None = None

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Buffer the per-round writes made in this block until :meth:`flush`."""
        self._queue = []
        try:
            yield
        finally:
            self._queue = None

    def flush(self, connection: sa.Connection) -> None:
        """Write the buffered records in ``connection``'s transaction (the caller commits)."""
        queue = self._queue or []
        if self._queue is not None:
            self._queue = []
        for kind, values in queue:
            if kind == "release":
                connection.execute(_releases.insert().values(**values))
            else:
                self._mark(connection, **values)

    def _write(self, kind: str, values: dict) -> None:
        if self._queue is not None:
            self._queue.append((kind, values))
            return
        with self.engine.begin() as c:
            if kind == "release":
                c.execute(_releases.insert().values(**values))
            else:
                self._mark(c, **values)

    def conflicting(self, dataset, keys, study_id, participants):
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(_release_keys.c.participants).where(
                    _release_keys.c.dataset == dataset,
                    _release_keys.c.key.in_(list(keys)),
                    _release_keys.c.study_id != study_id,
                )
            ).all()
        mine = _parts(participants)
        return any(r.participants != mine for r in rows)

    def cohorts(self, dataset):
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(_cohorts.c.digest, _cohorts.c.ids).where(_cohorts.c.dataset == dataset)
            ).all()
        return [(r.digest, np.frombuffer(zlib.decompress(r.ids), dtype=np.uint64)) for r in rows]

    def add_cohort(self, dataset, digest, ids):
        blob = zlib.compress(np.ascontiguousarray(ids, dtype=np.uint64).tobytes(), 1)
        with self.engine.begin() as c:
            _insert_once(c, _cohorts, dataset=dataset, digest=digest, size=int(ids.size), ids=blob)

    def record(self, release: ReleaseRecord) -> None:
        self._write(
            "release",
            {
                "dataset": release.dataset,
                "study_id": release.study_id,
                "researcher": release.researcher,
                "query": release.query,
                "content": release.content,
                "participants": _parts(release.participants),
                "cohort": release.cohort,
                "time": release.time,
                "round_index": release.round_index,
                "attempt": release.attempt,
            },
        )

    def pending(self, study_id, round_index, attempt):
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(_releases).where(
                    _releases.c.study_id == study_id,
                    _releases.c.round_index == round_index,
                    _releases.c.attempt == attempt,
                )
            ).all()
        return [
            ReleaseRecord(
                dataset=r.dataset,
                study_id=r.study_id,
                researcher=r.researcher,
                query=r.query,
                content=r.content,
                participants=frozenset(json.loads(r.participants)),
                cohort=r.cohort,
                time=r.time,
                round_index=r.round_index,
                attempt=r.attempt,
            )
            for r in rows
        ]

    def mark_revealed(self, dataset, keys, study_id, participants):
        values = {"dataset": dataset, "keys": tuple(keys), "study_id": study_id}
        self._write("reveal", {**values, "participants": _parts(participants)})

    @staticmethod
    def _mark(c: sa.Connection, dataset: str, keys: tuple, study_id: str, participants: str):
        for key in set(keys):
            values = {"key": key, "study_id": study_id, "participants": participants}
            _insert_once(c, _release_keys, dataset=dataset, **values)

    def grid(self, dataset, cohort, column):
        with self.engine.connect() as c:
            blob = c.scalar(
                sa.select(_grids.c.grid).where(
                    _grids.c.dataset == dataset,
                    _grids.c.cohort == cohort,
                    _grids.c.column == column,
                )
            )
        return None if blob is None else np.frombuffer(zlib.decompress(blob), dtype=np.float64)

    def set_grid(self, dataset, cohort, column, grid):
        blob = zlib.compress(np.ascontiguousarray(grid, dtype=np.float64).tobytes(), 1)
        with self.engine.begin() as c:  # the first grid wins
            _insert_once(c, _grids, dataset=dataset, cohort=cohort, column=column, grid=blob)

    def studies_since(self, researcher, dataset, since):
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(_releases.c.study_id)
                .where(
                    _releases.c.researcher == researcher,
                    _releases.c.dataset == dataset,
                    _releases.c.time >= since,
                )
                .distinct()
            ).all()
        return {r.study_id for r in rows}

    def spent(self, researcher, dataset):
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(_charges.c.epsilon), 0.0),
                    sa.func.coalesce(sa.func.sum(_charges.c.delta), 0.0),
                ).where(_charges.c.researcher == researcher, _charges.c.dataset == dataset)
            ).one()
        return float(row[0]), float(row[1])

    def charged(self, study_id, dataset):
        with self.engine.connect() as c:
            hit = c.scalar(
                sa.select(_charges.c.study_id).where(
                    _charges.c.study_id == study_id, _charges.c.dataset == dataset
                )
            )
        return hit is not None

    def charge(self, study_id, researcher, dataset, epsilon, delta):
        with self.engine.begin() as c:  # once per study and dataset
            _insert_once(
                c,
                _charges,
                study_id=study_id,
                dataset=dataset,
                researcher=researcher,
                epsilon=float(epsilon),
                delta=float(delta),
                time=time.time(),
            )

    def refusals(self, researcher, dataset):
        with self.engine.connect() as c:
            n = c.scalar(
                sa.select(sa.func.count()).where(
                    _refusals.c.researcher == researcher, _refusals.c.dataset == dataset
                )
            )
        return int(n or 0)

    def add_refusal(self, researcher, dataset, study_id, rule):
        with self.engine.begin() as c:
            c.execute(
                _refusals.insert().values(
                    researcher=researcher,
                    dataset=dataset,
                    study_id=study_id,
                    rule=rule,
                    time=time.time(),
                )
            )

    def budgets(self) -> list[dict[str, object]]:
        """Privacy spend per (researcher, dataset), for the data owner."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(
                    _charges.c.researcher,
                    _charges.c.dataset,
                    sa.func.sum(_charges.c.epsilon),
                    sa.func.sum(_charges.c.delta),
                    sa.func.count(),
                ).group_by(_charges.c.researcher, _charges.c.dataset)
            ).all()
        return [
            {
                "researcher": r[0],
                "dataset": r[1],
                "epsilon": float(r[2]),
                "delta": float(r[3]),
                "studies": int(r[4]),
            }
            for r in rows
        ]


class PinStore:
    """Peer identities pinned by the data owner (``consortia node peers add``)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine  # migrated by NodeStore (or create_tables)

    def all(self) -> dict[str, str]:
        """Site name -> pinned identity fingerprint (64 hex)."""
        with self.engine.connect() as c:
            return {r.site: r.fingerprint for r in c.execute(sa.select(_pins)).all()}

    def add(self, site: str, fingerprint: str) -> None:
        """Pin (or re-pin) ``site`` to ``fingerprint``."""
        with self.engine.begin() as c:
            c.execute(_pins.delete().where(_pins.c.site == site))
            c.execute(_pins.insert().values(site=site, fingerprint=fingerprint, added=time.time()))

    def remove(self, site: str) -> bool:
        """Unpin ``site``; whether it was pinned."""
        with self.engine.begin() as c:
            return c.execute(_pins.delete().where(_pins.c.site == site)).rowcount > 0
