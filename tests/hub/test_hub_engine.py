"""The hub's study engine in process: SiteWorkers post to it directly (no HTTP).

Covers what the process tests cannot pin down deterministically: a hub restart
at every phase of a round, timeouts and the re-run among survivors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hubutil import task_of
from sqlalchemy import select
from sqlalchemy.orm import Session

from consortia import Simulation
from consortia.hub.auth import create_token, resolve
from consortia.hub.db import NodeRow, RoundAccRow, RoundRow, TokenRow, make_engine
from consortia.hub.results import stored_result
from consortia.hub.service import HubError, StudyEngine
from consortia.messages import TaskKind, TaskMessage
from consortia.privacy.policy import Policy
from consortia.resultcodec import encode_result
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task
from consortia.testing.vector_sum import VectorSum
from consortia.wire import pack_arrays, unpack_arrays


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
    hub = StudyEngine(engine)
    for n in workers:
        hub.publish(n, {"data": {"rows": 40}})
    yield engine, workers, toy_sites
    engine.dispose()


def _task(hub: StudyEngine, node: str, msg) -> Task:
    return task_of(hub.engine, node, msg)


def _bundle(m):
    """The seed shares that travel with a masked vector (None: the attempt shares none)."""
    return m.shares.to_json() if m.shares is not None else None


def _answer(hub: StudyEngine, worker: SiteWorker, kinds=("contribute", "reveal", "share")) -> int:
    done = 0
    for msg in hub.tasks_for(worker.name):
        kind = TaskMessage.model_validate(msg).kind
        if kind not in kinds:
            continue
        task = _task(hub, worker.name, msg)
        if kind is TaskKind.CONTRIBUTE:
            m = worker.contribute(task)
            hub.contribute(
                worker.name,
                task.study_id,
                task.round_index,
                task.attempt,
                m.layout.to_json(),
                pack_arrays({"masked": m.data}),
                _bundle(m),
            )
        elif kind is TaskKind.SHARE:
            lost = list(msg["lost"])
            cts = {k: bytes.fromhex(v) for k, v in msg["ciphertexts"].items()}
            out = worker.reveal_and_share(task, lost, cts)
            shares = {k: v.hex() for k, v in out.shares.items()}
            hub.share(
                worker.name, task.study_id, task.round_index, task.attempt, out.seed.hex(), shares
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


@pytest.mark.parametrize("crash_after", ["submit", "two_vectors", "all_vectors", "two_seeds"])
def test_restart_at_any_phase_gives_the_simulation_result(world, crash_after):
    engine, workers, frames = world
    algo = VectorSum(size=5, rounds=3)
    hub = StudyEngine(engine)
    sid = hub.submit("alice", algo.spec(), "data")
    names = list(workers)
    # round 0 normally
    for kinds in (("contribute",), ("reveal",)):
        for n in names:
            _answer(hub, workers[n], kinds)
    # round 1: stop at the chosen point, then "crash" (drop the engine) and restart
    if crash_after in ("two_vectors", "all_vectors", "two_seeds"):
        for n in names[: 2 if crash_after == "two_vectors" else 4]:
            _answer(hub, workers[n], ("contribute",))
    if crash_after == "two_seeds":
        for n in names[:2]:
            _answer(hub, workers[n], ("reveal",))
    del hub
    hub = StudyEngine(engine)
    hub.start()
    try:
        while hub.status(sid, "alice")["status"] == "running":
            assert sum(_answer(hub, w) for w in workers.values()) > 0
        st = hub.status(sid, "alice")
        assert st["status"] == "finished" and st["rounds_done"] == 3
        rounds = hub.round_list(sid, "alice")
        assert [r["round_index"] for r in rounds] == [0, 1, 2]
        # a round caught collecting (its running sum is persisted only with the last
        # vector) is re-run once among the same nodes with fresh masks; nothing else is
        rerun = {1: 1} if crash_after == "two_vectors" else {}
        assert [r["attempt"] for r in rounds] == [rerun.get(i, 0) for i in range(3)]
        assert all(r["participants"] == names for r in rounds)
        ref = Simulation(frames).run(algo)
        from consortia.protocol import Coordinator

        coord = Coordinator(algo)
        for r in rounds:
            coord.advance(unpack_arrays(hub.round_sums(sid, "alice", r["round_index"])))
        np.testing.assert_array_equal(coord.result.checksums, ref.checksums)
        # the result stored when the study finished (after the restart) is the simulation's
        assert stored_result(engine, sid, "alice")[0] == encode_result(ref)
    finally:
        hub.stop()


def test_a_restart_while_collecting_abandons_the_attempt_and_nothing_of_it_is_unmasked(world):
    """The running sum is written once, with the last vector; a restart before re-runs."""
    engine, workers, frames = world
    algo = VectorSum(size=4, rounds=1)
    hub = StudyEngine(engine)
    sid = hub.submit("alice", algo.spec(), "data")
    names = list(workers)
    early = {n: _task(hub, n, hub.tasks_for(n)[0]) for n in names}
    for n in names[:2]:
        _answer(hub, workers[n], ("contribute",))
    with Session(engine) as s:  # who sent a vector is persisted, the running sum not yet
        assert s.scalars(select(RoundAccRow.study_id)).all() == []
        assert sorted(s.get(RoundRow, (sid, 0)).received) == names[:2]
    del hub  # the hub stops while the attempt collects
    hub = StudyEngine(engine)
    hub.start()
    try:
        st = hub.status(sid, "alice")
        assert st["current"]["attempt"] == 1 and st["current"]["received"] == []
        assert st["participants"] == names  # the same nodes, with fresh masks
        # a vector of the abandoned attempt (sent before or after the restart) is refused,
        # and no node is ever asked for a seed of it
        m = workers[names[2]].contribute(early[names[2]])
        with pytest.raises(HubError, match="not the open attempt") as e:
            hub.contribute(names[2], sid, 0, 0, m.layout.to_json(), pack_arrays({"masked": m.data}))
        assert e.value.status == 409
        for n in names:
            (msg,) = hub.tasks_for(n)
            assert msg["kind"] == "contribute" and msg["attempt"] == 1
        entries = [e for e in hub.audit.entries() if e.action == "attempt.abandoned"]
        assert [(e.details["attempt"], e.details["new_attempt"]) for e in entries] == [(0, 1)]
        assert sorted(entries[0].details["received"]) == names[:2]
        for n in names:
            _answer(hub, workers[n], ("contribute",))
        with Session(engine) as s:  # the last vector wrote the sum (the reveal needs it)
            assert s.scalars(select(RoundAccRow.attempt)).all() == [1]
        while hub.status(sid, "alice")["status"] == "running":
            assert sum(_answer(hub, w) for w in workers.values()) > 0
        got = unpack_arrays(hub.round_sums(sid, "alice", 0))["v"]
        np.testing.assert_array_equal(got, Simulation(frames).run(algo).last)
    finally:
        hub.stop()


def test_silent_node_is_excluded_and_the_round_reruns(world):
    engine, workers, frames = world
    algo = VectorSum(size=3, rounds=2)
    hub = StudyEngine(engine, node_timeout=0.0)
    sid = hub.submit("alice", algo.spec(), "data")
    for n in ("site0", "site1", "site2"):
        _answer(hub, workers[n], ("contribute",))
    late_task = _task(hub, "site3", hub.tasks_for("site3")[0])
    hub.check_timeouts()  # site3 is late
    st = hub.status(sid, "alice")
    assert st["participants"] == ["site0", "site1", "site2"]
    assert st["current"]["attempt"] == 1 and st["current"]["received"] == []
    # site3's late vector for the discarded attempt is refused; nothing of it is unmasked
    m = workers["site3"].contribute(late_task)
    with pytest.raises(HubError, match="not the open attempt") as e:
        hub.contribute(
            "site3", sid, 0, 0, m.layout.to_json(), pack_arrays({"masked": m.data}), _bundle(m)
        )
    assert e.value.status == 409
    assert hub.tasks_for("site3") == []
    hub.node_timeout = 60.0
    while hub.status(sid, "alice")["status"] == "running":
        assert sum(_answer(hub, workers[n]) for n in ("site0", "site1", "site2")) > 0
    sim = Simulation({n: frames[n] for n in ("site0", "site1", "site2")})
    ref = sim.run(algo)
    from consortia.protocol import Coordinator

    coord = Coordinator(algo)
    for r in hub.round_list(sid, "alice"):
        coord.advance(unpack_arrays(hub.round_sums(sid, "alice", r["round_index"])))
    np.testing.assert_array_equal(coord.result.last, ref.last)


def test_wrong_layout_and_unknown_study_are_refused_without_harm(world):
    engine, workers, _ = world
    hub = StudyEngine(engine)
    sid = hub.submit("alice", VectorSum(size=3, rounds=1).spec(), "data")
    w = workers["site0"]
    m = w.contribute(_task(hub, "site0", hub.tasks_for("site0")[0]))
    with pytest.raises(HubError) as e:
        hub.contribute("site0", sid, 0, 0, [["v", [4]]], pack_arrays({"masked": m.data}))
    assert e.value.status == 400
    with pytest.raises(HubError) as e:
        hub.contribute("site0", "nope", 0, 0, m.layout.to_json(), pack_arrays({"masked": m.data}))
    assert e.value.status == 404
    with pytest.raises(HubError) as e:
        hub.submit("alice", {"name": "stats.nope", "params": {}}, "data")
    assert e.value.status == 422
    with pytest.raises(HubError, match="no enrolled node"):
        hub.submit("alice", VectorSum().spec(), "absent")
    # the study is unharmed
    while hub.status(sid, "alice")["status"] == "running":
        assert sum(_answer(hub, x) for x in workers.values()) > 0
    assert hub.status(sid, "alice")["status"] == "finished"
    with pytest.raises(HubError) as e:
        hub.status(sid, "bob")  # another researcher does not see it
    assert e.value.status == 404


def test_tokens_are_stored_hashed_and_enrolment_tokens_are_one_time(hub_url):
    engine = make_engine(hub_url)
    with Session(engine) as s:
        tok = create_token(s, "researcher", "alice")
        s.commit()
        stored = s.scalars(select(TokenRow.token_hash)).all()
        assert tok not in stored and len(stored[0]) == 64
        who = resolve(s, tok)
        assert (who.role, who.name) == ("researcher", "alice")
        assert resolve(s, tok + "x") is None and resolve(s, None) is None
        enrol = create_token(s, "enrolment", "*")
        s.commit()
        assert resolve(s, enrol).role == "enrolment"
        row = s.scalar(select(TokenRow).where(TokenRow.role == "enrolment"))
        row.used = True
        s.commit()
        assert resolve(s, enrol) is None
    engine.dispose()


def test_a_node_that_never_reveals_fails_the_study_after_the_reveal_timeout(world):
    engine, workers, _ = world
    hub = StudyEngine(engine, node_timeout=60.0, reveal_timeout=0.0, recovery=0)
    sid = hub.submit("alice", VectorSum(size=2, rounds=1).spec(), "data")
    for w in workers.values():
        _answer(hub, w, ("contribute",))
    for n in ("site0", "site1", "site2"):
        _answer(hub, workers[n], ("reveal",))
    hub.check_timeouts()
    st = hub.status(sid, "alice")
    assert st["status"] == "failed" and "site3" in st["error"] and "reveal" in st["error"]
    assert hub.tasks_for("site3") == []


def test_vector_sum_parameters_and_values():
    from consortia.errors import ValidationError
    from consortia.testing.vector_sum import site_vector

    with pytest.raises(ValidationError, match="size"):
        VectorSum(size=0)
    with pytest.raises(ValidationError, match="rounds"):
        VectorSum(rounds=True)
    frames = {f"s{i}": pd.DataFrame({"x": range(10 + i)}) for i in range(3)}
    res = Simulation(frames).run(VectorSum(size=1500, rounds=2))
    want = sum(site_vector(10 + i, 1, 1500) for i in range(3))
    np.testing.assert_allclose(res.last, want, atol=3 * 2**-24)
    assert res.rounds == 2 and res.checksums.shape == (2,)
