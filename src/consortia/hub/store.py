"""The hub's storage of studies, rounds, blobs and results, behind one interface.

:class:`StudyStore` is what the study engine's collaborators
(:mod:`consortia.hub.service`) know of the database, in the way
:class:`consortia.privacy.Ledger` is what a site's secure aggregation knows of its
records.  Every write method is one transaction, committed before it returns: a
state change of a study is durable before the request that caused it is answered.
:class:`consortia.hub.sqlstore.SqlStudyStore` is the implementation over SQLAlchemy
(SQLite or PostgreSQL).

The store holds no lock of its own over a study: the engine calls the write methods
of one study under that study's lock (:class:`consortia.hub.state.LiveStudy`), so
writes of different studies run concurrently.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from consortia.privacy.keys import PeerKey
from consortia.runtime.rounds import RoundState

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["AuditEntry", "NewStudy", "RoundEnd", "RoundRecord", "StudyRecord", "StudyStore"]

AuditEntry = tuple[str, str, dict[str, Any]]
"""An audit entry: actor, action and details."""


@dataclass(frozen=True)
class StudyRecord:
    """A stored study (a plain copy: changing it changes nothing stored)."""

    id: str
    researcher: str
    algorithm: dict
    dataset: str
    frac_bits: int
    status: str
    participants: list[str]
    n_rounds: int = 0
    error: str | None = None
    error_rule: str | None = None
    error_site: str | None = None
    error_detail: str | None = None
    created_at: float | None = None


@dataclass(frozen=True)
class RoundRecord:
    """A stored round: its step, the digest of its public arrays and its attempt's state."""

    study_id: str
    index: int
    step: str
    public: str
    attempt: int
    participants: tuple[str, ...]
    phase: str
    done: bool
    received: dict[str, str] = field(default_factory=dict)
    seeds: dict[str, str] = field(default_factory=dict)
    layout: list | None = None
    bundles: dict[str, dict] = field(default_factory=dict)
    lost: tuple[str, ...] = ()
    shares: dict[str, dict[str, str]] = field(default_factory=dict)
    finished_at: float | None = None


@dataclass(frozen=True)
class NewStudy:
    """A study to create: its record and, unless its coordinator finished at once, its
    first round (``state``: the round's opening state, ``step`` and ``public``: the
    digest of its stored public arrays, see :meth:`StudyStore.put_blob`)."""

    record: StudyRecord
    step: str | None = None
    public: str | None = None
    state: RoundState | None = None


@dataclass(frozen=True)
class RoundEnd:
    """What follows a finished round: the study fails, finishes, or opens its next round.

    Exactly one of ``failure``, ``finished`` or ``step`` is set; for a next round,
    ``state`` is its opening state and ``public`` the digest of its public arrays.
    """

    failure: str | None = None
    finished: bool = False
    result: Any = None
    step: str | None = None
    public: str | None = None
    state: RoundState | None = None


