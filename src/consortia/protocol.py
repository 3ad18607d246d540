"""The algorithm protocol: what every federated algorithm implements.

An algorithm has two pure sides built from the same parameters:

* :meth:`Algorithm.coordinate` (hub side) is a deterministic generator.  It
  yields :class:`Round` objects (a step name and public arrays broadcast to the
  sites) and receives, for each, the element-wise *sums* over sites of the sites'
  contributions.  It finally returns a result object.
* :meth:`Algorithm.local` (site side) computes one site's
  :class:`Contribution` for a step from the public arrays and the site's private
  data.

Because ``coordinate`` depends only on the sums it received, a runtime can
persist each round's sums and rebuild the generator's state after a crash by
replaying them (:meth:`Coordinator.replay`).

Algorithms never perform I/O and never import the runtime; they know only this
module, numpy/scipy and their own maths.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from consortia.errors import (
    AlgorithmError,
    ProtocolError,
    ValidationError,
)
from consortia.registry import get_algorithm, register, registered_algorithms

if TYPE_CHECKING:
    from consortia.data.dataset import Dataset

__all__ = [
    "Algorithm",
    "Contribution",
    "Coordinator",
    "Requirements",
    "Round",
    "Sums",
    "TrainingPlan",
    "algorithm_from_spec",
    "get_algorithm",
    "register",
    "registered_algorithms",
]

Sums = Mapping[str, np.ndarray]
"""The element-wise sums over sites of the sites' contributions, by array name."""

MAX_ROUNDS = 10_000
"""A hard bound on the number of rounds one study may take."""


def _owned(value: Any) -> bool:
    """Whether ``value`` is a float64 array that may be taken over instead of copied.

    Only an array that owns its memory (not a view of another array, a data frame
    or a buffer), native-endian, C-contiguous and aligned.
    """
    return (
        type(value) is np.ndarray
        and value.dtype == np.float64
        and value.dtype.isnative
        and value.flags.owndata
        and value.flags.c_contiguous
        and value.flags.aligned
    )


def _as_float_array(name: str, value: Any, *, what: str, take: bool = False) -> np.ndarray:
    """A read-only float64 array of ``value``, checked finite.

    A copy, unless ``take`` and ``value`` is a float64 array owning its memory
    (:func:`_owned`): that array itself is made read-only and returned (no
    payload-sized copy).  Writing to it afterwards raises instead of silently
    changing what was checked.
    """
    if take and _owned(value):
        if not np.all(np.isfinite(value)):
            raise ValidationError(f"{what} array {name!r} contains NaN or infinite values")
        value.setflags(write=False)
        return value
    try:
        arr = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} array {name!r} is not numeric") from exc
    if not np.all(np.isfinite(arr)):
        raise ValidationError(f"{what} array {name!r} contains NaN or infinite values")
    arr.setflags(write=False)
    return arr


def _check_name(name: Any, *, what: str) -> str:
    if not isinstance(name, str) or not name or not name.replace("_", "a").isalnum():
        raise ValidationError(
            f"{what} array name {name!r} must be a non-empty identifier "
            "(letters, digits, underscore)"
        )
    return name


@dataclass(frozen=True)
class Round:
    """One round decided by the hub side: a step name and public arrays.

    Parameters
    ----------
    step
        The name of the site-side computation to run (passed to
        :meth:`Algorithm.local`).
    public
        Arrays broadcast to every site (for example the current coefficients).
        They are public: every participant and the hub sees them.
    timeout
        The most seconds a site may spend on this step's local work, provided it
        keeps showing that it is alive (a node sends heartbeats while it computes);
        ``None`` leaves the runtime's default.  A step that trains a model for
        minutes says so here, so that a site that is alive and computing is never
        excluded for being slow.
    """

    step: str
    public: Mapping[str, Any] = field(default_factory=dict)  # array-likes; stored as arrays
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.step, str) or not self.step:
            raise ValidationError("Round.step must be a non-empty string")
        if self.timeout is not None:
            t = self.timeout
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
                raise ValidationError("Round.timeout must be a positive number of seconds or None")
            object.__setattr__(self, "timeout", float(t))
        public = {
            _check_name(k, what="public"): _as_float_array(k, v, what="public")
            for k, v in dict(self.public).items()
        }
        object.__setattr__(self, "public", MappingProxyType(public))


