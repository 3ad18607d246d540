"""Helpers for the networked tests: real hub and node processes on 127.0.0.1.

Every wait is bounded; every process is stopped (or killed) in teardown.  With
``CONSORTIA_TEST_POSTGRES_URL`` set, each hub fixture also runs against a fresh
PostgreSQL database created for it (and dropped after).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from consortia.data import load_dataset
from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeConfig, NodeProcess
from consortia.node.identity import mutual_pins
from consortia.privacy.policy import Policy
from consortia.sdk import RemoteFederation, connect

PG_ENV = "CONSORTIA_TEST_POSTGRES_URL"

PATIENCE = 300.0
"""Ceiling of one wait on the hub, a node or a CLI process, in seconds.

Generous on purpose: on a loaded machine (the suite run twice at once on two cores)
everything is slower, and a wait returns as soon as what it waits for happens, so a
high ceiling costs nothing when all is well."""

NETWORK_TEST_TIMEOUT = 1200
"""pytest-timeout of one networked test (several waits, each up to :data:`PATIENCE`)."""
BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get(PG_ENV) else [])


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    """Poll ``pred`` until it returns a truthy value; fail the test after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def _pg_admin_url(url: str) -> tuple[str, str]:
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    return u.set(database="postgres").render_as_string(hide_password=False), u


def create_pg_database() -> str:
    """A fresh PostgreSQL database (unique name) on the ``$CONSORTIA_TEST_POSTGRES_URL`` server."""
    import sqlalchemy as sa

    admin, base = _pg_admin_url(os.environ[PG_ENV])
    name = f"consortia_t_{uuid.uuid4().hex[:12]}"
    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    import sqlalchemy as sa

    admin, base = _pg_admin_url(url)
    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{base.database}" WITH (FORCE)'))
    eng.dispose()


def toy_frame(i: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1000 + i)
    x1 = rng.normal(i * 0.3, 1.0, n)
    x2 = rng.normal(0, 2.0, n)
    y = 1.0 + 0.5 * x1 - 0.25 * x2 + rng.normal(0, 1, n)
    arm = rng.integers(0, 2, n)
    hazard = np.exp(0.4 * x1 - 0.5 * arm) / 400.0
    time = np.minimum(np.ceil(rng.exponential(1 / hazard)), 900).astype(int)
    event = ((rng.random(n) < 0.7) & (time < 900)).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": y, "arm": arm, "time": time, "event": event})


@dataclass
class Federation:
    """A running hub with node processes, and what the tests need to drive it."""

    root: Path
    hub: HubProcess
    nodes: dict[str, NodeProcess]
    configs: dict[str, NodeConfig]
    admin: str
    researcher: str
    fed: RemoteFederation
    extra: dict = field(default_factory=dict)

    def sites(self, dataset: str = "data", names=None) -> dict:
        """The nodes' datasets as loaded from the same files (for the simulation)."""
        out = {}
        for name, cfg in self.configs.items():
            if names is not None and name not in names:
                continue
            ds = next(d for d in cfg.datasets if d.name == dataset)
            out[name] = load_dataset(str(ds.path), schema=ds.schema, name=dataset)
        return out

    def stop(self) -> None:
        self.fed.close()
        for n in self.nodes.values():
            if n.running:
                n.proc.terminate()
        for n in self.nodes.values():
            n.stop(timeout=5)
        self.hub.stop(timeout=5)


def start_federation(
    root: Path,
    db: str,
    *,
    n_nodes: int = 3,
    sizes=(40, 55, 60, 47),
    node_timeout: float = 20.0,
    reveal_timeout: float = 120.0,
    max_payload: int = 2**20,
    restricted: bool = True,
    approval_timeout: float = 24 * 3600.0,
    node_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Federation:
    """Start a hub and ``n_nodes`` node processes, each holding ``data`` (and ``restricted``).

    ``node_options`` maps a node name to NodeConfig fields that replace the defaults
    (for example ``{"site2": {"approval": "manual"}}``).
    """
    root.mkdir(parents=True, exist_ok=True)
    hub = HubProcess(
        db,
        node_timeout=node_timeout,
        reveal_timeout=reveal_timeout,
        max_payload=max_payload,
        approval_timeout=approval_timeout,
        log=root / "hub.log",
    ).start()
    nodes, configs = {}, {}
    pins = mutual_pins({f"site{i}": root / f"site{i}" for i in range(n_nodes)})
    try:
        for i in range(n_nodes):
            name = f"site{i}"
            csv = root / f"{name}.csv"
            toy_frame(i, sizes[i % len(sizes)]).to_csv(csv, index=False)
            datasets = [
                DatasetConfig(name="data", path=csv, policy=Policy(min_sites=3)),
                # day-resolution survival studies need small cells allowed (docs/survival.md)
                DatasetConfig(
                    name="survival", path=csv, policy=Policy(min_sites=3, min_cell_count=1)
                ),
            ]
            if restricted:
                datasets.append(
                    DatasetConfig(
                        name="restricted",
                        path=csv,
                        policy=Policy(allowed_algorithms=("stats.mean",), min_sites=3),
                    )
                )
            cfg = NodeConfig(
                name=name,
                hub=hub.url,
                data_dir=root / name,
                datasets=tuple(datasets),
                poll_wait=10,
                peers=pins[name],
            )
            cfg = dataclasses.replace(cfg, **dict((node_options or {}).get(name, {})))
            configs[name] = cfg
            token = hub.create_token("enrolment", name)
            nodes[name] = NodeProcess(
                cfg.write(root / f"{name}.toml"), enrol_token=token, log=root / f"{name}.log"
            ).start()
        admin = hub.create_token("admin", "root")
        researcher = hub.create_token("researcher", "alice")
        fed = connect(hub.url, researcher)
        for node in nodes.values():
            node.wait_ready(PATIENCE)
    except BaseException:
        for n in nodes.values():
            n.kill()
        hub.kill()
        raise
    return Federation(root, hub, nodes, configs, admin, researcher, fed)
