"""One secure-aggregation round as a pure state machine: the only place its rules live.

Both drivers apply the same transitions: :class:`~consortia.runtime.Simulation`
in memory, and the hub's study engine (:mod:`consortia.hub.rounds`), which
persists every new state before it answers the request that caused it.  The
machine does no I/O, holds no clock and no arrays: drivers decide *when* a
site is silent (a deadline, a simulated fault) and do the arithmetic (a
:class:`~consortia.privacy.SecureAggregator`); the machine decides what
follows.

A round of a study moves through attempts.  An attempt has a fixed set of
participants and two phases:

``collect``
    Every participant posts its masked vector (:class:`VectorReceived`).  The
    last one opens the ``reveal`` phase.  Participants that fall silent
    (:class:`SitesSilent`) are excluded: the attempt is abandoned (nothing of it
    is ever unmasked) and the round re-runs among the survivors as a new attempt
    with fresh masks.  No survivor: the study fails.
``reveal``
    Every participant reveals its self-mask seed (:class:`RevealReceived`); the
    last one completes the round (``done``).  A participant silent here cannot
    be replaced by a new attempt (seeds already revealed would let a fresh
    attempt's sum be differenced against this one).  Instead, when the attempt
    shared its seeds (a recovery ``threshold`` t, see
    :mod:`consortia.privacy.recovery`) and at least t participants remain, the
    silent ones are *lost* and the attempt moves to ``recover``; otherwise the
    study fails.
``recover``
    Each survivor reveals its own seed (again, if it already did) with its shares
    of the lost sites' seeds (:class:`SharesReceived`).  Once every survivor's seed
    is in and t survivors gave their shares, the round completes: the lost seeds
    are rebuilt from the shares.  A survivor silent here fails the study.

A refusal (:class:`Refused`) from a participant of the open attempt fails the
study, naming the rule (and the site, unless the rule depends on the data).

A driver that lost an attempt's running sum while it was still collecting (the
hub persists the sum only once the last vector is in, and restarted before) gives
it up (:class:`AttemptAbandoned`): the round re-runs among the same participants
as a new attempt with fresh masks.  This is allowed in ``collect`` only: no seed
of the attempt was revealed, so nothing of it can ever be unmasked.

A message for another attempt, a second different vector or seed, or a seed
before every vector is in, is rejected with :class:`RoundRejected`; the same
vector or seed again is acknowledged as a :attr:`Outcome.DUPLICATE` (drivers
retry over unreliable links).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from consortia.errors import ProtocolError
from consortia.privacy.context import seed_threshold

__all__ = [
    "AttemptAbandoned",
    "Event",
    "Outcome",
    "Phase",
    "Refused",
    "RevealReceived",
    "RoundRejected",
    "RoundState",
    "SharesReceived",
    "SitesSilent",
    "Transition",
    "VectorReceived",
    "apply",
    "refusal_reason",
]


class Phase(enum.StrEnum):
    """Where an attempt stands."""

    COLLECT = "collect"
    REVEAL = "reveal"
    RECOVER = "recover"
    DONE = "done"
    FAILED = "failed"


class Outcome(enum.StrEnum):
    """What a transition did (drivers act on it)."""

    ACCEPTED = "accepted"
    """The message was recorded; the phase did not change."""
    DUPLICATE = "duplicate"
    """The very same message was already recorded; nothing changed."""
    REVEAL_OPENED = "reveal_opened"
    """The last vector arrived: participants are now asked for their seeds."""
    RECOVERY_OPENED = "recovery_opened"
    """Sites died after their vector: the survivors are asked for their shares."""
    NEW_ATTEMPT = "new_attempt"
    """The round re-runs as a new attempt: among the survivors of an exclusion, or among
    the same participants after an abandoned attempt."""
    ROUND_COMPLETE = "round_complete"
    """The last seed arrived: the sum can be unmasked."""
    FAILED = "failed"
    """The study cannot continue (see :attr:`RoundState.failure`)."""
    NOTHING = "nothing"
    """The event changed nothing (for example, a silent site that had already answered)."""


class RoundRejected(ProtocolError):
    """A message that the open attempt does not accept.

    Parameters
    ----------
    message
        What is wrong, for the sender.
    conflict
        True when the message is well formed but comes at the wrong time or from
        the wrong party (an HTTP driver answers 409).
    """

    def __init__(self, message: str, *, conflict: bool = True) -> None:
        super().__init__(message)
        self.conflict = conflict


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class RoundState:
    """The state of one round's open attempt.

    Attributes
    ----------
    index, attempt
        The round and its attempt (0 first; each exclusion opens the next).
    participants
        The sites of this attempt.
    phase
        ``collect``, ``reveal``, ``done`` or ``failed``.
    received
        Site -> digest of the masked vector it posted (this attempt).
    seeds
        Site -> its revealed self-mask seed (hex; this attempt).
    recovery
        The study's seed-recovery setting: None for the default (a majority of each
        attempt's participants), 0 for none (see :attr:`threshold`).
    lost
        Participants whose vector is in the sum but who fell silent at the reveal.
    shared
        Survivor -> digest of the shares it gave of the lost seeds (``recover``).
    failure, rule
        Why the study failed, and the policy rule that refused (if one did).
    """

    index: int
    attempt: int
    participants: tuple[str, ...]
    phase: Phase = Phase.COLLECT
    received: Mapping[str, str] = field(default_factory=dict)
    seeds: Mapping[str, str] = field(default_factory=dict)
    recovery: int | None = None
    lost: tuple[str, ...] = ()
    shared: Mapping[str, str] = field(default_factory=dict)
    failure: str | None = None
    rule: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "participants", tuple(self.participants))
        object.__setattr__(self, "phase", Phase(self.phase))
        object.__setattr__(self, "received", _frozen(self.received))
        object.__setattr__(self, "seeds", _frozen(self.seeds))
        object.__setattr__(self, "lost", tuple(self.lost))
        object.__setattr__(self, "shared", _frozen(self.shared))

    @classmethod
    def open(
        cls, index: int, participants: Iterable[str], *, recovery: int | None = None
    ) -> RoundState:
        """The first attempt of round ``index`` among ``participants``.

        ``recovery`` is the study's seed-recovery setting (see :attr:`threshold`).
        """
        sites = tuple(participants)
        if not sites:
            raise ProtocolError(f"round {index} needs at least one participant")
        if len(set(sites)) != len(sites):
            raise ProtocolError(f"round {index}: a participant is listed twice")
        return cls(index=index, attempt=0, participants=sites, recovery=recovery)

    @property
    def threshold(self) -> int | None:
        """Shares that rebuild a lost seed in this attempt (None: seeds are not shared)."""
        return seed_threshold(len(self.participants), self.recovery)

    @property
    def open_for_messages(self) -> bool:
        """Whether the attempt still takes vectors, seeds or shares."""
        return self.phase in (Phase.COLLECT, Phase.REVEAL, Phase.RECOVER)

    @property
    def survivors(self) -> tuple[str, ...]:
        """The participants not lost at the reveal."""
        return tuple(p for p in self.participants if p not in self.lost)

    @property
    def awaiting(self) -> tuple[str, ...]:
        """The participants whose message the attempt waits for (vector, then seed)."""
        if self.phase is Phase.COLLECT:
            return tuple(p for p in self.participants if p not in self.received)
        if self.phase is Phase.REVEAL:
            return tuple(p for p in self.participants if p not in self.seeds)
        if self.phase is Phase.RECOVER:
            return tuple(p for p in self.survivors if p not in self.shared)
        return ()


@dataclass(frozen=True)
class VectorReceived:
    """``site`` posted its masked vector (``digest`` identifies its bytes) for ``attempt``."""

    site: str
    attempt: int
    digest: str


@dataclass(frozen=True)
class RevealReceived:
    """``site`` revealed its self-mask ``seed`` (hex) for ``attempt``."""

    site: str
    attempt: int
    seed: str


@dataclass(frozen=True)
class SharesReceived:
    """In ``recover``: ``site`` revealed its ``seed`` (hex) and its shares of the lost seeds.

    ``digest`` identifies the shares it gave (a retry must give the same ones).
    """

    site: str
    attempt: int
    seed: str
    digest: str


@dataclass(frozen=True)
class SitesSilent:
    """The driver gave up waiting for these sites (deadline passed, simulated fault)."""

    sites: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    """``site``'s policy (or privacy layer) refused ``attempt``."""

    site: str
    attempt: int
    rule: str
    message: str
    anonymous: bool = False


