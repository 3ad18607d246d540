"""``consortia study list|status|show|result|export`` against a real hub over HTTP.

A real hub process; two node agents in this process, driven by the test
(``run_once``); the CLI through click's runner.
"""

from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from consortia.cli import main
from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeAgent, NodeConfig
from consortia.privacy.policy import Policy
from consortia.sdk import connect

pytestmark = pytest.mark.timeout(600)

KM = '{"time": "time", "event": "event", "group": "arm", "groups": [0, 1]}'


def _frame(i: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(50 + i)
    x1 = rng.normal(i * 0.3, 1.0, n)
    arm = rng.integers(0, 2, n)
    time_ = np.minimum(np.ceil(rng.exponential(400 * np.exp(-0.4 * x1 + 0.5 * arm))), 900)
    event = ((rng.random(n) < 0.7) & (time_ < 900)).astype(int)
    return pd.DataFrame({"x1": x1, "arm": arm, "time": time_.astype(int), "event": event})


class World:
    def __init__(self, hub: HubProcess, agents: list[NodeAgent], token: str) -> None:
        self.hub, self.agents, self.token = hub, agents, token

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(
            main, ["study", *args, "--hub", self.hub.url, "--token", self.token]
        )

    def ok(self, *args: str) -> str:
        r = self.cli(*args)
        assert r.exit_code == 0, r.output
        return r.stdout

    def finish(self, sid: str) -> None:
        with connect(self.hub.url, self.token) as fed:
            end = time.monotonic() + 300
            while fed.status(sid).status == "running":
                assert time.monotonic() < end, "the study did not finish"
                for a in self.agents:
                    a.run_once()
            assert fed.status(sid).status == "finished", fed.status(sid).error

    def submit(self, *args: str) -> str:
        sid = self.ok("submit", "--no-wait", "--dataset", "data", *args).strip()
        self.finish(sid)
        return sid


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("studycli")
    hub = HubProcess(str(root / "hub.sqlite"), node_timeout=120, log=root / "hub.log").start()
    agents = []
    try:
        for i, n in enumerate((40, 45)):
            name = f"node{i}"
            csv_path = root / f"{name}.csv"
            _frame(i, n).to_csv(csv_path, index=False)
            policy = Policy(min_sites=1, min_cell_count=1)
            cfg = NodeConfig(
                name=name,
                hub=hub.url,
                data_dir=root / name,
                datasets=(DatasetConfig(name="data", path=csv_path, policy=policy),),
                poll_wait=1,
            )
            agent = NodeAgent(cfg)
            agent.enrol(hub.create_token("enrolment", name))
            agent.publish()
            agents.append(agent)
        w = World(hub, agents, hub.create_token("researcher", "alice"))
        grid = root / "cox.json"
        grid.write_text(
            json.dumps(
                {
                    "time": "time",
                    "event": "event",
                    "covariates": ["x1", "arm"],
                    "time_grid": [float(t) for t in range(901)],
                }
            )
        )
        w.km = w.submit("--algorithm", "survival.kaplan_meier", "--params", KM,
                        "--time-grid", "0:900:1")  # fmt: skip
        w.cox = w.submit("--algorithm", "survival.cox", "--params", f"@{grid}")
        w.logrank = w.submit(
            "--algorithm", "survival.logrank", "--params", KM, "--time-grid", "0:900:1"
        )
        yield w
    finally:
        for a in agents:
            a.close()
        hub.stop(timeout=5)


def test_status_summarises_long_arrays_and_shows_the_grid_shorthand(world) -> None:
    out = world.ok("status", world.cox)
    assert "<array of 901 floats, 0..900>" in out
    assert len(out.splitlines()) < 40 and "finished" in out
    assert max(len(line) for line in out.splitlines()) < 100
    raw = json.loads(world.ok("status", world.cox, "--format", "json"))
    assert raw["algorithm"]["params"]["time_grid"] == "<array of 901 floats, 0..900>"
    assert raw["status"] == "finished" and len(raw["participants"]) == 2
    km = world.ok("status", world.km)
    assert "time_grid = {start: 0, stop: 900, step: 1}  (901 points)" in km


def test_time_grid_shorthand_is_checked_before_connecting() -> None:
    base = ["study", "submit", "--hub", "http://127.0.0.1:1", "--token", "t", "--dataset", "d",
            "--algorithm", "survival.kaplan_meier"]  # fmt: skip
    r = CliRunner().invoke(main, [*base, "--params", KM, "--time-grid", "0:900"])
    assert r.exit_code == 2 and "START:STOP:STEP" in r.output
    params = '{"time": "time", "event": "event", "time_grid": [0, 1]}'
    r = CliRunner().invoke(main, [*base, "--params", params, "--time-grid", "0:9:1"])
    assert r.exit_code == 2 and "give the time grid once" in r.output
    r = CliRunner().invoke(main, [*base, "--params", KM, "--time-grid", "0:9:0"])
    assert r.exit_code == 1 and "step must be positive" in r.output


def test_list_in_every_format(world) -> None:
    table = world.ok("list")
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["id", "status", "algorithm", "dataset"]
    assert [ln.split()[0] for ln in lines[1:]] == [world.logrank, world.cox, world.km]
    assert "survival.cox" in table and "finished" in table
    rows = list(csv.DictReader(io.StringIO(world.ok("list", "--format", "csv"))))
    assert [r["id"] for r in rows] == [world.logrank, world.cox, world.km]
    assert {r["sites"] for r in rows} == {"2"}
    listed = json.loads(world.ok("list", "--format", "json"))
    assert [s["id"] for s in listed] == [world.logrank, world.cox, world.km]
    assert "array of 901" in listed[1]["algorithm"]["params"]["time_grid"]


def test_result_shows_the_statistics_in_lines_that_never_wrap(world, tmp_path) -> None:
    with connect(world.hub.url, world.token) as fed:
        logrank, cox = fed.result(world.logrank), fed.result(world.cox)
    out = world.ok("result", world.logrank)
    assert out == logrank.summary_text()
    assert "chi2 = " in out and "df = 1" in out and "     p = " in out
    doc = json.loads(world.ok("result", world.logrank, "--format", "json"))
    assert doc["statistics"]["chi2"] == pytest.approx(logrank.chi2, rel=1e-15)
    assert doc["statistics"]["p"] == pytest.approx(logrank.p_value, rel=1e-15)
    text = world.ok("result", world.cox)
    for key in ("n = 85", "events = ", "log_likelihood = ", "lr_test = ", "wald_p = "):
        assert key in text
    rows = [ln for ln in text.splitlines() if ln.startswith(("x1 ", "arm "))]
    assert len(rows) == 2 and all(len(r) > 80 and len(r.split()) == 10 for r in rows)
    got = pd.read_csv(io.StringIO(world.ok("result", world.cox, "--format", "csv")), index_col=0)
    pd.testing.assert_frame_equal(got, cox.summary, check_exact=False, rtol=1e-12)
    target = tmp_path / "cox.json"
    r = world.cli("result", world.cox, "--format", "json", "--out", str(target))
    assert r.exit_code == 0 and r.stdout == ""
    assert json.loads(target.read_text()) == cox.to_dict()


def test_export_writes_every_table(world, tmp_path) -> None:
    with connect(world.hub.url, world.token) as fed:
        km = fed.result(world.km)
    target = tmp_path / "timeline.csv"
    world.ok("export", world.km, "--format", "csv", "--table", "timeline", "--out", str(target))
    got = pd.read_csv(target)
    assert len(got) == sum(c.timeline.size for c in km.curves.values())
    assert list(got.columns[:4]) == ["group", "time", "at_risk", "events"]
    r = world.cli("export", world.km, "--format", "csv", "--table", "nope")
    assert r.exit_code == 2 and "summary, survival, timeline" in r.output
    assert json.loads(world.ok("export", world.km)) == km.to_dict()
    text = world.ok("export", world.km, "--format", "table")
    assert "---\nsurvival\n" in text and "---\ntimeline\n" in text


def test_show_gives_state_rounds_and_result(world) -> None:
    out = world.ok("show", world.km)
    assert "survival.kaplan_meier" in out and "round" in out and "step" in out
    assert "---\nsurvival\n" in out and "median" in out
    doc = json.loads(world.ok("show", world.km, "--format", "json"))
    assert doc["status"]["status"] == "finished" and len(doc["rounds"]) == 1
    assert doc["result"]["events"] > 0


def test_model_download_writes_safetensors_and_a_card(world, tmp_path) -> None:
    pytest.importorskip("torch")
    from consortia.learn.export import load_model

    params = {"model": "linear", "features": ["x1"], "task": "binary", "label": "arm",
              "rounds": 2, "lr": 0.1}  # fmt: skip
    sid = world.submit("--algorithm", "learn.train", "--params", json.dumps(params))
    auth = ["--hub", world.hub.url, "--token", world.token]
    out = tmp_path / "model"
    r = CliRunner().invoke(main, ["model", "download", sid, "--out", str(out), *auth])
    assert r.exit_code == 0, r.output
    tensors, card = load_model(out)
    assert sum(t.size for t in tensors.values()) == 2  # one weight and a bias
    assert card["provenance"]["study"] == sid and card["provenance"]["dataset"] == "data"
    assert sorted(card["provenance"]["sites"]) == ["node0", "node1"]
    assert card["provenance"]["researcher"] == "alice" and card["rounds"] == 2
    r = CliRunner().invoke(main, ["model", "download", sid, "--out", str(out), *auth])
    assert r.exit_code == 1 and "exists" in r.output
    r = CliRunner().invoke(main, ["model", "download", world.km, "--out", str(out), *auth])
    assert r.exit_code == 1 and "is not a training study" in r.output
