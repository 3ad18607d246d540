"""Federated logistic regression by Newton's method (IRLS), optionally ridge-penalised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.special import expit

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ConvergenceError, SchemaError, ValidationError
from consortia.protocol import (
    Algorithm,
    Contribution,
    Coordination,
    Requirements,
    Round,
    register,
)
from consortia.results import Result, coefficient_table
from consortia.stats._glm import Standardizer, check_rank, join, site_rows, split
from consortia.stats._validate import check_columns_param, numeric_rows, used_rows

__all__ = ["LogisticRegression", "LogisticRegressionResult"]

_MAX_HALVINGS = 8
_SEPARATION_LIMIT = 30.0  # |coefficient| per standard deviation of a covariate


@dataclass(frozen=True)
class LogisticRegressionResult(Result):
    """A logistic regression fit (the first term is the intercept).

    Attributes
    ----------
    terms
        ``("Intercept", *covariates)``.
    coef, se, z, p
        Coefficients (log odds ratios), standard errors from the inverse of the
        (penalised) Hessian, Wald z statistics and two-sided p-values.
    ci_low, ci_high
        95% Wald confidence interval of each coefficient.
    cov
        Inverse of the (penalised) Hessian of the objective at the optimum.
    log_likelihood
        Log-likelihood (without the penalty) at the optimum.
    penalty
        The ridge strength used (0 for an unpenalised fit).
    converged
        Always True in a returned result (non-convergence raises).
    iterations
        Newton steps taken (each is one round).
    rounds
        Federated rounds used (Newton steps plus the setup round).
    n
        Number of rows pooled over all sites.
    """

    terms: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    cov: np.ndarray
    log_likelihood: float
    penalty: float
    converged: bool
    iterations: int
    rounds: int
    n: int

    @property
    def odds_ratio(self) -> np.ndarray:
        """``exp(coef)``."""
        return np.exp(self.coef)

    @property
    def summary(self) -> pd.DataFrame:
        """The coefficient table, with odds ratios ``exp(coef)`` (see
        :func:`consortia.results.coefficient_table`)."""
        return coefficient_table(
            self.terms, self.coef, self.se, self.ci_low, self.ci_high, self.z, self.p,
            exponentiate=True,
        )  # fmt: skip

    def statistics(self) -> dict[str, float | int | bool]:
        """n, log-likelihood, penalty, convergence, Newton steps and rounds."""
        return {
            "n": self.n,
            "log_likelihood": self.log_likelihood,
            "penalty": self.penalty,
            "converged": self.converged,
            "iterations": self.iterations,
            "rounds": self.rounds,
        }


@register
@dataclass(frozen=True, kw_only=True)
class LogisticRegression(Algorithm):
    """Logistic regression of a 0/1 ``outcome`` on ``covariates``, with an intercept.

    The fit minimises

    .. math::

        -\\ell(\\beta_0, \\beta) + \\frac{\\lambda}{2} \\sum_j \\beta_j^2,

    where :math:`\\ell` is the log-likelihood summed over all patients and
    :math:`\\lambda` is ``penalty``; the intercept is not penalised and the
    coefficients are penalised on the covariates' original scale.  This is
    scikit-learn's ``LogisticRegression(penalty="l2", C=1/penalty)`` (whose
    objective is ``0.5 * ||beta||**2 + C * sum(logloss)``) and, with ``penalty=0``,
    the maximum-likelihood fit of statsmodels' ``Logit``.  Standard errors come
    from the inverse of the penalised Hessian (for ``penalty > 0`` this is the
    usual ridge/Bayesian approximation, not a sandwich estimate).

    Rounds: one ``moments`` round, in which every site returns the Gram matrix of
    ``[1, outcome, covariates]`` (pooled means and scales to centre and scale the
    covariates, the event rate, and -- because every weight is equal at the
    intercept-only fit -- the first Newton step from that fit), then one ``newton``
    round per further Newton step, in which every site returns its log-likelihood,
    gradient and Hessian at the current coefficients.  All are two-word float sums
    (see :mod:`consortia.stats._glm`).  A step that does not decrease the objective
    is halved (one more round).  Every round declares ``len(covariates) + 1`` model
    parameters for the parameters-per-sample rule.  A site reads and validates its
    rows once per study.

    Parameters
    ----------
    outcome
        Column holding 0/1 (or False/True).
    covariates
        Numeric covariate columns (at least one).
    penalty
        Ridge strength :math:`\\lambda >= 0` (``1 / C`` in scikit-learn).
    tol
        Convergence when the largest Newton step on the standardised scale is at
        most ``tol * (1 + max|beta|)``; the step is then applied without a further
        round.  Newton's quadratic convergence makes the returned coefficients
        accurate to about ``tol**2`` and the standard errors (Hessian of the last
        round) to about ``tol``.
    max_iter
        Most Newton steps before :class:`~consortia.errors.ConvergenceError`.
    dropna
        If True, each site drops rows with a missing value (complete cases);
        otherwise a missing value is a :class:`~consortia.errors.SchemaError`.

    Raises
    ------
    ValidationError
        Bad parameters.
    SchemaError
        At a site: missing or non-numeric column, missing value, non-binary outcome.
    AlgorithmError
        A pooled outcome with a single class, collinear covariates without penalty.
    ConvergenceError
        Perfect or quasi-perfect separation without penalty, or no convergence
        within ``max_iter`` Newton steps.
    """

    name = "stats.logistic_regression"
    outcome: str
    covariates: tuple[str, ...]
    penalty: float = 0.0
    tol: float = 1e-8
    max_iter: int = 25
    dropna: bool = False

    def __post_init__(self) -> None:
        covs = check_columns_param(self.covariates, param="covariates")
        object.__setattr__(self, "covariates", covs)
        if not isinstance(self.outcome, str) or not self.outcome:
            raise ValidationError("outcome must be a column name (a non-empty string)")
        if self.outcome in covs:
            raise ValidationError(f"outcome {self.outcome!r} is also listed among the covariates")
        for param, ok in (
            ("penalty", _number(self.penalty) and 0 <= self.penalty < np.inf),
            ("tol", _number(self.tol) and 0 < self.tol < 1),
        ):
            if not ok:
                bound = ">= 0" if param == "penalty" else "in (0, 1)"
                raise ValidationError(f"{param} must be a finite number {bound}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int):
            raise ValidationError("max_iter must be a positive integer")
        if self.max_iter < 1:
            raise ValidationError("max_iter must be a positive integer")
        if not isinstance(self.dropna, bool):
            raise ValidationError("dropna must be True or False")
        object.__setattr__(self, "penalty", float(self.penalty))
        object.__setattr__(self, "tol", float(self.tol))

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the fitted coefficients."""
        return ("Intercept", *self.covariates)

    def requirements(self, step: str) -> Requirements:
        """Every step: ``len(covariates) + 1`` parameters; the outcome and covariate columns."""
        return Requirements(n_parameters=len(self.terms), columns=(self.outcome, *self.covariates))

    # ------------------------------------------------------------------ hub side

    def coordinate(self) -> Coordination:
        sums = yield Round("moments")
        k = len(self.terms)
        gram = join(sums, "gram")  # raw Gram matrix of [1, y, x...]
        n = int(round(gram[0, 0]))
        events = float(gram[0, 1])
        if events < 0.5 or events > n - 0.5:
            raise AlgorithmError(
                f"outcome {self.outcome!r} takes a single value over all sites; "
                "a logistic regression needs both classes"
            )
        idx = [0, *range(2, k + 1)]
        std = Standardizer.from_moments(n, gram[0, 2:], np.diag(gram)[2:])
        m_map = std.design_map()  # [1, x] -> centred and scaled design
        zz = m_map.T @ gram[np.ix_(idx, idx)] @ m_map
        zy = m_map.T @ gram[idx, 1]
        # ridge on the original scale -> diag(lambda / s_j**2) on the standardised one
        pen = np.concatenate([[0.0], self.penalty / std.scale**2])
        public = {"centre": std.centre, "scale": std.scale}
        # Start at the intercept-only fit, where every weight is ybar * (1 - ybar): its
        # log-likelihood, gradient and Hessian follow from the moments alone, so the
        # first Newton step needs no extra round.
        ybar = events / n
        beta = np.zeros(k)
        beta[0] = np.log(ybar / (1.0 - ybar))
        ll = events * np.log(ybar) + (n - events) * np.log1p(-ybar)
        g_ll = zy - ybar * zz[:, 0]
        h_ll = ybar * (1.0 - ybar) * zz
        rounds, iterations, halvings, precise = 1, 0, 0, False
        prev_obj, prev_beta, prev_step = np.inf, beta, np.zeros(k)
        while True:
            obj = -ll + 0.5 * float(np.sum(pen * beta**2))
            if obj > prev_obj + 1e-12 * max(abs(prev_obj), 1.0):
                # the last step overshot: halve it (one more round)
                halvings += 1
                if halvings > _MAX_HALVINGS:
                    raise ConvergenceError(
                        "logistic regression: step halving failed to decrease the objective"
                    )
                prev_step = prev_step / 2
                beta = prev_beta + prev_step
            else:
                halvings = 0
                grad = g_ll - pen * beta
                hess = h_ll + np.diag(pen)
                if self.penalty == 0 and iterations == 0:
                    check_rank(hess, self.terms, what="logistic regression")
                try:
                    step = np.linalg.solve(hess, grad)
                except np.linalg.LinAlgError:
                    raise ConvergenceError(
                        "logistic regression: the Hessian became singular (perfect separation?)"
                    ) from None
                if not np.all(np.isfinite(step)):
                    raise ConvergenceError("logistic regression: the Newton step is not finite")
                if precise and np.max(np.abs(step)) <= self.tol * (1.0 + np.max(np.abs(beta))):
                    beta = beta + step
                    break
                if self.penalty == 0 and np.max(np.abs(beta[1:] + step[1:])) > _SEPARATION_LIMIT:
                    raise ConvergenceError(
                        "logistic regression: coefficients diverge (perfect or quasi-perfect "
                        "separation of the outcome by the covariates); add a ridge penalty or "
                        "drop the separating covariates"
                    )
                if iterations >= self.max_iter:
                    raise ConvergenceError(
                        f"logistic regression did not converge in {self.max_iter} Newton steps "
                        f"(last step {np.max(np.abs(step)):.2e} > tol {self.tol:.1e})"
                    )
                iterations += 1
                prev_obj, prev_beta, prev_step = obj, beta, step
                beta = beta + step
            sums = yield Round("newton", {**public, "beta": beta})
            rounds += 1
            precise = True
            ll = float(join(sums, "loglik")[0])
            g_ll, h_ll = join(sums, "grad"), join(sums, "hess")
        # second-order correction of the log-likelihood to the final coefficients
        ll += float(step @ (g_ll - 0.5 * h_ll @ step))
        coef = m_map @ beta
        cov = m_map @ np.linalg.inv(hess) @ m_map.T
        se = np.sqrt(np.diag(cov))
        z = coef / se
        q = sps.norm.ppf(0.975)
        return LogisticRegressionResult(
            terms=self.terms,
            coef=coef,
            se=se,
            z=z,
            p=2 * sps.norm.sf(np.abs(z)),
            ci_low=coef - q * se,
            ci_high=coef + q * se,
            cov=cov,
            log_likelihood=ll,
            penalty=self.penalty,
            converged=True,
            iterations=iterations + 1,
            rounds=rounds,
            n=n,
        )

    # ------------------------------------------------------------------ site side

    def _read(self, data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        # outcome, covariates and the rows used (None: all)
        x, kept = numeric_rows(
            data.frame, (self.outcome, *self.covariates), dropna=self.dropna, return_mask=True
        )
        x.setflags(write=False)
        y = x[:, 0]
        if not np.all((y == 0) | (y == 1)):
            raise SchemaError(f"outcome {self.outcome!r} must hold only 0 and 1")
        return y, x[:, 1:], used_rows(kept)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        y, x, rows = site_rows(self, data, self._read)
        k = len(self.terms)
        if step == "moments":
            design = np.column_stack([np.ones(len(y)), y, x])
            arrays = split("gram", design.T @ design)
        elif step == "newton":
            z = np.empty((len(x), k))
            z[:, 0] = 1.0
            np.subtract(x, public["centre"], out=z[:, 1:])
            z[:, 1:] /= public["scale"]
            eta = z @ public["beta"]
            prob = expit(eta)
            w = prob * (1.0 - prob)
            loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
            arrays = {
                **split("loglik", np.array([loglik])),
                **split("grad", z.T @ (y - prob)),
                **split("hess", (z * w[:, None]).T @ z),
            }
        else:
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        return Contribution(arrays, cohort=len(y), n_parameters=k, rows=rows)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
