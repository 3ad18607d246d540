"""The records a site keeps so that the rules of secure aggregation hold over time.

See :mod:`consortia.privacy.secagg` for the rules; a node persists the same records
in its own database (:class:`consortia.node.store.SqlLedger`).
"""

from __future__ import annotations

import abc

__all__ = ["AttemptRecord", "Ledger", "MemoryLedger"]

AttemptRecord = tuple[tuple[str, ...], int]
"""The participants of an attempt whose seed this site shared, and the sharing threshold."""


class Ledger(abc.ABC):
    """The records a site keeps to enforce the one-reveal-per-round rule.

    :meth:`attempts` and :meth:`add_attempt` have an in-memory default (kept for
    the life of the object); a ledger that must hold across restarts overrides them.
    """

    @abc.abstractmethod
    def seeds(self, study_id: str, round_index: int) -> dict[int, bytes]:
        """Self-mask seeds of the attempts this site contributed to, by attempt."""

    @abc.abstractmethod
    def add_seed(self, study_id: str, round_index: int, attempt: int, seed: bytes) -> None:
        """Record that this site contributed to ``attempt`` with ``seed``."""

    @abc.abstractmethod
    def revealed(self, study_id: str, round_index: int) -> int | None:
        """The attempt whose seed was revealed, if any."""

    @abc.abstractmethod
    def set_revealed(self, study_id: str, round_index: int, attempt: int) -> None:
        """Record that the seed of ``attempt`` was revealed."""

    def _attempt_memory(self) -> dict[tuple[str, int], dict[int, AttemptRecord]]:
        memory: dict[tuple[str, int], dict[int, AttemptRecord]] | None
        memory = self.__dict__.get("_attempt_records")
        if memory is None:
            memory = self.__dict__["_attempt_records"] = {}
        return memory

    def attempts(self, study_id: str, round_index: int) -> dict[int, AttemptRecord]:
        """The attempts of a round whose seed this site split into shares, by attempt:
        ``(participants, threshold)``."""
        return dict(self._attempt_memory().get((study_id, round_index), {}))

    def add_attempt(
        self,
        study_id: str,
        round_index: int,
        attempt: int,
        participants: tuple[str, ...],
        threshold: int,
    ) -> None:
        """Record that this site shared its seed of ``attempt`` among ``participants``
        with ``threshold`` (before the shares leave; the first record of an attempt wins)."""
        rounds = self._attempt_memory().setdefault((study_id, round_index), {})
        rounds.setdefault(attempt, (tuple(participants), int(threshold)))


class MemoryLedger(Ledger):
    """An in-memory :class:`Ledger` (simulation and tests)."""

    def __init__(self) -> None:
        self._seeds: dict[tuple[str, int], dict[int, bytes]] = {}
        self._revealed: dict[tuple[str, int], int] = {}

    def seeds(self, study_id: str, round_index: int) -> dict[int, bytes]:
        return dict(self._seeds.get((study_id, round_index), {}))

    def add_seed(self, study_id: str, round_index: int, attempt: int, seed: bytes) -> None:
        self._seeds.setdefault((study_id, round_index), {})[attempt] = seed

    def revealed(self, study_id: str, round_index: int) -> int | None:
        return self._revealed.get((study_id, round_index))

    def set_revealed(self, study_id: str, round_index: int, attempt: int) -> None:
        self._revealed[(study_id, round_index)] = attempt
