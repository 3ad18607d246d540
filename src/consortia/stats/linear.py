"""Federated ordinary least squares, exact against a pooled fit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import (
    Algorithm,
    Contribution,
    Coordination,
    Requirements,
    Round,
    register,
)
from consortia.results import Result, coefficient_table
from consortia.stats._glm import Standardizer, check_rank, join, moments, site_rows, split
from consortia.stats._validate import check_columns_param, numeric_rows, used_rows

__all__ = ["LinearRegression", "LinearRegressionResult"]


@dataclass(frozen=True)
class LinearRegressionResult(Result):
    """An ordinary least-squares fit (the first term is the intercept).

    Attributes
    ----------
    terms
        ``("Intercept", *covariates)``.
    coef, se, t, p
        Coefficients, standard errors, t statistics and two-sided p-values.
    ci_low, ci_high
        95% confidence interval of each coefficient.
    cov
        Covariance matrix of the coefficients.
    r_squared, adj_r_squared
        Coefficient of determination and its adjusted form.
    residual_variance
        Unbiased residual variance ``RSS / df_resid``.
    rss
        Residual sum of squares.
    df_resid
        Residual degrees of freedom ``n - len(terms)``.
    n
        Number of rows pooled over all sites.
    rounds
        Number of federated rounds used.
    """

    terms: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    t: np.ndarray
    p: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    cov: np.ndarray
    r_squared: float
    adj_r_squared: float
    residual_variance: float
    rss: float
    df_resid: int
    n: int
    rounds: int

    @property
    def f_statistic(self) -> float:
        """F statistic of the model against the intercept-only model."""
        k = len(self.terms) - 1
        if k == 0 or self.r_squared >= 1:
            return float("nan") if k == 0 else float("inf")
        return float((self.r_squared / k) / ((1 - self.r_squared) / self.df_resid))

    @property
    def f_pvalue(self) -> float:
        """p-value of :attr:`f_statistic` on ``(len(terms) - 1, df_resid)`` degrees of freedom."""
        return float(sps.f.sf(self.f_statistic, len(self.terms) - 1, self.df_resid))

    @property
    def summary(self) -> pd.DataFrame:
        """The coefficient table (see :func:`consortia.results.coefficient_table`)."""
        return coefficient_table(
            self.terms, self.coef, self.se, self.ci_low, self.ci_high, self.t, self.p,
            statistic_name="t",
        )  # fmt: skip

    def statistics(self) -> dict[str, float | int]:
        """n, residual df, R², the model's F test, residual variance, rounds."""
        return {
            "n": self.n,
            "df_resid": self.df_resid,
            "r_squared": self.r_squared,
            "adj_r_squared": self.adj_r_squared,
            "f_statistic": self.f_statistic,
            "f_df": len(self.terms) - 1,
            "f_p": self.f_pvalue,
            "residual_variance": self.residual_variance,
            "rss": self.rss,
            "rounds": self.rounds,
        }


