"""Planned time grids: bins chosen from differentially private counts.

Why
---
A grid statistic releases the *sum over sites* of per-time event and at-risk
counts.  Judging the small-cell rule on each site's own array refuses almost
every curve on real cohorts, yet secure aggregation hides those arrays: what is
released is the sum.  A **planned grid** makes the cells of the released sum
large enough, without anyone seeing a site's counts.

Two rounds
----------
1. **plan** (noisy).  Each site counts, per group where the study has groups,
   its events and its censorings in ``plan_cells`` equal fine cells
   ``(f_{i-1}, f_i]`` from 0 to the public ``horizon`` (the first cell includes
   0), plus one overflow cell of censorings for the patients followed beyond
   the horizon (an event after the horizon counts there: administrative
   censoring).  The runtime adds distributed discrete Gaussian noise of
   standard deviation ``sigma`` to every cell of the two sums
   (:mod:`consortia.privacy.dp`).  A patient lies in exactly one cell of the two
   histograms together (one group, one cell, event or censoring), so the L2
   sensitivity of the release is 1: ``sigma = sigma_for(plan_epsilon,
   plan_delta)`` (:func:`~consortia.privacy.dp.sigma_for`), declared as the
   algorithm's :meth:`~consortia.protocol.Algorithm.privacy_cost`.  The
   sites also release an exact ``1`` each (``plan_sites``: the number of
   participants), because the runtime floors each site's share of the noise at
   variance 1: the rule below uses the noise actually added,
   ``sqrt(max(sigma**2, n_sites))`` (the same as ``sigma`` unless
   ``plan_epsilon`` is large).  Colluding sites that subtract their own shares
   leave less noise; the plan does not account for that.
2. **counts** (exact).  The coordinator merges consecutive fine cells into bins
   (:func:`make_plan`) and broadcasts the bin ends with the noisy histograms;
   each node re-checks that the bins respect the noisy counts
   (:func:`verify_plan`, :class:`~consortia.errors.PolicyError` rule
   ``planned_grid`` otherwise) and releases the exact sums of events per bin and
   of patients at risk at each bin's start, declared as *planned* count arrays
   with ``planned_min = min_cell`` (the node skips its per-site cell rule for
   them and refuses a plan promising less than its own ``min_cell_count``).

The rule (``k = min_cell``, ``z = Φ⁻¹(0.99)``)
---------------------------------------------
* A bin of ``m`` fine cells is closed as soon as its noisy event count (per
  group, for every group released separately) reaches
  ``k + z * sigma_events * sqrt(m)``.  The noise on the sum of ``m`` cells has
  standard deviation ``sigma_events * sqrt(m)``, so a bin whose true count is
  below ``k`` passes with probability at most 1 %.
* The grid **ends** before the first fine edge ``f_i`` where the noisy number
  of patients with time after ``f_i`` (event and censoring cells after it and
  the overflow cell: ``c`` cells) falls below ``k + z * sigma * sqrt(c)`` (for
  some group).  Bins are then formed from 0 to that end; fine cells after the
  last full bin join it when the merged bin still passes, otherwise they lie
  beyond the end.  Patients followed beyond the end are **administratively
  censored** there (an event after the end becomes a censoring).

A released event cell is then ``>= k`` (or a bin's noisy count was more than
``z`` standard deviations too high: probability <= 1 % per cell); an at-risk
cell is at least its bin's events, or the number followed beyond the end.
The censorings of a bin (at-risk differences minus events) are derivable and
are *not* guaranteed to reach ``k``.

What is noisy and what is exact: only the *placement* of the bins depends on the
noise.  The counts on the planned grid are exact secure sums; the estimators
computed from them (life-table Kaplan-Meier, log-rank, Cox) are deterministic
functions of those sums.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from scipy.stats import norm

from consortia.errors import AlgorithmError, PolicyError, ValidationError
from consortia.protocol import Contribution

__all__ = [
    "CELL_CONFIDENCE",
    "GridPlan",
    "PlanParams",
    "PlanSettings",
    "check_plan_params",
    "make_plan",
    "plan_contribution",
    "plan_public",
    "plan_settings",
    "planned_contribution",
    "planned_counts",
    "verify_plan",
    "within_bin_weights",
]

CELL_CONFIDENCE = 0.999
"""Per released cell: probability that the plan's noisy test implies >= k events."""