@dataclass(frozen=True)
class Contribution:
    """One site's contribution to a round: named float arrays to be summed.

    Parameters
    ----------
    arrays
        Named numeric arrays.  The runtime sums each array element-wise over the
        participating sites (securely: no party sees one site's array).  They are
        kept as read-only float64 arrays.  A float64 array that owns its memory (a
        fresh result, not a view of a data frame or of another array) is taken
        over rather than copied: it is made read-only in place, so writing to it
        afterwards raises ``ValueError``.  Views of it made *before* (which stay
        writable) must not be written to; pass ``arr.copy()`` to keep a writable
        array.  Anything else (other dtypes, views, lists) is copied.
    cohort
        The number of patients this contribution was computed from; checked
        against the node's minimum cohort size.  Never released.
    count_arrays
        Names of arrays holding counts of patients; every non-zero entry must
        reach the node's minimum cell count.
    n_parameters
        The number of model parameters this contribution helps estimate (0 for a
        descriptive statistic); checked against the node's maximum
        parameters-per-sample ratio.
    rows
        Which rows of ``data.frame`` the contribution was computed from: integer
        positions or a boolean mask.  ``None`` means every row.  The node records
        the cohort (as row identities kept at the node) and refuses a release
        whose cohort differs from an earlier one by a few patients.
    noise
        Array name -> standard deviation of the Gaussian noise that the *sum* of
        this array must carry (differential privacy).  The runtime, not the
        algorithm, adds each site's share of discrete Gaussian noise before the
        secure sum; such arrays must hold integers.  Their cells are protected by
        the noise and exempt from the per-site small-cell rule.
    planned
        Count arrays whose cells in the released *sum* the algorithm itself
        guarantees to hold at least the node's minimum count (for example a time
        grid planned from a differentially private count and verified in
        ``local()``); exempt from the per-site small-cell rule.
    planned_min
        The smallest non-zero cell that the plan guarantees in the released sum of
        the ``planned`` arrays; the node refuses a plan that promises less than its
        ``min_cell_count``.
    bins
        Column name -> the public bin edges (or time-grid points) on which exact
        count arrays of this contribution are binned.  The node keeps, per cohort
        and column, the first grid it released on and refuses later exact
        releases on a grid that is not a subset of it (two overlapping grids
        difference into cells nobody judged).  Noisy releases are exempt.
    per_site
        True when the arrays put this site's values in a slot of their own (so
        the "sum" reveals them): refused unless the node's policy allows
        per-site releases.
    """

    arrays: Mapping[str, Any]  # array-likes in; read-only float64 arrays once built
    cohort: int
    count_arrays: frozenset[str] = frozenset()
    n_parameters: int = 0
    rows: Any = None
    noise: Mapping[str, float] = field(default_factory=dict)
    planned: frozenset[str] = frozenset()
    planned_min: int = 0
    bins: Mapping[str, Any] = field(default_factory=dict)
    per_site: bool = False

    def __post_init__(self) -> None:
        if not self.arrays:
            raise ValidationError("a Contribution needs at least one array")
        arrays = {
            _check_name(k, what="contribution"): _as_float_array(
                k, v, what="contribution", take=True
            )
            for k, v in dict(self.arrays).items()
        }
        object.__setattr__(self, "arrays", MappingProxyType(arrays))
        if int(self.cohort) != self.cohort or self.cohort < 0:
            raise ValidationError("Contribution.cohort must be a non-negative integer")
        object.__setattr__(self, "cohort", int(self.cohort))
        counts = frozenset(self.count_arrays)
        unknown = counts - set(arrays)
        if unknown:
            raise ValidationError(
                f"count_arrays names arrays that are not in the contribution: {sorted(unknown)}"
            )
        object.__setattr__(self, "count_arrays", counts)
        if int(self.n_parameters) != self.n_parameters or self.n_parameters < 0:
            raise ValidationError("Contribution.n_parameters must be a non-negative integer")
        if self.rows is not None:
            rows = np.asarray(self.rows)
            if rows.ndim != 1 or not (rows.dtype == bool or rows.dtype.kind in "iu"):
                raise ValidationError(
                    "Contribution.rows must be a 1-D array of row positions or a boolean mask"
                )
            object.__setattr__(self, "rows", rows)
        noise = {}
        for k, v in dict(self.noise).items():
            if k not in arrays:
                raise ValidationError(f"noise names array {k!r} that is not in the contribution")
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not np.isfinite(v)
                or v < 0
            ):
                raise ValidationError(f"noise for array {k!r} must be a finite std >= 0")
            if not np.array_equal(arrays[k], np.rint(arrays[k])):
                raise ValidationError(f"noisy array {k!r} must hold integers")
            noise[k] = float(v)
        object.__setattr__(self, "noise", MappingProxyType(noise))
        planned = frozenset(self.planned)
        if not planned <= counts:
            raise ValidationError("planned must name count arrays of the contribution")
        object.__setattr__(self, "planned", planned)
        if isinstance(self.planned_min, bool) or int(self.planned_min) != self.planned_min:
            raise ValidationError("Contribution.planned_min must be an integer")
        if planned and self.planned_min < 1:
            raise ValidationError("planned count arrays need planned_min >= 1")
        object.__setattr__(self, "per_site", bool(self.per_site))
        bins = {}
        for col, edges in dict(self.bins).items():
            if not isinstance(col, str) or not col:
                raise ValidationError("Contribution.bins maps column names to bin edges")
            bins[col] = _as_float_array(col, edges, what="bins").ravel()
        object.__setattr__(self, "bins", MappingProxyType(bins))


