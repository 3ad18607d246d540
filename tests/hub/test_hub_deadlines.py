"""Deadlines come from the study and from liveness, not from one hub-wide constant.

A node heartbeats while it computes; the hub excludes a participant only when it
has been silent (no vector, no heartbeat) for ``node_timeout`` or its step ran
past the step's own limit (:attr:`consortia.protocol.Round.timeout`).  The
engine's clock is driven by the test: nothing here waits on wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from consortia.errors import ValidationError
from consortia.hub.db import NodeRow, make_engine
from consortia.hub.service import HubError, StudyEngine
from consortia.protocol import Algorithm, Contribution, Round, register
from consortia.runtime.site import SiteWorker

SITES = ("a", "b", "c")


@register
@dataclass(frozen=True, kw_only=True)
class _SlowStep(Algorithm):
    """One round whose step declares a 100 s limit (a long local computation)."""

    name: ClassVar[str] = "test.slow_step"

    def coordinate(self):
        sums = yield Round("train", timeout=100.0)
        return float(sums["n"][0])

    def local(self, step, public, data):
        return Contribution({"n": np.array([len(data.frame)], float)}, cohort=len(data.frame))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hub(hub_url):
    engine = make_engine(hub_url)
    with Session(engine) as s:
        for n in SITES:
            pk = SiteWorker(n, {"data": pd.DataFrame({"x": [1.0]})}).peer_key
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
    clock = _Clock()
    engine_ = StudyEngine(engine, node_timeout=10.0, step_timeout=50.0, clock=clock)
    for n in SITES:
        engine_.publish(n, {"data": {"rows": 40}})
    yield engine_, clock
    engine.dispose()


def _participants(hub: StudyEngine, sid: str) -> list[str]:
    return sorted(hub.status(sid, "alice")["participants"])


def test_a_node_that_heartbeats_is_not_excluded_and_a_silent_one_is(hub):
    engine, clock = hub
    sid = engine.submit("alice", {"name": "stats.count", "params": {}}, "data")
    for t in (8.0, 9.5):  # "a" and "b" keep beating, "c" never does
        clock.now = 1000.0 + t
        for n in ("a", "b"):
            assert engine.heartbeat(n, sid, 0, 0, progress=t / 100)["status"] == "alive"
        engine.check_timeouts()
    assert engine.status(sid, "alice")["current"]["attempt"] == 0
    clock.now = 1000.0 + 17.0  # "a" and "b" beat 7.5 s ago; "c" has been silent 17 s
    engine.check_timeouts()
    st = engine.status(sid, "alice")
    assert st["status"] == "running" and _participants(engine, sid) == ["a", "b"]
    assert st["current"]["attempt"] == 1  # "c" was excluded once it was silent 10 s
    # the new attempt starts its deadlines afresh; silence past node_timeout excludes
    clock.now += 9.0
    engine.heartbeat("a", sid, 0, 1)
    clock.now += 2.0
    engine.check_timeouts()
    assert _participants(engine, sid) == ["a"]


def test_the_hub_default_step_limit_ends_even_a_beating_node(hub):
    engine, clock = hub
    sid = engine.submit("alice", {"name": "stats.count", "params": {}}, "data")
    for t in range(5, 50, 5):
        clock.now = 1000.0 + t
        for n in SITES:
            engine.heartbeat(n, sid, 0, 0)
        engine.check_timeouts()
    assert engine.status(sid, "alice")["status"] == "running"
    clock.now = 1000.0 + 51
    for n in SITES:
        engine.heartbeat(n, sid, 0, 0)
    engine.check_timeouts()
    st = engine.status(sid, "alice")
    assert st["status"] == "failed" and "every site dropped out" in st["error"]


def test_a_step_declares_its_own_limit(hub):
    engine, clock = hub
    sid = engine.submit("alice", _SlowStep().spec(), "data")
    for t in range(5, 96, 5):  # past the hub's 50 s default, within the step's 100 s
        clock.now = 1000.0 + t
        for n in SITES:
            engine.heartbeat(n, sid, 0, 0)
        engine.check_timeouts()
    st = engine.status(sid, "alice")
    assert st["status"] == "running" and _participants(engine, sid) == list(SITES)
    assert st["current"]["progress"] == {}  # no fraction was reported
    clock.now = 1000.0 + 101
    engine.check_timeouts()
    assert engine.status(sid, "alice")["status"] == "failed"


def test_heartbeats_are_checked(hub):
    engine, _ = hub
    sid = engine.submit("alice", {"name": "stats.count", "params": {}}, "data")
    with pytest.raises(HubError, match="not waiting") as e:
        engine.heartbeat("a", sid, 0, 1)  # not the open attempt
    assert e.value.status == 409
    with pytest.raises(HubError, match="no task of this node"):
        engine.heartbeat("zz", sid, 0, 0)
    engine.heartbeat("a", sid, 0, 0, progress=0.5)
    assert engine.status(sid, "alice")["current"]["progress"] == {"a": 0.5}


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "10"])
def test_a_round_timeout_must_be_a_positive_number(bad):
    with pytest.raises(ValidationError, match="Round.timeout"):
        Round("s", timeout=bad)
