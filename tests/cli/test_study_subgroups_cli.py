"""``consortia study subgroups``: the subgroups workflow submitted to a real hub over HTTP.

A real hub process; two node agents in this process, driven by the test
(``run_once``); the CLI through click's runner.  The result equals the same
workflow in simulation on the same data (same code everywhere).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from consortia import Simulation
from consortia.cli import main
from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeAgent, NodeConfig
from consortia.privacy.policy import Policy
from consortia.sdk import connect
from consortia.subgroups import Subgroups

pytestmark = pytest.mark.timeout(600)

POLICY = Policy(min_sites=1, min_cell_count=1)
ARGS = ["--k", "2", "--features", "a,b", "--time", "time", "--event", "event",
        "--time-grid", "0:2000:1", "--crosstab", "stage", "--levels", "stage=1,2,3"]  # fmt: skip


def _frame(i: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(70 + i)
    g = rng.integers(0, 2, n)
    x = rng.normal(0.0, 1.0, (n, 2)) + 4.0 * g[:, None]
    t = np.minimum(np.ceil(rng.exponential(300 * np.exp(0.8 * g))), 2000)
    return pd.DataFrame(
        {
            "a": x[:, 0],
            "b": x[:, 1],
            "stage": rng.integers(1, 4, n),
            "time": t.astype(int),
            "event": ((rng.random(n) < 0.8) & (t < 2000)).astype(int),
        }
    )


def _cli(*args: str):
    return CliRunner().invoke(main, ["study", "subgroups", *args])


def test_levels_and_features_are_checked_before_connecting() -> None:
    base = ["--hub", "http://127.0.0.1:1", "--token", "t", "--dataset", "d"]
    r = _cli(*base, *ARGS[:-2])
    assert r.exit_code == 2 and "declare the categories of stage" in r.output
    r = _cli(*base, *ARGS, "--levels", "grade=G1")
    assert r.exit_code == 2 and "not in --crosstab" in r.output
    r = _cli(*base, *ARGS[:-1], "stage")
    assert r.exit_code == 2 and "COLUMN=A,B,C" in r.output
    r = _cli(*base, *[a if a != "a,b" else "" for a in ARGS])
    assert r.exit_code == 1 and "columns must name at least one" in r.output


def test_subgroups_over_a_real_hub_equal_the_simulation(tmp_path) -> None:
    frames = [_frame(i, n) for i, n in enumerate((60, 50))]
    hub = HubProcess(str(tmp_path / "hub.sqlite"), node_timeout=120, log=tmp_path / "hub.log")
    hub.start()
    agents: list[NodeAgent] = []
    try:
        for i, frame in enumerate(frames):
            csv_path = tmp_path / f"node{i}.csv"
            frame.to_csv(csv_path, index=False)
            cfg = NodeConfig(
                name=f"node{i}",
                hub=hub.url,
                data_dir=tmp_path / f"node{i}",
                datasets=(DatasetConfig(name="data", path=csv_path, policy=POLICY),),
                poll_wait=0.1,
            )
            agent = NodeAgent(cfg)
            agent.enrol(hub.create_token("enrolment", f"node{i}"))
            agent.publish()
            agents.append(agent)
        token = hub.create_token("researcher", "alice")
        auth = ["--hub", hub.url, "--token", token, "--dataset", "data"]
        r = _cli(*auth, *ARGS, "--no-wait")
        assert r.exit_code == 0, r.output
        sid = r.stdout.strip()
        with connect(hub.url, token) as fed:
            end = time.monotonic() + 300
            while fed.status(sid).status == "running":
                assert time.monotonic() < end, "the study did not finish"
                for a in agents:
                    a.run_once()
            assert fed.status(sid).status == "finished", fed.status(sid).error
            remote = fed.result(sid)
        r = CliRunner().invoke(
            main, ["study", "result", sid, "--hub", hub.url, "--token", token, "--format", "json"]
        )
        assert r.exit_code == 0, r.output
        shown = json.loads(r.stdout)
    finally:
        for a in agents:
            a.close()
        hub.stop(timeout=5)
    algo = Subgroups(
        columns=("a", "b"),
        n_clusters=2,
        time="time",
        event="event",
        time_grid={"start": 0, "stop": 2000, "step": 1},
        crosstab=("stage",),
        crosstab_levels=((1, 2, 3),),
    )
    sim = Simulation({f"node{i}": f for i, f in enumerate(frames)}, policy=POLICY).run(algo)
    assert np.array_equal(remote.sizes, sim.sizes) and remote.sizes.sum() == 110
    assert remote.logrank.chi2 == sim.logrank.chi2
    assert np.array_equal(remote.cox.coef, sim.cox.coef)
    assert np.array_equal(remote.crosstabs["stage"].counts, sim.crosstabs["stage"].counts)
    assert shown["statistics"]["subgroups"] == 2 and shown["statistics"]["n"] == 110
