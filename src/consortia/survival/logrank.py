"""Federated log-rank test of two or more groups, optionally stratified.

Each site maps its patients' times to the study's public time grid (rounding
up, see :mod:`consortia.survival._grid`) and releases, per stratum, group and
grid point, the number of events and the number at risk (declared count
arrays: the minimum-cell rule applies).  The hub computes, per stratum and
grid point, the expected events of each group and the hypergeometric
covariance (exact with tied times), sums them over grid points and strata, and
forms the chi-square statistic on ``G - 1`` degrees of freedom.

With times on the grid the result equals lifelines' ``logrank_test`` /
``multivariate_logrank_test`` (unstratified) and statsmodels' ``survdiff``
(stratified) on the pooled data.

With ``horizon`` instead of ``time_grid`` the grid is **planned** from
differentially private counts (:mod:`consortia.survival._plan`): one grid
shared by the groups, each bin holding at least ``min_cell`` events of *every*
group in the released sum.  Within a bin the event and censoring times are
unknown; the test is computed on the bin's fine cells after spreading each
group's exact bin counts over them (:func:`planned_components`), an
approximation whose error against the exact test is measured in the tests.

Strata may be the levels of a column (``strata`` + ``strata_levels``), the
sites themselves (``stratify_by_site``), or both (every column level within
every site).  A site stratum lies wholly within one site, so with
``stratify_by_site`` each site computes its own strata's observed and expected
events and covariance, and only their sums travel: no per-time counts at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2 as chi2_dist

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.precision import join, split
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.results import Result
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

__all__ = [
    "LogRank",
    "LogRankResult",
    "logrank_components",
    "logrank_from_components",
    "logrank_from_counts",
    "site_code",
]


@dataclass(frozen=True)
class LogRankResult(Result):
    """The log-rank test.

    Attributes
    ----------
    groups
        Group labels, in order.
    observed, expected
        Observed and expected events per group (summed over strata).
    variance
        The ``G x G`` covariance matrix of ``observed - expected``.
    chi2
        The test statistic.
    df
        Degrees of freedom (the rank of the covariance matrix, ``G - 1`` normally).
    p_value
        Upper tail of the chi-square distribution at ``chi2``.
    n
        Patients per group.
    n_strata
        Number of strata with at least one patient.
    plan
        With a planned grid: the plan and the noisy counts it came from.
    cells_below_k
        With a planned grid: released non-zero cells below ``min_cell``.
    """

    groups: tuple[str, ...]
    observed: np.ndarray
    expected: np.ndarray
    variance: np.ndarray
    chi2: float
    df: int
    p_value: float
    n: np.ndarray
    n_strata: int
    plan: GridPlan | None = None
    cells_below_k: int = 0

    @property
    def test_statistic(self) -> float:
        """Alias of ``chi2`` (lifelines' name)."""
        return self.chi2

    @property
    def summary(self) -> pd.DataFrame:
        """Per group: patients, observed and expected events, and O/E."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.observed / self.expected
        return pd.DataFrame(
            {
                "n": self.n.astype(np.int64),
                "observed": self.observed,
                "expected": self.expected,
                "observed/expected": ratio,
            },
            index=pd.Index(self.groups, name="group"),
        )

    def statistics(self) -> dict[str, Any]:
        """The test (chi2, df, p), patients, events, strata and, on a planned grid, its bins."""
        out: dict[str, Any] = {
            "chi2": self.chi2,
            "df": self.df,
            "p": self.p_value,
            "n": int(round(float(self.n.sum()))),
            "events": int(round(float(self.observed.sum()))),
            "groups": len(self.groups),
            "strata": self.n_strata,
        }
        if self.plan is not None:
            out["planned_bins"] = int(self.plan.grids[0].size)
            out["cells_below_k"] = self.cells_below_k
        return out


def logrank_components(events: np.ndarray, at_risk: np.ndarray) -> dict[str, np.ndarray]:
    """Observed, expected, covariance, group sizes and non-empty strata from counts.

    Each is a sum over strata (and grid points), so components computed at
    different sites on disjoint strata add up to the components of the whole.

    Parameters
    ----------
    events, at_risk
        Arrays of shape ``(n_strata, n_groups, n_times)``.
    """
    d = np.asarray(events, dtype=np.float64)
    n = np.asarray(at_risk, dtype=np.float64)
    d_tot = d.sum(axis=1)  # (S, K)
    n_tot = n.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(n_tot > 0, d_tot / n_tot, 0.0)
        factor = np.where(n_tot > 1, d_tot * (n_tot - d_tot) / (n_tot**2 * (n_tot - 1)), 0.0)
    diag = np.einsum("sk,sk,sgk->g", factor, n_tot, n)
    return {
        "observed": d.sum(axis=(0, 2)),
        "expected": np.einsum("sgk,sk->g", n, rate),
        "variance": np.diag(diag) - np.einsum("sk,sgk,shk->gh", factor, n, n),
        "n": n[:, :, 0].sum(axis=0),
        "strata": np.array([float(np.count_nonzero(n[:, :, 0].sum(axis=1)))]),
    }


def logrank_from_components(
    components: Mapping[str, np.ndarray], *, groups: tuple[str, ...]
) -> LogRankResult:
    """The log-rank test from (summed) :func:`logrank_components`.

    Raises
    ------
    AlgorithmError
        If a group has no patients, or no group has an event.
    """
    observed = np.asarray(components["observed"], dtype=np.float64)
    expected = np.asarray(components["expected"], dtype=np.float64)
    variance = np.asarray(components["variance"], dtype=np.float64)
    n_group = np.asarray(components["n"], dtype=np.float64)
    for label, size in zip(groups, n_group, strict=True):
        if size == 0:
            raise AlgorithmError(f"group {label!r} has no patients at any site")
    if observed.sum() == 0:
        raise AlgorithmError(
            "the log-rank test needs at least one event; every patient is censored"
        )
    u = observed - expected
    reduced = variance[:-1, :-1]
    df = int(np.linalg.matrix_rank(reduced)) if reduced.size else 0
    if df == 0:
        raise AlgorithmError(
            "the log-rank variance is zero: no group comparison is possible "
            "(no events while more than one group is at risk)"
        )
    if df == reduced.shape[0]:
        stat = float(u[:-1] @ np.linalg.solve(reduced, u[:-1]))
    else:
        stat = float(u[:-1] @ np.linalg.pinv(reduced) @ u[:-1])
    return LogRankResult(
        groups=groups,
        observed=observed,
        expected=expected,
        variance=variance,
        chi2=stat,
        df=df,
        p_value=float(chi2_dist.sf(stat, df)),
        n=n_group,
        n_strata=round(float(np.asarray(components["strata"]).ravel()[0])),
    )


def logrank_from_counts(
    events: np.ndarray, at_risk: np.ndarray, *, groups: tuple[str, ...]
) -> LogRankResult:
    """Log-rank test from pooled counts of shape ``(n_strata, n_groups, n_times)``.

    Raises
    ------
    AlgorithmError
        If a group has no patients, or no group has an event.
    """
    return logrank_from_components(logrank_components(events, at_risk), groups=groups)


def planned_components(
    events: np.ndarray,
    at_risk: np.ndarray,
    ends: np.ndarray,
    noisy_censored: np.ndarray,
) -> dict[str, np.ndarray]:
    """Log-rank components from exact counts on a planned grid.

    Parameters
    ----------
    events
        ``(groups, bins)`` events per bin.
    at_risk
        ``(groups, bins + 1)`` at risk at each bin's start, then beyond the end.
    ends
        The bins' ends as fine-cell indices.
    noisy_censored
        ``(groups, cells + 1)``: the plan's public noisy censoring histogram.

    Each group's exact bin counts are spread over the bin's fine cells (its
    censorings as its noisy histogram says, its events at a constant hazard
    within the bin: :func:`~consortia.survival.kaplan_meier.spread_bin`); per
    fine cell the patients censored there count as at risk for half of it
    (the actuarial convention), and the usual components are summed over the
    fine cells.  ``n`` is the exact group size.
    """
    from consortia.survival.kaplan_meier import spread_bin

    n_groups, b = events.shape
    width = int(ends[-1])
    d_fine = np.zeros((n_groups, width))
    n_fine = np.zeros((n_groups, width))
    for g in range(n_groups):
        weights = within_bin_weights(ends, noisy_censored[g])
        start = 0
        for j in range(b):
            stop = int(ends[j])
            n = at_risk[g, j]
            c = n - at_risk[g, j + 1] - events[g, j]
            ni, di, ci = spread_bin(n, events[g, j], c, weights[j])
            d_fine[g, start:stop] = di
            n_fine[g, start:stop] = ni - ci / 2
            start = stop
    comp = logrank_components(d_fine[None], n_fine[None])
    comp["n"] = at_risk[:, 0].astype(np.float64)
    return comp


def site_code(site: str | None, sites: tuple[str, ...]) -> int:
    """Index of ``site`` in the declared ``sites``; the site refuses if it is not listed."""
    if site is None or site not in sites:
        raise AlgorithmError(
            "this site is not among the sites declared in the study parameter 'sites'"
        )
    return sites.index(site)


@register
@dataclass(frozen=True, kw_only=True)
class LogRank(Algorithm):
    """Log-rank test of two or more groups on a public time grid, optionally stratified.

    Parameters
    ----------
    time, event
        Columns of follow-up time (non-negative) and event indicator (0/1).
    group
        The column defining the groups.
    groups
        Its levels, declared publicly (at least two).
    time_grid
        The public grid; times are rounded up to it (times beyond its last point
        are censored there).  ``None`` (with ``horizon``) plans the grid.
    horizon, plan_cells, plan_epsilon, plan_delta, min_cell
        A planned grid shared by the groups (see
        :class:`~consortia.survival.kaplan_meier.KaplanMeier` and
        :mod:`consortia.survival._plan`): each bin holds at least ``min_cell``
        events of every group.  Not with strata or site strata.
    strata, strata_levels
        Optional stratification column and its declared levels.
    stratify_by_site
        Stratify by site (each site is its own stratum, or its own set of strata
        with ``strata``).
    sites
        Optionally, the site names expected with ``stratify_by_site``: a site not
        listed refuses.
    exact_times
        If True, sites refuse times that are not grid points.

    Notes
    -----
    One round.  Without site strata each site releases arrays of shape
    ``(strata, groups, grid)`` of event and at-risk counts, declared as count
    arrays.  With site strata each site releases only the sums over its own
    strata of observed and expected events per group, their covariance, group
    sizes and its number of non-empty strata (observed events and group sizes are
    declared counts); the hub sees only their sums over sites.
    """

    name = "survival.logrank"
    time: str
    event: str
    group: str
    groups: tuple[Any, ...]
    time_grid: tuple[float, ...] | None = None
    strata: str | None = None
    strata_levels: tuple[Any, ...] | None = None
    stratify_by_site: bool = False
    sites: tuple[str, ...] | None = None
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
        elif self.strata is not None or self.stratify_by_site or self.exact_times:
            raise ValidationError(
                "horizon (a planned grid) is for the plain log-rank test: not with strata, "
                "stratify_by_site or exact_times"
            )
        groups = check_levels(self.groups, name="groups")
        if len(groups) < 2:
            raise ValidationError("groups must declare at least two levels to compare")
        object.__setattr__(self, "groups", groups)
        if self.strata is None:
            if self.strata_levels is not None:
                raise ValidationError("strata_levels are declared but no strata column is given")
        else:
            levels = check_levels(self.strata_levels, name="strata_levels")
            object.__setattr__(self, "strata_levels", levels)
        if self.stratify_by_site:
            if self.sites is not None:
                sites = check_levels(self.sites, name="sites")
                if not all(isinstance(s, str) for s in sites):
                    raise ValidationError("sites must be site names (strings)")
                object.__setattr__(self, "sites", sites)
        elif self.sites is not None:
            raise ValidationError("sites are declared but stratify_by_site is False")

    @property
    def _n_strata(self) -> int:
        """Strata a site counts in: the column's levels (site strata stay local)."""
        return len(self.strata_levels) if self.strata_levels is not None else 1

    @cached_property
    def _plan(self) -> PlanSettings | None:
        """The planned grid's settings (``None`` with an explicit ``time_grid``)."""
        return plan_settings(self)

    def privacy_cost(self) -> tuple[float, float]:
        """``(plan_epsilon, plan_delta)`` with a planned grid, else ``(0, 0)``."""
        if self._plan is None:
            return (0.0, 0.0)
        return (self._plan.epsilon, self._plan.delta)

    def _coordinate_planned(self) -> Coordination:
        settings = self._plan
        assert settings is not None
        groups = tuple(str(g) for g in self.groups)
        n_groups = len(groups)
        sums = yield Round("plan")
        ends, public = make_plan(sums, settings, n_groups, shared=True, labels=groups)
        sums = yield Round("counts", public)
        b = ends[0].size
        events = np.rint(np.asarray(sums["events"])).reshape(n_groups, b)
        at_risk = np.rint(np.asarray(sums["at_risk"])).reshape(n_groups, b + 1)
        comp = planned_components(events, at_risk, ends[0], public["plan_censored"])
        result = logrank_from_components(comp, groups=groups)
        return dataclasses.replace(
            result,
            plan=grid_plan(public, settings, [settings.fine_edges[ends[0]]]),
            cells_below_k=cells_below(events, at_risk, settings.k),
        )

    def coordinate(self) -> Coordination:
        if self._plan is not None:
            return (yield from self._coordinate_planned())
        groups = tuple(str(g) for g in self.groups)
        if self.stratify_by_site:
            sums = yield Round("site_strata")
            return logrank_from_components(
                {**sums, "expected": join(sums, "expected"), "variance": join(sums, "variance")},
                groups=groups,
            )
        sums = yield Round("counts")
        assert self.time_grid is not None
        shape = (self._n_strata, len(self.groups), len(self.time_grid))
        events = np.rint(np.asarray(sums["events"])).reshape(shape)
        at_risk = np.rint(np.asarray(sums["at_risk"])).reshape(shape)
        return logrank_from_counts(events, at_risk, groups=groups)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if self._plan is not None:
            return self._local_planned(step, public, data)
        if step != ("site_strata" if self.stratify_by_site else "counts"):
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        grid = np.asarray(self.time_grid)
        idx, e = grid_map(t, e, grid, column=self.time, exact=self.exact_times)
        n_groups = len(self.groups)
        stratum = np.zeros(len(t), dtype=np.int64)
        if self.strata is not None:
            assert self.strata_levels is not None
            stratum = level_codes(frame, self.strata, self.strata_levels)
        if self.stratify_by_site and self.sites is not None:
            site_code(data.site, self.sites)  # a site not declared by the study refuses
        codes = stratum * n_groups + level_codes(frame, self.group, self.groups)
        events, at_risk = grid_counts(idx, e, grid.size, codes, self._n_strata * n_groups)
        if not self.stratify_by_site:
            return Contribution(
                {"events": events.ravel(), "at_risk": at_risk.ravel()},
                cohort=len(t),
                count_arrays=frozenset({"events", "at_risk"}),
                **binned_on(self.time, grid),
            )
        shape = (self._n_strata, n_groups, grid.size)
        comp = logrank_components(events.reshape(shape), at_risk.reshape(shape))
        return Contribution(
            {
                "observed": comp["observed"],
                "n": comp["n"],
                "strata": comp["strata"],
                **split("expected", comp["expected"]),
                **split("variance", comp["variance"]),
            },
            cohort=len(t),
            count_arrays=frozenset({"observed", "n"}),
        )

    def _local_planned(
        self, step: str, public: Mapping[str, np.ndarray], data: Dataset
    ) -> Contribution:
        if step not in ("plan", "counts"):
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        codes = level_codes(frame, self.group, self.groups)
        n_groups = len(self.groups)
        plan = self._plan
        assert plan is not None
        if step == "plan":
            return plan_contribution(t, e, codes, n_groups, plan)
        grids = verify_plan(public, plan, n_groups, shared=True)
        return planned_contribution(t, e, codes, grids, plan, column=self.time)
