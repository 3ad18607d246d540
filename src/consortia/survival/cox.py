"""Federated Cox proportional hazards model, exact against lifelines and statsmodels.

Newton-Raphson in which every round the sites release sums only.  Two modes:

* **Pooled** (unstratified, or stratified by a covariate with public levels):
  the study declares a public time grid; each round every site releases, per
  grid time that carries an event, the sums of ``phi``, ``phi z`` and
  ``phi z z'`` over its patients at risk (and, for Efron, over its patients
  with an event there), and the hub evaluates the pooled partial likelihood,
  its gradient and Hessian exactly.  The first round releases per-time event
  counts: they fall under the node's minimum-cell rule, so an exact day-grid
  model needs the data owners to allow small cells (``min_cell_count=1``), or a
  coarser grid (exact for the times rounded up to it).
* **Pooled on a planned grid** (``horizon`` instead of ``time_grid``): a first,
  differentially private ``plan`` round places bins holding at least
  ``min_cell`` events in the pooled sum (:mod:`consortia.survival._plan`), so
  the model runs under the default policy; events of a bin are tied at its end
  and a patient censored within a bin counts with half its weight in that
  bin's risk set (actuarial convention).  An approximation of the exact model:
  its error is measured in the tests (docs/survival.md).
* **Stratified by site** (``stratify_by_site=True``): each site evaluates its
  own partial likelihood, gradient and Hessian, and only their sums travel: no
  grid, no per-time arrays, no per-time counts.  The privacy-friendly mode.

Conventions follow lifelines' ``CoxPHFitter``: covariates are standardised with
the pooled (unweighted) means and SDs; the ridge penalty is
``0.5 * penalizer * n * ||beta_std||^2`` with ``n`` the number of rows;
coefficients and (penalised-Hessian) standard errors are reported in original
units; robust standard errors are the sandwich ``V (sum_i U_i U_i') V`` with
Breslow-form score residuals ``U_i`` (as lifelines without ties, statsmodels
always); the baseline hazard is Breslow's, for covariates at their pooled mean.

Rounds and what they release
----------------------------
1. ``summary``: counts, sums and sums of squares of the covariates (pooled
   means and SDs), the events' covariate sums; in pooled mode the event counts
   per (stratum, grid time), a declared count array (minimum-cell rule).
2. ``newton`` (one per Newton-Raphson iteration; the public arrays are the
   standardised coefficients, a scale offset and, in pooled mode, the grid
   times that carry a pooled event): pooled mode, ``[S0, S1, S2]`` per event
   time (``S2`` packed symmetric) and Efron's tie sums at times with two or more
   events; site-stratified mode, the site's log-likelihood, gradient and
   Hessian.  Every contribution declares ``n_parameters`` = number of
   covariates (parameters-per-sample rule); every step declares it beforehand
   (:meth:`CoxPH.requirements`), so a site whose rows cannot support the model
   refuses at the first round without computing anything.
3. ``score`` (only with ``robust=True``): the sum of the outer products of the
   site's patients' score residuals.  In pooled mode the hub first broadcasts
   the pooled risk-set means and Breslow hazard increments per event time.

With a planned grid a ``plan`` round (noisy event and censoring histograms)
comes first, and every later round carries the plan so that each site
re-checks the grid (:func:`~consortia.survival._plan.verify_plan`); the event
counts per bin are declared ``planned`` count arrays.

Disclosure notes: the hub learns the pooled per-time sums (at the first
Newton round, ``S0`` is the pooled number at risk over the total, not a
declared count); in pooled mode the sites learn which grid times carry pooled
events and, with ``robust=True``, the pooled risk-set means there.  The
site-stratified mode releases only ``p + p(p+1)/2 + 2`` numbers a round.

Precision: every float sum travels as two fixed-point words (a value on the
``2**-24`` grid and its magnified residual), 48 fractional bits in all, so
coefficients match the pooled fit to about 1e-11 with the default codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import SchemaError, ValidationError
from consortia.precision import split
from consortia.protocol import (
    Algorithm,
    Contribution,
    Coordination,
    Requirements,
    register,
)
from consortia.stats._validate import numeric_columns
from consortia.survival import _cox_fit
from consortia.survival import _cox_math as cm
from consortia.survival._cox_result import CoxPHResult
from consortia.survival._grid import binned_on, grid_map, grid_param
from consortia.survival._plan import (
    PlanSettings,
    plan_contribution,
    plan_settings,
    verify_plan,
)
from consortia.survival._validate import check_levels, level_codes, survival_columns

__all__ = ["CoxPH", "CoxPHResult"]

_TIES = ("efron", "breslow")


@dataclass
class _Rows:
    """One site's validated rows."""

    t: np.ndarray
    e: np.ndarray
    x: np.ndarray
    w: np.ndarray
    codes: np.ndarray


