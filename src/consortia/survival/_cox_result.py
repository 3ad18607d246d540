"""The result of a federated Cox model: coefficients, summary table, prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from consortia.errors import AlgorithmError, SchemaError
from consortia.results import Result, coefficient_table
from consortia.stats._validate import numeric_columns

__all__ = ["CoxPHResult"]


@dataclass(frozen=True)
class CoxPHResult(Result):
    """A fitted Cox proportional hazards model.

    Attributes
    ----------
    covariates
        Covariate names, in order.
    coef, se
        Coefficients (log hazard ratios) and their standard errors, original units
        (robust sandwich errors when the model was fitted with ``robust=True``).
    variance
        Covariance matrix of ``coef`` (the one ``se`` comes from).
    mean
        Pooled covariate means: the baseline hazard is for a patient at the mean.
    log_likelihood
        Log partial likelihood at the estimate (penalised, like lifelines).
    log_likelihood_null
        Log partial likelihood of the model with every coefficient 0.
    n, n_events
        Patients and events over all sites.
    rounds, iterations
        Secure-aggregation rounds of the study, and Newton-Raphson rounds among them.
    converged
        Whether Newton-Raphson met its tolerance.
    ties, alpha
        The tie method and the confidence level ``1 - alpha`` of the intervals.
    baseline_hazard, baseline_cumulative_hazard
        Breslow estimates at the event times of the grid (one column per stratum),
        or ``None`` for a site-stratified model (no per-time sums are released).
    strata
        The stratification column, if any.
    stratified_by_site
        Whether each site had its own baseline hazard.
    plan
        With a planned grid: the plan (:class:`~consortia.survival._plan.GridPlan`).
    cells_below_k
        With a planned grid: released non-zero event cells below ``min_cell``.
    """

    covariates: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    variance: np.ndarray
    mean: np.ndarray
    log_likelihood: float
    log_likelihood_null: float
    n: int
    n_events: int
    rounds: int
    iterations: int
    converged: bool
    ties: str
    alpha: float
    baseline_hazard: pd.DataFrame | None
    baseline_cumulative_hazard: pd.DataFrame | None
    strata: str | None
    stratified_by_site: bool
    robust: bool
    plan: Any = None
    cells_below_k: int = 0

    @classmethod
    def build(
        cls,
        *,
        beta_std: np.ndarray,
        sd: np.ndarray,
        var_std: np.ndarray,
        meat_std: np.ndarray | None,
        baseline_hazard: pd.DataFrame | None,
        **kwargs: Any,
    ) -> CoxPHResult:
        """Assemble a result from standardised-scale estimates (internal)."""
        if meat_std is not None:
            var_std = var_std @ meat_std @ var_std
        variance = var_std / np.outer(sd, sd)
        cum = None if baseline_hazard is None else baseline_hazard.cumsum()
        if cum is not None and list(cum.columns) == ["baseline hazard"]:
            cum.columns = ["baseline cumulative hazard"]
        return cls(
            coef=beta_std / sd,
            se=np.sqrt(np.diag(variance)),
            variance=variance,
            baseline_hazard=baseline_hazard,
            baseline_cumulative_hazard=cum,
            robust=meat_std is not None,
            **kwargs,
        )

    @property
    def hazard_ratios(self) -> np.ndarray:
        """``exp(coef)``."""
        return np.exp(self.coef)

    @property
    def z(self) -> np.ndarray:
        """Wald statistics ``coef / se``."""
        return self.coef / self.se

    @property
    def p(self) -> np.ndarray:
        """Two-sided Wald p-values."""
        return stats.chi2.sf(self.z**2, 1)

    @property
    def summary(self) -> pd.DataFrame:
        """The coefficient table, with hazard ratios ``exp(coef)``: lifelines'
        ``CoxPHFitter.summary`` columns (see :func:`consortia.results.coefficient_table`)."""
        q = stats.norm.ppf(1 - self.alpha / 2)
        return coefficient_table(
            self.covariates, self.coef, self.se, self.coef - q * self.se,
            self.coef + q * self.se, self.z, self.p, exponentiate=True, level=1 - self.alpha,
        )  # fmt: skip

    @property
    def log_likelihood_ratio_test(self) -> tuple[float, int, float]:
        """``(statistic, df, p)`` of the likelihood-ratio test against all coefficients 0.

        The statistic is ``2 * (log_likelihood - log_likelihood_null)`` on
        ``len(covariates)`` degrees of freedom (lifelines'
        ``log_likelihood_ratio_test``).  For a penalised model the log-likelihood
        includes the penalty, as in lifelines.
        """
        stat = float(2.0 * (self.log_likelihood - self.log_likelihood_null))
        df = len(self.covariates)
        return stat, df, float(stats.chi2.sf(stat, df))

    @property
    def wald_test(self) -> tuple[float, int, float]:
        """``(statistic, df, p)`` of the global Wald test ``coef' variance^-1 coef``
        (robust when ``variance`` is the sandwich one), on ``len(covariates)`` df."""
        stat = float(self.coef @ np.linalg.solve(self.variance, self.coef))
        df = len(self.covariates)
        return stat, df, float(stats.chi2.sf(stat, df))

    def statistics(self) -> dict[str, Any]:
        """n, events, log-likelihoods, the likelihood-ratio and Wald tests, the fit's settings."""
        lr, lr_df, lr_p = self.log_likelihood_ratio_test
        wald, wald_df, wald_p = self.wald_test
        out: dict[str, Any] = {
            "n": self.n,
            "events": self.n_events,
            "log_likelihood": self.log_likelihood,
            "log_likelihood_null": self.log_likelihood_null,
            "lr_test": lr,
            "lr_df": lr_df,
            "lr_p": lr_p,
            "wald_test": wald,
            "wald_df": wald_df,
            "wald_p": wald_p,
            "ties": self.ties,
            "robust": self.robust,
            "confidence": 1 - self.alpha,
            "strata": self.strata if self.strata is not None else "none",
            "stratified_by_site": self.stratified_by_site,
            "converged": self.converged,
            "iterations": self.iterations,
            "rounds": self.rounds,
        }
        if self.plan is not None:
            out["planned_bins"] = int(self.plan.grids[0].size)
            out["cells_below_k"] = self.cells_below_k
        return out

    def tables(self, *, full: bool = False) -> dict[str, pd.DataFrame]:
        """``summary`` (the coefficients); with ``full``, the baseline hazards too."""
        out = {"summary": self.summary}
        if full and self.baseline_hazard is not None:
            assert self.baseline_cumulative_hazard is not None
            out["baseline_hazard"] = self.baseline_hazard
            out["baseline_cumulative_hazard"] = self.baseline_cumulative_hazard
        return out

    def predict_partial_hazard(self, covariates: pd.DataFrame) -> pd.Series:
        """``exp((x - mean)'coef)`` for new patients (lifelines' partial hazard)."""
        x = numeric_columns(covariates, self.covariates)
        return pd.Series(np.exp((x - self.mean) @ self.coef), index=covariates.index)

    def predict_survival(
        self, covariates: pd.DataFrame, times: np.ndarray | list[float] | None = None
    ) -> pd.DataFrame:
        """Survival curves of new patients: ``exp(-H0(t) * partial hazard)``.

        Parameters
        ----------
        covariates
            One row per patient, with the covariate columns (and the strata
            column for a covariate-stratified model).
        times
            Times to evaluate at (default: the event times of the grid).

        Returns
        -------
        pandas.DataFrame
            Rows are times, columns the patients (``covariates.index``), as
            lifelines' ``predict_survival_function``.
        """
        if self.baseline_cumulative_hazard is None:
            raise AlgorithmError(
                "a site-stratified Cox model has no pooled baseline hazard (sites release no "
                "per-time sums): fit a pooled model on a time grid to predict survival"
            )
        cum = self.baseline_cumulative_hazard
        t = cum.index.to_numpy(float) if times is None else np.asarray(times, dtype=float)
        pos = np.searchsorted(cum.index.to_numpy(float), t, side="right") - 1
        base = np.where(pos[:, None] >= 0, cum.to_numpy()[np.maximum(pos, 0)], 0.0)
        ph = self.predict_partial_hazard(covariates).to_numpy()
        if self.strata is None:
            h0 = np.repeat(base[:, :1], len(ph), axis=1)
        else:
            if self.strata not in covariates.columns:
                raise SchemaError(f"column {self.strata!r} (the strata) is missing")
            cols = list(cum.columns)
            try:
                which = [cols.index(v) for v in covariates[self.strata]]
            except ValueError:
                raise SchemaError(
                    f"column {self.strata!r} holds a value that is not a fitted stratum"
                ) from None
            h0 = base[:, which]
        return pd.DataFrame(np.exp(-h0 * ph[None, :]), index=t, columns=covariates.index)
