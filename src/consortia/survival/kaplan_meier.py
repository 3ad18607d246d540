"""Federated Kaplan-Meier estimator on a public time grid, per group.

Each site maps its patients' times to the study's public time grid (rounding up,
see :mod:`consortia.survival._grid`) and releases, per group and grid point,
the number of events and the number of patients at risk.  Both are declared
count arrays, so the node's minimum-cell rule applies to them.  The hub sums
them (securely) and computes the product-limit estimate, Greenwood's variance,
lifelines' log(-log) confidence band, the median survival time with its
confidence interval, and survival at any time.

With times on the grid (integer days on a day grid) the result equals
lifelines' ``KaplanMeierFitter`` on the pooled data; on a coarser grid it
equals lifelines on the pooled data with times rounded up to the grid.

With ``horizon`` instead of ``time_grid`` the grid is **planned** from
differentially private counts (:mod:`consortia.survival._plan`) so that each
released cell of the pooled sum holds at least ``min_cell`` events, and the
curve is the **life-table (actuarial) estimate** on the planned bins (see
:func:`life_table`), with a deterministic bound on its distance to the exact
pooled Kaplan-Meier curve at the bin ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.survival._grid import binned_on, grid_counts, grid_map, grid_param
from consortia.survival._km_estimate import bin_factor as bin_factor
from consortia.survival._km_estimate import life_table, product_limit
from consortia.survival._km_estimate import spread_bin as spread_bin
from consortia.survival._km_result import KaplanMeierCurve, KaplanMeierResult
from consortia.survival._plan import (
    PlanSettings,
    cells_below,
    grid_plan,
    make_plan,
    plan_contribution,
    plan_settings,
    planned_contribution,
    verify_plan,
    within_bin_weights,
)
from consortia.survival._validate import check_levels, level_codes, survival_columns

__all__ = ["KaplanMeier", "KaplanMeierCurve", "KaplanMeierResult", "life_table", "product_limit"]


@register
@dataclass(frozen=True, kw_only=True)
class KaplanMeier(Algorithm):
    """Pooled Kaplan-Meier curves, per group, from counts on a public time grid.

    Parameters
    ----------
    time, event
        Columns of follow-up time (non-negative) and event indicator (0/1).
    time_grid
        The public grid (see :mod:`consortia.survival._grid`).  Times are
        rounded up to it; times beyond its last point are censored there.
        ``None`` (with ``horizon``) plans the grid instead.
    horizon
        Plan the grid (see :mod:`consortia.survival._plan`): the public end of
        follow-up of interest; the planned grid ends at or before it.
    plan_cells
        Number of equal fine cells from 0 to ``horizon`` that bins are merged from,
        or the fine edges themselves (ending at ``horizon``): pass the grid an
        earlier planned study released on the same cohort (``result.plan``'s grid)
        so that this plan is a coarsening of it, which the node's
        grid-differencing rule allows (a second plan on fresh noise would not be).
    plan_epsilon, plan_delta
        Differential privacy of the plan round (the study's privacy cost).
    min_cell
        ``k``: each released event cell (per group) holds at least ``k`` events,
        with probability 0.99 per cell; nodes refuse a plan promising less than
        their own ``min_cell_count``.
    group
        Optional column splitting patients into groups (one curve each).
    groups
        The group levels, declared publicly (required with ``group``); every
        value of the column at every site must be one of them.
    alpha
        1 - confidence level of the bands (default 0.05: 95 %).
    exact_times
        If True, sites refuse times that are not grid points (instead of
        rounding them up).  Not with a planned grid.

    Notes
    -----
    Explicit grid: one round.  Each site releases, per group and grid point,
    its event count and at-risk count, both declared as count arrays
    (minimum-cell rule, judged on each site's array): under the default policy
    (``min_cell_count=5``) a fine grid on a small cohort is refused.

    Planned grid: two rounds (noisy plan, then exact counts on the planned
    bins, one grid per group).  Cells are judged on the released pooled sum,
    so real cohorts pass the default policy; the curve is the life-table
    estimate at the bin ends (:func:`life_table`), within ``error_bound`` of the
    exact pooled Kaplan-Meier curve there.
    """

    name = "survival.kaplan_meier"
    time: str
    event: str
    time_grid: tuple[float, ...] | None = None
    group: str | None = None
    groups: tuple[Any, ...] | None = None
    alpha: float = 0.05
    exact_times: bool = False
    horizon: float | None = None
    plan_cells: int | tuple[float, ...] = 20
    plan_epsilon: float = 0.5
    plan_delta: float = 1e-6
    min_cell: int = 5

    def __post_init__(self) -> None:
        plan = self._plan  # validates the planned-grid parameters
        if plan is None:
            assert self.time_grid is not None  # no plan: check_plan_params saw a grid
            object.__setattr__(self, "time_grid", grid_param(self.time_grid))
        elif self.exact_times:
            raise ValidationError("exact_times needs an explicit time_grid (not a planned one)")
        if self.group is None:
            if self.groups is not None:
                raise ValidationError("groups are declared but no group column is given")
        else:
            object.__setattr__(self, "groups", check_levels(self.groups, name="groups"))
        if isinstance(self.alpha, bool) or not 0 < float(self.alpha) < 1:
            raise ValidationError("alpha must be a number strictly between 0 and 1")

    @property
    def _labels(self) -> tuple[str, ...]:
        return ("all",) if self.groups is None else tuple(str(g) for g in self.groups)

    @cached_property
    def _plan(self) -> PlanSettings | None:
        """The planned grid's settings (``None`` with an explicit ``time_grid``)."""
        return plan_settings(self)

    def privacy_cost(self) -> tuple[float, float]:
        """``(plan_epsilon, plan_delta)`` with a planned grid, else ``(0, 0)``."""
        if self._plan is None:
            return (0.0, 0.0)
        return (self._plan.epsilon, self._plan.delta)

    def _codes(self, frame: pd.DataFrame) -> tuple[np.ndarray | None, int]:
        if self.group is None:
            return None, 1
        assert self.groups is not None
        return level_codes(frame, self.group, self.groups), len(self.groups)

    def _coordinate_planned(self) -> Coordination:
        settings = self._plan
        assert settings is not None
        labels = self._labels
        sums = yield Round("plan")
        ends, public = make_plan(sums, settings, len(labels), shared=False, labels=labels)
        sums = yield Round("counts", public)
        grids = [settings.fine_edges[e] for e in ends]
        width = max(g.size for g in grids)
        events = np.rint(np.asarray(sums["events"])).reshape(len(labels), width)
        at_risk = np.rint(np.asarray(sums["at_risk"])).reshape(len(labels), width + 1)
        curves: dict[str, KaplanMeierCurve] = {}
        for g, label in enumerate(labels):
            b = grids[g].size
            n, d = at_risk[g, :b], events[g, :b]
            c = n - at_risk[g, 1 : b + 1] - d
            if n[0] == 0:
                raise AlgorithmError(
                    f"group {label!r} of column {self.group!r} has no patients at any site"
                )
            weights = within_bin_weights(ends[g], public["plan_censored"][g])
            curves[label] = life_table(
                grids[g], n, d, c, censor_weights=weights, label=label, alpha=self.alpha
            )
        return KaplanMeierResult(
            curves=curves,
            time_grid=grids[0],
            alpha=self.alpha,
            plan=grid_plan(public, settings, grids),
            cells_below_k=cells_below(events, at_risk, settings.k),
        )

    def coordinate(self) -> Coordination:
        if self._plan is not None:
            return (yield from self._coordinate_planned())
        sums = yield Round("counts")
        grid = np.asarray(self.time_grid)
        k = grid.size
        events = np.rint(np.asarray(sums["events"])).reshape(-1, k)
        at_risk = np.rint(np.asarray(sums["at_risk"])).reshape(-1, k)
        curves: dict[str, KaplanMeierCurve] = {}
        for g, label in enumerate(self._labels):
            alive = np.flatnonzero(at_risk[g] > 0)
            if alive.size == 0:
                raise AlgorithmError(
                    f"group {label!r} of column {self.group!r} has no patients at any site"
                )
            last = alive[-1] + 1
            curves[label] = product_limit(
                grid[:last], at_risk[g, :last], events[g, :last], label=label, alpha=self.alpha
            )
        return KaplanMeierResult(curves=curves, time_grid=grid, alpha=self.alpha)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        steps = ("plan", "counts") if self._plan is not None else ("counts",)
        if step not in steps:
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        codes, n_codes = self._codes(frame)
        if self._plan is not None:
            if step == "plan":
                return plan_contribution(t, e, codes, n_codes, self._plan)
            grids = verify_plan(public, self._plan, n_codes, shared=False)
            return planned_contribution(t, e, codes, grids, self._plan, column=self.time)
        grid = np.asarray(self.time_grid)
        idx, e = grid_map(t, e, grid, column=self.time, exact=self.exact_times)
        events, at_risk = grid_counts(idx, e, grid.size, codes, n_codes)
        return Contribution(
            {"events": events.ravel(), "at_risk": at_risk.ravel()},
            cohort=len(t),
            count_arrays=frozenset({"events", "at_risk"}),
            **binned_on(self.time, grid),
        )
