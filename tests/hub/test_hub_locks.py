"""A lock per study: a slow coordinate() delays neither another study, nor a poll, nor
the request that completed its round (finishing runs off the request path).

The coordinator blocks on an event that the test opens; every wait has a generous
ceiling and nothing is asserted about elapsed time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
from test_hub_engine import _answer, world  # noqa: F401  (the fixture and its helper)

from consortia.hub.service import StudyEngine
from consortia.hub.sqlstore import SqlStudyStore
from consortia.hub.store import StudyStore
from consortia.protocol import Algorithm, Contribution, Round, register
from consortia.testing.vector_sum import VectorSum

ENTERED = threading.Event()
GATE = threading.Event()
CEILING = 300.0  # seconds: a bound on a hang, never a speed claim


@register
@dataclass(frozen=True, kw_only=True)
class _GatedCoordinator(Algorithm):
    """Counts rows; its coordinate() blocks after the first round until the test opens it."""

    name: ClassVar[str] = "test.gated_coordinator"

    def coordinate(self):
        sums = yield Round("count")
        ENTERED.set()
        if not GATE.wait(CEILING):
            raise RuntimeError("the test never opened the gate")
        return float(sums["n"][0])

    def local(self, step, public, data):
        n = len(data.frame)
        return Contribution({"n": np.array([float(n)])}, cohort=n)


def _until(hub: StudyEngine, sid: str, status: str, rounds: int = 0) -> dict[str, Any]:
    """Long-poll the study until it has ``status`` and ``rounds`` finished rounds (a
    ceiling on a hang, not a timing)."""
    end = time.monotonic() + CEILING
    version = None
    while True:
        st = hub.wait_status(sid, "alice", version, 5.0)
        if st["status"] == status and st["rounds_done"] >= rounds:
            return st
        assert time.monotonic() < end, f"study {sid} never became {status}: {st}"
        version = st["version"]


def _in_thread(fn, *args) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def test_a_blocked_coordinate_delays_no_other_study_no_poll_and_no_request(world):  # noqa: F811
    engine, workers, frames = world
    hub = StudyEngine(engine, node_timeout=600.0, reveal_timeout=600.0, background=True)
    names = list(workers)
    slow = hub.submit("alice", _GatedCoordinator().spec(), "data")
    for n in names:
        _answer(hub, workers[n], ("contribute",))
    for n in names[:-1]:
        _answer(hub, workers[n], ("reveal",))
    ENTERED.clear()
    GATE.clear()
    try:
        # the reveal that completes the round is answered while coordinate() is blocked
        last = _in_thread(_answer, hub, workers[names[-1]], ("reveal",))
        assert ENTERED.wait(CEILING), "coordinate() was never called"
        last.join(CEILING)
        assert not last.is_alive(), "the completing reveal waited for coordinate()"
        # neither the hub-wide lock nor the study's own lock is held meanwhile
        assert hub.registry.lock.acquire(timeout=CEILING)
        hub.registry.lock.release()
        live = hub.registry.get(slow)
        assert live is not None and live.finishing
        assert live.lock.acquire(timeout=CEILING)
        live.lock.release()
        st = hub.status(slow, "alice")
        assert st["status"] == "running" and st["rounds_done"] == 0
        assert (st["current"]["round_index"], st["current"]["phase"]) == (0, "done")  # finishing
        # another study runs from submit to result; its contributions and polls are answered
        other = hub.submit("alice", VectorSum(size=3, rounds=2).spec(), "data")
        for r in range(2):
            for kinds in (("contribute",), ("reveal",)):
                for n in names:
                    assert _answer(hub, workers[n], kinds) == 1
            _until(hub, other, "running" if r == 0 else "finished", rounds=r + 1)
        polled = _in_thread(hub.wait_tasks, names[0], 0.0)
        polled.join(CEILING)
        assert not polled.is_alive(), "a node's poll waited for coordinate()"
        assert hub.status(slow, "alice")["status"] == "running"
        assert ENTERED.is_set() and not GATE.is_set()  # still inside coordinate()
    finally:
        GATE.set()
    st = _until(hub, slow, "finished")
    assert st["rounds_done"] == 1
    assert hub.finisher.wait_idle(CEILING)
    got = hub.result(slow, "alice")[0]
    assert got  # the stored result frame
    from consortia.resultcodec import decode_result

    assert decode_result(got) == float(sum(len(f) for f in frames.values()))


def test_the_hub_store_is_an_interface_with_a_sql_implementation(world):  # noqa: F811
    engine, workers, _ = world
    hub = StudyEngine(engine)
    assert isinstance(hub.store, SqlStudyStore) and isinstance(hub.store, StudyStore)
    with pytest.raises(TypeError, match="abstract"):
        StudyStore()  # type: ignore[abstract]
    store = hub.store
    a = store.put_blob(b"CNSW-not-really-a-frame")
    assert store.put_blob(b"CNSW-not-really-a-frame") == a  # content-addressed: stored once
    assert store.blob_size(a) == len(b"CNSW-not-really-a-frame")
    assert store.blob_for("site0", a) is None  # no study of site0 uses it
    sid = hub.submit("alice", VectorSum(size=3, rounds=1).spec(), "data")
    rnd = store.open_round(sid)
    assert rnd is not None and rnd.index == 0 and rnd.attempt == 0 and not rnd.done
    assert store.blob_for("site0", rnd.public) is not None  # its nodes may fetch its arrays
    assert store.members(sid) == set(workers) and store.has_task(sid, "site0")
    assert store.running_ids() == [sid]
    assert store.fail(sid, "stopped by the test", "test_rule", site="site1", detail="d")
    assert not store.fail(sid, "twice")  # only a running study fails
    study = store.study(sid)
    assert study is not None and (study.status, study.error_rule) == ("failed", "test_rule")
    assert (study.error_site, study.error_detail) == ("site1", "d")
    assert store.running_ids() == [] and not store.cancel(sid, "admin:x")
