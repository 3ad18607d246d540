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

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.survival._grid import binned_on, grid_counts, grid_map, grid_param
from consortia.survival._plan import (
    GridPlan,
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


def _first_at_or_below(timeline: np.ndarray, values: np.ndarray, q: float) -> float:
    """First time where ``values <= q`` (lifelines' ``qth_survival_time``); inf if never."""
    hit = np.flatnonzero(values <= q)
    return float(timeline[hit[0]]) if hit.size else float("inf")


@dataclass(frozen=True)
class KaplanMeierCurve:
    """The Kaplan-Meier estimate of one group, on the grid points where anyone is at risk.

    Attributes
    ----------
    label
        The group's label (``"all"`` without grouping).
    timeline
        Grid points from the first one to the last one with a patient at risk.
    n_at_risk, n_events
        Pooled number at risk and number of events at each timeline point.
    survival
        The product-limit estimate S(t) at each timeline point (right-continuous).
    variance
        Greenwood's variance of S(t).
    ci_lower, ci_upper
        The confidence band (log(-log) transform, as lifelines).
    alpha
        1 - confidence level of the band.
    median, median_ci
        Median survival time (``inf`` if S never reaches 0.5) and its
        confidence interval (from the band, as lifelines' ``median_survival_times``
        applied to ``confidence_interval_``).
    n_censored
        Life-table curves (planned grids) only: censorings within each bin
        (the last bin's exclude the patients followed beyond the grid's end).
    error_bound
        Life-table curves only: at each bin end, a bound on the distance between
        ``survival`` and the exact pooled Kaplan-Meier curve (see :func:`life_table`).
    """

    label: str
    timeline: np.ndarray
    n_at_risk: np.ndarray
    n_events: np.ndarray
    survival: np.ndarray
    variance: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    alpha: float
    median: float
    median_ci: tuple[float, float]
    n_censored: np.ndarray | None = None
    error_bound: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of patients in the group (pooled)."""
        return int(self.n_at_risk[0]) if self.n_at_risk.size else 0

    @property
    def events(self) -> int:
        """Number of events in the group (pooled)."""
        return int(self.n_events.sum())

    def _position(self, times: Sequence[float] | np.ndarray | float) -> np.ndarray:
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if not np.all(np.isfinite(t)):
            raise ValidationError("times must be finite numbers")
        return np.searchsorted(self.timeline, t, side="right") - 1

    def survival_at(self, times: Sequence[float] | np.ndarray | float) -> np.ndarray:
        """S(t) at arbitrary times (step function; 1 before the first grid point).

        After the last timeline point the last value is carried forward, as in
        lifelines' ``survival_function_at_times``.
        """
        pos = self._position(times)
        return np.where(pos < 0, 1.0, self.survival[np.maximum(pos, 0)])

    def at_risk_at(self, times: Sequence[float] | np.ndarray | float) -> np.ndarray:
        """Number at risk at arbitrary times (patients whose grid time is >= t)."""
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if not np.all(np.isfinite(t)):
            raise ValidationError("times must be finite numbers")
        pos = np.searchsorted(self.timeline, t, side="left")
        padded = np.append(self.n_at_risk, 0.0)
        return padded[np.minimum(pos, self.timeline.size)].astype(np.int64)

    @property
    def table(self) -> pd.DataFrame:
        """The estimate as a DataFrame indexed by time."""
        level = f"{1 - self.alpha:g}"
        return pd.DataFrame(
            {
                "at_risk": self.n_at_risk.astype(np.int64),
                "events": self.n_events.astype(np.int64),
                "survival": self.survival,
                "variance": self.variance,
                f"lower_{level}": self.ci_lower,
                f"upper_{level}": self.ci_upper,
            },
            index=pd.Index(self.timeline, name="time"),
        )


def spread_bin(
    n: float, d: float, c: float, censor_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spread a bin's exact counts over its sub-cells: constant hazard, given censoring shape.

    Returns the (fractional) number at risk at each sub-cell's start, its events
    and its censorings.  Censorings follow ``censor_weights``; events are
    proportional to each sub-cell's exposure (at risk, less half of its own exits).
    """
    w = np.asarray(censor_weights, np.float64)
    ci = c * w
    m = w.size
    di = np.full(m, d / m)
    for _ in range(100):  # fixed point: d_i = d * exposure_i / sum(exposure)
        ni = n - np.concatenate([[0.0], np.cumsum(di + ci)[:-1]])
        exposure = np.maximum(ni - ci / 2 - di / 2, 1e-12)
        new = d * exposure / exposure.sum()
        done = np.max(np.abs(new - di)) < 1e-12
        di = new
        if done:
            break
    ni = n - np.concatenate([[0.0], np.cumsum(di + ci)[:-1]])
    return ni, di, ci


def bin_factor(n: float, d: float, c: float, censor_weights: np.ndarray | None = None) -> float:
    """Survival factor over one bin from its exact counts (see :func:`life_table`).

    Without ``censor_weights``: the actuarial factor ``1 - d / (n - c / 2)``.
    With them (the within-bin distribution of the censorings over ``m``
    sub-cells): a constant hazard within the bin, ``d_i`` proportional to the
    patients at risk in sub-cell ``i`` (each sub-cell's censorings and events
    at risk for half of it), and the product of the sub-cells' actuarial factors.
    """
    if d <= 0:
        return 1.0
    if censor_weights is None or censor_weights.size <= 1:
        eff = n - c / 2
        return float(1 - d / eff) if eff > 0 else 0.0
    ni, di, ci = spread_bin(n, d, c, censor_weights)
    eff_i = ni - ci / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = np.where(eff_i > 0, 1 - di / eff_i, 0.0)
    return float(np.prod(np.clip(factors, 0.0, 1.0)))


def life_table(
    timeline: np.ndarray,
    n_at_risk: np.ndarray,
    n_events: np.ndarray,
    n_censored: np.ndarray,
    *,
    censor_weights: Sequence[np.ndarray] | None = None,
    label: str = "all",
    alpha: float = 0.05,
) -> KaplanMeierCurve:
    """Survival at bin ends from exact per-bin counts, with a bound on its error.

    Bin ``j`` starts with ``n_j`` patients at risk and has ``d_j`` events and
    ``c_j`` censorings at unknown times within it.

    **Estimator.**  Without ``censor_weights``, the life-table (actuarial)
    convention: the censored are at risk for half the bin,
    ``S(b_j) = prod_{i <= j} (1 - d_i / (n_i - c_i / 2))``.  With them (a
    planned grid passes the within-bin shape of the censorings, read from the
    plan's public noisy histogram over the bin's fine cells), the hazard is
    taken constant within the bin and the censorings spread as the weights
    say: events are apportioned to the fine cells in proportion to the
    patients at risk there, and the factor is the product of the fine cells'
    actuarial factors (:func:`bin_factor`).  On TCGA-BRCA this halves the
    actuarial error, which heavy early censoring within long bins biases
    upwards.  (Rounding every time up to its bin's end, as an explicit coarse
    grid does, counts the censored as at risk for the whole bin and biases the
    curve further upwards.)  Greenwood's variance and the log(-log) band use
    the effective number at risk ``d_j / (1 - factor_j)``.

    **Error bound.**  Whatever the order of events and censorings inside bin
    ``j``, the exact Kaplan-Meier factor over the bin lies between
    ``lo_j = (n_j - c_j - d_j) / (n_j - c_j)`` (all censorings first) and
    ``hi_j = (n_j - d_j) / n_j`` (all last); each estimated factor is clipped to
    that interval too.  Hence at every bin end the exact pooled Kaplan-Meier
    ``S(b_j)`` and the estimate ``Ŝ`` both lie in ``[L_j, H_j] = [prod lo,
    prod hi]``, and ``|Ŝ(b_j) - S_KM(b_j)| <= max(Ŝ - L_j, H_j - Ŝ)``, reported as
    ``error_bound``: deterministic, computed from the exact released sums.
    """
    n = np.asarray(n_at_risk, dtype=np.float64)
    d = np.asarray(n_events, dtype=np.float64)
    c = np.asarray(n_censored, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(n - c > 0, (n - c - d) / (n - c), 0.0)
        hi = np.where(n > 0, (n - d) / n, 1.0)
    factors = np.array(
        [
            bin_factor(n[j], d[j], c[j], None if censor_weights is None else censor_weights[j])
            for j in range(n.size)
        ]
    )
    factors = np.clip(factors, lo, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where((d > 0) & (factors < 1), d / (1 - factors), n)
    curve = product_limit(timeline, eff, d, label=label, alpha=alpha)
    low, high = np.cumprod(lo), np.cumprod(hi)
    bound = np.maximum(curve.survival - low, high - curve.survival)
    return dataclasses.replace(curve, n_at_risk=n, n_censored=c, error_bound=np.maximum(bound, 0.0))


def product_limit(
    timeline: np.ndarray,
    n_at_risk: np.ndarray,
    n_events: np.ndarray,
    *,
    label: str = "all",
    alpha: float = 0.05,
) -> KaplanMeierCurve:
    """Kaplan-Meier estimate from pooled at-risk and event counts per time.

    Parameters
    ----------
    timeline
        Increasing times.
    n_at_risk, n_events
        Counts at each time (``n_at_risk > 0`` everywhere).
    label
        The curve's label.
    alpha
        1 - confidence level of the band.

    Returns
    -------
    KaplanMeierCurve
        With the formulas of lifelines' ``KaplanMeierFitter``.
    """
    n = np.asarray(n_at_risk, dtype=np.float64)
    d = np.asarray(n_events, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.log(n - d) - np.log(n))
        survival = np.exp(log_s)
        term = d / (n * (n - d))
        term[~np.isfinite(term)] = 0.0
        cum = np.cumsum(term)
        z = norm.ppf(1 - alpha / 2)
        v = log_s
        lower = np.exp(-np.exp(np.log(-v) - z * np.sqrt(cum) / v))
        upper = np.exp(-np.exp(np.log(-v) + z * np.sqrt(cum) / v))
    lower = np.where(np.isnan(lower), 1.0, lower)
    upper = np.where(np.isnan(upper), 1.0, upper)
    variance = survival**2 * cum
    return KaplanMeierCurve(
        label=label,
        timeline=np.asarray(timeline, dtype=np.float64),
        n_at_risk=n,
        n_events=d,
        survival=survival,
        variance=variance,
        ci_lower=lower,
        ci_upper=upper,
        alpha=alpha,
        median=_first_at_or_below(timeline, survival, 0.5),
        median_ci=(
            _first_at_or_below(timeline, lower, 0.5),
            _first_at_or_below(timeline, upper, 0.5),
        ),
    )


@dataclass(frozen=True)
class KaplanMeierResult:
    """Kaplan-Meier curves per group.

    Attributes
    ----------
    curves
        Group label -> :class:`KaplanMeierCurve`, in the declared group order.
    time_grid
        The public grid the sites counted on (a planned grid: the grid of the
        first group; every curve's ``timeline`` is its own).
    alpha
        1 - confidence level of the bands.
    plan
        With a planned grid: the plan and the noisy counts it came from.
    cells_below_k
        With a planned grid: released non-zero cells below ``min_cell`` (0
        unless the plan's noisy test failed, probability <= 1 % per cell).
    """

    curves: Mapping[str, KaplanMeierCurve]
    time_grid: np.ndarray
    alpha: float
    plan: GridPlan | None = None
    cells_below_k: int = 0

    def __getitem__(self, label: str) -> KaplanMeierCurve:
        try:
            return self.curves[label]
        except KeyError:
            raise ValidationError(
                f"no curve labelled {label!r} (labels: {list(self.curves)})"
            ) from None

    @property
    def labels(self) -> tuple[str, ...]:
        """Group labels, in order."""
        return tuple(self.curves)

    @property
    def median_survival(self) -> dict[str, float]:
        """Median survival time per group (``inf`` where S never reaches 0.5)."""
        return {k: c.median for k, c in self.curves.items()}

    def survival_at(self, times: Sequence[float] | np.ndarray | float) -> pd.DataFrame:
        """S(t) per group (columns) at the given times (rows)."""
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        return pd.DataFrame(
            {k: c.survival_at(t) for k, c in self.curves.items()},
            index=pd.Index(t, name="time"),
        )

    @property
    def summary(self) -> pd.DataFrame:
        """Per group: patients, events, median survival and its confidence interval."""
        level = f"{1 - self.alpha:g}"
        rows = {
            k: {
                "n": c.n,
                "events": c.events,
                "median": c.median,
                f"median_lower_{level}": c.median_ci[0],
                f"median_upper_{level}": c.median_ci[1],
            }
            for k, c in self.curves.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("group")


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