@register
@dataclass(frozen=True, kw_only=True)
class CoxPH(Algorithm):
    """Federated Cox proportional hazards regression (Newton-Raphson on secure sums).

    Parameters
    ----------
    time, event
        Columns of follow-up times (non-negative) and event indicators (0/1).
    covariates
        Numeric covariate columns.
    ties
        ``"efron"`` (lifelines' method) or ``"breslow"``.
    time_grid
        Public, strictly increasing time grid (pooled mode; optional when
        stratified by site).  Times are rounded up to the grid (times beyond its
        last point are censored there); with integer-day data and a day grid the
        model equals the pooled one exactly.
    horizon, plan_cells, plan_epsilon, plan_delta, min_cell
        Instead of ``time_grid`` (pooled, unstratified model only): plan the grid
        from differentially private counts (:mod:`consortia.survival._plan`) so
        that every released event cell holds at least ``min_cell`` events.  The
        events of a bin are tied at its end (Efron or Breslow); a patient
        censored within a bin counts with half its weight in that bin's risk
        set (the actuarial convention), fully in earlier ones.  Not with
        ``robust``.
    stratify_by_site
        Give every site its own baseline hazard: only per-site likelihood,
        gradient and Hessian sums travel (no grid, no per-time counts).
    strata, strata_levels
        Stratify by a covariate whose public levels are declared.
    penalizer
        Ridge penalty (lifelines convention, on standardised coefficients); a
        number or one per covariate.
    weights
        Optional column of positive case weights (lifelines ``weights_col``).
    robust
        Report sandwich (robust) standard errors (lifelines ``robust=True``);
        costs one more round.
    alpha
        Confidence intervals at level ``1 - alpha``.
    max_iter
        Largest number of Newton-Raphson rounds.
    tol
        Convergence when the largest Newton step on the standardised scale is
        below ``tol``.
    raise_on_failure
        Raise :class:`~consortia.errors.ConvergenceError` when the model does
        not converge (otherwise return a result with ``converged=False``).
    """

    name = "survival.cox"
    time: str
    event: str
    covariates: tuple[str, ...]
    ties: str = "efron"
    time_grid: tuple[float, ...] | None = None
    stratify_by_site: bool = False
    strata: str | None = None
    strata_levels: tuple[str | int | float | bool, ...] | None = None
    penalizer: float | tuple[float, ...] = 0.0
    weights: str | None = None
    robust: bool = False
    alpha: float = 0.05
    max_iter: int = 20
    tol: float = 1e-8
    raise_on_failure: bool = True
    horizon: float | None = None
    plan_cells: int | tuple[float, ...] = 20
    plan_epsilon: float = 0.5
    plan_delta: float = 1e-6
    min_cell: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.covariates, str):
            object.__setattr__(self, "covariates", (self.covariates,))
        covs = tuple(self.covariates)
        object.__setattr__(self, "covariates", covs)
        if not covs or not all(isinstance(c, str) and c for c in covs):
            raise ValidationError("covariates must be a non-empty tuple of column names")
        if len(set(covs)) != len(covs):
            raise ValidationError("covariates must not repeat a column")
        special = [c for c in (self.time, self.event, self.weights, self.strata) if c]
        clash = sorted(set(covs) & set(special))
        if clash:
            raise ValidationError(f"column(s) {clash} cannot be both a covariate and a role column")
        if self.ties not in _TIES:
            raise ValidationError(f"ties must be one of {_TIES}")
        if self._plan is not None and (  # validates the planned-grid parameters
            self.stratify_by_site or self.strata is not None or self.robust
        ):
            raise ValidationError(
                "horizon (a planned grid) is for the pooled, unstratified Cox model: not "
                "with stratify_by_site, strata or robust"
            )
        if self.time_grid is not None:
            object.__setattr__(self, "time_grid", grid_param(self.time_grid))
        if (self.strata is None) != (self.strata_levels is None):
            raise ValidationError("strata and strata_levels must be given together")
        if self.strata_levels is not None:
            object.__setattr__(
                self, "strata_levels", check_levels(self.strata_levels, name="strata_levels")
            )
        pen = self.penalizer
        if isinstance(pen, (list, tuple)):
            pen = tuple(float(v) for v in pen)
            if len(pen) != len(covs):
                raise ValidationError("penalizer must be a number or one number per covariate")
            object.__setattr__(self, "penalizer", pen)
        elif isinstance(pen, bool) or not isinstance(pen, (int, float)):
            raise ValidationError("penalizer must be a non-negative number")
        if not np.all(np.isfinite(np.asarray(pen, float))) or np.any(np.asarray(pen, float) < 0):
            raise ValidationError("penalizer must be finite and non-negative")
        if not 0 < self.alpha < 1:
            raise ValidationError("alpha must lie strictly between 0 and 1")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int):
            raise ValidationError("max_iter must be a positive integer")
        if self.max_iter < 1:
            raise ValidationError("max_iter must be a positive integer")
        if not self.tol > 0:
            raise ValidationError("tol must be positive")

    # ------------------------------------------------------------------ helpers

    @cached_property
    def _plan(self) -> PlanSettings | None:
        """The planned grid's settings: with ``horizon``, or when nothing else gives times.

        ``None`` with an explicit ``time_grid`` or site strata (and no ``horizon``).
        """
        if self.horizon is None and (self.time_grid is not None or self.stratify_by_site):
            return None
        return plan_settings(self)

    @property
    def _p(self) -> int:
        return len(self.covariates)

    @property
    def _n_strata(self) -> int:
        return 1 if self.strata_levels is None else len(self.strata_levels)

    def requirements(self, step: str) -> Requirements:
        """Every step: the model's ``len(covariates)`` parameters; the columns the step reads.

        A site refuses the study at its first round, before any array is built,
        when its rows cannot support that many parameters.
        """
        if step == "plan":
            return Requirements(n_parameters=self._p, columns=(self.time, self.event))
        roles = tuple(c for c in (self.weights, self.strata) if c is not None)
        return Requirements(
            n_parameters=self._p, columns=(self.time, self.event, *self.covariates, *roles)
        )

    def privacy_cost(self) -> tuple[float, float]:
        """``(plan_epsilon, plan_delta)`` with a planned grid, else ``(0, 0)``."""
        if self._plan is None:
            return (0.0, 0.0)
        return (self._plan.epsilon, self._plan.delta)

    def _grid(self, public: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The grid of a round: explicit, or the planned one (verified), or none."""
        if self._plan is None:
            return None if self.time_grid is None else np.asarray(self.time_grid)
        return verify_plan(public, self._plan, 1, shared=True)[0]

    @staticmethod
    def _split_censored(rows: _Rows, grid: np.ndarray, t: np.ndarray) -> _Rows:
        """Planned grid: a patient censored within a bin becomes two half-weight rows.

        One at the bin's end (at risk at its events), one at the previous bin's
        end (not at risk at them): half weight in the bin's risk set, full weight
        before.  Patients followed beyond the grid stay whole, censored at its end.
        """
        idx = np.searchsorted(grid, t, side="left")
        inside = (rows.e == 0) & (idx < grid.size)
        prev = np.where(idx > 0, grid[np.maximum(idx - 1, 0)], -1.0)
        half = np.where(inside, 0.5, 1.0) * rows.w
        keep = np.flatnonzero(inside)
        return _Rows(
            t=np.concatenate([rows.t, prev[keep]]),
            e=np.concatenate([rows.e, np.zeros(keep.size, np.int64)]),
            x=np.concatenate([rows.x, rows.x[keep]]),
            w=np.concatenate([half, half[keep]]),
            codes=np.concatenate([rows.codes, rows.codes[keep]]),
        )

    def _rows(self, data: Dataset, grid: np.ndarray | None = None) -> _Rows:
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        x = numeric_columns(frame, self.covariates)
        if self.weights is None:
            w = np.ones(len(t))
        else:
            w = numeric_columns(frame, (self.weights,))[:, 0]
            if np.any(w <= 0):
                raise SchemaError(f"weights column {self.weights!r} must hold positive values")
        if self.strata is None:
            codes = np.zeros(len(t), dtype=np.int64)
        else:
            codes = level_codes(frame, self.strata, self.strata_levels or ())
        if grid is not None:
            idx, e = grid_map(t, e, grid, column=self.time)
            return _Rows(t=grid[idx], e=e, x=x, w=w, codes=codes)
        return _Rows(t=t, e=e, x=x, w=w, codes=codes)

    # ------------------------------------------------------------------ site side

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step == "plan" and self._plan is not None:
            t, e = survival_columns(data.frame, self.time, self.event)
            return plan_contribution(t, e, None, 1, self._plan)
        if step not in ("summary", "newton", "score"):
            raise ValidationError(f"unknown step {step!r} for {self.name}")
        grid = self._grid(public)
        rows = self._rows(data, grid)
        n = len(rows.t)
        if step == "summary":
            return self._local_summary(rows, grid)
        if self._plan is not None:
            assert grid is not None
            raw_t, _ = survival_columns(data.frame, self.time, self.event)
            rows = self._split_censored(rows, grid, raw_t)
        beta, offset = public["beta"], float(public["offset"][0])
        z = (rows.x - public["mean"]) / public["sd"]
        phi0 = np.exp(z @ beta - offset)
        phi = rows.w * phi0
        arrays: dict[str, np.ndarray] = {}
        if self.stratify_by_site:
            # the site's own event times: nothing about them leaves the site
            ev_t, ev_c, bins, d, dw, tie_rows = self._local_event_times(rows)
            risk, ties = cm.risk_sums(bins, rows.e, z, phi, ev_c, tie_rows)
            if step == "newton":
                xe = (rows.w * rows.e) @ z
                ll, g, h = cm.partial_likelihood(risk, ties, tie_rows, d, dw, xe, beta, offset)
                arrays.update(split("loglik", np.array([ll])))
                arrays.update(split("grad", g))
                arrays.update(split("hess", cm.pack(h)))
            else:
                xbar = risk[:, 1 : 1 + self._p] / risk[:, :1]
                meat = cm.score_meat(bins, rows.e, rows.w, z, phi0, xbar, dw / risk[:, 0], ev_c)
                arrays.update(split("meat", meat))
        else:
            assert grid is not None
            ev_t = grid[public["event_index"].astype(np.int64)]
            ev_c = public["event_code"].astype(np.int64)
            bins = cm.last_at_risk(rows.t, rows.codes, ev_t, ev_c)
            if step == "newton":
                tie_rows = public["tie_rows"].astype(np.int64) if self.ties == "efron" else None
                risk, ties = cm.risk_sums(bins, rows.e, z, phi, ev_c, tie_rows)
                arrays.update(split("risk", risk))
                if ties is not None and ties.size:
                    arrays.update(split("ties", ties))
            else:
                xbar, dlam = public["xbar"], public["dlam"]
                meat = cm.score_meat(bins, rows.e, rows.w, z, phi0, xbar, dlam, ev_c)
                arrays.update(split("meat", meat))
        if step == "newton":
            arrays.update(split("total", np.array([phi.sum()])))
        return Contribution(arrays, cohort=n, n_parameters=self._p)

    def _local_summary(self, rows: _Rows, grid: np.ndarray | None) -> Contribution:
        n = len(rows.t)
        we = rows.w * rows.e
        arrays: dict[str, np.ndarray] = {"n": np.array([n], float)}
        arrays.update(split("w_sum", np.array([rows.w.sum()])))
        arrays.update(split("x_sum", rows.x.sum(axis=0)))
        arrays.update(split("x_sq", (rows.x**2).sum(axis=0)))
        arrays.update(split("xe", we @ rows.x))
        arrays.update(split("dw_total", np.array([we.sum()])))
        arrays["n_events"] = np.array([rows.e.sum()], float)
        counts: frozenset[str] = frozenset()
        binned: dict[str, Any] = {}
        if not self.stratify_by_site:
            assert grid is not None
            gidx = np.searchsorted(grid, rows.t)
            flat = rows.codes * grid.size + gidx
            size = self._n_strata * grid.size
            arrays["events"] = np.bincount(flat, weights=rows.e, minlength=size)
            if self.weights is not None:
                arrays.update(split("events_w", np.bincount(flat, we, minlength=size)))
            counts = frozenset({"events"})
            binned = binned_on(self.time, grid)
        if self._plan is not None:
            return Contribution(
                arrays,
                cohort=n,
                count_arrays=counts,
                planned=counts,
                planned_min=self._plan.k,
                **binned,
            )
        return Contribution(arrays, cohort=n, count_arrays=counts, **binned)

    def _local_event_times(
        self, rows: _Rows
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        ev = rows.e == 1
        keys = np.unique(np.stack([rows.codes[ev], rows.t[ev]], axis=1), axis=0)
        ev_c, ev_t = keys[:, 0].astype(np.int64), keys[:, 1]
        bins = cm.last_at_risk(rows.t, rows.codes, ev_t, ev_c)
        d = np.bincount(bins[ev], minlength=len(ev_t)).astype(float)
        dw = np.bincount(bins[ev], weights=rows.w[ev], minlength=len(ev_t))
        tie_rows = np.flatnonzero(d >= 2) if self.ties == "efron" else None
        return ev_t, ev_c, bins, d, dw, tie_rows

    # ------------------------------------------------------------------ hub side

    def coordinate(self) -> Coordination:
        return (yield from _cox_fit.coordinate(self))
