"""Owner approvals at the node: digest binding, decisions, auto patterns, the audit trail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia.errors import ValidationError
from consortia.node.approvals import Approvals, describe_task, study_digest
from consortia.node.store import NodeStore
from consortia.privacy.keys import SiteIdentity
from consortia.privacy.policy import Policy
from consortia.protocol import Coordinator, algorithm_from_spec
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task
from consortia.stats.descriptive import Mean

MEAN = Mean(columns=("x", "y")).spec()
OTHER = Mean(columns=("x",)).spec()


@pytest.fixture
def store(tmp_path):
    s = NodeStore(tmp_path / "node", fsync=False)
    yield s
    s.close()


@pytest.fixture
def worker():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=30), "y": rng.normal(size=30)})
    return SiteWorker(
        "a", {"cohort": frame}, policies=Policy(allowed_algorithms=("stats.*",), min_sites=1)
    )


def _task(spec=MEAN, study="s1", researcher="alice", dataset="cohort", round_index=0) -> Task:
    rnd = Coordinator(algorithm_from_spec(spec)).current
    assert rnd is not None
    ids = [SiteIdentity.generate() for _ in range(3)]
    return Task(
        study_id=study,
        round_index=round_index,
        attempt=0,
        algorithm=spec,
        dataset=dataset,
        step=rnd.step,
        public=rnd.public,
        participants=tuple(i.peer_key(n) for i, n in zip(ids, "abc", strict=True)),
        researcher=researcher,
    )


def _actions(store: NodeStore) -> list[str]:
    return [e.action for e in store.audit.entries()]


def test_the_digest_covers_algorithm_dataset_and_researcher():
    base = study_digest(MEAN, "cohort", "alice")
    assert base == study_digest(dict(reversed(list(MEAN.items()))), "cohort", "alice")
    assert len(base) == 64
    assert base != study_digest(OTHER, "cohort", "alice")
    assert base != study_digest(MEAN, "other", "alice")
    assert base != study_digest(MEAN, "cohort", "bob")


def test_auto_mode_admits_everything_and_records_nothing(store, worker):
    ap = Approvals(store.engine, store.audit)
    assert not ap.required
    assert ap.admit(_task(), worker, actor="node:a") == "approved"
    assert ap.list() == []


def test_a_new_study_waits_once_and_shows_what_would_leave(store, worker):
    ap = Approvals(store.engine, store.audit, mode="manual")
    assert ap.admit(_task(), worker, actor="node:a") == "pending"
    assert ap.admit(_task(), worker, actor="node:a") == "pending"  # recorded once
    [req] = ap.list("pending")
    assert req.study_id == "s1" and req.digest == study_digest(MEAN, "cohort", "alice")
    assert req.algorithm == MEAN and req.researcher == "alice" and req.dataset == "cohort"
    d = req.details
    local = Mean(columns=("x", "y")).local(_task().step, {}, worker.datasets["cohort"])
    assert d["arrays"] == {k: list(v.shape) for k, v in local.arrays.items()}
    assert d["arrays"]["n"] == [1] and d["arrays"]["total"] == [2]
    assert d["privacy_cost"] == {"epsilon": 0.0, "delta": 0.0}
    assert d["policy"]["allowed_algorithms"] == ["stats.*"]
    assert d["participants"] == ["a", "b", "c"] and d["round"] == 0
    assert _actions(store).count("approval.request") == 1


def test_approving_one_digest_never_approves_another(store, worker):
    ap = Approvals(store.engine, store.audit, mode="manual")
    assert ap.admit(_task(), worker, actor="node:a") == "pending"
    approved = ap.approve("s1", actor="owner:alice")
    assert approved.status == "approved" and approved.decided_by == "owner:alice"
    assert ap.admit(_task(), worker, actor="node:a") == "approved"
    # the same study id with another specification (parameters, researcher) waits again
    assert ap.admit(_task(spec=OTHER), worker, actor="node:a") == "pending"
    assert ap.admit(_task(researcher="mallory"), worker, actor="node:a") == "pending"
    assert ap.status("s1", study_digest(OTHER, "cohort", "alice")) == "pending"
    # another study with the identical specification is a new study: it waits too
    assert ap.admit(_task(study="s2"), worker, actor="node:a") == "pending"
    # with several requests for one study, the owner names the digest they reviewed
    with pytest.raises(ValidationError, match="--digest"):
        ap.approve("s1", actor="owner:alice")
    other = study_digest(OTHER, "cohort", "alice")
    ap.approve("s1", actor="owner:alice", digest=other[:10])
    assert ap.status("s1", other) == "approved"
    assert ap.status("s1", study_digest(MEAN, "cohort", "mallory")) == "pending"


def test_a_digest_that_does_not_match_approves_nothing(store, worker):
    ap = Approvals(store.engine, store.audit, mode="manual")
    ap.admit(_task(), worker, actor="node:a")
    with pytest.raises(ValidationError, match="no approval request"):
        ap.approve("s1", actor="owner:alice", digest="0" * 64)
    assert ap.list("pending")[0].study_id == "s1"


def test_deny_is_final_and_audited(store, worker):
    ap = Approvals(store.engine, store.audit, mode="manual")
    ap.admit(_task(), worker, actor="node:a")
    denied = ap.deny("s", actor="owner:alice", reason="not in our agreement")
    assert denied.status == "denied" and denied.reason == "not in our agreement"
    assert ap.admit(_task(), worker, actor="node:a") == "denied"
    with pytest.raises(ValidationError, match="already denied"):
        ap.approve("s1", actor="owner:alice")
    assert _actions(store)[-1] == "approval.deny"
    assert store.audit.verify().ok


def test_auto_approve_patterns_match_the_algorithm_name(store, worker):
    patterns = ("stats.count", "stats.m*")
    ap = Approvals(store.engine, store.audit, mode="manual", auto_approve=patterns)
    assert ap.admit(_task(), worker, actor="node:a") == "approved"
    [req] = ap.list("approved")
    assert req.decided_by == "auto:stats.m*"
    ap = Approvals(store.engine, store.audit, mode="manual", auto_approve=("stats.count",))
    assert ap.admit(_task(study="s2"), worker, actor="node:a") == "pending"
    assert _actions(store).count("approval.approve") == 1


def test_a_decision_made_in_another_process_is_seen(tmp_path, worker):
    agent_store = NodeStore(tmp_path / "node", fsync=False)
    owner_store = NodeStore(tmp_path / "node", fsync=False)
    try:
        node = Approvals(agent_store.engine, agent_store.audit, mode="manual")
        owner = Approvals(owner_store.engine, owner_store.audit, mode="manual")
        assert node.admit(_task(), worker, actor="node:a") == "pending"
        owner.approve("s1", actor="owner:alice")
        assert node.admit(_task(), worker, actor="node:a") == "approved"
        assert agent_store.audit.verify().ok
    finally:
        agent_store.close()
        owner_store.close()


def test_describe_names_the_rule_or_error_and_never_a_value(worker):
    d = describe_task(worker, _task(spec=Mean(columns=("missing",)).spec()))
    assert d["arrays"] is None and "not computed" in d["arrays_note"]
    d = describe_task(worker, _task(round_index=3))
    assert d["arrays"] is None and "first round" in d["arrays_note"]
    d = describe_task(worker, _task(dataset="nope"))
    assert d["arrays"] is None and "no dataset" in d["arrays_note"]


def test_an_unknown_mode_is_refused(store):
    with pytest.raises(ValidationError, match="approval must be one of"):
        Approvals(store.engine, store.audit, mode="sometimes")