@dataclass(frozen=True)
class TrainingPlan:
    """What a model-training study declares of its rounds, judged by the node's training rules.

    Parameters
    ----------
    rounds
        Most training rounds the study may run.
    batch_rows
        Rows each local gradient step averages over; ``None``: the site's whole
        training split (bounded by the dataset's rows).
    sample_rate
        Poisson sampling rate of the batches (differentially private training);
        ``None``: not sampled.  The expected batch is ``sample_rate`` times the rows.
    clip_norm
        The L2 bound of what one site (or, with ``dp``, one record) contributes to an
        update; ``None``: not clipped.
    dp
        Whether the updates carry calibrated differential-privacy noise.
    """

    rounds: int
    batch_rows: int | None = None
    sample_rate: float | None = None
    clip_norm: float | None = None
    dp: bool = False

    def __post_init__(self) -> None:
        r = self.rounds
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValidationError("TrainingPlan.rounds must be a positive integer")
        b = self.batch_rows
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1):
            raise ValidationError("TrainingPlan.batch_rows must be a positive integer or None")
        q = self.sample_rate
        if q is not None and not 0 < q <= 1:
            raise ValidationError("TrainingPlan.sample_rate must be in (0, 1] or None")
        c = self.clip_norm
        if c is not None and not 0 < c < float("inf"):
            raise ValidationError("TrainingPlan.clip_norm must be a positive number or None")


@dataclass(frozen=True)
class Requirements:
    """What one step of an algorithm declares before it runs (see :meth:`Algorithm.requirements`).

    Parameters
    ----------
    n_parameters
        The number of model parameters the study fits (0: not a model).  The
        node refuses the step, before :meth:`Algorithm.local` runs, when this
        exceeds its parameters-per-sample ratio times the dataset's row count.
    columns
        The columns of ``data.frame`` the step reads; the node refuses the step
        when one is missing, before :meth:`Algorithm.local` runs.
    training
        A model-training step's :class:`TrainingPlan`, judged by the node's training
        rules (rounds, samples per step, clipping, DP) before it runs; ``None``: not
        a training step.
    """

    n_parameters: int = 0
    columns: tuple[str, ...] = ()
    training: TrainingPlan | None = None

    def __post_init__(self) -> None:
        n = self.n_parameters
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValidationError("Requirements.n_parameters must be a non-negative integer")
        object.__setattr__(self, "n_parameters", int(n))
        cols = (self.columns,) if isinstance(self.columns, str) else tuple(self.columns)
        if not all(isinstance(c, str) and c for c in cols):
            raise ValidationError("Requirements.columns must be a tuple of column names")
        object.__setattr__(self, "columns", cols)
        if self.training is not None and not isinstance(self.training, TrainingPlan):
            raise ValidationError("Requirements.training must be a TrainingPlan or None")


Coordination = Generator[Round, Sums, Any]


class Algorithm(abc.ABC):
    """Base class of federated algorithms.

    Subclasses are frozen dataclasses with keyword-only, JSON-serialisable
    parameters (str, int, float, bool, None, and tuples/lists of these), a
    unique class attribute ``name``, and are registered with :func:`register`.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def coordinate(self) -> Coordination:
        """Hub side: yield rounds, receive their sums, return the result."""

    @abc.abstractmethod
    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        """Site side: compute this site's contribution to ``step``."""

    def requirements(self, step: str) -> Requirements | None:
        """What ``step`` needs, known from the parameters alone; ``None`` (default): not declared.

        A site checks the declaration *before* :meth:`local` runs, so that a
        step its policy must refuse never allocates anything: the declared
        ``n_parameters`` against the parameters-per-sample rule and the dataset's
        row count against the minimum cohort size (the rows bound every cohort
        a step can use, so such a refusal is certain), and the declared columns
        against the dataset's.  The checks on the contribution itself still run
        after :meth:`local`.

        An algorithm that declares must not declare more parameters than the
        model it fits has, nor compute a contribution whose ``cohort`` exceeds
        the dataset's rows.  Pure and cheap: it is called at every round.
        """
        return None

    def privacy_cost(self) -> tuple[float, float]:
        """The ``(epsilon, delta)`` the whole study spends at each site's dataset.

        ``(0.0, 0.0)`` for an exact algorithm (the default).  An algorithm that
        declares noise in its contributions overrides this; the node charges it to
        the researcher's budget *before* the study's first round runs, and the
        noise it declares must match (see :mod:`consortia.privacy.dp`).
        """
        return (0.0, 0.0)

    def spec(self) -> dict[str, Any]:
        """Return the JSON-serialisable description ``{"name", "params"}`` of this algorithm."""
        if not dataclasses.is_dataclass(self):
            raise AlgorithmError(f"algorithm {type(self).__name__} must be a dataclass")
        params = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"name": self.name, "params": params}


