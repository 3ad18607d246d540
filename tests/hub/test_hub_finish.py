"""A round is finished (unmasked, coordinate() run) without the hub-wide lock.

A heavy coordinator must not stall other studies or nodes' polls; a hub that dies
after the last seed was committed and before the round was stored finishes the
round when it resumes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from test_hub_engine import _answer, world  # noqa: F401  (the fixture and its helper)

from consortia import Simulation
from consortia.hub.service import StudyEngine
from consortia.protocol import Algorithm, Contribution, Round, register
from consortia.testing.vector_sum import VectorSum

ENTERED = threading.Event()
GATE = threading.Event()


@register
@dataclass(frozen=True, kw_only=True)
class _SlowCoordinator(Algorithm):
    """Counts rows; its coordinate() blocks after the first round until the test opens it."""

    name: ClassVar[str] = "test.slow_coordinator"

    def coordinate(self):
        sums = yield Round("count")
        ENTERED.set()
        GATE.wait(600)
        return float(sums["n"][0])

    def local(self, step, public, data):
        n = len(data.frame)
        return Contribution({"n": np.array([float(n)])}, cohort=n)


def test_a_slow_coordinator_holds_neither_other_studies_nor_polls(world):  # noqa: F811
    engine, workers, _ = world
    hub = StudyEngine(engine, node_timeout=600.0, reveal_timeout=600.0)
    slow = hub.submit("alice", _SlowCoordinator().spec(), "data")
    names = list(workers)
    for n in names:
        _answer(hub, workers[n], ("contribute",))
    for n in names[:-1]:
        _answer(hub, workers[n], ("reveal",))
    ENTERED.clear()
    GATE.clear()
    last = threading.Thread(target=_answer, args=(hub, workers[names[-1]], ("reveal",)))
    last.start()  # its reveal completes the round: coordinate() then blocks
    try:
        assert ENTERED.wait(300), "coordinate() was never called"
        # while it is blocked: another study runs from submit to result, polls answer
        other = hub.submit("alice", VectorSum(size=3, rounds=1).spec(), "data")
        for kinds in (("contribute",), ("reveal",)):
            for n in names:
                _answer(hub, workers[n], kinds)
        assert hub.status(other, "alice")["status"] == "finished"
        assert hub.status(slow, "alice")["status"] == "running"
        assert last.is_alive()  # still inside coordinate()
    finally:
        GATE.set()
        last.join(300)
    st = hub.status(slow, "alice")
    assert st["status"] == "finished", st
    assert not last.is_alive()


def test_a_round_whose_seeds_were_all_committed_is_finished_after_a_restart(world):  # noqa: F811
    engine, workers, frames = world
    algo = VectorSum(size=4, rounds=2)
    hub = StudyEngine(engine)
    sid = hub.submit("alice", algo.spec(), "data")
    names = list(workers)
    hub.finisher.finish = lambda live: None  # the hub "dies" right after the last seed's commit
    for kinds in (("contribute",), ("reveal",)):
        for n in names:
            _answer(hub, workers[n], kinds)
    assert hub.status(sid, "alice")["rounds_done"] == 0
    del hub
    hub = StudyEngine(engine)
    hub.start()
    try:
        assert hub.status(sid, "alice")["rounds_done"] == 1  # finished on resume
        for kinds in (("contribute",), ("reveal",)):
            for n in names:
                _answer(hub, workers[n], kinds)
        assert hub.status(sid, "alice")["status"] == "finished"
    finally:
        hub.stop()
    want = Simulation(frames).run(algo)
    from consortia.hub.results import stored_result
    from consortia.resultcodec import decode_result

    got = decode_result(stored_result(engine, sid, "alice")[0])
    assert got.last.tobytes() == want.last.tobytes()
