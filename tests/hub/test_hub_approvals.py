"""Owner approvals at the hub (in process): a study waits for a node's owner, then runs or fails.

The nodes are SiteWorkers posting to the study engine directly; the networked
path (real processes, the CLI) is in tests/network/test_network_approvals.py.
"""

from __future__ import annotations

import pytest
from hubutil import task_of
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortia.hub.db import NodeRow, TaskRow, make_engine
from consortia.hub.service import HubError, StudyEngine
from consortia.messages import TaskMessage
from consortia.privacy.policy import Policy
from consortia.runtime.site import SiteWorker
from consortia.testing.vector_sum import VectorSum
from consortia.wire import pack_arrays

DIGEST = "ab" * 32


@pytest.fixture
def world(hub_url, toy_sites):
    engine = make_engine(hub_url)
    workers = {n: SiteWorker(n, {"data": df}, policies=Policy()) for n, df in toy_sites.items()}
    trusted = {n: w.identity.identity_public for n, w in workers.items()}
    with Session(engine) as s:
        for n, w in workers.items():
            pk = w.peer_key
            s.add(
                NodeRow(
                    name=n,
                    identity_key=pk.identity_key.hex(),
                    mask_key=pk.mask_key.hex(),
                    signature=pk.signature.hex(),
                    credential_hash=f"{n:0>64}",
                )
            )
        s.commit()
    for w in workers.values():
        w.set_trusted(trusted)
        StudyEngine(engine).publish(w.name, {"data": {"rows": 40}})
    yield engine, workers
    engine.dispose()


def _answer(hub: StudyEngine, worker: SiteWorker, kind: str) -> int:
    done = 0
    for msg in hub.tasks_for(worker.name):
        if TaskMessage.model_validate(msg).kind != kind:
            continue
        task = task_of(hub.engine, worker.name, msg)
        if kind == "contribute":
            m = worker.contribute(task)
            hub.contribute(
                worker.name,
                task.study_id,
                task.round_index,
                task.attempt,
                m.layout.to_json(),
                pack_arrays({"masked": m.data}),
                m.shares.to_json() if m.shares is not None else None,
            )
        else:
            hub.reveal(
                worker.name,
                task.study_id,
                task.round_index,
                task.attempt,
                worker.reveal(task).hex(),
            )
        done += 1
    return done


def _wait(hub: StudyEngine, node: str, sid: str) -> dict:
    [msg] = hub.tasks_for(node)
    return hub.await_approval(node, sid, msg["round_index"], msg["attempt"], DIGEST)


def _task_state(engine, sid: str, node: str) -> str:
    with Session(engine) as s:
        return s.scalars(
            select(TaskRow.state)
            .where(TaskRow.study_id == sid, TaskRow.node == node)
            .order_by(TaskRow.attempt.desc())
        ).first()


def test_a_waiting_node_is_kept_past_the_node_timeout_and_the_study_then_completes(world):
    engine, workers = world
    hub = StudyEngine(engine, node_timeout=0.0)
    sid = hub.submit("alice", VectorSum(size=3, rounds=2).spec(), "data")
    assert _wait(hub, "site3", sid)["status"] == "waiting"
    assert _wait(hub, "site3", sid)["status"] == "waiting"  # idempotent
    st = hub.status(sid, "alice")
    assert st["status"] == "running" and st["current"]["waiting_approval"] == ["site3"]
    assert _task_state(engine, sid, "site3") == "waiting_approval"
    [msg] = hub.tasks_for("site3")
    assert msg["waiting"] is True
    # a poll with nothing but waiting tasks still answers them (at the end of its wait)
    assert hub.wait_tasks("site3", 0.0) == [msg]
    for n in ("site0", "site1"):
        _answer(hub, workers[n], "contribute")
    # site2 is silent: excluded at the node timeout; site3 waits for its owner: kept
    hub.check_timeouts()
    st = hub.status(sid, "alice")
    assert st["status"] == "running" and st["participants"] == ["site0", "site1", "site3"]
    assert st["current"]["attempt"] == 1 and st["current"]["waiting_approval"] == ["site3"]
    for n in ("site0", "site1"):
        _answer(hub, workers[n], "contribute")
    hub.check_timeouts()  # only the waiting node is missing: nothing happens
    assert hub.status(sid, "alice")["current"]["attempt"] == 1
    # the owner approves: the node contributes normally
    _answer(hub, workers["site3"], "contribute")
    assert hub.status(sid, "alice")["current"]["waiting_approval"] == []
    for n in ("site0", "site1", "site3"):
        _answer(hub, workers[n], "reveal")
    for kind in ("contribute", "reveal"):
        for n in ("site0", "site1", "site3"):
            _answer(hub, workers[n], kind)
    st = hub.status(sid, "alice")
    assert st["status"] == "finished" and st["rounds_done"] == 2


