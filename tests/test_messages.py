"""The message models shared by hub, node, SDK and tests (consortia.messages)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError as PydanticValidationError

from consortia.errors import ProtocolError
from consortia.messages import (
    EMPTY_PUBLIC,
    BlobRef,
    ContributionHeader,
    RefusalKind,
    RefusalMessage,
    RevealMessage,
    StudyState,
    StudyStatusMessage,
    TaskKind,
    TaskMessage,
    refusal_kind,
)
from consortia.privacy.keys import SiteIdentity
from consortia.privacy.secagg import Layout
from consortia.wire import pack_arrays


def _task_json(**over):
    peers = [SiteIdentity.generate().peer_key(n).to_json() for n in ("a", "b")]
    msg = {
        "kind": "contribute",
        "study_id": "s1",
        "round_index": 2,
        "attempt": 1,
        "algorithm": {"name": "stats.mean", "params": {"columns": ["x"]}},
        "dataset": "cohort",
        "step": "sums",
        "public": BlobRef.of(pack_arrays({"beta": np.zeros(3)})).model_dump(),
        "participants": peers,
        "frac_bits": 24,
        "researcher": "alice",
        "waiting": False,
        "heartbeat": 10.0,
        "recovery_threshold": None,
        "lost": [],
        "ciphertexts": {},
    }
    msg.update(over)
    return msg


def test_a_task_round_trips_and_names_its_public_arrays_by_digest_only():
    raw = _task_json()
    msg = TaskMessage.model_validate(raw)
    assert msg.kind is TaskKind.CONTRIBUTE
    assert msg.model_dump(mode="json") == raw  # the JSON field names are the hub's
    assert set(raw["public"]) == {"sha256", "size"}  # no array in the message
    task = msg.to_task({"beta": np.ones(3)})
    assert (task.study_id, task.round_index, task.attempt) == ("s1", 2, 1)
    assert [p.site for p in task.participants] == ["a", "b"]
    assert task.algorithm == raw["algorithm"] and task.researcher == "alice"
    # a round without public arrays carries none (nothing to fetch)
    assert TaskMessage.model_validate(_task_json(public=None)).public is None
    assert BlobRef.of(pack_arrays({})) == EMPTY_PUBLIC


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "exfiltrate"},
        {"round_index": -1},
        {"public": "QUJD"},  # base64 arrays inline are no longer accepted
        {"public": {"sha256": "zz" * 32, "size": 3}},
        {"participants": []},
        {"participants": [{"site": "a", "mask_key": "00"}]},
        {"frac_bits": 99},
        {"algorithm": {"params": {}}},
        {"surprise": 1},
    ],
)
def test_a_malformed_task_is_refused(bad):
    with pytest.raises(PydanticValidationError):
        TaskMessage.model_validate(_task_json(**bad))


def test_contribution_headers_round_trip_and_name_the_field_at_fault():
    layout = Layout((("v", (3,)), ("m", (2, 2))))
    header = ContributionHeader.of(layout, (7, "ab" * 32))
    assert header == ContributionHeader.model_validate(
        {"layout": layout, "audit_head": (7, "ab" * 32)}
    )
    sent = header.to_headers()
    assert set(sent) == {"X-Consortia-Layout", "X-Consortia-Audit-Head"}
    back = ContributionHeader.from_headers({k.lower(): v for k, v in sent.items()})
    assert back == header and back.to_layout() == layout
    assert ContributionHeader.from_headers({"X-Consortia-Layout": "[]"}).audit_head is None
    for value, words in (
        ("{", "not JSON"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ('[["v", [-3]]]', "dimensions"),
        ('[["v", [3.0]]]', "dimensions"),
        ("{}", "a layout is a list"),
    ):
        with pytest.raises(ProtocolError, match=words) as e:
            ContributionHeader.from_headers({"X-Consortia-Layout": value})
        assert "X-Consortia-Layout" in str(e.value)
    with pytest.raises(ProtocolError, match="X-Consortia-Audit-Head"):
        ContributionHeader.from_headers({"X-Consortia-Layout": "[]", "X-Consortia-Audit-Head": "1"})


def test_refusals_carry_a_kind():
    assert refusal_kind("min_cohort") is RefusalKind.POLICY
    assert refusal_kind("owner_denied") is RefusalKind.POLICY
    assert refusal_kind("PolicyError") is RefusalKind.POLICY
    assert refusal_kind("SchemaError") is RefusalKind.LOCAL_FAILURE
    assert refusal_kind("ConvergenceError") is RefusalKind.LOCAL_FAILURE
    assert refusal_kind("MemoryError") is RefusalKind.LOCAL_FAILURE
    assert refusal_kind("KeyVerificationError") is RefusalKind.PROTOCOL
    assert refusal_kind("ProtocolError") is RefusalKind.PROTOCOL
    assert refusal_kind("SecureAggregationError") is RefusalKind.PROTOCOL
    msg = RefusalMessage.model_validate({"rule": "min_cohort", "message": "too few"})
    assert msg.kind is RefusalKind.POLICY  # a node of an older release sends no kind
    full = RefusalMessage(rule="SchemaError", message="m", kind=RefusalKind.LOCAL_FAILURE)
    assert RefusalMessage.model_validate_json(full.model_dump_json()) == full
    with pytest.raises(PydanticValidationError):
        RefusalMessage.model_validate({"rule": "x", "message": "m", "kind": "whatever"})
    with pytest.raises(PydanticValidationError):
        RevealMessage(seed="xyz")


def test_a_study_status_parses_the_hubs_answer():
    raw = {
        "id": "s1",
        "researcher": "alice",
        "algorithm": {"name": "stats.mean", "params": {}},
        "dataset": "cohort",
        "frac_bits": 24,
        "status": "running",
        "participants": ["a", "b"],
        "rounds_done": 1,
        "error": None,
        "error_rule": None,
        "error_site": None,
        "error_detail": None,
        "current": {
            "round_index": 1,
            "step": "sums",
            "attempt": 0,
            "phase": "collect",
            "received": ["a"],
            "progress": {"b": 0.25},
            "waiting_approval": [],
        },
        "version": 3,
    }
    st = StudyStatusMessage.model_validate(raw)
    assert st.status is StudyState.RUNNING and not st.done
    assert st.current is not None and st.current.received == ["a"]
    assert st.model_dump(mode="json") == raw
    with pytest.raises(PydanticValidationError):
        StudyStatusMessage.model_validate({**raw, "status": "paused"})
