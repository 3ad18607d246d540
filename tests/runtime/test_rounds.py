"""The round state machine: every rule of attempts, exclusions, reveals and refusals.

The same machine drives the simulation and the hub; the drivers' own tests
(tests/runtime/test_simulation.py, tests/hub/test_hub_engine.py) run it again
through them.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortia.errors import ProtocolError
from consortia.runtime.rounds import (
    AttemptAbandoned,
    Outcome,
    Phase,
    Refused,
    RevealReceived,
    RoundRejected,
    RoundState,
    SharesReceived,
    SitesSilent,
    VectorReceived,
    apply,
)

SITES = ("a", "b", "c")


def _collected(state: RoundState) -> RoundState:
    for s in state.participants:
        state = apply(state, VectorReceived(s, state.attempt, f"d-{s}")).state
    return state


def test_a_round_collects_every_vector_then_every_seed():
    state = RoundState.open(0, SITES)
    t = apply(state, VectorReceived("a", 0, "da"))
    assert t.outcome is Outcome.ACCEPTED and t.state.phase is Phase.COLLECT
    assert state.received == {}  # the old state is untouched
    t = apply(t.state, VectorReceived("b", 0, "db"))
    t = apply(t.state, VectorReceived("c", 0, "dc"))
    assert t.outcome is Outcome.REVEAL_OPENED and t.state.phase is Phase.REVEAL
    assert t.state.awaiting == SITES
    for s in ("a", "b"):
        t = apply(t.state, RevealReceived(s, 0, f"s{s}"))
        assert t.outcome is Outcome.ACCEPTED
    t = apply(t.state, RevealReceived("c", 0, "sc"))
    assert t.outcome is Outcome.ROUND_COMPLETE and t.state.phase is Phase.DONE
    assert dict(t.state.seeds) == {"a": "sa", "b": "sb", "c": "sc"}


def test_the_same_message_again_is_a_duplicate_and_a_different_one_is_rejected():
    state = apply(RoundState.open(0, SITES), VectorReceived("a", 0, "da")).state
    assert apply(state, VectorReceived("a", 0, "da")).outcome is Outcome.DUPLICATE
    with pytest.raises(RoundRejected, match="already sent a different vector"):
        apply(state, VectorReceived("a", 0, "other"))
    state = _collected(RoundState.open(0, SITES))
    state = apply(state, RevealReceived("a", 0, "sa")).state
    assert apply(state, RevealReceived("a", 0, "sa")).outcome is Outcome.DUPLICATE
    with pytest.raises(RoundRejected, match="already revealed another seed"):
        apply(state, RevealReceived("a", 0, "sx"))
    done = _collected(RoundState.open(0, ("a",)))
    done = apply(done, RevealReceived("a", 0, "sa")).state
    # a retried post after the round completed is still acknowledged, not an error
    assert apply(done, VectorReceived("a", 0, "d-a")).outcome is Outcome.DUPLICATE
    assert apply(done, RevealReceived("a", 0, "sa")).outcome is Outcome.DUPLICATE
    with pytest.raises(RoundRejected, match="not open"):
        apply(done, VectorReceived("a", 0, "new"))


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (VectorReceived("z", 0, "dz"), "not a participant"),
        (VectorReceived("a", 1, "da"), "not the open attempt"),
        (RevealReceived("a", 0, "sa"), "not waiting for this node's seed"),
        (Refused("z", 0, "min_cohort_size", "too small"), "not open for this node"),
        (Refused("a", 3, "min_cohort_size", "too small"), "not open for this node"),
    ],
)
def test_messages_out_of_turn_are_rejected_without_changing_the_state(event, match):
    state = RoundState.open(0, SITES)
    with pytest.raises(RoundRejected, match=match) as info:
        apply(state, event)
    assert info.value.conflict
    assert state == RoundState.open(0, SITES)


def test_no_vector_after_the_reveal_opened():
    state = _collected(RoundState.open(0, ("a", "b")))
    with pytest.raises(RoundRejected, match="already sent a different vector"):
        apply(state, VectorReceived("a", 0, "new"))


def test_a_silent_site_in_collect_is_excluded_and_the_round_reruns_with_fresh_state():
    state = apply(RoundState.open(4, SITES), VectorReceived("a", 0, "da")).state
    t = apply(state, SitesSilent(("b",)))
    assert t.outcome is Outcome.NEW_ATTEMPT and t.excluded == ("b",)
    assert t.state == RoundState(index=4, attempt=1, participants=("a", "c"))
    # nothing of the abandoned attempt survives: "a" must send a new vector
    assert t.state.received == {} and t.state.awaiting == ("a", "c")
    with pytest.raises(RoundRejected, match="not the open attempt"):
        apply(t.state, VectorReceived("a", 0, "da"))


def test_an_attempt_whose_sum_was_lost_reruns_among_the_same_participants():
    state = RoundState.open(3, SITES, recovery=2)
    state = apply(state, VectorReceived("a", 0, "da")).state
    t = apply(state, AttemptAbandoned(0))
    assert t.outcome is Outcome.NEW_ATTEMPT and t.excluded == ()
    assert t.state == RoundState(index=3, attempt=1, participants=SITES, recovery=2)
    # the vector in the lost sum is not carried over: "a" masks and sends a new one
    assert t.state.awaiting == SITES
    with pytest.raises(RoundRejected, match="not the open attempt"):
        apply(t.state, VectorReceived("a", 0, "da"))
    assert apply(t.state, VectorReceived("a", 1, "da2")).outcome is Outcome.ACCEPTED
    # an attempt with nothing received yet may be abandoned too (nothing is lost)
    assert apply(RoundState.open(0, SITES), AttemptAbandoned(0)).state.attempt == 1


@pytest.mark.parametrize("seeds", [0, 1])
def test_an_attempt_cannot_be_abandoned_once_every_vector_is_in(seeds):
    """Past collect a seed may be out: a re-run could be differenced against it."""
    state = _collected(RoundState.open(0, SITES))
    for site in SITES[:seeds]:
        state = apply(state, RevealReceived(site, 0, f"s{site}")).state
    with pytest.raises(RoundRejected, match="cannot be abandoned") as info:
        apply(state, AttemptAbandoned(0))
    assert info.value.conflict
    done = _collected(RoundState.open(0, ("a",)))
    done = apply(done, RevealReceived("a", 0, "sa")).state
    failed = apply(RoundState.open(0, SITES), SitesSilent(SITES)).state
    for closed in (done, failed):
        with pytest.raises(RoundRejected, match="cannot be abandoned"):
            apply(closed, AttemptAbandoned(0))
    with pytest.raises(RoundRejected, match="cannot be abandoned"):  # not the open attempt
        apply(RoundState.open(0, SITES), AttemptAbandoned(1))


def test_silence_of_a_site_that_answered_changes_nothing():
    state = apply(RoundState.open(0, SITES), VectorReceived("a", 0, "da")).state
    t = apply(state, SitesSilent(("a", "zz")))
    assert t.outcome is Outcome.NOTHING and t.state is state


def test_when_every_site_is_silent_the_study_fails():
    t = apply(RoundState.open(0, SITES), SitesSilent(SITES))
    assert t.outcome is Outcome.FAILED and t.state.phase is Phase.FAILED
    assert t.state.failure == "every site dropped out"


def test_a_site_silent_at_reveal_fails_the_study_instead_of_a_new_attempt():
    state = RoundState.open(2, SITES, recovery=0)  # seeds not shared: nothing to recover
    state = apply(_collected(state), RevealReceived("a", 0, "sa")).state
    t = apply(state, SitesSilent(("b",)))
    assert t.outcome is Outcome.FAILED
    assert "['b'] did not reveal their self-mask seed" in (t.state.failure or "")
    assert "round 2" in (t.state.failure or "")


def test_sites_lost_at_reveal_are_recovered_from_the_survivors_shares():
    sites = ("a", "b", "c", "d", "e")
    state = RoundState.open(0, sites)
    assert state.threshold == 3  # a majority by default
    state = apply(_collected(state), RevealReceived("a", 0, "sa")).state
    t = apply(state, SitesSilent(("d", "e")))
    assert t.outcome is Outcome.RECOVERY_OPENED and t.excluded == ("d", "e")
    state = t.state
    assert state.phase is Phase.RECOVER and state.lost == ("d", "e")
    assert state.awaiting == ("a", "b", "c")  # "a" revealed, but gives its shares too
    with pytest.raises(RoundRejected, match="send the seed with its shares"):
        apply(state, RevealReceived("b", 0, "sb"))
    with pytest.raises(RoundRejected, match="other shares or another seed"):
        apply(state, SharesReceived("a", 0, "not-sa", "h"))  # a seed it did not reveal
    with pytest.raises(RoundRejected, match="not waiting for this node's shares"):
        apply(state, SharesReceived("d", 0, "sd", "h"))  # a lost site
    for s in ("a", "b"):
        t = apply(state, SharesReceived(s, 0, f"s{s}", f"h{s}"))
        assert t.outcome is Outcome.ACCEPTED
        state = t.state
    assert apply(state, SharesReceived("a", 0, "sa", "ha")).outcome is Outcome.DUPLICATE
    t = apply(state, SharesReceived("c", 0, "sc", "hc"))
    assert t.outcome is Outcome.ROUND_COMPLETE and t.state.survivors == ("a", "b", "c")
    assert dict(t.state.seeds) == {"a": "sa", "b": "sb", "c": "sc"}


@pytest.mark.parametrize(
    ("sites", "silent", "recovery"),
    [
        (("a", "b", "c", "d", "e"), ("c", "d", "e"), None),  # 2 left < threshold 3
        (("a", "b"), ("b",), None),  # 2 participants never share seeds
        (("a", "b", "c", "d"), ("d",), 0),  # recovery off
    ],
)
def test_recovery_needs_enough_survivors(sites, silent, recovery):
    state = _collected(RoundState.open(0, sites, recovery=recovery))
    t = apply(state, SitesSilent(silent))
    assert t.outcome is Outcome.FAILED and "did not reveal" in (t.state.failure or "")


def test_a_survivor_silent_during_recovery_fails_the_study():
    state = _collected(RoundState.open(0, ("a", "b", "c", "d")))
    state = apply(state, SitesSilent(("d",))).state
    state = apply(state, SharesReceived("a", 0, "sa", "ha")).state
    t = apply(state, SitesSilent(("b", "c")))
    assert t.outcome is Outcome.FAILED and "did not send their shares" in (t.state.failure or "")


@pytest.mark.parametrize(("anonymous", "where"), [(False, "site 'b'"), (True, "one of the sites")])
def test_a_refusal_fails_the_study_naming_the_rule(anonymous, where):
    t = apply(RoundState.open(0, SITES), Refused("b", 0, "min_cell_count", "cell < 5", anonymous))
    assert t.outcome is Outcome.FAILED and t.state.rule == "min_cell_count"
    assert t.state.failure == f"{where}: policy rule 'min_cell_count' refused the release: cell < 5"
    with pytest.raises(RoundRejected):  # a failed round takes nothing more
        apply(t.state, VectorReceived("a", 0, "da"))


def test_a_round_needs_distinct_participants():
    with pytest.raises(ProtocolError, match="at least one participant"):
        RoundState.open(0, ())
    with pytest.raises(ProtocolError, match="listed twice"):
        RoundState.open(0, ("a", "a"))


_EVENTS = st.one_of(
    st.builds(VectorReceived, st.sampled_from(SITES), st.integers(0, 2), st.sampled_from("xy")),
    st.builds(RevealReceived, st.sampled_from(SITES), st.integers(0, 2), st.sampled_from("xy")),
    st.builds(SitesSilent, st.lists(st.sampled_from(SITES), max_size=2).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_EVENTS, max_size=30))
def test_invariants_hold_under_any_sequence_of_events(events):
    state = RoundState.open(0, SITES)
    for ev in events:
        try:
            t = apply(state, ev)
        except RoundRejected:
            continue
        new = t.state
        assert set(new.received) <= set(new.participants)
        assert set(new.seeds) <= set(new.received)  # no seed before its vector
        assert new.attempt >= state.attempt
        if new.attempt > state.attempt:  # a new attempt starts empty, among survivors
            assert new.received == {} and set(new.participants) < set(state.participants)
        if new.seeds:
            assert len(new.received) == len(new.participants)  # seeds only once all are in
        state = new
        if state.phase in (Phase.DONE, Phase.FAILED):
            break


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_EVENTS, st.builds(AttemptAbandoned, st.integers(0, 2))), max_size=30))
def test_no_attempt_is_re_run_once_a_seed_could_be_out(events):
    """With abandonments too: a new attempt starts empty, and never after a reveal opened."""
    state = RoundState.open(0, SITES)
    for ev in events:
        try:
            t = apply(state, ev)
        except RoundRejected:
            continue
        new = t.state
        if new.attempt > state.attempt:
            assert state.phase is Phase.COLLECT and not state.seeds
            assert new.received == {} and new.seeds == {}
            assert set(new.participants) <= set(state.participants)
            assert new.attempt == state.attempt + 1
        state = new
        if state.phase in (Phase.DONE, Phase.FAILED):
            break
