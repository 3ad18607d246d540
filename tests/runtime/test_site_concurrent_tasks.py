"""Tasks judged at once at one site: the ledgers stay what serial answers would leave.

A node computes several tasks at once (issue 8, item 6): each is judged before its
local step (:meth:`SiteWorker.prepare`), computed without a lock, then judged
again and released (:meth:`SiteWorker.release`).  Two studies that each fit the
researcher's privacy budget alone, but not together, are both admitted before
either computed: the second release is refused, as it would be one after the other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia import Policy
from consortia.errors import PolicyError
from consortia.protocol import Algorithm, Contribution, Round, register
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task


@register
class _NoisyTotal(Algorithm):
    """A count with declared DP noise (test algorithm)."""

    name = "tests.noisy_total_concurrent"

    def __init__(self, epsilon: float = 1.0) -> None:
        self.epsilon = epsilon

    def spec(self):
        return {"name": self.name, "params": {"epsilon": self.epsilon}}

    def privacy_cost(self):
        return (self.epsilon, 1e-6)

    def coordinate(self):
        sums = yield Round("count")
        return float(sums["n"][0])

    def local(self, step, public, data):
        return Contribution({"n": [len(data.frame)]}, cohort=len(data.frame), noise={"n": 50.0})


@pytest.fixture
def workers():
    rng = np.random.default_rng(3)
    policy = Policy(epsilon_budget=1.5)
    out = {
        f"s{i}": SiteWorker(
            f"s{i}", {"data": pd.DataFrame({"x": rng.normal(size=30)})}, policies=policy
        )
        for i in range(3)
    }
    trusted = {n: w.identity.identity_public for n, w in out.items()}
    for w in out.values():
        w.set_trusted(trusted)
    return out


def _task(workers, study: str, algo: Algorithm) -> Task:
    return Task(
        study_id=study,
        round_index=0,
        attempt=0,
        algorithm=algo.spec(),
        dataset="data",
        step="count",
        public={},
        participants=tuple(w.peer_key for w in workers.values()),
        researcher="eve",
    )


def test_two_studies_admitted_at_once_cannot_overspend_the_budget(workers):
    site = workers["s0"]
    first, second = (_task(workers, sid, _NoisyTotal(epsilon=1.0)) for sid in ("st1", "st2"))
    p1, p2 = site.prepare(first), site.prepare(second)  # each fits the budget alone
    c1, c2 = site.run_local(p1), site.run_local(p2)
    site.release(p1, c1)
    with pytest.raises(PolicyError, match="privacy_budget"):
        site.release(p2, c2)
    left = site.disclosure.remaining(site.policy_for("data"), "eve", "data")
    assert left["epsilon_spent"] == pytest.approx(1.0)  # the refused study spent nothing


def test_tasks_that_fit_together_are_both_released(workers):
    site = workers["s0"]
    first, second = (_task(workers, sid, _NoisyTotal(epsilon=0.75)) for sid in ("st1", "st2"))
    p1, p2 = site.prepare(first), site.prepare(second)
    c1, c2 = site.run_local(p1), site.run_local(p2)
    site.release(p2, c2)
    site.release(p1, c1)
    left = site.disclosure.remaining(site.policy_for("data"), "eve", "data")
    assert left["epsilon_spent"] == pytest.approx(1.5)
    assert left["epsilon_remaining"] == pytest.approx(0.0)
