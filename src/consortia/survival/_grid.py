"""Public time grids for pooled survival statistics.

A pooled Kaplan-Meier curve, a log-rank test or an unstratified Cox model need
event and at-risk counts *per time* across sites.  Sites never release their
event times: the study declares a **public time grid** (an algorithm
parameter: integer days, weeks, or any strictly increasing non-negative times)
and every site maps each patient's time to a grid point and releases only sums
of counts per grid point.

Mapping rule (used by every survival algorithm of consortia)
-----------------------------------------------------------
A time ``t`` is mapped to the *smallest grid point ``g >= t``* (times are
**rounded up** to the grid).  An event at ``t`` is therefore counted at ``g``,
and a patient is at risk at every grid point ``<= g``.  Statistics computed on
the grid equal the pooled statistics of the data with times rounded up to the
grid; when every time already lies on the grid (for example integer days on a
day grid) they equal the pooled statistics of the raw data exactly.

Administrative censoring at the grid's end
------------------------------------------
A time beyond the last grid point is **administratively censored at the last
grid point**: the patient counts as at risk up to and including the last grid
point, and an event beyond it becomes a censoring there (use
:func:`grid_map`, which maps times *and* event indicators).  Such times are
never refused: a refusal would let anyone learn a patient's follow-up by
binary search with one-point grids (each refusal answering "some time lies
beyond ``g``").  A pooled reference applies the same rule
(:func:`administrative_censoring`).

Regular grids in three numbers
------------------------------
Wherever a grid is a parameter (``time_grid``), a regular one may be given as
``{"start": 0, "stop": 3650, "step": 1}`` (or :class:`Grid`): the study's
parameters, what the hub stores and audits and what every task carries stay three
numbers, and every site expands them identically.  ``Grid(start, stop, step)`` is
``start, start + step, ...`` up to ``stop`` **inclusive**: the points of
``numpy.arange`` (same values, bit for bit) with ``n = floor((stop - start) / step
+ 1e-9) + 1`` points, a ``stop`` within a billionth of a step of a grid point
counting as on the grid.  It equals the explicit grid of those points.

Helpers
-------
:func:`validate_grid` checks a grid, :func:`grid_param` reads a grid parameter
(explicit or regular), :func:`grid_index` maps times to grid
indices, :func:`grid_map` maps times and events (administrative censoring),
:func:`round_up_to_grid` gives the mapped times (for pooled references),
:func:`grid_counts` builds the per-grid-point event and at-risk counts a site
releases, and :func:`day_grid`, :func:`regular_grid` and
:func:`quantile_grid` build grids (the last one from *public* values only, such
as a published reference cohort: never from a site's private times).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from consortia.errors import SchemaError, ValidationError

__all__ = [
    "Grid",
    "administrative_censoring",
    "binned_on",
    "day_grid",
    "grid_counts",
    "grid_index",
    "grid_map",
    "grid_param",
    "quantile_grid",
    "regular_grid",
    "round_up_to_grid",
    "validate_grid",
]

MAX_GRID_POINTS = 1_000_000
"""The largest grid accepted (a grid is broadcast and every site releases arrays of its size)."""


def validate_grid(grid: Sequence[float] | np.ndarray, *, name: str = "time_grid") -> np.ndarray:
    """Check a public time grid and return it as a read-only float array.

    Parameters
    ----------
    grid
        Grid points: a non-empty, one-dimensional sequence of finite,
        non-negative, strictly increasing numbers.
    name
        The parameter name used in error messages.

    Returns
    -------
    numpy.ndarray
        The grid as float64 (read-only).

    Raises
    ------
    ValidationError
        If the grid is empty, not one-dimensional, not numeric, holds a NaN,
        infinite or negative point, is not strictly increasing, or has more
        than :data:`MAX_GRID_POINTS` points.
    """
    if isinstance(grid, (str, bytes)):
        raise ValidationError(f"{name} must be a sequence of numbers")
    try:
        arr = np.array(grid, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a sequence of numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValidationError(f"{name} must be a non-empty one-dimensional sequence of times")
    if arr.size > MAX_GRID_POINTS:
        raise ValidationError(f"{name} has more than {MAX_GRID_POINTS} points; coarsen it")
    if not np.all(np.isfinite(arr)):
        raise ValidationError(f"{name} must hold finite numbers (no NaN or infinity)")
    if np.any(arr < 0):
        raise ValidationError(f"{name} must hold non-negative times")
    if np.any(np.diff(arr) <= 0):
        raise ValidationError(f"{name} must be strictly increasing")
    arr.setflags(write=False)
    return arr


class Grid(tuple[float, ...]):
    """A regular grid ``start, start + step, ...`` up to ``stop`` inclusive, in three numbers.

    A :class:`Grid` *is* the tuple of its points (it is accepted, compared and used
    wherever an explicit grid is) but an algorithm's spec writes it as
    ``{"start": ..., "stop": ..., "step": ...}`` (:meth:`to_params`): a 200,001-point
    day grid travels, is stored and is audited as three numbers.

    The points are ``numpy.arange(start, start + (n - 0.5) * step, step)`` with
    ``n = floor((stop - start) / step + 1e-9) + 1``: numpy's values, with ``stop``
    included when it lies on the grid (within a billionth of a step).

    Parameters
    ----------
    start
        The first point (non-negative).
    stop
        The last point at most (inclusive), ``>= start``.
    step
        The spacing, positive.

    Raises
    ------
    ValidationError
        A value that is not a finite number, ``step <= 0``, ``start < 0``,
        ``stop < start``, or more than :data:`MAX_GRID_POINTS` points.

    Examples
    --------
    >>> Grid(0, 3, 1)
    Grid(start=0.0, stop=3.0, step=1.0)
    >>> Grid(0, 3, 1) == (0.0, 1.0, 2.0, 3.0)
    True
    """

    start: float
    stop: float
    step: float

    def __new__(cls, start: float, stop: float, step: float) -> Grid:
        values = {}
        for label, value in (("start", start), ("stop", stop), ("step", step)):
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValidationError(f"a grid's {label} must be a number")
            values[label] = float(value)
            if not math.isfinite(values[label]):
                raise ValidationError(f"a grid's {label} must be a finite number")
        lo, hi, width = values["start"], values["stop"], values["step"]
        if width <= 0:
            raise ValidationError("a grid's step must be positive")
        if lo < 0 or hi < lo:
            raise ValidationError("a grid needs 0 <= start <= stop")
        q = (hi - lo) / width
        if not q < MAX_GRID_POINTS:
            raise ValidationError(f"the grid would have more than {MAX_GRID_POINTS} points")
        n = math.floor(q + 1e-9) + 1
        if n > MAX_GRID_POINTS:
            raise ValidationError(f"the grid would have more than {MAX_GRID_POINTS} points")
        points = np.arange(lo, lo + (n - 0.5) * width, width, dtype=np.float64)
        if points.size != n or np.any(np.diff(points) <= 0):  # a step lost in rounding
            raise ValidationError("a grid's step is too small for its start")
        self = super().__new__(cls, points.tolist())
        self.start, self.stop, self.step = lo, hi, width
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Grid, (self.start, self.stop, self.step))

    def __repr__(self) -> str:
        return f"Grid(start={self.start!r}, stop={self.stop!r}, step={self.step!r})"

    def to_params(self) -> dict[str, float]:
        """The grid's form in an algorithm's spec: ``{"start", "stop", "step"}``."""
        return {"start": self.start, "stop": self.stop, "step": self.step}

    @classmethod
    def from_params(cls, obj: Mapping[str, Any], *, name: str = "time_grid") -> Grid:
        """Inverse of :meth:`to_params` (a ValidationError names ``name`` if malformed)."""
        if set(obj) != {"start", "stop", "step"}:
            raise ValidationError(
                f"{name} as a regular grid is an object with exactly the keys start, stop, step"
            )
        try:
            return cls(obj["start"], obj["stop"], obj["step"])
        except ValidationError as exc:
            raise ValidationError(f"{name}: {exc}") from None


def grid_param(value: Any, *, name: str = "time_grid") -> tuple[float, ...]:
    """Read a grid parameter: an explicit grid, a :class:`Grid` or its ``{start, stop, step}``.

    Returns
    -------
    tuple of float
        The :class:`Grid` itself (a tuple of its points, written back to a spec in
        three numbers) or the explicit grid's points as floats.

    Raises
    ------
    ValidationError
        As :func:`validate_grid` or :class:`Grid`, naming ``name``.
    """
    if isinstance(value, Grid):
        return value
    if isinstance(value, Mapping):
        return Grid.from_params(value, name=name)
    return tuple(float(x) for x in validate_grid(value, name=name))


def grid_index(
    times: Sequence[float] | np.ndarray,
    grid: Sequence[float] | np.ndarray,
    *,
    column: str = "time",
    exact: bool = False,
) -> np.ndarray:
    """Map times to the index of the smallest grid point at or above each time.

    A time beyond the last grid point maps to the last grid point
    (administrative censoring there: the caller must turn an event beyond the
    grid into a censoring, see :func:`grid_map`).  It is never refused.

    Parameters
    ----------
    times
        Non-negative finite times (validate them first, for example with
        :func:`consortia.survival._validate.survival_columns`).
    grid
        A valid grid (see :func:`validate_grid`).
    column
        The name of the time column, used in error messages.
    exact
        If True, every time up to the last grid point must equal a grid point
        (no rounding allowed); times beyond the grid are censored at its end.

    Returns
    -------
    numpy.ndarray
        Integer indices into ``grid`` (``int64``), one per time.

    Raises
    ------
    SchemaError
        If a time is NaN or infinite or (with ``exact``) a time within the grid's
        range is not a grid point.  The message names the column, never a
        patient's time.
    """
    g = np.asarray(grid, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise SchemaError(f"column {column!r} contains missing or infinite times")
    idx = np.searchsorted(g, t, side="left")
    beyond = idx >= g.size
    idx = np.minimum(idx, g.size - 1)
    if exact and np.any((g[idx] != t) & ~beyond):
        raise SchemaError(
            f"column {column!r} has times that are not points of the time grid "
            "(this analysis requires times on the grid; use a finer grid or allow rounding up)"
        )
    return idx.astype(np.int64)


def grid_map(
    times: Sequence[float] | np.ndarray,
    events: Sequence[float] | np.ndarray,
    grid: Sequence[float] | np.ndarray,
    *,
    column: str = "time",
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices and event indicators after administrative censoring at the grid's end.

    Like :func:`grid_index`; in addition an event at a time beyond the last grid
    point becomes a censoring (indicator 0) at the last grid point.

    Returns
    -------
    index, events : numpy.ndarray
        ``int64`` grid indices and ``int64`` event indicators.
    """
    g = np.asarray(grid, dtype=np.float64)
    idx = grid_index(times, g, column=column, exact=exact)
    beyond = np.asarray(times, dtype=np.float64) > g[-1]
    e = np.where(beyond, 0, np.asarray(events)).astype(np.int64)
    return idx, e