@dataclass(frozen=True)
class AttemptAbandoned:
    """The driver lost ``attempt``'s running sum while it was collecting vectors.

    The attempt is given up (none of its seeds was revealed) and the round re-runs
    among the same participants with fresh masks.
    """

    attempt: int
    reason: str = "the attempt's running sum was lost"


Event = VectorReceived | RevealReceived | SharesReceived | SitesSilent | Refused | AttemptAbandoned


@dataclass(frozen=True)
class Transition:
    """The state after an event, what happened, and who was excluded (if anyone)."""

    state: RoundState
    outcome: Outcome
    excluded: tuple[str, ...] = ()


def refusal_reason(site: str, rule: str, message: str, *, anonymous: bool) -> str:
    """The study's failure reason for a refusal (the site is not named when ``anonymous``)."""
    where = "one of the sites" if anonymous else f"site {site!r}"
    return f"{where}: policy rule {rule!r} refused the release: {message}"


def _same_attempt(state: RoundState, attempt: int) -> None:
    if attempt != state.attempt:
        raise RoundRejected(
            f"attempt {attempt} of round {state.index} is not the open attempt"
            f" (attempt {state.attempt} is)"
        )


def _vector(state: RoundState, ev: VectorReceived) -> Transition:
    if ev.attempt == state.attempt and state.received.get(ev.site) == ev.digest:
        return Transition(state, Outcome.DUPLICATE)
    if not state.open_for_messages:
        raise RoundRejected(f"round {state.index} is not open")
    _same_attempt(state, ev.attempt)
    if ev.site not in state.participants:
        raise RoundRejected(f"node {ev.site!r} is not a participant of this attempt")
    if ev.site in state.received:
        raise RoundRejected("this node already sent a different vector for this attempt")
    if state.phase is not Phase.COLLECT:
        raise RoundRejected("this attempt no longer accepts contributions")
    received = {**state.received, ev.site: ev.digest}
    if len(received) == len(state.participants):
        return Transition(
            replace(state, received=received, phase=Phase.REVEAL), Outcome.REVEAL_OPENED
        )
    return Transition(replace(state, received=received), Outcome.ACCEPTED)


