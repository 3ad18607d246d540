"""SiteWorker at the reveal: a site dies after its vector, the survivors finish the round.

Also: the node's SQL ledger keeps the attempts whose seed a site shared, across restarts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia.errors import PolicyError, SecureAggregationError
from consortia.node.store import NodeStore
from consortia.privacy import SecureAggregator, SecureSite, SiteIdentity
from consortia.privacy.secagg import RoundContext
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task
from consortia.stats import Mean


def _workers(n: int = 5) -> dict[str, SiteWorker]:
    rng = np.random.default_rng(3)
    workers = {}
    for i in range(n):
        df = pd.DataFrame({"pid": [f"p{i}-{k}" for k in range(50)], "y": rng.normal(size=50)})
        workers[f"site{i}"] = SiteWorker(f"site{i}", {"d": df})
    trusted = {k: w.identity.identity_public for k, w in workers.items()}
    for w in workers.values():
        w.set_trusted(trusted)
    return workers


def _task(workers, study="study", names=None, attempt=0) -> Task:
    algo = Mean(columns=("y",))
    rnd = next(algo.coordinate())  # the study's first round
    names = sorted(workers) if names is None else names
    return Task(
        study_id=study,
        round_index=0,
        attempt=attempt,
        algorithm=algo.spec(),
        dataset="d",
        step=rnd.step,
        public=rnd.public,
        participants=tuple(workers[n].peer_key for n in names),
    )


def test_survivors_finish_a_round_whose_member_died_after_its_vector():
    workers = _workers(5)
    task = _task(workers)
    agg = SecureAggregator(task.context)
    bundles = {}
    for name, w in workers.items():
        masked = w.contribute(task)
        assert masked.shares is not None and set(masked.shares.ciphertexts) == set(workers) - {name}
        agg.add(masked)
        bundles[name] = masked.shares
    dead = "site3"
    reveals = {
        n: w.reveal_and_share(task, {dead}, {dead: bundles[dead].ciphertexts[n]})
        for n, w in workers.items()
        if n != dead
    }
    sums = agg.finish(
        {n: r.seed for n, r in reveals.items()},
        shares={dead: {n: r.shares[dead] for n, r in reveals.items()}},
    )
    whole = agg.finish(
        {**{n: r.seed for n, r in reveals.items()}, dead: workers[dead].reveal(task)}
    )
    assert sums.keys() == whole.keys()
    for k in sums:
        assert sums[k].tobytes() == whole[k].tobytes()
    # the survivors' plain reveal is unchanged (a retry with nothing missing)
    assert workers["site0"].reveal(task) == reveals["site0"].seed


def test_reveal_and_share_still_judges_the_disclosure_rules():
    """A hub that fakes a dropout in a second study meets repeated_query at the reveal,
    asking for shares or not; and a bad share request is refused before the disclosure
    ledger is touched."""
    workers = _workers(4)
    first = _task(workers, study="one")
    agg = SecureAggregator(first.context)
    for w in workers.values():
        agg.add(w.contribute(first))
    agg.finish({n: w.reveal(first) for n, w in workers.items()})
    names = ["site0", "site1", "site2"]
    second = _task(workers, study="two", names=names)
    bundles = {n: workers[n].contribute(second).shares for n in names}
    with pytest.raises(SecureAggregationError, match="no share from site 'site2'"):
        workers["site0"].reveal_and_share(second, {"site2"}, {})
    with pytest.raises(PolicyError, match="repeated_query"):
        workers["site0"].reveal_and_share(
            second, {"site2"}, {"site2": bundles["site2"].ciphertexts["site0"]}
        )
    assert workers["site0"].secure.ledger.revealed("two", 0) is None


def _ids(n):
    return {f"s{i}": SiteIdentity.generate() for i in range(n)}


def _ctx(ids, names=None, attempt=0):
    names = sorted(ids) if names is None else names
    return RoundContext("study", 0, attempt, tuple(ids[n].peer_key(n) for n in names))


def test_the_node_ledger_keeps_the_shared_attempts_across_a_restart(tmp_path):
    ids = _ids(5)
    store = NodeStore(tmp_path / "s0")
    with store.ledger.deferred():  # as a node does: the records commit with the audit entry
        SecureSite("s0", ids["s0"], ledger=store.ledger).mask(_ctx(ids), {"x": np.ones(2)})
        store.record("node:s0", "release", {"study": "study", "round": 0})
    store.close()
    store = NodeStore(tmp_path / "s0")
    assert store.ledger.attempts("study", 0) == {0: (tuple(sorted(ids)), 3)}
    again = SecureSite("s0", ids["s0"], ledger=store.ledger)
    with pytest.raises(SecureAggregationError, match="leaves out 3 of the 5"):
        again.mask(_ctx(ids, names=["s0", "s1"], attempt=1), {"x": np.ones(2)})
    assert again.mask(_ctx(ids, names=["s0", "s1", "s2"], attempt=1), {"x": np.ones(2)})
    store.close()
    # a discarded task leaves no record
    store = NodeStore(tmp_path / "s1")
    with pytest.raises(RuntimeError, match="boom"), store.ledger.deferred():
        SecureSite("s1", ids["s1"], ledger=store.ledger).mask(_ctx(ids), {"x": np.ones(2)})
        raise RuntimeError("boom")
    assert store.ledger.attempts("study", 0) == {}
    store.close()
