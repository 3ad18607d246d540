"""Issue 8, item 6: a node answers tasks of several studies at once.

While one study's local step runs (here it blocks on an event, as a long model
training would), another study's rounds complete at the same nodes; the slow
one completes once its step returns.  The slow step reports its progress, which
the nodes' heartbeats carry to the hub.  Nothing here waits on wall-clock time:
waits are driven by events and study states, with generous ceilings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from consortia import Simulation
from consortia.progress import report
from consortia.protocol import Algorithm, Contribution, Round, register
from consortia.resultcodec import encode_result
from consortia.testing.vector_sum import VectorSum
from fedutil import MODES, PATIENCE, LocalFederation

RELEASE = threading.Event()  # set by the test: the blocked local steps return
ENTERED = threading.Semaphore(0)  # released once by every site that entered its step


@register
@dataclass(frozen=True, kw_only=True)
class _BlockingStep(Algorithm):
    """One round whose local step reports half its progress, then waits for RELEASE."""

    name: ClassVar[str] = "test.blocking_step"
    block: bool = True

    def coordinate(self):
        sums = yield Round("train")
        return float(sums["n"][0])

    def local(self, step, public, data):
        if self.block:
            report(0.5)
            ENTERED.release()
            if not RELEASE.wait(PATIENCE):
                raise RuntimeError("the test never released the step")
        return Contribution({"n": np.array([len(data.frame)], float)}, cohort=len(data.frame))


@pytest.fixture(params=MODES)
def federation(request, tmp_path, toy_sites):
    RELEASE.clear()
    sites = dict(list(toy_sites.items())[:3])
    # heartbeats every second: the blocked sites show their progress quickly
    fed = LocalFederation(tmp_path, sites, mode=request.param, node_timeout=3.0)
    try:
        yield fed, sites
    finally:
        RELEASE.set()
        fed.stop()


def _status_when(fed, sid: str, pred, what: str):
    version = None
    for _ in range(int(PATIENCE)):
        raw = fed.fed.transport.status(sid, version=version, wait=1.0)
        if pred(raw):
            return raw
        version = raw.get("version")
    raise AssertionError(f"timed out waiting for {what}")


def test_a_long_local_step_does_not_hold_another_studys_rounds(federation):
    fed, sites = federation
    slow = fed.fed.submit(_BlockingStep(), dataset="data")
    for _ in sites:  # every site is inside the slow study's local step
        assert ENTERED.acquire(timeout=PATIENCE)
    # the nodes' heartbeats carry the progress the blocked step reported
    _status_when(
        fed,
        slow,
        lambda raw: (raw.get("current") or {}).get("progress") == dict.fromkeys(sites, 0.5),
        "the slow study's progress",
    )
    fast = VectorSum(size=5, rounds=3)
    got = fed.fed.run(fast, dataset="data", timeout=PATIENCE)
    assert encode_result(got) == encode_result(Simulation(fed.datasets()).run(fast))
    assert fed.fed.status(slow).status == "running"  # its sites are still computing
    assert not RELEASE.is_set()
    RELEASE.set()
    st = fed.fed.wait(slow, timeout=PATIENCE)
    assert st.status == "finished" and sorted(st.participants) == sorted(sites)
    assert fed.fed.result(slow) == float(sum(len(df) for df in sites.values()))