@register
@dataclass(frozen=True, kw_only=True)
class LinearRegression(Algorithm):
    """Ordinary least squares of ``outcome`` on ``covariates`` with an intercept.

    Two rounds: ``moments`` (pooled means and scales of every column) and
    ``gram`` (the Gram matrix of the centred and scaled design and outcome).
    Both release two-word float sums (see :mod:`consortia.stats._glm`), so the
    fit matches a pooled one to about 1e-12 relative error at the default
    fixed-point precision.  Each round declares ``len(covariates) + 1`` model
    parameters for the nodes' parameters-per-sample rule.

    Parameters
    ----------
    outcome
        Numeric outcome column.
    covariates
        Numeric covariate columns (at least one).
    dropna
        If True, each site drops rows with a missing value in the outcome or a
        covariate (complete-case analysis); otherwise a missing value is a
        :class:`~consortia.errors.SchemaError`.

    Raises
    ------
    ValidationError
        Bad parameters (empty covariates, outcome among the covariates, ...).
    SchemaError
        At a site: missing or non-numeric column, missing value.
    AlgorithmError
        Collinear or constant covariates, or no residual degrees of freedom.
    """

    name = "stats.linear_regression"
    outcome: str
    covariates: tuple[str, ...]
    dropna: bool = False

    def __post_init__(self) -> None:
        covs = check_columns_param(self.covariates, param="covariates")
        object.__setattr__(self, "covariates", covs)
        if not isinstance(self.outcome, str) or not self.outcome:
            raise ValidationError("outcome must be a column name (a non-empty string)")
        if self.outcome in covs:
            raise ValidationError(f"outcome {self.outcome!r} is also listed among the covariates")
        if not isinstance(self.dropna, bool):
            raise ValidationError("dropna must be True or False")

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the fitted coefficients."""
        return ("Intercept", *self.covariates)

    def requirements(self, step: str) -> Requirements:
        """Every step: ``len(covariates) + 1`` parameters; the outcome and covariate columns."""
        return Requirements(n_parameters=len(self.terms), columns=(self.outcome, *self.covariates))

    def _read(self, data: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
        # columns: outcome first, then covariates; and the rows used (None: all)
        x, kept = numeric_rows(
            data.frame, (self.outcome, *self.covariates), dropna=self.dropna, return_mask=True
        )
        x.setflags(write=False)
        return x, used_rows(kept)

    def coordinate(self) -> Coordination:
        sums = yield Round("moments")
        n = int(round(sums["n"][0]))
        k = len(self.terms)
        if n - k <= 0:
            raise AlgorithmError(
                f"linear regression needs more rows than terms ({k}); the sites hold too few"
            )
        std = Standardizer.from_moments(n, join(sums, "total"), join(sums, "total_sq"))
        sums = yield Round("gram", {"centre": std.centre, "scale": std.scale})
        gram = join(sums, "gram")  # over [1, z_y, z_x...]
        idx = [0, *range(2, k + 1)]
        zz = gram[np.ix_(idx, idx)]
        zy = gram[idx, 1]
        yy = gram[1, 1]
        check_rank(zz, self.terms, what="linear regression")
        zz_inv = np.linalg.inv(zz)
        b = np.linalg.solve(zz, zy)
        rss_z = max(float(yy - b @ zy), 0.0)
        tss_z = float(yy - gram[0, 1] ** 2 / n)
        df = n - k
        sigma2_z = rss_z / df
        # back to original units: y = m_y + s_y * (b0 + sum b_j (x_j - m_j) / s_j)
        m_y, s_y = std.centre[0], std.scale[0]
        t_map = s_y * Standardizer(std.centre[1:], std.scale[1:]).design_map()
        coef = t_map @ b
        coef[0] += m_y
        cov = t_map @ (sigma2_z * zz_inv) @ t_map.T
        se = np.sqrt(np.diag(cov))
        t = coef / se
        p = 2 * sps.t.sf(np.abs(t), df)
        q = sps.t.ppf(0.975, df)
        r2 = 1.0 - rss_z / tss_z if tss_z > 0 else float("nan")
        return LinearRegressionResult(
            terms=self.terms,
            coef=coef,
            se=se,
            t=t,
            p=p,
            ci_low=coef - q * se,
            ci_high=coef + q * se,
            cov=cov,
            r_squared=r2,
            adj_r_squared=1.0 - (1.0 - r2) * (n - 1) / df,
            residual_variance=sigma2_z * s_y**2,
            rss=rss_z * s_y**2,
            df_resid=df,
            n=n,
            rounds=2,
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        x, rows = site_rows(self, data, self._read)
        k = len(self.terms)
        if step == "moments":
            arrays = moments(x)
        elif step == "gram":
            z = (x - public["centre"]) / public["scale"]
            design = np.column_stack([np.ones(len(z)), z])  # [1, z_y, z_x...]
            arrays = split("gram", design.T @ design)
        else:
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        return Contribution(arrays, cohort=len(x), n_parameters=k, rows=rows)
