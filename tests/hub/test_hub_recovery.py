"""Liveness at the reveal through the hub's engine: a node lost after its vector.

The survivors reveal their seed with their shares of the lost node's seed (a
``share`` task); the hub rebuilds it and finishes the round with every vector in
the sum, exactly as without the loss.  The engine runs in process with
SiteWorkers (no HTTP); tests/network has the same with a node killed by SIGKILL.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session
from test_hub_engine import _answer, world  # noqa: F401  (the fixture and its helper)

from consortia import Simulation
from consortia.hub.db import RoundRow
from consortia.hub.service import StudyEngine
from consortia.testing.vector_sum import VectorSum, site_vector
from consortia.wire import unpack_arrays


def _study(world, **engine_args):  # noqa: F811
    engine, workers, frames = world
    hub = StudyEngine(engine, node_timeout=60.0, reveal_timeout=0.0, **engine_args)
    sid = hub.submit("alice", VectorSum(size=6, rounds=2).spec(), "data")
    return hub, sid, workers, frames


def test_a_node_lost_at_the_reveal_is_rebuilt_and_the_result_is_the_full_sum(world):  # noqa: F811
    hub, sid, workers, frames = _study(world)
    names = list(workers)  # site0..site3; site3 dies after its round-0 vector
    for n in names:
        _answer(hub, workers[n], ("contribute",))
    for n in names[:3]:
        _answer(hub, workers[n], ("reveal",))
    hub.check_timeouts()  # site3's reveal deadline passed: recover, not fail
    st = hub.status(sid, "alice")
    assert st["status"] == "running" and st["current"]["phase"] == "recover"
    assert [t["kind"] for t in hub.tasks_for("site0")] == ["share"]
    assert hub.tasks_for("site3") == []  # a lost node is not asked for anything
    for n in names[:3]:
        assert _answer(hub, workers[n], ("share",)) == 1
    with Session(hub.engine) as s:
        row = s.get(RoundRow, (sid, 0))
        assert row.done and row.lost == ["site3"] and sorted(row.shares) == names[:3]
        assert all(len(v) == 1 for v in row.shares.values())  # one share each, of site3
    # round 1 goes on among the survivors
    for kinds in (("contribute",), ("reveal",)):
        for n in names[:3]:
            _answer(hub, workers[n], kinds)
    st = hub.status(sid, "alice")
    assert st["status"] == "finished", st
    # round 0 holds every node's vector (site3's included), round 1 only the survivors'
    rows = {n: len(frames[n]) for n in names}
    r0 = unpack_arrays(hub.round_sums(sid, "alice", 0))["v"]
    r1 = unpack_arrays(hub.round_sums(sid, "alice", 1))["v"]
    tol = 4 * 2.0**-24  # fixed-point resolution, 4 sites
    np.testing.assert_allclose(r0, sum(site_vector(rows[n], 0, 6) for n in names), atol=tol)
    np.testing.assert_allclose(r1, sum(site_vector(rows[n], 1, 6) for n in names[:3]), atol=tol)
    # and the stored result is what a simulation of the same losses gives, bit for bit
    sim = Simulation(
        frames,
        fail_at_reveal=lambda site, r, a: site == "site3" and r == 0,
    ).run(VectorSum(size=6, rounds=2))
    assert r1.tobytes() == np.asarray(sim.last).tobytes()


def test_a_survivor_silent_during_recovery_fails_the_study(world):  # noqa: F811
    hub, sid, workers, _ = _study(world)
    names = list(workers)
    for n in names:
        _answer(hub, workers[n], ("contribute",))
    _answer(hub, workers[names[0]], ("reveal",))
    hub.check_timeouts()  # site1..3 silent at the reveal: 1 survivor < threshold 3
    st = hub.status(sid, "alice")
    assert st["status"] == "failed" and "did not reveal" in st["error"]


def test_the_hub_refuses_shares_out_of_turn(world):  # noqa: F811
    import pytest

    from consortia.hub.errors import HubError

    hub, sid, workers, _ = _study(world)
    names = list(workers)
    for n in names:
        _answer(hub, workers[n], ("contribute",))
    with pytest.raises(HubError, match="not waiting for this node's shares") as e:
        hub.share("site0", sid, 0, 0, "00" * 32, {})  # no recovery open
    assert e.value.status == 409
    for n in names[:3]:
        _answer(hub, workers[n], ("reveal",))
    hub.check_timeouts()
    with Session(hub.engine) as s:
        seed = s.get(RoundRow, (sid, 0)).seeds["site0"]  # the seed it revealed
    with pytest.raises(HubError, match="already revealed other shares or another seed"):
        hub.share("site0", sid, 0, 0, "00" * 32, {"site3": "00"})
    with pytest.raises(HubError, match="exactly one share for every lost"):
        hub.share("site0", sid, 0, 0, seed, {"site1": "00"})
    with pytest.raises(HubError, match="not waiting for this node's shares"):
        hub.share("site3", sid, 0, 0, "00" * 32, {"site0": "00"})  # the lost node itself
