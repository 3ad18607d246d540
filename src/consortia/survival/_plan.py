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

Modules
-------
:mod:`~consortia.survival._plan_settings` (the parameters and thresholds),
:mod:`~consortia.survival._plan_site` (what a site releases in each round),
:mod:`~consortia.survival._plan_rule` (the plan and its check at the node);
this module re-exports them and holds the public record of a plan, :class:`GridPlan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from consortia.survival._plan_rule import (
    cells_below,
    make_plan,
    plan_public,
    verify_plan,
    within_bin_weights,
)
from consortia.survival._plan_settings import (
    CELL_CONFIDENCE,
    MAX_PLAN_CELLS,
    Z_CELL,
    PlanParams,
    PlanSettings,
    check_plan_params,
    plan_settings,
)
from consortia.survival._plan_site import plan_contribution, planned_contribution, planned_counts

__all__ = [
    "CELL_CONFIDENCE",
    "MAX_PLAN_CELLS",
    "Z_CELL",
    "GridPlan",
    "PlanParams",
    "PlanSettings",
    "cells_below",
    "check_plan_params",
    "grid_plan",
    "make_plan",
    "plan_contribution",
    "plan_public",
    "plan_settings",
    "planned_contribution",
    "planned_counts",
    "verify_plan",
    "within_bin_weights",
]


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
