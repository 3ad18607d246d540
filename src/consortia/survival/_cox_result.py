"""The result of a federated Cox model: coefficients, summary table, prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from consortia.errors import AlgorithmError, SchemaError
from consortia.stats._validate import numeric_columns

__all__ = ["CoxPHResult"]


@dataclass(frozen=True)
class CoxPHResult:
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
        """A table shaped like lifelines' ``CoxPHFitter.summary`` (same column names)."""
        level = f"{100 * (1 - self.alpha):g}%"
        q = stats.norm.ppf(1 - self.alpha / 2)
        df = pd.DataFrame(index=pd.Index(self.covariates, name="covariate"))
        df["coef"] = self.coef
        df["exp(coef)"] = self.hazard_ratios
        df["se(coef)"] = self.se
        df[f"coef lower {level}"] = self.coef - q * self.se
        df[f"coef upper {level}"] = self.coef + q * self.se
        df[f"exp(coef) lower {level}"] = np.exp(self.coef - q * self.se)
        df[f"exp(coef) upper {level}"] = np.exp(self.coef + q * self.se)
        df["z"] = self.z
        df["p"] = self.p
        return df

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
