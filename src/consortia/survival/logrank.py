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

Strata may be the levels of a column (``strata`` + ``strata_levels``), the
sites themselves (``stratify_by_site`` + ``sites``: each site fills only its
own stratum), or both (every column level within every site).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2 as chi2_dist

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.survival._grid import grid_counts, grid_index, validate_grid
from consortia.survival._validate import check_levels, level_codes, survival_columns

__all__ = ["LogRank", "LogRankResult", "logrank_from_counts", "site_code"]


@dataclass(frozen=True)
class LogRankResult:
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


def logrank_from_counts(
    events: np.ndarray, at_risk: np.ndarray, *, groups: tuple[str, ...]
) -> LogRankResult:
    """Log-rank test from pooled counts.

    Parameters
    ----------
    events, at_risk
        Arrays of shape ``(n_strata, n_groups, n_times)``.
    groups
        Group labels.

    Raises
    ------
    AlgorithmError
        If a group has no patients, or no group has an event.
    """
    d = np.asarray(events, dtype=np.float64)
    n = np.asarray(at_risk, dtype=np.float64)
    n_group = n[:, :, 0].sum(axis=0)
    for label, size in zip(groups, n_group, strict=True):
        if size == 0:
            raise AlgorithmError(f"group {label!r} has no patients at any site")
    d_tot = d.sum(axis=1)  # (S, K)
    n_tot = n.sum(axis=1)
    if d_tot.sum() == 0:
        raise AlgorithmError(
            "the log-rank test needs at least one event; every patient is censored"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(n_tot > 0, d_tot / n_tot, 0.0)
        factor = np.where(n_tot > 1, d_tot * (n_tot - d_tot) / (n_tot**2 * (n_tot - 1)), 0.0)
    observed = d.sum(axis=(0, 2))
    expected = np.einsum("sgk,sk->g", n, rate)
    diag = np.einsum("sk,sk,sgk->g", factor, n_tot, n)
    variance = np.diag(diag) - np.einsum("sk,sgk,shk->gh", factor, n, n)
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
    n_strata = int(np.count_nonzero(n[:, :, 0].sum(axis=1)))
    return LogRankResult(
        groups=groups,
        observed=observed,
        expected=expected,
        variance=variance,
        chi2=stat,
        df=df,
        p_value=float(chi2_dist.sf(stat, df)),
        n=n_group,
        n_strata=n_strata,
    )


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
        The public grid; times are rounded up to it.
    strata, strata_levels
        Optional stratification column and its declared levels.
    stratify_by_site
        Stratify by site (each site is its own stratum); needs ``sites``.
    sites
        The participating site names, in a fixed order (with ``stratify_by_site``).
    exact_times
        If True, sites refuse times that are not grid points.

    Notes
    -----
    One round.  Each site releases arrays of shape ``(strata, groups, grid)``
    of event and at-risk counts, declared as count arrays.  With site strata a
    site fills only its own stratum's slice; the secure sum then reveals each
    site's own counts to the hub, which is what a site-stratified test needs
    (the counts are still checked by the minimum-cell rule).
    """

    name = "survival.logrank"
    time: str
    event: str
    group: str
    groups: tuple[Any, ...]
    time_grid: tuple[float, ...]
    strata: str | None = None
    strata_levels: tuple[Any, ...] | None = None
    stratify_by_site: bool = False
    sites: tuple[str, ...] | None = None
    exact_times: bool = False

    def __post_init__(self) -> None:
        grid = validate_grid(self.time_grid)
        object.__setattr__(self, "time_grid", tuple(float(x) for x in grid))
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
            sites = check_levels(self.sites, name="sites")
            if not all(isinstance(s, str) for s in sites):
                raise ValidationError("sites must be site names (strings)")
            object.__setattr__(self, "sites", sites)
        elif self.sites is not None:
            raise ValidationError("sites are declared but stratify_by_site is False")

    @property
    def _n_strata(self) -> int:
        n = len(self.strata_levels) if self.strata_levels is not None else 1
        return n * (len(self.sites) if self.stratify_by_site and self.sites else 1)

    def coordinate(self) -> Coordination:
        sums = yield Round("counts")
        shape = (self._n_strata, len(self.groups), len(self.time_grid))
        events = np.rint(np.asarray(sums["events"])).reshape(shape)
        at_risk = np.rint(np.asarray(sums["at_risk"])).reshape(shape)
        return logrank_from_counts(events, at_risk, groups=tuple(str(g) for g in self.groups))

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step != "counts":
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        grid = np.asarray(self.time_grid)
        idx = grid_index(t, grid, column=self.time, exact=self.exact_times)
        n_groups = len(self.groups)
        stratum = np.zeros(len(t), dtype=np.int64)
        if self.strata is not None:
            assert self.strata_levels is not None
            stratum = level_codes(frame, self.strata, self.strata_levels)
        if self.stratify_by_site:
            assert self.sites is not None
            stratum = stratum * len(self.sites) + site_code(data.site, self.sites)
        codes = stratum * n_groups + level_codes(frame, self.group, self.groups)
        n_codes = self._n_strata * n_groups
        events, at_risk = grid_counts(idx, e, grid.size, codes, n_codes)
        return Contribution(
            {"events": events.ravel(), "at_risk": at_risk.ravel()},
            cohort=len(t),
            count_arrays=frozenset({"events", "at_risk"}),
        )
