"""Owner approvals over the network: real hub and node processes, decisions through the CLI.

site2's owner reviews every new study (``approval = "manual"``, ``stats.count``
approved automatically).  Four studies run at once: one the owner approves (it
completes with the pooled result), one the owner denies (it fails naming rule
``owner_denied``), one nobody decides (it fails cleanly at the hub's short approval
timeout) and one auto-approved.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from netutil import NETWORK_TEST_TIMEOUT, PATIENCE, start_federation, wait_until

from consortia import Simulation
from consortia.stats.descriptive import Count, Mean

pytestmark = pytest.mark.timeout(NETWORK_TEST_TIMEOUT)

APPROVAL_TIMEOUT = 30.0  # long enough for the CLI calls below on a loaded machine

_SCRIPT = Path(sys.executable).with_name("consortia")
CLI = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from consortia.cli import main; main()"]
)


def cli(*args: str) -> str:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=PATIENCE)
    assert proc.returncode == 0, f"consortia {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture
def federation(tmp_path):
    f = start_federation(
        tmp_path,
        str(tmp_path / "hub.sqlite"),
        n_nodes=3,
        approval_timeout=APPROVAL_TIMEOUT,
        node_options={
            "site2": {"approval": "manual", "auto_approve": ("stats.count",), "poll_wait": 2.0}
        },
    )
    yield f
    f.stop()


def test_owner_approval_deny_and_timeout(federation):
    fed = federation.fed
    config = str(federation.root / "site2.toml")
    approved_algo = Mean(columns=("x1", "y"))
    approved = fed.submit(approved_algo, dataset="data")
    denied = fed.submit(Mean(columns=("x2",)), dataset="data")
    undecided = fed.submit(Mean(columns=("y",)), dataset="data")
    auto = fed.submit(Count(), dataset="data")
    assert fed.wait(auto, timeout=PATIENCE).status == "finished"  # never waited for the owner
    for sid in (approved, denied, undecided):
        wait_until(
            lambda sid=sid: fed.status(sid).waiting_approval == ("site2",),
            60,
            f"study {sid} waiting for site2's owner",
        )
        assert fed.status(sid).status == "running"
    listed = cli("node", "approvals", "list", "--config", config, "--status", "pending")
    assert all(sid in listed for sid in (approved, denied, undecided)) and auto not in listed
    shown = cli("node", "approvals", "show", "--config", config, approved)
    assert "stats.mean" in shown and "researcher:   alice" in shown and "total: shape (2,)" in shown

    assert approved in cli("node", "approvals", "approve", "--config", config, approved)
    assert denied in cli("node", "approvals", "deny", "--config", config, denied)

    st = fed.wait(approved, timeout=PATIENCE)
    assert st.status == "finished" and st.waiting_approval == ()
    got = fed.result(approved, approved_algo)
    want = Simulation(federation.sites()).run(approved_algo)
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-9)
    assert got.n == want.n

    st = fed.wait(denied, timeout=PATIENCE)
    assert st.status == "failed" and st.error_rule == "owner_denied"
    assert st.raw["error_site"] == "site2"

    st = fed.wait(undecided, timeout=APPROVAL_TIMEOUT + 120)
    assert st.status == "failed" and st.error_rule == "approval_timeout"
    assert st.error == f"node site2's owner did not approve within {APPROVAL_TIMEOUT:g} s"

    # the node's audit log holds every request, decision and refusal
    from consortia.audit import AuditLog
    from consortia.node.store import NodeStore

    store = NodeStore(federation.configs["site2"].data_dir, fsync=False)
    try:
        log: AuditLog = store.audit
        entries = list(log.entries())
        assert log.verify().ok
    finally:
        store.close()
    requests = [e.details["study"] for e in entries if e.action == "approval.request"]
    assert sorted(requests) == sorted([approved, denied, undecided, auto])
    refusals = [e.details for e in entries if e.action == "refusal"]
    assert [(r["study"], r["rule"]) for r in refusals] == [(denied, "owner_denied")]
    released = {e.details["study"] for e in entries if e.action == "release"}
    assert released == {approved, auto}
