"""Negative-binomial pieces shared by the steps: per-site sums and their hub-side use.

Every function named ``site_*`` runs at a site on its own samples and returns
per-gene *sums over its samples*; the hub adds them over sites (securely) and
finishes the computation with the ``hub_*`` functions.  The formulas are
PyDESeq2 0.5.4's (``pydeseq2.utils``), rearranged so that each cross-sample
quantity is one sum.

Symmetric ``p x p`` matrices per gene travel as their upper triangle
(:func:`pack`, :func:`unpack`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, polygamma

__all__ = [
    "hub_dispersion_objective",
    "pack",
    "site_dispersion_sums",
    "site_nll",
    "unpack",
    "weighted_gram",
]


def pack(mats: np.ndarray) -> np.ndarray:
    """Upper triangles ``(k, p(p+1)/2)`` of symmetric matrices ``(k, p, p)``."""
    p = mats.shape[-1]
    iu = np.triu_indices(p)
    return np.ascontiguousarray(mats[:, iu[0], iu[1]])


def unpack(packed: np.ndarray, p: int) -> np.ndarray:
    """Symmetric matrices ``(k, p, p)`` from their upper triangles."""
    iu = np.triu_indices(p)
    out = np.empty((packed.shape[0], p, p))
    out[:, iu[0], iu[1]] = packed
    out[:, iu[1], iu[0]] = packed
    return out


def weighted_gram(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``X' diag(w_g) X`` for every gene g, packed: ``x`` (n, p), ``w`` (n, k) -> (k, q)."""
    p = x.shape[1]
    iu = np.triu_indices(p)
    prod = x[:, iu[0]] * x[:, iu[1]]  # (n, q)
    return np.ascontiguousarray(w.T @ prod)


def site_nll(counts: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """This site's share of PyDESeq2's ``nb_nll`` (scalar dispersion per gene).

    ``counts`` and ``mu`` are ``(n, k)``, ``alpha`` is ``(k,)``; the sum over sites
    of the returned ``(k,)`` equals ``nb_nll`` on the pooled samples.
    """
    n = counts.shape[0]
    a1 = 1.0 / alpha
    logbinom = gammaln(counts + a1) - gammaln(counts + 1.0) - gammaln(a1)
    body = (-logbinom + (counts + a1) * np.log(a1 + mu) - counts * np.log(mu)).sum(axis=0)
    return np.asarray(n * a1 * np.log(alpha) + body)


_STABLE_BELOW = 1e-4
"""Dispersions under which the likelihood and its derivative use cancellation-free forms."""


def _small_alpha_terms(
    counts: np.ndarray, mu: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample NB log-likelihood terms and derivative brackets without cancellation.

    At a small dispersion PyDESeq2's formulas add terms of order ``1/alpha * log(alpha)``
    that cancel to a result of order of the counts: in float64 the value then carries
    an error of about ``1e-16 / alpha``, enough to derail L-BFGS-B's line search near
    ``min_disp``.  Here ``lgamma(a + y) - lgamma(a)`` and ``digamma(a + y) -
    digamma(a)`` (``a = 1/alpha >= 1e4``) use Stirling's series, and every difference
    of logarithms is a ``log1p``: the same values, to about 1e-16 of the counts.
    """
    a1 = 1.0 / alpha
    y = counts
    ya = y + a1
    # lgamma(a1 + y) - lgamma(a1), Stirling's series to 1/(360 z^3)
    lg_diff = (
        (a1 - 0.5) * np.log1p(y * alpha)
        + y * np.log(ya)
        - y
        - y / (12.0 * a1 * ya)
        - (ya**-3 - a1**-3) / 360.0
    )
    # nb_nll's per-sample term: a1 log(alpha) + (y + a1) log(a1 + mu) - y log(mu) - logbinom
    nll = (
        a1 * np.log1p(alpha * mu)
        + y * np.log(a1 + mu)
        - y * np.log(mu)
        - lg_diff
        + gammaln(y + 1.0)
    )
    # digamma(a1) - digamma(y + a1) + log(1 + mu alpha) + (y - mu) / (mu + a1)
    bracket = (
        -np.log1p(y * alpha)
        - y / (2.0 * a1 * ya)
        - y * (2.0 * a1 + y) / (12.0 * a1**2 * ya**2)
        + np.log1p(mu * alpha)
        + (y - mu) / (mu + a1)
    )
    return nll, bracket


def site_dispersion_sums(
    counts: np.ndarray, mu: np.ndarray, x: np.ndarray, alpha: np.ndarray
) -> dict[str, np.ndarray]:
    """One site's sums for the Cox-Reid adjusted dispersion likelihood at ``alpha``.

    Returns ``nll`` (k,), ``dnll`` = ``S / alpha`` where ``S`` is the bracket of
    PyDESeq2's ``dnb_nll`` summed over samples (scaled so that it stays of the order
    of the counts at a small dispersion), ``xwx`` = ``X' W X`` and ``xw2x`` =
    ``X' (alpha W^2) X`` (packed), with ``W = mu / (1 + mu alpha)``.
    """
    a1 = 1.0 / alpha
    w = mu / (1.0 + mu * alpha)
    bracket = (
        polygamma(0, a1)
        - polygamma(0, counts + a1)
        + np.log(1.0 + mu * alpha)
        + (counts - mu) / (mu + a1)
    ).sum(axis=0)
    nll = site_nll(counts, mu, alpha)
    small = alpha < _STABLE_BELOW
    if small.any():
        terms, brackets = _small_alpha_terms(counts[:, small], mu[:, small], alpha[small])
        nll[small] = terms.sum(axis=0)
        bracket[small] = brackets.sum(axis=0)
    return {
        "nll": nll,
        "dnll": bracket * a1,
        "xwx": weighted_gram(x, w),
        "xw2x": weighted_gram(x, alpha * w * w),
    }


def hub_dispersion_objective(
    log_alpha: np.ndarray,
    sums: dict[str, np.ndarray],
    p: int,
    *,
    prior: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Value and gradient in ``log(alpha)`` of PyDESeq2's ``fit_alpha_mle`` loss.

    Parameters
    ----------
    log_alpha
        The points (k,) at which the sites evaluated ``sums``.
    sums
        The summed :func:`site_dispersion_sums`.
    p
        Number of design columns.
    prior
        ``(log alpha_hat, prior variance)`` for the MAP loss (``prior_reg=True``).
    """
    alpha = np.exp(log_alpha)
    a1 = 1.0 / alpha
    xwx = unpack(sums["xwx"], p)
    xw2x = unpack(sums["xw2x"], p)
    f = sums["nll"] + 0.5 * np.linalg.slogdet(xwx)[1]
    bracket = sums["dnll"] / a1
    dnll = -(a1**2) * bracket
    inv = np.linalg.inv(xwx)
    # PyDESeq2: 0.5 * sum(inv(XWX) * X'dWX) * alpha with dW = -W^2
    reg_grad = 0.5 * (inv * (-xw2x / alpha[:, None, None])).sum(axis=(1, 2)) * alpha
    g = alpha * dnll + reg_grad
    if prior is not None:
        log_hat, var = prior
        f = f + (log_alpha - log_hat) ** 2 / (2 * var)
        g = g + (log_alpha - log_hat) / var
    return f, g
