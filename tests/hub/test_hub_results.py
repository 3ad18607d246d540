"""Results stored at the hub when a study finishes (engine in process, no HTTP)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from test_hub_engine import _answer, world  # noqa: F401  (the fixture and its helper)

from consortia import Simulation
from consortia.hub.db import StudyResultRow
from consortia.hub.errors import HubError
from consortia.hub.results import stored_result
from consortia.hub.service import StudyEngine
from consortia.protocol import Algorithm, Contribution, Round, register
from consortia.resultcodec import decode_result, encode_result, result_digest
from consortia.testing.vector_sum import VectorSum


@register
@dataclass(frozen=True, kw_only=True)
class Unstorable(Algorithm):
    """One round; its result holds a value the codec refuses (a complex number)."""

    name = "test.unstorable_result"

    def coordinate(self):  # type: ignore[no-untyped-def]
        sums = yield Round("count")
        return {"n": float(sums["n"][0]), "phase": 1j}

    def local(self, step, public, data):  # type: ignore[no-untyped-def]
        return Contribution({"n": [float(len(data.frame))]}, cohort=len(data.frame))


def _run(hub: StudyEngine, workers: dict, algo: Algorithm) -> str:
    sid = hub.submit("alice", algo.spec(), "data")
    while hub.status(sid, "alice")["status"] == "running":
        assert sum(_answer(hub, w) for w in workers.values()) > 0
    assert hub.status(sid, "alice")["status"] == "finished"
    return sid


def test_the_result_is_stored_with_its_digest_in_the_audit_log(world) -> None:  # noqa: F811
    engine, workers, frames = world
    hub = StudyEngine(engine)
    algo = VectorSum(size=7, rounds=2)
    sid = _run(hub, workers, algo)
    frame, digest = stored_result(engine, sid, "alice")
    assert frame == encode_result(Simulation(frames).run(algo))  # bit-identical
    assert digest == result_digest(frame)
    assert decode_result(frame).rounds == 2
    finished = [e for e in hub.audit.entries() if e.action == "study.finished"]
    assert [e.details for e in finished] == [{"study": sid, "rounds": 2, "result": digest}]
    # an admin reads it too; another researcher does not learn that the study exists
    assert stored_result(engine, sid, None) == (frame, digest)
    with pytest.raises(HubError) as info:
        stored_result(engine, sid, "mallory")
    assert info.value.status == 404 and "no study" in info.value.message


def test_an_unencodable_result_is_not_stored_and_the_study_still_finishes(
    world,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine, workers, _ = world
    hub = StudyEngine(engine)
    with caplog.at_level(logging.WARNING, logger="consortia.hub"):
        sid = _run(hub, workers, Unstorable())
    assert any("result is not stored" in r.getMessage() for r in caplog.records)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(StudyResultRow)) == 0
    with pytest.raises(HubError) as info:
        stored_result(engine, sid, "alice")
    assert info.value.status == 404 and "round sums" in info.value.message
    finished = [e for e in hub.audit.entries() if e.action == "study.finished"]
    assert finished[0].details["result"] is None


def test_a_running_study_has_no_result(world) -> None:  # noqa: F811
    engine, _, _ = world
    hub = StudyEngine(engine)
    sid = hub.submit("alice", VectorSum(size=3, rounds=1).spec(), "data")
    with pytest.raises(HubError) as info:
        stored_result(engine, sid, "alice")
    assert info.value.status == 404 and "running" in info.value.message
