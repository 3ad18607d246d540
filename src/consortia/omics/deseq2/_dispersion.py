"""Dispersions: method-of-moments start, Cox-Reid gene-wise fit, parametric trend, MAP.

The gene-wise and MAP fits minimise PyDESeq2's ``fit_alpha_mle`` loss in
``log(alpha)`` with the same L-BFGS-B (:class:`~._lbfgsb.BatchLBFGSB`), each
evaluation being one federated round of per-gene sums
(:func:`~._nb.site_dispersion_sums`); genes where L-BFGS-B fails take PyDESeq2's
grid search (two rounds).  The trend and the prior are computed by the hub from
per-gene aggregates only (gene-wise dispersions and mean normalised counts).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import polygamma
from scipy.stats import norm, trim_mean

from consortia.omics.deseq2._lbfgsb import BatchLBFGSB
from consortia.omics.deseq2._nb import hub_dispersion_objective, unpack

__all__ = [
    "fit_alpha",
    "fit_trend",
    "map_outliers",
    "moments_dispersions",
    "prior_variance",
]

Ask = Callable[..., Any]

_GRID = 100


def moments_dispersions(
    *,
    n: int,
    p: int,
    rough_sum: np.ndarray,
    mean: np.ndarray,
    sq_dev: np.ndarray,
    inv_sf_mean: float,
    min_disp: float,
    max_disp: float,
) -> np.ndarray:
    """PyDESeq2's ``_fit_MoM_dispersions`` from summed per-gene quantities.

    ``rough_sum`` is the sum over samples of ``((y - yhat)^2 - yhat) / yhat^2``
    (``yhat`` the least-squares fit of normalised counts, at least 1), ``sq_dev``
    the sum of ``(y - mean)^2 / mean^2`` over samples.
    """
    rde = np.maximum(rough_sum / (n - p), 0.0)
    sigma = sq_dev * mean**2 / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mde = np.nan_to_num((sigma - inv_sf_mean * mean) / mean**2)
    return np.clip(np.minimum(rde, mde), min_disp, max_disp)


def _grid_losses(sums: dict[str, np.ndarray], p: int) -> np.ndarray:
    xwx = unpack(sums["xwx"], p)
    return sums["nll"] + 0.5 * np.linalg.slogdet(xwx)[1]


def fit_alpha(
    ask: Ask,
    beta_mu: np.ndarray,
    alpha_hat: np.ndarray,
    *,
    linear_mu: bool,
    p: int,
    min_disp: float,
    max_disp: float,
    prior_var: float | None = None,
) -> Generator[Any, Any, tuple[np.ndarray, np.ndarray]]:
    """Hub side of PyDESeq2's ``alpha_mle``: return ``(dispersions, converged)``.

    The sites rebuild each gene's mean from ``beta_mu`` (``linear_mu``: PyDESeq2's
    linear-regression means, else the IRLS means).  ``prior_var`` set: the MAP
    loss, centred on ``log(alpha_hat)``.
    """
    log_hat = np.log(alpha_hat)
    lo, hi = np.log(min_disp), np.log(max_disp)
    prior = None if prior_var is None else (log_hat, prior_var)
    lin = np.array([1.0 if linear_mu else 0.0])
    opt = BatchLBFGSB(log_hat[:, None], lo, hi)
    while opt.pending.size:
        idx = opt.pending
        la = opt.points()[:, 0]
        sums = yield ask("disp", idx=idx, beta=beta_mu[idx], alpha=np.exp(la), lin=lin)
        pri = None if prior is None else (prior[0][idx], prior[1])
        f, g = hub_dispersion_objective(la, sums, p, prior=pri)
        opt.tell(f, g)
    log_alpha = opt.x[:, 0].copy()
    failed = np.nonzero(~opt.success)[0]
    if failed.size:
        # PyDESeq2's grid_fit_alpha (Cox-Reid likelihood, no prior), coarse then fine
        grid = np.linspace(lo, hi, _GRID)
        best = yield from _grid_round(ask, beta_mu, failed, np.tile(grid, (failed.size, 1)), lin, p)
        delta = grid[1] - grid[0]
        fine = np.stack([np.linspace(b - delta, b + delta, _GRID) for b in best])
        log_alpha[failed] = yield from _grid_round(ask, beta_mu, failed, fine, lin, p)
    return np.clip(np.exp(log_alpha), min_disp, max_disp), opt.success.copy()


def _grid_round(
    ask: Ask, beta_mu: np.ndarray, genes: np.ndarray, grids: np.ndarray, lin: np.ndarray, p: int
) -> Generator[Any, Any, np.ndarray]:
    m = grids.shape[1]
    idx = np.repeat(genes, m)
    sums = yield ask("disp", idx=idx, beta=beta_mu[idx], alpha=np.exp(grids.ravel()), lin=lin)
    losses = _grid_losses(sums, p).reshape(genes.size, m)
    return np.asarray(grids[np.arange(genes.size), np.argmin(losses, axis=1)])


def fit_trend(
    genewise: np.ndarray, normed_means: np.ndarray, min_disp: float
) -> tuple[str, np.ndarray]:
    """PyDESeq2's parametric trend ``a0 + a1 / mean`` (or its mean fallback).

    Returns ``("parametric", [a0, a1])`` or ``("mean", [mean dispersion])``.
    """
    with np.errstate(divide="ignore"):
        covariates = 1.0 / normed_means
    keep = np.isfinite(covariates)
    cov, targets = covariates[keep], genewise[keep]
    old = np.array([0.1, 0.1])
    coeffs = np.array([1.0, 1.0])
    while (coeffs > 1e-10).all() and (np.log(np.abs(coeffs / old)) ** 2).sum() >= 1e-6:
        old = coeffs
        coeffs, pred, ok = _gamma_glm(cov, targets)
        if not ok or (coeffs <= 1e-10).any():
            warnings.warn(
                "The dispersion trend curve fitting did not converge. Switching to a "
                "mean-based dispersion trend.",
                UserWarning,
                stacklevel=2,
            )
            return "mean", np.array([_mean_trend(genewise, min_disp)])
        ratio = targets / pred
        stay = ~((ratio < 1e-4) | (ratio >= 15))
        cov, targets = cov[stay], targets[stay]
    return "parametric", np.asarray(coeffs, dtype=np.float64)


def _mean_trend(genewise: np.ndarray, min_disp: float) -> float:
    with np.errstate(invalid="ignore"):
        use = genewise > 10 * min_disp
    return float(trim_mean(genewise[use], proportiontocut=0.001))


def _gamma_glm(cov: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    design = np.column_stack([np.ones_like(cov), cov])

    def loss(c: np.ndarray) -> float:
        mu = design @ c
        return float(np.nanmean(targets / mu + np.log(mu), axis=0))

    def grad(c: np.ndarray) -> np.ndarray:
        mu = design @ c
        return np.asarray(-np.nanmean(((targets / mu - 1)[:, None] * design) / mu[:, None], axis=0))

    try:  # as PyDESeq2 (a RuntimeWarning raises only where warnings are errors)
        res = minimize(
            loss, x0=np.array([1.0, 1.0]), jac=grad, method="L-BFGS-B", bounds=[(1e-12, np.inf)]
        )
    except RuntimeWarning:
        return np.array([np.nan, np.nan]), np.array([np.nan, np.nan]), False
    return res.x, design @ res.x, bool(res.success)


def trend_values(kind: str, coeffs: np.ndarray, normed_means: np.ndarray) -> np.ndarray:
    """The fitted dispersions of the trend at ``normed_means``."""
    if kind == "parametric":
        with np.errstate(divide="ignore"):
            return np.asarray(coeffs[0] + coeffs[1] / normed_means)
    return np.full(normed_means.shape, coeffs[0])


def prior_variance(
    genewise: np.ndarray, fitted: np.ndarray, *, n: int, p: int, min_disp: float
) -> tuple[float, float]:
    """PyDESeq2's ``fit_dispersion_prior``: ``(squared log residual MAD, prior variance)``."""
    resid = np.log(genewise) - np.log(fitted)
    above = genewise >= 100 * min_disp
    x = resid[above]
    mad = np.median(np.abs(x - np.median(x))) / norm.ppf(0.75)
    sq = float(mad**2)
    return sq, float(np.maximum(sq - polygamma(1, (n - p) / 2), 0.25))


def map_outliers(genewise: np.ndarray, fitted: np.ndarray, squared_logres: float) -> np.ndarray:
    """Genes whose gene-wise dispersion is kept instead of the MAP one (PyDESeq2's rule)."""
    return np.asarray(np.log(genewise) > np.log(fitted) + 2 * np.sqrt(squared_logres))
