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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.survival._grid import grid_counts, grid_map, validate_grid
from consortia.survival._validate import check_levels, level_codes, survival_columns

__all__ = ["KaplanMeier", "KaplanMeierCurve", "KaplanMeierResult", "product_limit"]


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
        The public grid the sites counted on.
    alpha
        1 - confidence level of the bands.
    """

    curves: Mapping[str, KaplanMeierCurve]
    time_grid: np.ndarray
    alpha: float

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
        The public grid (see :mod:`consortia.survival._grid`); it must cover
        every site's follow-up.  Times are rounded up to it.
    group
        Optional column splitting patients into groups (one curve each).
    groups
        The group levels, declared publicly (required with ``group``); every
        value of the column at every site must be one of them.
    alpha
        1 - confidence level of the bands (default 0.05: 95 %).
    exact_times
        If True, sites refuse times that are not grid points (instead of
        rounding them up).

    Notes
    -----
    One round.  Each site releases, per group and grid point, its event count
    and at-risk count, both declared as count arrays (minimum-cell rule):
    under the default policy (``min_cell_count=5``) a fine grid on a small
    cohort is refused; coarsen the grid (:func:`~consortia.survival._grid.regular_grid`)
    or ask the data owners for a lower threshold.
    """

    name = "survival.kaplan_meier"
    time: str
    event: str
    time_grid: tuple[float, ...]
    group: str | None = None
    groups: tuple[Any, ...] | None = None
    alpha: float = 0.05
    exact_times: bool = False

    def __post_init__(self) -> None:
        grid = validate_grid(self.time_grid)
        object.__setattr__(self, "time_grid", tuple(float(x) for x in grid))
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

    def coordinate(self) -> Coordination:
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
        if step != "counts":
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        grid = np.asarray(self.time_grid)
        idx, e = grid_map(t, e, grid, column=self.time, exact=self.exact_times)
        if self.group is None:
            codes, n_codes = None, 1
        else:
            assert self.groups is not None
            codes, n_codes = level_codes(frame, self.group, self.groups), len(self.groups)
        events, at_risk = grid_counts(idx, e, grid.size, codes, n_codes)
        return Contribution(
            {"events": events.ravel(), "at_risk": at_risk.ravel()},
            cohort=len(t),
            count_arrays=frozenset({"events", "at_risk"}),
        )
