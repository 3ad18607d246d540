"""The node's database under migrations: a database of the release before them upgrades in
place with its ledger, pins, privacy spend and audit log intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.pool import NullPool

from consortia.errors import SecureAggregationError
from consortia.migrations import current, head, metadata, upgrade
from consortia.node.approvals import Approvals
from consortia.node.store import NodeStore
from consortia.privacy.keys import SiteIdentity
from consortia.privacy.secagg import RoundContext, SecureSite

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _diff(eng: sa.Engine) -> list:
    with eng.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True})
        return compare_metadata(ctx, metadata("node"))


def _legacy(tmp_path: Path) -> Path:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    shutil.copy(FIXTURES / "legacy_node.sqlite", data_dir / "node.sqlite")
    return data_dir


def test_a_node_database_of_the_release_before_migrations_upgrades_in_place(tmp_path):
    data_dir = _legacy(tmp_path)
    plain = sa.create_engine(f"sqlite:///{data_dir / 'node.sqlite'}", poolclass=NullPool)
    assert current(plain) is None
    store = NodeStore(data_dir, fsync=False)
    try:
        assert current(store.engine) == head("node")
        assert _diff(store.engine) == []
        # the ledger's one-reveal rule survives the upgrade: the round stays finalised
        assert store.ledger.seeds("study-1", 0) == {0: b"\x01" * 32}
        assert store.ledger.revealed("study-1", 0) == 0
        ids = {n: SiteIdentity.generate() for n in ("hosp-a", "hosp-b", "hosp-c")}
        ctx = RoundContext("study-1", 0, 1, tuple(i.peer_key(n) for n, i in ids.items()))
        site = SecureSite("hosp-a", ids["hosp-a"], ledger=store.ledger)
        with pytest.raises(SecureAggregationError, match="already finalised"):
            site.mask(ctx, {"x": np.ones(3)})
        # the owner's pins, the privacy spend and the refusals are kept
        assert store.pins.all() == {"hosp-b": "ab" * 32}
        assert store.releases.spent("alice", "data") == (0.5, 1e-6)
        assert store.releases.refusals("alice", "data") == 1
        [(digest, ids)] = store.releases.cohorts("data")
        assert digest == "cd" * 32 and np.array_equal(ids, np.arange(40, dtype=np.uint64))
        # the audit log's chain is intact and grows
        verdict = store.audit.verify()
        assert verdict.ok and verdict.n_entries == 1, verdict
        store.record("node:hosp-a", "release", {"study": "study-4", "round": 0})
        assert store.audit.verify().n_entries == 2
        assert Approvals(store.engine, store.audit, mode="manual").list() == []
    finally:
        store.close()
        plain.dispose()


def test_the_baseline_is_exactly_the_schema_the_old_release_made(tmp_path):
    def schema(path: Path) -> dict[str, str]:
        eng = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
        with eng.connect() as c:
            rows = c.exec_driver_sql("SELECT name, sql FROM sqlite_master").all()
        eng.dispose()
        return {n: s for n, s in rows if "alembic_version" not in n}

    eng = sa.create_engine(f"sqlite:///{tmp_path / 'r1.sqlite'}", poolclass=NullPool)
    upgrade(eng, "node", "node_0001")
    eng.dispose()
    assert schema(tmp_path / "r1.sqlite") == schema(FIXTURES / "legacy_node.sqlite")


def test_a_new_node_database_is_made_by_the_migrations(tmp_path):
    store = NodeStore(tmp_path / "n", fsync=False)
    try:
        assert current(store.engine) == head("node")
        assert _diff(store.engine) == []
    finally:
        store.close()


def test_an_old_database_missing_a_table_gets_it(tmp_path):
    """The old release made the approvals table only when approvals were first used."""
    data_dir = _legacy(tmp_path)
    eng = sa.create_engine(f"sqlite:///{data_dir / 'node.sqlite'}", poolclass=NullPool)
    with eng.begin() as c:
        c.exec_driver_sql("DROP TABLE approvals")
    eng.dispose()
    store = NodeStore(data_dir, fsync=False)
    try:
        assert sa.inspect(store.engine).has_table("approvals")
        assert _diff(store.engine) == []
        assert store.pins.all() == {"hosp-b": "ab" * 32}
    finally:
        store.close()


def test_numpy_cohort_ids_round_trip_after_the_upgrade(tmp_path):
    store = NodeStore(_legacy(tmp_path), fsync=False)
    try:
        ids = np.arange(7, dtype=np.uint64) * 3
        store.releases.add_cohort("data", "ef" * 32, ids)
        assert sorted(c.size for _, c in store.releases.cohorts("data")) == [7, 40]
    finally:
        store.close()
