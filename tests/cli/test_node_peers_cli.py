"""``consortia node peers add|list|remove`` and ``consortia node budget`` on a real node."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from consortia.cli import main
from consortia.node import DatasetConfig, NodeConfig
from consortia.node.store import NodeStore
from consortia.privacy.policy import Policy

FP = "ab" * 32


@pytest.fixture
def config(tmp_path):
    csv = tmp_path / "cohort.csv"
    pd.DataFrame({"x": range(20)}).to_csv(csv, index=False)
    cfg = NodeConfig(
        name="hospital-a",
        hub="http://127.0.0.1:9",
        data_dir=tmp_path / "state",
        datasets=(DatasetConfig(name="cohort", path=csv, policy=Policy(epsilon_budget=3.0)),),
        peers={"hospital-c": "cd" * 32},
        fsync=False,
    )
    return cfg, cfg.write(tmp_path / "node.toml")


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_peers_add_list_remove(config):
    cfg, path = config
    out = _run("node", "peers", "list", "--config", path)
    assert out.exit_code == 0 and "hospital-c" in out.output and "config" in out.output
    out = _run("node", "peers", "add", "--config", path, "hospital-b", FP.upper())
    assert out.exit_code == 0, out.output
    out = _run("node", "peers", "list", "--config", path)
    assert f"hospital-b\t{FP}\tcli" in out.output
    store = NodeStore(cfg.data_dir)
    assert [e.action for e in store.audit.entries()][-1] == "peers.add"
    store.close()
    assert _run("node", "peers", "remove", "--config", path, "hospital-b").exit_code == 0
    out = _run("node", "peers", "remove", "--config", path, "hospital-b")
    assert out.exit_code != 0 and "was not pinned" in out.output


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("hospital-b", "xyz"), "64 hexadecimal"),
        (("hospital-a", FP), "does not pin itself"),
        (("hospital-c", FP), "pinned to another fingerprint"),
    ],
)
def test_peers_add_refuses_bad_input(config, args, match):
    _, path = config
    out = _run("node", "peers", "add", "--config", path, *args)
    assert out.exit_code != 0 and match in out.output


def test_budget_shows_spend_per_researcher_and_dataset(config):
    cfg, path = config
    out = _run("node", "budget", "--config", path)
    assert out.exit_code == 0 and "no differentially private study" in out.output
    store = NodeStore(cfg.data_dir)
    store.releases.charge("s1", "alice", "cohort", 1.5, 1e-6)
    store.releases.charge("s1", "alice", "cohort", 1.5, 1e-6)  # once per study
    store.releases.charge("s2", "alice", "cohort", 0.5, 1e-6)
    store.close()
    out = _run("node", "budget", "--config", path)
    assert out.exit_code == 0
    assert "alice\tcohort\tepsilon 2 of 3" in out.output and "studies 2" in out.output
