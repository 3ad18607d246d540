"""In-memory state of the hub's running studies, rebuilt from the database on demand.

The store (:class:`~consortia.hub.store.StudyStore`) is the source of truth.
For speed, the hub mirrors each running study's open round (attempt,
participants, phase, who sent a vector, who revealed a seed), its coordinator
and its running masked sum in memory, and updates the mirror only after the
store's transaction that records a change has committed.  :func:`load_live`
rebuilds the mirror of a study from the store: the coordinator by replaying the
persisted round sums (:meth:`consortia.protocol.Coordinator.replay` semantics),
the running masked sum from its persisted bytes.

The running sum is persisted only once the attempt's last vector is in (writing
a payload-sized sum on every upload cost more than the round's arithmetic): an
attempt that was still collecting when the hub stopped cannot be resumed
(:func:`interrupted`), and the engine abandons it for a new attempt among the
same participants (:class:`~consortia.runtime.rounds.AttemptAbandoned`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consortia.errors import ProtocolError, ValidationError
from consortia.hub.store import RoundRecord, StudyRecord, StudyStore
from consortia.privacy.recovery import SeedShares
from consortia.privacy.secagg import Layout, RoundContext, SecureAggregator
from consortia.protocol import Coordinator, algorithm_from_spec
from consortia.runtime.rounds import Phase, RoundState
from consortia.wire import unpack_arrays

__all__ = [
    "LiveRound",
    "LiveStudy",
    "interrupted",
    "load_live",
    "restore_aggregator",
    "round_state",
    "shares_digest",
]


@dataclass
class LiveRound:
    """The open round of a running study (mirror of its ``rounds`` row).

    Its attempt, participants, phase, vectors received and seeds revealed are a
    :class:`~consortia.runtime.rounds.RoundState`, changed only by the round state
    machine's transitions.
    """

    step: str
    public: str  # sha256 (hex) of the packed public arrays (see consortia.hub.payloads)
    state: RoundState
    layout: list | None = None
    # node -> the encrypted shares of its seed (SeedShares JSON) that came with its vector
    bundles: dict[str, dict] = field(default_factory=dict)
    # survivor -> {lost node -> its share of that node's seed (hex)} (recover phase)
    shares: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def index(self) -> int:
        return self.state.index

    @property
    def attempt(self) -> int:
        return self.state.attempt

    @property
    def participants(self) -> tuple[str, ...]:
        return self.state.participants

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def received(self) -> Mapping[str, str]:
        """Node -> sha256 of its masked vector (this attempt)."""
        return self.state.received

    @property
    def seeds(self) -> Mapping[str, str]:
        """Node -> its revealed self-mask seed (hex; this attempt)."""
        return self.state.seeds


@dataclass
class LiveStudy:
    """A running study: its coordinator, open round and running masked sum."""

    id: str
    researcher: str
    spec: dict
    dataset: str
    frac_bits: int
    members: set[str]  # every node that ever took part (may post, even if excluded)
    coord: Coordinator
    round: LiveRound
    deadline: float
    agg: SecureAggregator | None = None
    agg_attempt: int = -1
    # node -> monotonic deadline of its owner's approval (see consortia.hub.approvals)
    waiting: dict[str, float] = field(default_factory=dict)
    opened: float = 0.0  # monotonic time at which the open phase began
    beats: dict[str, float] = field(default_factory=dict)  # node -> its last heartbeat
    progress: dict[str, float] = field(default_factory=dict)  # node -> fraction it reported
    # the study's own lock: every change of its state (and of this mirror) holds it,
    # never the hub-wide lock of the registry (see consortia.hub.registry)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # the round's every seed is committed and it is being finished (see hub.finishing):
    # the unmasking and coordinate() hold only finish_lock, so that this study's own
    # requests (a retried reveal, a status) are answered meanwhile
    finishing: bool = False
    finish_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def shares_digest(shares: Mapping[str, str]) -> str:
    """The digest the state machine records for a survivor's revealed shares."""
    return hashlib.sha256(json.dumps(dict(shares), sort_keys=True).encode()).hexdigest()


def round_state(row: RoundRecord, recovery: int | None = None) -> RoundState:
    """The state machine's view of a stored round (``recovery``: the hub's setting)."""
    return RoundState(
        index=row.index,
        attempt=row.attempt,
        participants=tuple(row.participants),
        phase=Phase.DONE if row.done else Phase(row.phase),
        received=dict(row.received),
        seeds=dict(row.seeds),
        recovery=recovery,
        lost=tuple(row.lost),
        shared={k: shares_digest(v) for k, v in row.shares.items()},
    )


def restore_aggregator(
    ctx: RoundContext,
    layout: Layout | None,
    acc: bytes | None,
    received: list[str],
    bundles: Mapping[str, Mapping[str, Any]] | None = None,
) -> SecureAggregator:
    """Rebuild an aggregator from its persisted running sum (and the received seed shares)."""
    total = None if acc is None else np.frombuffer(acc, dtype=np.uint64)
    try:
        shares = {n: SeedShares.from_json(b) for n, b in (bundles or {}).items()}
        return SecureAggregator.restore(ctx, layout, total, received, shares)
    except (ProtocolError, ValidationError) as exc:
        raise ProtocolError(f"round {ctx.round_index}: {exc}") from None


def load_live(
    store: StudyStore,
    study: StudyRecord,
    *,
    node_timeout: float,
    reveal_timeout: float,
    recovery: int | None = None,
) -> LiveStudy:
    """Rebuild a running study's in-memory state from its store.

    Raises
    ------
    ProtocolError
        If a round is missing (the database was edited) or no round is open.
    """
    algo = algorithm_from_spec(study.algorithm)
    coord = Coordinator(algo, keep_history=False)
    for index, raw in store.replay_sums(study.id):  # one round's sums in memory at a time
        if index != coord.round_index or not raw:
            raise ProtocolError(f"study {study.id}: round {coord.round_index} is missing")
        coord.advance(unpack_arrays(raw, max_bytes=2**62))
    row = store.open_round(study.id)
    if row is None or row.index != coord.round_index or coord.done:
        raise ProtocolError(f"study {study.id}: round {coord.round_index} is not open")
    rnd = LiveRound(
        step=row.step,
        public=row.public,
        state=round_state(row, recovery),
        layout=row.layout,
        bundles=dict(row.bundles),
        shares=dict(row.shares),
    )
    wait = reveal_timeout if rnd.phase == "reveal" else node_timeout
    now = time.monotonic()
    return LiveStudy(
        id=study.id,
        researcher=study.researcher,
        spec=dict(study.algorithm),
        dataset=study.dataset,
        frac_bits=study.frac_bits,
        members=store.members(study.id) | set(study.participants),
        coord=coord,
        round=rnd,
        deadline=now + wait,
        opened=now,
    )


def interrupted(store: StudyStore, live: LiveStudy) -> bool:
    """Whether the open attempt lost its running sum: vectors received, no sum persisted.

    True only while it collects vectors (the sum is persisted with the last one);
    such an attempt cannot be resumed, only abandoned.
    """
    rnd = live.round
    if rnd.phase is not Phase.COLLECT or not rnd.received:
        return False
    return store.acc_attempt(live.id, rnd.index) != rnd.attempt