def _reveal(state: RoundState, ev: RevealReceived) -> Transition:
    if ev.attempt == state.attempt and state.seeds.get(ev.site) == ev.seed:
        return Transition(state, Outcome.DUPLICATE)
    if not state.open_for_messages:
        raise RoundRejected(f"round {state.index} is not open")
    _same_attempt(state, ev.attempt)
    if state.phase is Phase.RECOVER:
        raise RoundRejected("this attempt is recovering lost seeds: send the seed with its shares")
    if state.phase is not Phase.REVEAL or ev.site not in state.received:
        raise RoundRejected("this attempt is not waiting for this node's seed")
    if ev.site in state.seeds:
        raise RoundRejected("this node already revealed another seed")
    seeds = {**state.seeds, ev.site: ev.seed}
    if len(seeds) == len(state.participants):
        return Transition(replace(state, seeds=seeds, phase=Phase.DONE), Outcome.ROUND_COMPLETE)
    return Transition(replace(state, seeds=seeds), Outcome.ACCEPTED)


def _shares(state: RoundState, ev: SharesReceived) -> Transition:
    if (
        ev.attempt == state.attempt
        and state.shared.get(ev.site) == ev.digest
        and state.seeds.get(ev.site) == ev.seed
    ):
        return Transition(state, Outcome.DUPLICATE)
    if not state.open_for_messages:
        raise RoundRejected(f"round {state.index} is not open")
    _same_attempt(state, ev.attempt)
    if state.phase is not Phase.RECOVER or ev.site not in state.survivors:
        raise RoundRejected("this attempt is not waiting for this node's shares")
    if ev.site in state.shared or state.seeds.get(ev.site, ev.seed) != ev.seed:
        raise RoundRejected("this node already revealed other shares or another seed")
    seeds = {**state.seeds, ev.site: ev.seed}
    shared = {**state.shared, ev.site: ev.digest}
    new = replace(state, seeds=seeds, shared=shared)
    if len(shared) == len(state.survivors):
        return Transition(replace(new, phase=Phase.DONE), Outcome.ROUND_COMPLETE)
    return Transition(new, Outcome.ACCEPTED)


