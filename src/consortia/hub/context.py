"""What the study engine's collaborators share: settings, store, registry, audit, peers.

:class:`HubContext` is built once by :class:`~consortia.hub.service.StudyEngine` and
handed to each collaborator (studies, rounds, finishing, approvals, timeouts, tasks,
queries); none of them reaches another's state except through its methods.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consortia.audit import AuditLog
from consortia.hub.errors import HubError
from consortia.hub.registry import StudyRegistry
from consortia.hub.state import LiveStudy
from consortia.hub.store import StudyStore
from consortia.privacy.keys import PeerKey
from consortia.privacy.secagg import RoundContext

__all__ = ["AuditQueue", "Deadlines", "HubConfig", "HubContext", "Peers"]


@dataclass
class HubConfig:
    """The engine's limits (see :class:`~consortia.hub.service.StudyEngine`).

    Read when used: a limit changed applies from the next deadline computed.
    """

    node_timeout: float
    reveal_timeout: float
    step_timeout: float
    approval_timeout: float
    max_payload: int
    recovery: int | None


class AuditQueue:
    """Audit entries queued during a state change, written once its transaction committed.

    The queue is per thread: state changes of different studies run concurrently,
    each writes only its own entries.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._local = threading.local()

    def _queue(self) -> list[tuple[str, str, dict[str, Any]]]:
        queue = getattr(self._local, "queue", None)
        if queue is None:
            queue = self._local.queue = []
        return queue

    def later(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Queue an entry (written by :meth:`flush`)."""
        self._queue().append((actor, action, details))

    def flush(self) -> None:
        """Write this thread's queued entries."""
        queue, self._local.queue = self._queue(), []
        for actor, action, details in queue:
            self.log.append(actor, action, details)

    def discard(self) -> None:
        """Drop this thread's queued entries (their transaction failed)."""
        self._local.queue = []


class Peers:
    """The enrolled nodes' signed public keys, read from the store once and cached."""

    def __init__(self, store: StudyStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._peers: dict[str, PeerKey] = {}
        self._json: dict[str, dict[str, str]] = {}

    def get(self, name: str) -> PeerKey:
        """Node ``name``'s keys; 409 if it is not enrolled."""
        with self._lock:
            peer = self._peers.get(name)
        if peer is None:
            peer = self.store.peer(name)
            if peer is None:
                raise HubError(409, f"node {name!r} is not enrolled")
            with self._lock:
                self._peers[name] = peer
                self._json[name] = peer.to_json()
        return peer

    def json(self, name: str) -> dict[str, str]:
        """Node ``name``'s keys as JSON."""
        self.get(name)
        with self._lock:
            return self._json[name]

    def ctx(self, live: LiveStudy) -> RoundContext:
        """The secure-aggregation context of ``live``'s open attempt."""
        rnd = live.round
        return RoundContext(
            study_id=live.id,
            round_index=rnd.index,
            attempt=rnd.attempt,
            participants=tuple(self.get(n) for n in rnd.participants),
            frac_bits=live.frac_bits,
        )


class Deadlines:
    """When a participant of a study's open phase counts as silent."""

    def __init__(self, config: HubConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock

    def node(self, live: LiveStudy, node: str) -> float:
        """When ``node`` counts as silent in the open collect phase.

        Silent = no vector and no heartbeat for ``node_timeout`` seconds, or the
        step's own limit passed since the attempt opened.
        """
        current = live.coord.current
        limit = current.timeout if current is not None and current.timeout else None
        seen = max(live.opened, live.beats.get(node, live.opened))
        return min(
            seen + self.config.node_timeout, live.opened + (limit or self.config.step_timeout)
        )

    def phase(self, live: LiveStudy) -> float:
        """The earliest moment at which a participant of the open phase may be silent."""
        if live.round.phase in ("reveal", "recover"):
            return live.opened + self.config.reveal_timeout
        awaiting = [n for n in live.round.state.awaiting if n not in live.waiting]
        if not awaiting:
            return live.opened + self.config.node_timeout
        return min(self.node(live, n) for n in awaiting)

    def arm(self, live: LiveStudy) -> None:
        """A phase (or an attempt) opened now: start its deadlines afresh."""
        live.opened = self.clock()
        live.beats.clear()
        live.progress.clear()
        live.deadline = self.phase(live)


@dataclass
class HubContext:
    """The parts every collaborator of the study engine uses."""

    store: StudyStore
    registry: StudyRegistry
    audit: AuditQueue
    config: HubConfig
    clock: Callable[[], float] = time.monotonic
    peers: Peers = field(init=False)
    deadlines: Deadlines = field(init=False)

    def __post_init__(self) -> None:
        self.peers = Peers(self.store)
        self.deadlines = Deadlines(self.config, self.clock)