def administrative_censoring(
    times: Sequence[float] | np.ndarray,
    events: Sequence[float] | np.ndarray,
    end: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Censor follow-up at ``end``: times above it become ``end`` with no event.

    This is what a grid does to the data (see the module notes); apply it to
    pooled data to build the reference a grid statistic reproduces.
    """
    t = np.asarray(times, dtype=np.float64)
    e = np.asarray(events)
    beyond = t > end
    return np.where(beyond, float(end), t), np.where(beyond, 0, e).astype(np.int64)


def binned_on(column: str, grid: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Keyword arguments of a :class:`~consortia.protocol.Contribution` binned on ``grid``.

    Exact counts on a time grid are tied to it: the node keeps the first grid an
    exact release on a cohort used and refuses a later one on another grid (two
    grids difference into cells nobody judged), through ``Contribution.bins``.
    Returns ``{"bins": {column: grid}}``.
    """
    return {"bins": {column: tuple(float(x) for x in np.asarray(grid, dtype=np.float64))}}


def round_up_to_grid(
    times: Sequence[float] | np.ndarray,
    grid: Sequence[float] | np.ndarray,
    *,
    column: str = "time",
) -> np.ndarray:
    """Return each time replaced by the smallest grid point at or above it.

    This is what a site does to its times before counting; applied to pooled
    data (with events beyond the grid turned into censorings, see
    :func:`administrative_censoring`) it gives the reference that grid
    statistics reproduce exactly.  Times beyond the grid become its last point.
    """
    g = validate_grid(grid)
    return g[grid_index(times, g, column=column)]


def grid_counts(
    index: np.ndarray,
    event: np.ndarray,
    n_grid: int,
    codes: np.ndarray | None = None,
    n_codes: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-grid-point event counts and at-risk counts, optionally per group code.

    Parameters
    ----------
    index
        Grid index of each patient's time (from :func:`grid_index`).
    event
        1 for an event, 0 for censoring, per patient.
    n_grid
        Number of grid points.
    codes
        Optional integer code in ``[0, n_codes)`` per patient (a group or a
        group-by-stratum cell); all patients share code 0 when omitted.
    n_codes
        Number of codes.

    Returns
    -------
    events, at_risk : numpy.ndarray
        Arrays of shape ``(n_codes, n_grid)``: the number of events mapped to
        each grid point, and the number of patients at risk there (patients
        whose mapped time is at or after the grid point).
    """
    index = np.asarray(index, dtype=np.int64)
    event = np.asarray(event, dtype=np.float64)
    codes = np.zeros(index.size, np.int64) if codes is None else np.asarray(codes, np.int64)
    flat = codes * n_grid + index
    size = n_codes * n_grid
    events = np.bincount(flat, weights=event, minlength=size).reshape(n_codes, n_grid)
    exits = np.bincount(flat, minlength=size).astype(np.float64).reshape(n_codes, n_grid)
    at_risk = np.cumsum(exits[:, ::-1], axis=1)[:, ::-1]
    return events, at_risk


def regular_grid(stop: float, width: float, *, start: float = 0.0) -> tuple[float, ...]:
    """A grid of regularly spaced points ``start, start + width, ...`` reaching ``stop``.

    The last point is the first one at or above ``stop``, so times up to
    ``stop`` can be mapped.

    Parameters
    ----------
    stop
        The largest time the grid must cover (public: for example the planned
        maximum follow-up).
    width
        The spacing (for example 1 for days, 30 for months of days).
    start
        The first grid point (default 0).
    """
    for label, value in (("stop", stop), ("width", width), ("start", start)):
        if isinstance(value, bool) or not np.isfinite(value):
            raise ValidationError(f"{label} must be a finite number")
    if width <= 0:
        raise ValidationError("width must be positive")
    if start < 0 or stop < start:
        raise ValidationError("regular_grid needs 0 <= start <= stop")
    n = int(np.ceil((stop - start) / width - 1e-12)) + 1
    if n > MAX_GRID_POINTS:
        raise ValidationError(f"the grid would have more than {MAX_GRID_POINTS} points")
    return tuple(float(start + i * width) for i in range(n))


def day_grid(max_days: float) -> tuple[float, ...]:
    """The integer-day grid ``0, 1, ..., ceil(max_days)``.

    With times recorded in whole days, grid statistics are exact.
    """
    return regular_grid(float(np.ceil(max_days)), 1.0)


def quantile_grid(
    public_values: Sequence[float] | np.ndarray,
    n_points: int,
    *,
    stop: float | None = None,
    decimals: int | None = None,
) -> tuple[float, ...]:
    """A grid at quantiles of *public* values (for example a published cohort's times).

    Do not build it from a site's private times: the grid is broadcast to
    every participant.

    Parameters
    ----------
    public_values
        Public, non-negative times.
    n_points
        Number of quantiles (evenly spaced probabilities in ``(0, 1]``);
        duplicates are dropped, so the grid may be shorter.
    stop
        If given and above the largest quantile, appended as the last point so
        that follow-up up to ``stop`` can be mapped.
    decimals
        If given, round the quantiles up to this many decimals (``0``: whole
        units), which keeps times recorded at that resolution exact.
    """
    vals = np.asarray(public_values, dtype=np.float64)
    if vals.ndim != 1 or vals.size == 0 or not np.all(np.isfinite(vals)) or np.any(vals < 0):
        raise ValidationError("public_values must be non-empty, finite and non-negative")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ValidationError("n_points must be a positive integer")
    q = np.quantile(vals, np.arange(1, n_points + 1) / n_points)
    if decimals is not None:
        f = 10.0**decimals
        q = np.ceil(q * f - 1e-9) / f
    points = np.unique(q)
    if stop is not None:
        if not np.isfinite(stop) or stop < 0:
            raise ValidationError("stop must be a finite non-negative number")
        if stop > points[-1]:
            points = np.append(points, float(stop))
    return tuple(float(p) for p in validate_grid(points))