def _silent(state: RoundState, ev: SitesSilent) -> Transition:
    missing = tuple(p for p in state.awaiting if p in set(ev.sites))
    if not missing:
        return Transition(state, Outcome.NOTHING)
    if state.phase is Phase.REVEAL:
        left = len(state.participants) - len(missing)
        if state.threshold is not None and left >= state.threshold:
            recovering = replace(state, phase=Phase.RECOVER, lost=missing)
            return Transition(recovering, Outcome.RECOVERY_OPENED, missing)
        failure = (
            f"nodes {sorted(missing)} did not reveal their self-mask seed in time; "
            f"round {state.index} cannot be finished"
        )
        if state.threshold is not None:
            failure += f" ({left} survivors hold fewer than the {state.threshold} shares needed)"
        return Transition(replace(state, phase=Phase.FAILED, failure=failure), Outcome.FAILED)
    if state.phase is Phase.RECOVER:
        failure = (
            f"nodes {sorted(missing)} did not send their shares in time; "
            f"round {state.index} cannot be finished"
        )
        return Transition(replace(state, phase=Phase.FAILED, failure=failure), Outcome.FAILED)
    survivors = tuple(p for p in state.participants if p not in missing)
    if not survivors:
        failed = replace(state, phase=Phase.FAILED, failure="every site dropped out")
        return Transition(failed, Outcome.FAILED, missing)
    nxt = RoundState(
        index=state.index,
        attempt=state.attempt + 1,
        participants=survivors,
        recovery=state.recovery,
    )
    return Transition(nxt, Outcome.NEW_ATTEMPT, missing)


def _refused(state: RoundState, ev: Refused) -> Transition:
    if (
        not state.open_for_messages
        or ev.attempt != state.attempt
        or ev.site not in state.participants
    ):
        raise RoundRejected("this attempt is not open for this node")
    reason = refusal_reason(ev.site, ev.rule, ev.message, anonymous=ev.anonymous)
    failed = replace(state, phase=Phase.FAILED, failure=reason, rule=ev.rule)
    return Transition(failed, Outcome.FAILED)


def _abandoned(state: RoundState, ev: AttemptAbandoned) -> Transition:
    if ev.attempt != state.attempt or state.phase is not Phase.COLLECT:
        # past collect a seed may have been revealed: a new attempt of the same round
        # could then be differenced against this one
        raise RoundRejected(
            f"attempt {ev.attempt} of round {state.index} cannot be abandoned: only the open "
            f"attempt, while it collects vectors (attempt {state.attempt} is {state.phase})"
        )
    nxt = RoundState(
        index=state.index,
        attempt=state.attempt + 1,
        participants=state.participants,
        recovery=state.recovery,
    )
    return Transition(nxt, Outcome.NEW_ATTEMPT)


def apply(state: RoundState, event: Event) -> Transition:
    """The transition of ``state`` on ``event`` (pure: ``state`` is not changed).

    Raises
    ------
    RoundRejected
        If the attempt does not accept the message (the state is unchanged).
    """
    if isinstance(event, VectorReceived):
        return _vector(state, event)
    if isinstance(event, RevealReceived):
        return _reveal(state, event)
    if isinstance(event, SharesReceived):
        return _shares(state, event)
    if isinstance(event, SitesSilent):
        return _silent(state, event)
    if isinstance(event, Refused):
        return _refused(state, event)
    if isinstance(event, AttemptAbandoned):
        return _abandoned(state, event)
    raise ProtocolError(f"unknown round event {type(event).__name__}")