def _jsonable(value: Any) -> Any:
    to_params = getattr(value, "to_params", None)
    if callable(to_params):  # a compact form (a regular grid in three numbers...)
        return _jsonable(to_params())
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise AlgorithmError(f"algorithm parameter of type {type(value).__name__} is not serialisable")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- registry
# The registry lives in consortia.registry (entry points ``consortia.algorithms``);
# its functions are re-exported here, where algorithms have always found them.


def algorithm_from_spec(spec: Mapping[str, Any]) -> Algorithm:
    """Rebuild an algorithm from :meth:`Algorithm.spec` output."""
    try:
        name, params = spec["name"], spec.get("params", {})
    except (KeyError, TypeError, AttributeError):
        raise ValidationError("an algorithm spec needs 'name' and 'params'") from None
    cls = get_algorithm(name)
    try:
        return cls(**{k: _from_json(v) for k, v in dict(params).items()})
    except TypeError as exc:
        raise ValidationError(f"bad parameters for algorithm {name!r}: {exc}") from None


# --------------------------------------------------------------------------- coordinator


class Coordinator:
    """Drives an algorithm's hub side one round at a time.

    ``current`` is the round awaiting sums, or ``None`` once ``done``; then
    ``result`` holds the algorithm's result.  The coordinator records the sums it
    was given (``history``); :meth:`replay` rebuilds the same state from them.

    Parameters
    ----------
    algorithm
        The algorithm whose :meth:`~Algorithm.coordinate` is driven.
    max_rounds
        A hard bound on the number of rounds; exceeding it raises
        :class:`~consortia.errors.ProtocolError`.
    keep_history
        Keep every round's sums in ``history`` (default).  A runtime that persists
        the sums elsewhere passes False so memory stays flat on long studies.
    """

    def __init__(
        self, algorithm: Algorithm, *, max_rounds: int = MAX_ROUNDS, keep_history: bool = True
    ) -> None:
        self.algorithm = algorithm
        self.max_rounds = max_rounds
        self.keep_history = keep_history
        self.history: list[dict[str, np.ndarray]] = []
        self._rounds = 0
        self.current: Round | None = None
        self.result: Any = None
        self.done = False
        self._gen = algorithm.coordinate()
        self._resume(lambda: next(self._gen))

    @property
    def round_index(self) -> int:
        """Index of the current round (the number of rounds already summed)."""
        return self._rounds

    def _resume(self, step: Any) -> None:
        try:
            rnd = step()
        except StopIteration as stop:
            self.current, self.result, self.done = None, stop.value, True
            return
        if not isinstance(rnd, Round):
            raise ProtocolError(
                f"{type(self.algorithm).__name__}.coordinate() yielded "
                f"{type(rnd).__name__}, expected a Round"
            )
        if self._rounds >= self.max_rounds:
            raise ProtocolError(f"study exceeded the bound of {self.max_rounds} rounds")
        self.current = rnd

    def advance(self, sums: Sums) -> Round | None:
        """Give the sums of the current round; return the next round (or ``None``)."""
        if self.done:
            raise ProtocolError("the study is already finished")
        # read-only views, not copies (a round's sums can be the size of a model): the
        # runtime hands over arrays it no longer writes to
        frozen = {k: np.asarray(v, dtype=np.float64).view() for k, v in sums.items()}
        for v in frozen.values():
            v.setflags(write=False)
        if self.keep_history:
            self.history.append(frozen)
        self._rounds += 1
        self._resume(lambda: self._gen.send(MappingProxyType(frozen)))
        return self.current

    @classmethod
    def replay(cls, algorithm: Algorithm, history: Iterable[Sums], **kwargs: Any) -> Coordinator:
        """Rebuild a coordinator by feeding it previously recorded sums."""
        coord = cls(algorithm, **kwargs)
        for sums in history:
            coord.advance(sums)
        return coord
