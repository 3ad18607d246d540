"""Wald tests, independent filtering and Benjamini-Hochberg (PyDESeq2's ``DeseqStats``).

All of it runs at the hub on per-gene aggregates: the coefficients, the
dispersions, the summed ``X'WX`` at the final coefficients and the mean
normalised counts.
"""

from __future__ import annotations

from math import ceil

import numpy as np
from scipy.stats import false_discovery_control, norm

from consortia.omics.deseq2._irls import RIDGE
from consortia.omics.deseq2._nb import unpack

__all__ = ["independent_filtering", "lowess", "wald_test"]


def wald_test(
    xwx: np.ndarray, beta: np.ndarray, contrast: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyDESeq2's ``wald_test`` (two-sided, null 0): ``(pvalue, stat, se)`` per gene.

    ``xwx`` is the packed ``X'WX`` at the final coefficients with the unbounded
    means ``size_factor * exp(X beta)``.
    """
    p = beta.shape[1]
    m = unpack(xwx, p)
    h = np.linalg.inv(m + RIDGE * np.eye(p))
    hc = h @ contrast
    se = np.sqrt(np.einsum("ki,kij,kj->k", hc, m, hc))
    stat = (beta @ contrast) / se
    pval = 2 * norm.sf(np.abs(stat))
    return pval, stat, se


def lowess(features: np.ndarray, targets: np.ndarray, frac: float = 2.0 / 3.0) -> np.ndarray:
    """PyDESeq2's robust locally weighted regression (``pydeseq2.utils.lowess``, 3 iterations)."""
    n = len(features)
    r = int(ceil(frac * n))
    h = np.maximum(np.array([np.sort(np.abs(features - features[i]))[r] for i in range(n)]), 1e-12)
    w = np.clip(np.abs(np.nan_to_num((features[:, None] - features[None, :]) / h)), 0.0, 1.0)
    w = (1 - w**3) ** 3
    yest = np.zeros(n)
    delta = np.ones(n)
    for _ in range(3):
        for i in range(n):
            weights = delta * w[:, i]
            b = np.array([np.sum(weights * targets), np.sum(weights * targets * features)])
            a = np.array(
                [
                    [np.sum(weights), np.sum(weights * features)],
                    [np.sum(weights * features), np.sum(weights * features * features)],
                ]
            )
            beta = np.linalg.lstsq(a, b, rcond=None)[0]
            yest[i] = beta[0] + beta[1] * features[i]
        residuals = targets - yest
        s = np.median(np.abs(residuals))
        if s == 0:
            delta = (np.abs(residuals) > 0).astype(float)
        else:
            delta = np.clip(residuals / (6.0 * s), -1, 1)
        delta = (1 - delta**2) ** 2
    return yest


def independent_filtering(base_mean: np.ndarray, pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """PyDESeq2's ``_independent_filtering``: adjusted p-values (NaN where filtered)."""
    lower = float(np.mean(base_mean == 0))
    upper = 0.95 if lower < 0.95 else 1.0
    theta = np.linspace(lower, upper, 50)
    cutoffs = np.quantile(base_mean, theta)
    result = np.full((base_mean.size, theta.size), np.nan)
    valid = ~np.isnan(pvalues)
    for i, cutoff in enumerate(cutoffs):
        use = (base_mean >= cutoff) & valid
        if use.any():
            result[use, i] = false_discovery_control(pvalues[use], method="bh")
    num_rej = (result < alpha).sum(axis=0).astype(int)
    fit = lowess(theta, num_rej.astype(float), frac=1 / 5)
    if num_rej.max() <= 10:
        j = 0
    else:
        residual = num_rej[num_rej > 0] - fit[num_rej > 0]
        thresh = fit.max() - np.sqrt(np.mean(residual**2))
        j = int(np.nonzero(num_rej > thresh)[0][0]) if np.any(num_rej > thresh) else 0
    return np.asarray(result[:, j])


def bh_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg over the non-missing p-values (PyDESeq2's ``_p_value_adjustment``)."""
    out = np.full(pvalues.shape, np.nan)
    valid = ~np.isnan(pvalues)
    if valid.any():
        out[valid] = false_discovery_control(pvalues[valid], method="bh")
    return out
