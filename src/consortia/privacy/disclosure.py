"""Disclosure control that remembers: what a researcher accumulates, not one release.

A node judges every release against everything its dataset released before
(:class:`ReleaseLedger` keeps that memory; the node persists it in its own
SQLite, the simulation in memory).  The rules, all checked before anything
leaves the node:

``repeated_query``
    A release is identified by two digests: its *query* (the algorithm
    specification and the dataset, the same for every round of a study) and its
    *content* (the exact bytes of the site's un-noised contribution to the round).
    If an earlier study *revealed* the same query, or exactly the same content, with
    a **different set of participating sites**, the release is refused: the
    difference of the two sums would be the sum over the sites that differ
    (participant differencing).  The rule is judged again when the node reveals
    its self-mask seed, the moment the sum becomes computable: an attempt that a
    site dropped out of is never revealed, so dropouts do not count, and a hub that
    fakes a dropout to re-run a study without a site meets the refusal.  A repeat
    over the same sites gives nothing new and is allowed (rate-limited, and charged
    again if it is noisy).
``cohort_difference``
    The cohort of a release is the set of row identities it was computed from
    (patient ids hashed at the node, or row positions when the dataset declares no
    id column; :attr:`Contribution.rows <consortia.protocol.Contribution>`).  Let
    ``C`` be the new cohort and ``C'`` any cohort this dataset released before, to
    **any** researcher (researchers can collude).  If ``0 < |C Δ C'| <
    min_cohort_size`` (symmetric difference), the release is refused: two sums
    whose cohorts differ by a few patients reveal those patients.  Equal cohorts
    (``|C Δ C'| = 0``) are allowed.  This covers ``dropna``, filters, subsets and
    groups alike, whatever the algorithm, since it compares the rows actually used.
``grid_differencing``
    Exact counts binned on a public grid (a survival time grid, histogram edges;
    ``Contribution.bins``) are judged cell by cell when released; two releases on
    the same cohort with *different* grids would difference into cells nobody
    judged (a one-point Kaplan-Meier grid moved step by step finds each event
    time).  The node keeps, per cohort and column, the first grid an exact
    release used (the *reference grid*) and refuses a later exact release on that
    cohort whose grid is not a subset of it (a coarsening of a released grid
    reveals nothing new).  Noisy releases (declared DP noise) are exempt.
``privacy_budget``
    A study whose :meth:`~consortia.protocol.Algorithm.privacy_cost` would take the
    researcher's spend on this dataset over the owner's cap is refused before it
    runs; the cost is charged once per study, when its first release leaves.
    Studies compose by basic composition (epsilons and deltas add).
``max_refusals``
    Refusals are releases too.  Every refusal by a rule that depends on the data is
    counted per researcher and dataset; at the owner's limit the node refuses
    every further study of that researcher on that dataset.
``max_studies_per_day``
    New studies per researcher and dataset in any 24 hours.

What this does not cover (documented in ``docs/security.md``): differencing over
three or more releases whose cohorts pairwise differ by ``min_cohort_size`` or
more, and queries that differ in content but combine linearly.  Differential
privacy (:mod:`consortia.privacy.dp`) is the defence with a guarantee against
arbitrary combinations; these rules stop the cheap attacks on exact statistics.
"""

from __future__ import annotations

import abc
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.errors import PolicyError

__all__ = [
    "DATA_DEPENDENT_RULES",
    "DisclosureControl",
    "MemoryReleaseLedger",
    "ReleaseLedger",
    "ReleaseRecord",
    "cohort_identities",
    "content_digest",
    "query_digest",
]

DATA_DEPENDENT_RULES = frozenset(
    {
        "min_cohort_size",
        "min_cell_count",
        "min_samples_per_round",
        "cohort_difference",
        "max_params_per_sample",
        "planned_grid",
    }
)
"""Rules whose outcome depends on the data: a refusal by one of them does not name
the site (the researcher learns the rule only) and counts against ``max_refusals``."""

_DAY = 86_400.0


