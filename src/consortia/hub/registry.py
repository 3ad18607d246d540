"""The hub-wide registry of running studies, and the versions that long-polls wait on.

Its lock (:attr:`StudyRegistry.lock`) guards only the registry itself: which studies
are running (their :class:`~consortia.hub.state.LiveStudy` mirrors), which must be
rebuilt from the store, and the change counters of nodes and studies.  It is held
for a few dictionary operations at a time, never across a database transaction, an
unmasking or an algorithm's ``coordinate()``: a study's state changes under that
study's own lock (:attr:`LiveStudy.lock <consortia.hub.state.LiveStudy.lock>`).
Lock order: a study's lock, then the registry's (never the other way round).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from consortia.hub.state import LiveStudy

__all__ = ["StudyRegistry"]


class StudyRegistry:
    """Running studies by id, studies to rebuild, and change counters to wait on."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.stopped = threading.Event()
        self._live: dict[str, LiveStudy] = {}
        self._stale: set[str] = set()
        self._node_version: dict[str, int] = {}
        self._study_version: dict[str, int] = {}

    # ------------------------------------------------------------------ studies

    def get(self, study_id: str) -> LiveStudy | None:
        """The running study ``study_id``'s mirror, or None (not running, or stale)."""
        with self.lock:
            return self._live.get(study_id)

    def running(self) -> list[LiveStudy]:
        """A snapshot of the running studies' mirrors."""
        with self.lock:
            return list(self._live.values())

    def add(self, live: LiveStudy) -> None:
        """Register a running study's mirror (it is no longer stale)."""
        with self.lock:
            self._live[live.id] = live
            self._stale.discard(live.id)

    def remove(self, study_id: str) -> LiveStudy | None:
        """Forget a study that ended (not stale); return its mirror if it had one."""
        with self.lock:
            self._stale.discard(study_id)
            return self._live.pop(study_id, None)

    def invalidate(self, study_id: str) -> None:
        """Forget a study's mirror; it is rebuilt from the store when next needed."""
        with self.lock:
            self._live.pop(study_id, None)
            self._stale.add(study_id)

    def mark_stale(self, study_ids: Iterable[str]) -> None:
        """Studies to rebuild from the store (after a restart)."""
        with self.lock:
            self._stale.update(study_ids)

    def stale(self) -> list[str]:
        """The studies waiting to be rebuilt, sorted."""
        with self.lock:
            return sorted(self._stale)

    def is_stale(self, study_id: str) -> bool:
        with self.lock:
            return study_id in self._stale

    def drop_stale(self, study_id: str) -> None:
        """A stale study turned out not to be running: nothing to rebuild."""
        with self.lock:
            self._stale.discard(study_id)

    # ------------------------------------------------------------------ change counters

    def bump(self, nodes: Iterable[str], study_id: str | None = None) -> None:
        """Something changed for ``nodes`` (and ``study_id``): wake their long-polls."""
        with self.changed:
            for n in nodes:
                self._node_version[n] = self._node_version.get(n, 0) + 1
            if study_id is not None:
                self._study_version[study_id] = self._study_version.get(study_id, 0) + 1
            self.changed.notify_all()

    def node_version(self, node: str) -> int:
        with self.lock:
            return self._node_version.get(node, 0)

    def study_version(self, study_id: str) -> int:
        with self.lock:
            return self._study_version.get(study_id, 0)

    def wait_node(self, node: str, version: int, end: float) -> bool:
        """Wait until ``node``'s version differs from ``version``, the monotonic ``end``
        passes or the hub stops; True when it changed."""
        with self.changed:
            while self._node_version.get(node, 0) == version:
                left = end - time.monotonic()
                if left <= 0 or self.stopped.is_set():
                    return False
                self.changed.wait(left)
            return True

    def wait_study(self, study_id: str, known: int | None, end: float) -> int:
        """Wait until the study's version differs from ``known`` (or ``end``); the version."""
        with self.changed:
            while (
                known is not None
                and self._study_version.get(study_id, 0) == known
                and not self.stopped.is_set()
            ):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return self._study_version.get(study_id, 0)

    def stop(self) -> None:
        """Wake every waiting long-poll for good."""
        self.stopped.set()
        with self.changed:
            self.changed.notify_all()