class StudyStore(abc.ABC):
    """Persistence of the hub's studies, rounds, payload blobs and results."""

    # ------------------------------------------------------------------ reads

    @abc.abstractmethod
    def running_ids(self) -> list[str]:
        """The ids of the studies stored as running."""

    @abc.abstractmethod
    def study(self, study_id: str) -> StudyRecord | None:
        """The study ``study_id``, or None."""

    @abc.abstractmethod
    def list_studies(self, researcher: str | None) -> list[StudyRecord]:
        """Studies of ``researcher`` (all for ``None``), newest first."""

    @abc.abstractmethod
    def round(self, study_id: str, index: int) -> RoundRecord | None:
        """Round ``index`` of a study, or None."""

    @abc.abstractmethod
    def open_round(self, study_id: str) -> RoundRecord | None:
        """The study's round that is not done, or None."""

    @abc.abstractmethod
    def finished_rounds(self, study_id: str, start: int, limit: int) -> list[RoundRecord]:
        """Up to ``limit`` finished rounds from index ``start``, in order."""

    @abc.abstractmethod
    def sums(self, study_id: str, index: int) -> bytes | None:
        """The aggregated sums of a finished round (a consortia.wire message), or None."""

    @abc.abstractmethod
    def replay_sums(self, study_id: str) -> Iterator[tuple[int, bytes]]:
        """Every finished round's sums in order, one in memory at a time."""

    @abc.abstractmethod
    def members(self, study_id: str) -> set[str]:
        """Every node that was ever given a task of the study."""

    @abc.abstractmethod
    def has_task(self, study_id: str, node: str) -> bool:
        """Whether ``node`` was ever given a task of the study."""

    @abc.abstractmethod
    def acc_attempt(self, study_id: str, index: int) -> int | None:
        """The attempt whose running masked sum is stored for the round, or None."""

    @abc.abstractmethod
    def acc(self, study_id: str, index: int, attempt: int) -> bytes | None:
        """The stored running masked sum of an attempt, or None."""

    @abc.abstractmethod
    def peer(self, name: str) -> PeerKey | None:
        """The signed public keys of enrolled node ``name``, or None."""

    @abc.abstractmethod
    def holders(self, dataset: str) -> list[str]:
        """The nodes whose catalogue lists ``dataset`` as available, sorted."""

    @abc.abstractmethod
    def catalogue(self) -> dict[str, dict[str, Any]]:
        """The published catalogue: node -> dataset name -> entry."""

    @abc.abstractmethod
    def blob_size(self, digest: str) -> int | None:
        """The size of stored blob ``digest``, or None."""

    @abc.abstractmethod
    def blob_for(self, node: str, digest: str) -> bytes | None:
        """Blob ``digest`` if a study that ``node`` takes part in uses it, else None."""

    @abc.abstractmethod
    def result(self, study_id: str) -> tuple[bytes, str] | None:
        """A finished study's stored result frame and its digest, or None."""

    # ------------------------------------------------------------------ writes

    @abc.abstractmethod
    def publish(self, node: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the catalogue of ``node``."""

    @abc.abstractmethod
    def put_blob(self, data: bytes) -> str:
        """Store a packed payload once (content-addressed); return its sha256 (hex).

        Its own transaction: a blob that no committed round names is harmless; a
        round that names it makes it fetchable by the round's study's nodes.
        """

    @abc.abstractmethod
    def create_study(self, new: NewStudy, audit: AuditEntry) -> None:
        """Create a study, its first round and that round's tasks, with its audit entry.

        The entry commits with the study where the audit log shares the store's
        database (or neither does); elsewhere it is appended once the study is stored.
        """

    @abc.abstractmethod
    def cancel(self, study_id: str, actor: str) -> bool:
        """Mark a running study cancelled (False: it was not running)."""

    @abc.abstractmethod
    def fail(
        self,
        study_id: str,
        reason: str,
        rule: str | None = None,
        *,
        site: str | None = None,
        detail: str | None = None,
    ) -> bool:
        """Mark a running study failed and close its open tasks (False: not running)."""

    @abc.abstractmethod
    def new_attempt(
        self, study_id: str, old: RoundState, new: RoundState, excluded: Sequence[str]
    ) -> None:
        """Supersede the open attempt ``old`` by ``new`` (``excluded`` ones marked so).

        Its tasks are superseded, its running sum dropped, the round reset to the new
        attempt and its tasks created; with ``excluded``, the study's participants
        become the new attempt's.
        """

    @abc.abstractmethod
    def record_vector(
        self,
        study_id: str,
        state: RoundState,
        node: str,
        layout: list,
        bundles: Mapping[str, dict] | None,
        masked_sum: np.ndarray | None,
    ) -> None:
        """A node's vector was added: the round's new ``state``, the task contributed.

        ``masked_sum`` (the attempt's running sum, given with its last vector) is
        stored with it.
        """

    @abc.abstractmethod
    def record_seed(
        self,
        study_id: str,
        state: RoundState,
        node: str,
        shares: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """A node revealed its seed (and, in a recovery, its shares of the lost seeds)."""

    @abc.abstractmethod
    def open_recovery(self, study_id: str, state: RoundState) -> None:
        """Participants were lost after their vector: the round recovers their seeds."""

    @abc.abstractmethod
    def set_task(self, study_id: str, state: RoundState, node: str, task_state: str) -> None:
        """Set the state of ``node``'s task in the round's open attempt."""

    @abc.abstractmethod
    def finish_round(
        self,
        study_id: str,
        state: RoundState,
        packed: Sequence[Buffer],
        end: RoundEnd,
    ) -> str | None:
        """Store a finished round's sums, the study's progress and what follows.

        Returns the digest of the study's stored result when it finished (None when
        its result could not be encoded, or it did not finish).
        """
