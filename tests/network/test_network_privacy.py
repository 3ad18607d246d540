"""Privacy attacks over real HTTP: a hub that enrols fake sites, refusals that must not
name the site, between real hub and node processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from netutil import PATIENCE, start_federation

from consortia.errors import PolicyError
from consortia.node import DatasetConfig, NodeConfig, NodeProcess
from consortia.privacy.policy import Policy
from consortia.stats import Histogram, Mean

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub_db(tmp_path_factory):
    """The hub on SQLite only: the budgets and pins under test live at the nodes.
    The hub's PostgreSQL store runs the same state machine in tests/hub (engine,
    recovery, finishing) and over the network in test_network_federation.py.
    """
    return str(tmp_path_factory.mktemp("hubdb") / "hub.sqlite")


@pytest.fixture(scope="module")
def fedp(hub_db, tmp_path_factory):
    f = start_federation(tmp_path_factory.mktemp("fedp"), hub_db, restricted=False)
    yield f
    f.stop()


def test_fake_sites_enrolled_by_the_hub_do_not_count(fedp, tmp_path):
    """The hub's operator enrols two nodes holding zeros to isolate site0's sums."""
    fakes = []
    try:
        for i in range(2):
            csv = tmp_path / f"fake{i}.csv"
            pd.DataFrame({"x1": np.zeros(40), "y": np.ones(40)}).to_csv(csv, index=False)
            cfg = NodeConfig(
                name=f"fake{i}",
                hub=fedp.hub.url,
                data_dir=tmp_path / f"fake{i}",
                datasets=(DatasetConfig(name="data", path=csv, policy=Policy(min_sites=1)),),
                poll_wait=5,
                trust_on_first_use=True,  # the attacker's own nodes trust anyone
            )
            token = fedp.hub.create_token("enrolment", cfg.name)
            fakes.append(
                NodeProcess(cfg.write(tmp_path / f"fake{i}.toml"), enrol_token=token).start()
            )
        for f in fakes:
            f.wait_ready(PATIENCE)
        with pytest.raises(PolicyError, match="min_sites") as err:
            fedp.fed.run(Mean(columns=("x1",)), dataset="data", nodes=["site0", "fake0", "fake1"])
        assert err.value.site == "site0"
        # among three sites that trust each other, the fakes' presence changes nothing
        got = fedp.fed.run(Mean(columns=("y",)), dataset="data", timeout=PATIENCE)
        honest = fedp.sites()
        n = sum(len(d.frame) for d in honest.values())
        assert got.n == n + 80
    finally:
        for f in fakes:
            f.kill()


def test_a_refusal_that_depends_on_the_data_does_not_name_the_site(fedp):
    sites = fedp.sites()
    values = np.sort(np.concatenate([d.frame["x1"].to_numpy() for d in sites.values()]))
    edge = float((values[-1] + values[-2]) / 2)  # exactly one patient above the edge
    algo = Histogram(column="x1", edges=(float(values[0]) - 1, edge, float(values[-1]) + 1))
    with pytest.raises(PolicyError, match="min_cell_count") as err:
        fedp.fed.run(algo, dataset="data", timeout=PATIENCE)
    assert err.value.site is None
    assert not any(name in str(err.value) for name in sites)


def test_the_privacy_budget_persists_at_the_nodes_and_researchers_can_read_it(fedp):
    from consortia.stats import DPCount

    algo = DPCount(epsilon=4.0, delta=1e-6)
    for _ in range(2):
        res = fedp.fed.run(algo, dataset="data", timeout=PATIENCE)
        assert res.n >= 0
    rows = [r for r in fedp.fed.budget() if r["dataset"] == "data"]
    assert {r["node"] for r in rows} >= {"site0", "site1", "site2"}
    for r in rows:
        assert r["epsilon_spent"] == pytest.approx(8.0)
        assert r["epsilon_remaining"] == pytest.approx(2.0)
    # the third would exceed the default cap of 10: refused before anything is computed
    with pytest.raises(PolicyError, match="privacy_budget"):
        fedp.fed.run(algo, dataset="data", timeout=PATIENCE)
