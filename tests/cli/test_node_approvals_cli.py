"""``consortia node approvals list|show|approve|deny`` on a real node configuration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from consortia.cli import main
from consortia.node import DatasetConfig, NodeAgent, NodeConfig, load_config
from consortia.node.approvals import study_digest
from consortia.privacy.keys import SiteIdentity
from consortia.privacy.policy import Policy
from consortia.protocol import Coordinator
from consortia.runtime.task import Task
from consortia.stats.descriptive import Mean


@pytest.fixture
def node(tmp_path):
    rng = np.random.default_rng(3)
    csv = tmp_path / "cohort.csv"
    pd.DataFrame({"x": rng.normal(size=25), "y": rng.normal(size=25)}).to_csv(csv, index=False)
    cfg = NodeConfig(
        name="hospital-a",
        hub="http://127.0.0.1:9",
        data_dir=tmp_path / "state",
        datasets=(
            DatasetConfig(name="cohort", path=csv, policy=Policy(allowed_algorithms=("stats.*",))),
        ),
        approval="manual",
        auto_approve=("stats.count",),
        fsync=False,
    )
    path = cfg.write(tmp_path / "node.toml")
    agent = NodeAgent(load_config(path))
    yield path, agent
    agent.close()


def _request(agent: NodeAgent, study: str, algo=None, researcher: str = "alice") -> str:
    algo = algo or Mean(columns=("x", "y"))
    rnd = Coordinator(algo).current
    peers = tuple(SiteIdentity.generate().peer_key(n) for n in ("hospital-a", "b", "c"))
    task = Task(
        study_id=study,
        round_index=0,
        attempt=0,
        algorithm=algo.spec(),
        dataset="cohort",
        step=rnd.step,
        public=rnd.public,
        participants=peers,
        researcher=researcher,
    )
    return agent.approvals.admit(task, agent.worker(), actor="node:hospital-a")


def _run(*args: str, ok: bool = True):
    res = CliRunner().invoke(main, ["node", "approvals", *args])
    assert (res.exit_code == 0) == ok, res.output
    return res.output


def test_list_show_approve_and_deny(node):
    path, agent = node
    cfg = str(path)
    assert "no approval requests" in _run("list", "--config", cfg)
    assert _request(agent, "aaaa1111") == "pending"
    assert _request(agent, "bbbb2222", researcher="bob") == "pending"
    out = _run("list", "--config", cfg, "--status", "pending")
    assert "aaaa1111" in out and "bbbb2222" in out and "stats.mean" in out
    shown = _run("show", "--config", cfg, "aaaa")
    digest = study_digest(Mean(columns=("x", "y")).spec(), "cohort", "alice")
    assert digest in shown and "researcher:   alice" in shown and "dataset:      cohort" in shown
    assert '"columns": ["x", "y"]' in shown and "n: shape (1,)" in shown
    assert "total: shape (2,)" in shown and "epsilon=0, delta=0" in shown
    assert 'allowed_algorithms = ["stats.*"]' in shown
    raw = json.loads(_run("show", "--config", cfg, "aaaa", "--json"))
    assert raw["status"] == "pending" and raw["details"]["arrays"]["total"] == [2]
    # a digest the owner did not review approves nothing
    assert "no approval request" in _run(
        "approve", "--config", cfg, "aaaa", "--digest", "0" * 12, ok=False
    )
    out = _run("approve", "--config", cfg, "aaaa", "--digest", digest[:16])
    assert f"approved study aaaa1111 (digest {digest})" in out
    assert _request(agent, "aaaa1111") == "approved"
    out = _run("deny", "--config", cfg, "bbbb2222", "--reason", "no agreement with bob")
    assert "denied study bbbb2222" in out
    assert _request(agent, "bbbb2222", researcher="bob") == "denied"
    assert "already denied" in _run("approve", "--config", cfg, "bbbb", ok=False)
    out = _run("list", "--config", cfg)
    assert "approved" in out and "denied" in out
    assert "by owner:" in _run("show", "--config", cfg, "bbbb")
    actions = [e.action for e in agent.store.audit.entries()]
    assert actions.count("approval.request") == 2
    assert "approval.approve" in actions and "approval.deny" in actions
    assert agent.store.audit.verify().ok


def test_auto_approved_and_ambiguous_and_unknown_requests(node):
    path, agent = node
    cfg = str(path)
    from consortia.stats.descriptive import Count

    assert _request(agent, "cccc3333", algo=Count()) == "approved"
    assert "auto:stats.count" in _run("show", "--config", cfg, "cccc")
    _request(agent, "dddd4444")
    _request(agent, "dddd5555")
    assert "2 approval requests match" in _run("approve", "--config", cfg, "dddd", ok=False)
    assert "no approval request" in _run("show", "--config", cfg, "eeee", ok=False)