def query_digest(algorithm: Mapping[str, object], dataset: str) -> str:
    """SHA-256 of the canonical JSON of an algorithm specification and a dataset name."""
    body = json.dumps({"a": algorithm, "d": dataset}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a contribution's exact arrays (names, shapes and float64 bytes)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name], dtype=np.float64)
        h.update(name.encode() + b"\x00" + repr(arr.shape).encode() + b"\x00")
        # the array's own bytes (C order, as tobytes() gives them), without a copy
        h.update(arr.reshape(-1).data.cast("B"))
    return h.hexdigest()


def cohort_identities(frame: pd.DataFrame, id_column: str | None) -> np.ndarray:
    """One 64-bit identity per row: the hashed patient id, or the row position.

    Kept only at the node.  Without a declared id column, the row position is the
    identity (stable while the file does not change).
    """
    if id_column is not None and id_column in frame.columns:
        return pd.util.hash_pandas_object(frame[id_column], index=False).to_numpy(np.uint64)
    return np.arange(len(frame), dtype=np.uint64)


@dataclass(frozen=True)
class ReleaseRecord:
    """What a node remembers of one release (kept at the node only)."""

    dataset: str
    study_id: str
    researcher: str
    query: str
    content: str
    participants: frozenset[str]
    cohort: str
    time: float
    round_index: int = 0
    attempt: int = 0


class ReleaseLedger(abc.ABC):
    """Where a node remembers releases, cohorts, privacy spend and refusals."""

    @abc.abstractmethod
    def conflicting(
        self, dataset: str, keys: tuple[str, ...], study_id: str, participants: frozenset[str]
    ) -> bool:
        """Whether another study *revealed* one of ``keys`` with other participants."""

    @abc.abstractmethod
    def mark_revealed(
        self, dataset: str, keys: tuple[str, ...], study_id: str, participants: frozenset[str]
    ) -> None:
        """Remember that ``keys`` were revealed (summed) over ``participants`` in a study."""

    @abc.abstractmethod
    def pending(self, study_id: str, round_index: int, attempt: int) -> list[ReleaseRecord]:
        """The releases this node made for one attempt (to judge at its reveal)."""

    @abc.abstractmethod
    def cohorts(self, dataset: str) -> list[tuple[str, np.ndarray]]:
        """The distinct cohorts released from ``dataset``: (digest, sorted identities)."""

    @abc.abstractmethod
    def add_cohort(self, dataset: str, digest: str, ids: np.ndarray) -> None:
        """Remember a cohort (idempotent)."""

    @abc.abstractmethod
    def record(self, release: ReleaseRecord) -> None:
        """Remember one release."""

    @abc.abstractmethod
    def grid(self, dataset: str, cohort: str, column: str) -> np.ndarray | None:
        """The reference grid of ``column`` on a cohort, if one was released."""

    @abc.abstractmethod
    def set_grid(self, dataset: str, cohort: str, column: str, grid: np.ndarray) -> None:
        """Remember the reference grid of ``column`` on a cohort (first one wins)."""

    @abc.abstractmethod
    def studies_since(self, researcher: str, dataset: str, since: float) -> set[str]:
        """The studies of ``researcher`` on ``dataset`` that released since ``since``."""

    @abc.abstractmethod
    def spent(self, researcher: str, dataset: str) -> tuple[float, float]:
        """The (epsilon, delta) charged to ``researcher`` on ``dataset``."""

    @abc.abstractmethod
    def charged(self, study_id: str, dataset: str) -> bool:
        """Whether the study was already charged on ``dataset``."""

    @abc.abstractmethod
    def charge(
        self, study_id: str, researcher: str, dataset: str, epsilon: float, delta: float
    ) -> None:
        """Charge a study's privacy cost (once per study and dataset)."""

    @abc.abstractmethod
    def refusals(self, researcher: str, dataset: str) -> int:
        """How many data-dependent refusals ``researcher`` received on ``dataset``."""

    @abc.abstractmethod
    def add_refusal(self, researcher: str, dataset: str, study_id: str, rule: str) -> None:
        """Count one data-dependent refusal."""


class MemoryReleaseLedger(ReleaseLedger):
    """An in-memory :class:`ReleaseLedger` (simulation and tests)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], dict[str, frozenset[str]]] = {}
        self._cohorts: dict[str, dict[str, np.ndarray]] = {}
        self._releases: list[ReleaseRecord] = []
        self._charges: dict[tuple[str, str], tuple[str, float, float]] = {}
        self._refusals: dict[tuple[str, str], int] = {}
        self._grids: dict[tuple[str, str, str], np.ndarray] = {}

    def grid(self, dataset, cohort, column):
        return self._grids.get((dataset, cohort, column))

    def set_grid(self, dataset, cohort, column, grid):
        self._grids.setdefault((dataset, cohort, column), np.asarray(grid, dtype=np.float64))

    def conflicting(self, dataset, keys, study_id, participants):
        for key in keys:
            for study, parts in self._keys.get((dataset, key), {}).items():
                if study != study_id and parts != participants:
                    return True
        return False

    def cohorts(self, dataset):
        return list(self._cohorts.get(dataset, {}).items())

    def add_cohort(self, dataset, digest, ids):
        self._cohorts.setdefault(dataset, {}).setdefault(digest, ids)

    def record(self, release):
        self._releases.append(release)

    def mark_revealed(self, dataset, keys, study_id, participants):
        for key in keys:
            self._keys.setdefault((dataset, key), {}).setdefault(study_id, participants)

    def pending(self, study_id, round_index, attempt):
        return [
            r
            for r in self._releases
            if (r.study_id, r.round_index, r.attempt) == (study_id, round_index, attempt)
        ]

    def studies_since(self, researcher, dataset, since):
        return {
            r.study_id
            for r in self._releases
            if r.researcher == researcher and r.dataset == dataset and r.time >= since
        }

    def spent(self, researcher, dataset):
        mine = [
            (e, x) for (_, d), (r, e, x) in self._charges.items() if (r, d) == (researcher, dataset)
        ]
        return float(sum(e for e, _ in mine)), float(sum(x for _, x in mine))

    def charged(self, study_id, dataset):
        return (study_id, dataset) in self._charges

    def charge(self, study_id, researcher, dataset, epsilon, delta):
        self._charges.setdefault((study_id, dataset), (researcher, float(epsilon), float(delta)))

    def refusals(self, researcher, dataset):
        return self._refusals.get((researcher, dataset), 0)

    def add_refusal(self, researcher, dataset, study_id, rule):
        key = (researcher, dataset)
        self._refusals[key] = self._refusals.get(key, 0) + 1


def _describe_grid(grid: np.ndarray, limit: int = 60) -> str:
    """The reference grid for a refusal message: it was released, so it is public."""
    pts = [f"{x:g}" for x in np.asarray(grid, dtype=np.float64)]
    if len(pts) <= limit:
        return "[" + ", ".join(pts) + "]"
    return f"{len(pts)} points from {pts[0]} to {pts[-1]}"


def _symmetric_difference(a: np.ndarray, b: np.ndarray) -> int:
    common = np.intersect1d(a, b, assume_unique=True).size
    return int(a.size + b.size - 2 * common)


class DisclosureControl:
    """The node's memory rules (see the module docstring), over a :class:`ReleaseLedger`.

    Parameters
    ----------
    ledger
        Where releases are remembered.
    clock
        Seconds since the epoch (tests may pass their own).
    """

    def __init__(self, ledger: ReleaseLedger | None = None, *, clock=time.time) -> None:
        self.ledger = ledger if ledger is not None else MemoryReleaseLedger()
        self.clock = clock
        self._known_cohorts: dict[tuple[str, str], bool] = {}
        self._admitted: set[tuple[str, str, str]] = set()  # (dataset, study, researcher)
        self._charged: set[tuple[str, str]] = set()  # (study, dataset) known to be charged
        # the releases of the attempts awaiting their reveal (the ledger has them too,
        # for a node that restarts in between): no read on the way to every reveal
        self._awaiting: dict[tuple[str, int, int], list[ReleaseRecord]] = {}

    def before_compute(
        self,
        *,
        policy,
        dataset: str,
        study_id: str,
        researcher: str,
        cost: tuple[float, float],
        again: bool = False,
    ) -> None:
        """Rules that need no computation: refusal limit, study rate, privacy budget.

        Judged when a study first reaches this dataset; its later rounds pass (a study
        is charged once, when its first release leaves).  ``again=True`` judges them
        even for a study already admitted (a node that computed several tasks at once
        judges them again, against what the others released meanwhile, before its release).
        """
        admitted = (dataset, study_id, researcher)
        if admitted in self._admitted and not again:
            return
        if self.ledger.refusals(researcher, dataset) >= policy.max_refusals:
            raise PolicyError(
                "max_refusals",
                f"this researcher reached the limit of {policy.max_refusals} refusals "
                "on this dataset; ask the data owner",
            )
        recent = self.ledger.studies_since(researcher, dataset, self.clock() - _DAY)
        if study_id not in recent and len(recent) >= policy.max_studies_per_day:
            raise PolicyError(
                "max_studies_per_day",
                f"at most {policy.max_studies_per_day} studies per researcher and dataset "
                "in any 24 hours",
            )
        eps, dlt = (float(c) for c in cost)
        if (eps > 0 or dlt > 0) and not self.ledger.charged(study_id, dataset):
            spent_eps, spent_dlt = self.ledger.spent(researcher, dataset)
            if spent_eps + eps > policy.epsilon_budget + 1e-12 or (
                spent_dlt + dlt > policy.delta_budget + 1e-18
            ):
                raise PolicyError(
                    "privacy_budget",
                    f"the study's privacy cost (epsilon {eps:g}, delta {dlt:g}) exceeds what "
                    f"remains of this researcher's budget on this dataset (caps: epsilon "
                    f"{policy.epsilon_budget:g}, delta {policy.delta_budget:g})",
                )
        if len(self._admitted) > 4096:
            self._admitted.clear()
        self._admitted.add(admitted)

    def admitted(self, dataset: str, study_id: str, researcher: str) -> bool:
        """Whether the study already passed :meth:`before_compute` on ``dataset``."""
        return (dataset, study_id, researcher) in self._admitted

    def check_release(
        self,
        *,
        policy,
        dataset: str,
        cohort: np.ndarray,
        bins: Mapping[str, np.ndarray] | None = None,
    ) -> str:
        """Cohort and grid differencing; returns the cohort's digest.

        Participant differencing is judged at the reveal (:meth:`before_reveal`), when
        the set of sites whose vectors are summed is final.
        """
        ids = np.unique(np.asarray(cohort, dtype=np.uint64))
        digest = hashlib.sha256(ids.tobytes()).hexdigest()
        if (dataset, digest) not in self._known_cohorts:
            for other_digest, other in self.ledger.cohorts(dataset):
                if other_digest == digest:
                    continue
                d = _symmetric_difference(ids, other)
                if 0 < d < policy.min_cohort_size:
                    raise PolicyError(
                        "cohort_difference",
                        "the cohort differs from a cohort released earlier by fewer than "
                        f"{policy.min_cohort_size} patients",
                    )
            self.ledger.add_cohort(dataset, digest, ids)
            self._known_cohorts[(dataset, digest)] = True
        for column, grid in (bins or {}).items():
            ref = self.ledger.grid(dataset, digest, column)
            if ref is not None and not np.isin(np.asarray(grid, dtype=np.float64), ref).all():
                raise PolicyError(
                    "grid_differencing",
                    f"exact counts on {column!r} were already released on this cohort over "
                    f"another grid ({_describe_grid(ref)}); use a subset of that grid (a "
                    "coarsening; a planned study passes it as plan_cells) or a noisy release",
                )
        return digest

    def released(
        self,
        *,
        dataset: str,
        study_id: str,
        researcher: str,
        query: str,
        content: str,
        participants: frozenset[str],
        cohort: str,
        cost: tuple[float, float],
        bins: Mapping[str, np.ndarray] | None = None,
        round_index: int = 0,
        attempt: int = 0,
    ) -> None:
        """Remember a release that passed every rule (and charge its study once)."""
        for column, grid in (bins or {}).items():
            self.ledger.set_grid(dataset, cohort, column, np.asarray(grid, dtype=np.float64))
        eps, dlt = (float(c) for c in cost)
        if (eps > 0 or dlt > 0) and (study_id, dataset) not in self._charged:
            if not self.ledger.charged(study_id, dataset):
                self.ledger.charge(study_id, researcher, dataset, eps, dlt)
            self._charged.add((study_id, dataset))
        record = ReleaseRecord(
            dataset=dataset,
            study_id=study_id,
            researcher=researcher,
            query=query,
            content=content,
            participants=participants,
            cohort=cohort,
            time=self.clock(),
            round_index=round_index,
            attempt=attempt,
        )
        self.ledger.record(record)
        key = (study_id, round_index, attempt)
        if len(self._awaiting) > 1024:
            self._awaiting.clear()  # a bound: the ledger answers for the rest
        self._awaiting.setdefault(key, []).append(record)

    def before_reveal(self, study_id: str, round_index: int, attempt: int) -> None:
        """Judge participant differencing when the attempt's sum becomes computable."""
        records = self._awaiting.pop((study_id, round_index, attempt), None)
        if records is None:
            records = self.ledger.pending(study_id, round_index, attempt)
        for r in records:
            keys = (r.query, r.content)
            if self.ledger.conflicting(r.dataset, keys, study_id, r.participants):
                raise PolicyError(
                    "repeated_query",
                    "this query (or a release with identical content) was already answered "
                    "over another set of sites; ask it over the same sites",
                )
        for r in records:
            self.ledger.mark_revealed(r.dataset, (r.query, r.content), study_id, r.participants)

    def refused(self, *, rule: str, dataset: str, study_id: str, researcher: str) -> None:
        """Count a refusal by a data-dependent rule against the researcher."""
        if rule in DATA_DEPENDENT_RULES:
            self.ledger.add_refusal(researcher, dataset, study_id, rule)

    def remaining(self, policy, researcher: str, dataset: str) -> dict[str, float]:
        """The researcher's remaining budget and refusals on ``dataset``."""
        eps, dlt = self.ledger.spent(researcher, dataset)
        return {
            "epsilon_spent": eps,
            "delta_spent": dlt,
            "epsilon_remaining": max(policy.epsilon_budget - eps, 0.0),
            "delta_remaining": max(policy.delta_budget - dlt, 0.0),
            "refusals": float(self.ledger.refusals(researcher, dataset)),
            "refusals_remaining": float(
                max(policy.max_refusals - self.ledger.refusals(researcher, dataset), 0)
            ),
        }