Z_CELL = float(norm.ppf(CELL_CONFIDENCE))
MAX_PLAN_CELLS = 10_000


@dataclass(frozen=True)
class PlanSettings:
    """The public parameters of a planned grid (all from the study's parameters)."""

    horizon: float
    cells: int
    epsilon: float
    delta: float
    k: int
    n_sites: int = 1
    edges: tuple[float, ...] | None = None

    @cached_property
    def fine_edges(self) -> np.ndarray:
        """``0 = f_0 < f_1 < ... < f_cells = horizon`` (equal cells unless ``edges``)."""
        if self.edges is not None:
            return np.array((0.0, *self.edges), dtype=np.float64)
        return np.linspace(0.0, self.horizon, self.cells + 1)

    @cached_property
    def sigma(self) -> float:
        """Noise standard deviation of every cell of the summed histograms."""
        from consortia.noise import sigma_for

        return sigma_for(self.epsilon, self.delta, sensitivity=1.0)

    @property
    def noise_sd(self) -> float:
        """The standard deviation of a cell's noise with ``n_sites`` participants.

        ``sigma``, or more when each site's share is floored at
        :data:`~consortia.privacy.dp.MIN_SHARE_VARIANCE` (large ``plan_epsilon``,
        many sites): the rule must use the noise actually added.
        """
        from consortia.noise import MIN_SHARE_VARIANCE

        return math.sqrt(max(self.sigma**2, self.n_sites * MIN_SHARE_VARIANCE))

    def bin_threshold(self, m: int | np.ndarray) -> np.ndarray:
        """Noisy events a bin of ``m`` fine cells needs."""
        return self.k + Z_CELL * self.noise_sd * np.sqrt(m)

    def end_threshold(self, n_cells: int | np.ndarray) -> np.ndarray:
        """Noisy patients after a fine edge the grid's end needs, summed over ``n_cells`` cells."""
        return self.k + Z_CELL * self.noise_sd * np.sqrt(n_cells)

    def for_sites(self, sums: Mapping[str, np.ndarray]) -> PlanSettings:
        """These settings for the number of sites counted in ``plan_sites``."""
        try:
            n = round(float(np.asarray(sums["plan_sites"]).ravel()[0]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise _refuse("the planned grid's number of sites is missing") from None
        if n < 1:
            raise _refuse("the planned grid's number of sites is not positive")
        return dataclasses.replace(self, n_sites=n)


def check_plan_params(
    *,
    time_grid: object,
    horizon: object,
    plan_cells: object,
    plan_epsilon: object,
    plan_delta: object,
    min_cell: object,
) -> PlanSettings | None:
    """Validate the planned-grid parameters; ``None`` when an explicit grid is used.

    Raises
    ------
    ValidationError
        Naming the parameter.
    """
    if time_grid is not None:
        if horizon is not None:
            raise ValidationError(
                "horizon plans a grid: give either time_grid (an explicit grid) or horizon"
            )
        return None
    if horizon is None:
        raise ValidationError(
            "time_grid is required, or horizon (the public end of follow-up) to plan a grid "
            "from differentially private counts"
        )
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float)):
        raise ValidationError("horizon must be a positive number")
    if not math.isfinite(horizon) or horizon <= 0:
        raise ValidationError("horizon must be a positive finite number")
    edges = None
    if isinstance(plan_cells, (tuple, list)):
        edges = _check_edges(plan_cells, float(horizon))
        plan_cells = len(edges)
    if isinstance(plan_cells, bool) or not isinstance(plan_cells, int):
        raise ValidationError(
            "plan_cells must be a positive integer (equal cells) or a sequence of fine edges"
        )
    if not 1 <= plan_cells <= MAX_PLAN_CELLS:
        raise ValidationError(f"plan_cells must lie between 1 and {MAX_PLAN_CELLS}")
    for label, value in (("plan_epsilon", plan_epsilon), ("plan_delta", plan_delta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(f"{label} must be a positive number")
        if not math.isfinite(value) or value <= 0:
            raise ValidationError(f"{label} must be a positive finite number")
    if plan_delta >= 1e-2:  # type: ignore[operator]
        raise ValidationError("plan_delta must be below 0.01 (typically 1e-6 or smaller)")
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 1:
        raise ValidationError("min_cell must be a positive integer")
    return PlanSettings(
        horizon=float(horizon),
        cells=plan_cells,
        epsilon=float(plan_epsilon),  # type: ignore[arg-type]
        delta=float(plan_delta),  # type: ignore[arg-type]
        k=min_cell,
        edges=edges,
    )


class PlanParams(Protocol):
    """The planned-grid parameters of a survival algorithm (fields of its dataclass)."""

    @property
    def time_grid(self) -> tuple[float, ...] | None: ...
    @property
    def horizon(self) -> float | None: ...
    @property
    def plan_cells(self) -> int | tuple[float, ...]: ...
    @property
    def plan_epsilon(self) -> float: ...
    @property
    def plan_delta(self) -> float: ...
    @property
    def min_cell(self) -> int: ...


def plan_settings(params: PlanParams) -> PlanSettings | None:
    """:func:`check_plan_params` on an algorithm's planned-grid parameters."""
    return check_plan_params(
        time_grid=params.time_grid,
        horizon=params.horizon,
        plan_cells=params.plan_cells,
        plan_epsilon=params.plan_epsilon,
        plan_delta=params.plan_delta,
        min_cell=params.min_cell,
    )


def _check_edges(value: tuple | list, horizon: float) -> tuple[float, ...]:
    """Fine edges given explicitly: positive, strictly increasing, the last one the horizon.

    Typically the grid an earlier planned study released on the same cohort, so that a
    second plan is a coarsening of it (the node's grid-differencing rule allows that).
    """
    try:
        edges = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError("plan_cells (fine edges) must be numbers") from None
    if edges.ndim != 1 or edges.size == 0 or not np.isfinite(edges).all():
        raise ValidationError("plan_cells (fine edges) must be a non-empty list of finite numbers")
    if edges[0] <= 0 or (np.diff(edges) <= 0).any():
        raise ValidationError("plan_cells (fine edges) must be positive and strictly increasing")
    if edges[-1] != horizon:
        raise ValidationError("plan_cells (fine edges) must end at horizon")
    return tuple(float(x) for x in edges)


# --------------------------------------------------------------------------- site side


def _codes(codes: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, np.int64) if codes is None else np.asarray(codes, np.int64)


def plan_contribution(
    times: np.ndarray,
    events: np.ndarray,
    codes: np.ndarray | None,
    n_codes: int,
    settings: PlanSettings,
) -> Contribution:
    """A site's plan-round contribution: event and censoring histograms, declared noisy.

    ``plan_events`` has shape ``(n_codes, cells)``; ``plan_censored`` has shape
    ``(n_codes, cells + 1)`` (the last cell: followed beyond the horizon, events
    included).  Each patient lies in exactly one cell of the two.
    """
    t = np.asarray(times, np.float64)
    codes = _codes(codes, t.size)
    f = settings.cells
    cell = np.searchsorted(settings.fine_edges[1:], t, side="left")  # f: beyond the horizon
    ev = (np.asarray(events) == 1) & (cell < f)
    ev_hist = np.bincount(codes[ev] * f + cell[ev], minlength=n_codes * f)
    cens_hist = np.bincount(codes[~ev] * (f + 1) + cell[~ev], minlength=n_codes * (f + 1))
    return Contribution(
        {
            "plan_events": ev_hist.astype(np.float64),
            "plan_censored": cens_hist.astype(np.float64),
            "plan_sites": np.ones(1),  # exact: the sum counts the participating sites
        },
        cohort=t.size,
        noise={"plan_events": settings.sigma, "plan_censored": settings.sigma},
    )


def planned_counts(
    times: np.ndarray,
    events: np.ndarray,
    codes: np.ndarray | None,
    grids: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Exact counts on planned grids (one grid per code, all may be the same).

    Bin ``j`` of a grid ``b`` is ``(b_{j-1}, b_j]`` (the first includes 0);
    times after ``b_{-1}`` are administratively censored there.

    Returns
    -------
    events : numpy.ndarray
        ``(n_codes, B)`` events per bin (``B`` the longest grid; zero padding).
    at_risk : numpy.ndarray
        ``(n_codes, B + 1)``: patients at risk at each bin's start (time after
        the previous bin end), then the patients followed beyond the grid's end.
    """
    t = np.asarray(times, np.float64)
    e = np.asarray(events)
    codes = _codes(codes, t.size)
    width = max(g.size for g in grids)
    ev_out = np.zeros((len(grids), width))
    risk_out = np.zeros((len(grids), width + 1))
    for c, grid in enumerate(grids):
        sel = codes == c
        b = grid.size
        idx = np.searchsorted(grid, t[sel], side="left")  # b: beyond the end
        ev = (e[sel] == 1) & (idx < b)
        ev_out[c, :b] = np.bincount(idx[ev], minlength=b)
        exits = np.bincount(idx, minlength=b + 1).astype(np.float64)
        risk_out[c, : b + 1] = np.cumsum(exits[::-1])[::-1]
    return ev_out, risk_out


def planned_contribution(
    times: np.ndarray,
    events: np.ndarray,
    codes: np.ndarray | None,
    grids: list[np.ndarray],
    settings: PlanSettings,
    *,
    column: str,
) -> Contribution:
    """A site's release on verified planned grids (planned count arrays).

    The counts are exact, so they declare their grid (all groups' bin ends) for
    the node's grid-differencing rule (:func:`~consortia.survival._grid.binned_on`).
    """
    from consortia.survival._grid import binned_on

    ev, risk = planned_counts(times, events, codes, grids)
    return Contribution(
        {"events": ev.ravel(), "at_risk": risk.ravel()},
        cohort=len(times),
        count_arrays=frozenset({"events", "at_risk"}),
        planned=frozenset({"events", "at_risk"}),
        planned_min=settings.k,
        **binned_on(column, np.unique(np.concatenate(grids))),
    )


# --------------------------------------------------------------------------- hub side


@dataclass(frozen=True)
class GridPlan:
    """A planned grid and the noisy counts it was planned from (all public).

    Attributes
    ----------
    grids
        Per group (or one shared grid): the bin ends, increasing; the last is
        the grid's end (administrative censoring).
    fine_edges
        The fine cells' edges, ``0`` to the horizon.
    noisy_events, noisy_censored
        The noisy histograms, shapes ``(groups, cells)`` and ``(groups, cells + 1)``.
    sigma
        Their noise standard deviation (per cell; ``sigma_for(epsilon, delta)``,
        or more where each site's share of the noise is floored at variance 1).
    epsilon, delta
        The privacy cost of the plan round.
    min_cell
        ``k``: each released event cell holds at least ``k`` events with
        probability at least :data:`CELL_CONFIDENCE` (see the module notes).
    """

    grids: tuple[np.ndarray, ...]
    fine_edges: np.ndarray
    noisy_events: np.ndarray
    noisy_censored: np.ndarray
    sigma: float
    epsilon: float
    delta: float
    min_cell: int

    @property
    def grid(self) -> tuple[float, ...]:
        """Every bin end released (the union of the groups' grids), for a later plan.

        A later planned study on the same cohort passes it as ``plan_cells`` (with
        ``horizon=grid[-1]``) so that its grid is a coarsening of this one.
        """
        return tuple(float(x) for x in np.unique(np.concatenate(self.grids)))


def _grid_end(events: np.ndarray, censored: np.ndarray, settings: PlanSettings) -> int:
    """The last fine edge before the noisy number followed after it fails the end rule."""
    f = settings.cells
    exits = censored.copy()
    exits[:, :f] += events
    after = np.cumsum(exits[:, ::-1], axis=1)[:, ::-1]  # after[:, i]: exits in cells i..f
    n_cells = (f - np.arange(f + 1)) * 2 + 1  # noisy cells summed
    ok = np.all(after >= settings.end_threshold(n_cells), axis=0)
    ok[0] = True
    fails = np.flatnonzero(~ok)
    return int(fails[0] - 1) if fails.size else f


def _bins_pass(events: np.ndarray, start: int, stop: int, settings: PlanSettings) -> bool:
    return bool(np.all(events[:, start:stop].sum(axis=1) >= settings.bin_threshold(stop - start)))


def _plan_one(
    events: np.ndarray, censored: np.ndarray, settings: PlanSettings, what: str
) -> np.ndarray:
    """Bin ends (fine-edge indices in 1..cells) for groups planned together (rows)."""
    last = _grid_end(events, censored, settings)
    if last < 1:
        raise AlgorithmError(
            f"too few patients{what} are followed long enough to plan a grid that keeps "
            f"{settings.k} at risk at its end: raise plan_epsilon, or lower plan_cells"
        )
    ends: list[int] = []
    start = 0
    for i in range(1, last + 1):
        if _bins_pass(events, start, i, settings):
            ends.append(i)
            start = i
    if ends and start < last:  # the cells after the last full bin join it if it still passes
        prev = ends[-2] if len(ends) > 1 else 0
        if _bins_pass(events, prev, last, settings):
            ends[-1] = last
    if not ends:
        raise AlgorithmError(
            f"too few events{what} before the horizon to plan one bin of {settings.k} events "
            f"with confidence {CELL_CONFIDENCE}: raise plan_epsilon, lower plan_cells, or "
            "extend horizon"
        )
    return np.asarray(ends, dtype=np.int64)


def make_plan(
    sums: Mapping[str, np.ndarray],
    settings: PlanSettings,
    n_groups: int,
    *,
    shared: bool,
    labels: tuple[str, ...] | None = None,
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Plan bins from the plan round's noisy sums.

    Parameters
    ----------
    sums
        The plan round's sums (``plan_events``, ``plan_censored``).
    shared
        One grid for every group (each group's cells must pass), as a comparison
        of groups needs; otherwise one grid per group.
    labels
        Group labels, for error messages.

    Returns
    -------
    ends, public
        Per group the bin ends as fine-edge indices, and the public arrays that
        the counts round broadcasts (the noisy histograms and the ends).
    """
    settings = settings.for_sites(sums)
    f = settings.cells
    events = np.rint(np.asarray(sums["plan_events"], np.float64)).reshape(n_groups, f)
    censored = np.rint(np.asarray(sums["plan_censored"], np.float64)).reshape(n_groups, f + 1)
    if shared:
        ends = [_plan_one(events, censored, settings, "")] * n_groups
    else:
        ends = []
        for g in range(n_groups):
            what = "" if labels is None or n_groups == 1 else f" of group {labels[g]!r}"
            ends.append(_plan_one(events[g : g + 1], censored[g : g + 1], settings, what))
    return ends, plan_public(events, censored, ends, settings.n_sites)


def plan_public(
    events: np.ndarray, censored: np.ndarray, ends: list[np.ndarray], n_sites: int
) -> dict[str, np.ndarray]:
    """Public arrays of the counts round: noisy histograms, sites, bin ends (``-1`` padded)."""
    width = max(e.size for e in ends)
    padded = np.full((len(ends), width), -1.0)
    for g, e in enumerate(ends):
        padded[g, : e.size] = e
    return {
        "plan_events": events,
        "plan_censored": censored,
        "plan_sites": np.array([float(n_sites)]),
        "plan_ends": padded,
    }


def _refuse(msg: str) -> PolicyError:
    return PolicyError("planned_grid", msg)


def verify_plan(
    public: Mapping[str, np.ndarray], settings: PlanSettings, n_groups: int, *, shared: bool
) -> list[np.ndarray]:
    """Node side: check that the broadcast grid respects the noisy counts; return its times.

    Defends against a study that submits a fine grid disguised as a planned one:
    the node recomputes the plan (:func:`make_plan`, deterministic) from the
    noisy histograms broadcast with the grid and refuses any other grid, so
    every bin passes the event rule and the end the at-risk rule, and the
    coordinator has no choice of bins to exploit.

    Returns
    -------
    list of numpy.ndarray
        Per group, the bin ends as times.

    Raises
    ------
    PolicyError
        Rule ``planned_grid``, when the plan is malformed or a bin or the end
        breaks the rule.
    """
    f = settings.cells
    settings = settings.for_sites(public)
    try:
        events = np.asarray(public["plan_events"], np.float64).reshape(n_groups, f)
        censored = np.asarray(public["plan_censored"], np.float64).reshape(n_groups, f + 1)
        padded = np.asarray(public["plan_ends"], np.float64).reshape(n_groups, -1)
    except (KeyError, ValueError):
        raise _refuse("the planned grid or its noisy counts are missing or malformed") from None
    if not (
        np.array_equal(events, np.rint(events)) and np.array_equal(censored, np.rint(censored))
    ):
        raise _refuse("the noisy counts of a planned grid must be integers")
    try:
        if shared:
            expected = [_plan_one(events, censored, settings, "")] * n_groups
        else:
            expected = [
                _plan_one(events[g : g + 1], censored[g : g + 1], settings, "")
                for g in range(n_groups)
            ]
    except AlgorithmError:
        raise _refuse("the noisy counts broadcast with the grid admit no plan") from None
    grids: list[np.ndarray] = []
    for g in range(n_groups):
        row = padded[g]
        ends = row[row >= 0]
        if np.any(row[ends.size :] != -1) or not np.array_equal(ends, expected[g]):
            raise _refuse(
                "the grid is not the plan of the noisy counts broadcast with it (each bin must "
                f"hold k + z*sigma*sqrt(cells) noisy events, k = {settings.k}, and the grid must "
                "end where the noisy number at risk falls below the rule)"
            )
        grids.append(settings.fine_edges[expected[g]])
    return grids


def grid_plan(
    public: Mapping[str, np.ndarray],
    settings: PlanSettings,
    grids: list[np.ndarray],
) -> GridPlan:
    """The :class:`GridPlan` record of a plan (for results)."""
    return GridPlan(
        grids=tuple(np.asarray(g, np.float64) for g in grids),
        fine_edges=settings.fine_edges,
        noisy_events=np.asarray(public["plan_events"], np.float64),
        noisy_censored=np.asarray(public["plan_censored"], np.float64),
        sigma=settings.for_sites(public).noise_sd,
        epsilon=settings.epsilon,
        delta=settings.delta,
        min_cell=settings.k,
    )


def within_bin_weights(ends: np.ndarray, noisy_censored: np.ndarray) -> list[np.ndarray]:
    """Per bin, the shares of its censorings in each of its fine cells (public, noisy).

    Post-processing of the plan's noisy censoring histogram (no privacy cost):
    negative noisy counts are set to 0; an empty bin gets equal shares.
    """
    out = []
    start = 0
    for stop in np.asarray(ends, np.int64):
        w = np.maximum(np.asarray(noisy_censored[start:stop], np.float64), 0.0)
        out.append(w / w.sum() if w.sum() > 0 else np.full(stop - start, 1.0 / (stop - start)))
        start = int(stop)
    return out


def cells_below(events: np.ndarray, at_risk: np.ndarray, k: int) -> int:
    """Number of non-zero released cells (events or at risk) below ``k``."""
    cells = np.concatenate([np.ravel(events), np.ravel(at_risk)])
    return int(np.count_nonzero((cells != 0) & (np.abs(cells) < k)))