def test_a_node_owner_who_does_not_decide_in_time_fails_the_study_cleanly(world):
    engine, workers = world
    hub = StudyEngine(engine, node_timeout=60.0, approval_timeout=0.0)
    sid = hub.submit("alice", VectorSum(size=3, rounds=1).spec(), "data")
    for n in ("site0", "site1", "site2"):
        _answer(hub, workers[n], "contribute")
    _wait(hub, "site3", sid)
    hub.check_timeouts()  # the round's own deadline has not passed yet
    assert hub.status(sid, "alice")["status"] == "running"
    hub.registry.get(sid).deadline = 0.0  # the round's deadline passes (no wall-clock wait)
    hub.check_timeouts()
    st = hub.status(sid, "alice")
    assert st["status"] == "failed" and st["error_rule"] == "approval_timeout"
    assert st["error"] == "node site3's owner did not approve within 0 s"
    assert st["error_site"] == "site3"
    assert hub.tasks_for("site3") == []
    assert _task_state(engine, sid, "site3") == "cancelled"
    assert [e.action for e in hub.audit.entries()][-1] == "study.failed"


def test_only_the_open_attempt_of_a_participant_can_wait(world):
    engine, workers = world
    hub = StudyEngine(engine)
    sid = hub.submit("alice", VectorSum(size=3, rounds=1).spec(), "data")
    with pytest.raises(HubError, match="not waiting"):
        hub.await_approval("site0", sid, 0, 5, DIGEST)
    _answer(hub, workers["site0"], "contribute")
    with pytest.raises(HubError, match="not waiting"):
        hub.await_approval("site0", sid, 0, 0, DIGEST)
    with pytest.raises(HubError) as err:
        hub.await_approval("site0", "no-such-study", 0, 0, DIGEST)
    assert err.value.status == 404


def test_the_pending_endpoint_needs_a_node_and_a_digest(hub_url):
    from fastapi.testclient import TestClient

    from consortia.hub import HubSettings, bootstrap_token, create_app
    from consortia.privacy.keys import SiteIdentity

    with TestClient(create_app(HubSettings(db=hub_url, approval_timeout=5.0))) as c:
        path = "/v1/node/studies/s1/rounds/0/attempts/0/pending"
        assert c.post(path, json={"digest": DIGEST}).status_code == 401
        researcher = bootstrap_token(hub_url, "researcher", "alice")
        r = c.post(path, json={"digest": DIGEST}, headers={"Authorization": f"Bearer {researcher}"})
        assert r.status_code == 403
        enrol = bootstrap_token(hub_url, "enrolment", "hosp-a")
        body = {"name": "hosp-a", "peer_key": SiteIdentity.generate().peer_key("hosp-a").to_json()}
        cred = c.post("/v1/enrol", json=body, headers={"Authorization": f"Bearer {enrol}"})
        node = {"Authorization": f"Bearer {cred.json()['credential']}"}
        assert c.post(path, json={"digest": "xyz"}, headers=node).status_code == 422
        r = c.post(path, json={"digest": DIGEST}, headers=node)
        assert r.status_code == 404 and "no task of this node" in r.json()["detail"]
        template = "/v1/node/studies/{study_id}/rounds/{round_index}/attempts/{attempt}/pending"
        assert template in c.get("/openapi.json").json()["paths"]
        assert c.app.state.studies.approval_timeout == 5.0
