"""The negative-binomial GLM fitted by IRLS, vectorised across genes (PyDESeq2's ``irls_solver``).

Each iteration is one federated round: the hub broadcasts the current
coefficients of the genes still iterating; each site returns, per gene, its
share of ``X'WX``, ``X'Wz`` and of the negative log-likelihood at those
coefficients.  The hub applies PyDESeq2's stopping rule
``|dev - dev_old| / (|dev| + 0.1) <= beta_tol`` gene by gene, and PyDESeq2's
fallback (L-BFGS-B on the penalised likelihood, from the initial coefficients,
bounds ``[-30, 30]``) for genes whose coefficients leave those bounds or that
reach 250 iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from consortia.omics.deseq2._lbfgsb import BatchLBFGSB
from consortia.omics.deseq2._nb import site_nll, unpack, weighted_gram

__all__ = ["RIDGE", "fit_irls", "site_irls_sums", "site_nb_gradient"]

RIDGE = 1e-6
"""PyDESeq2's ridge factor on every coefficient of the IRLS and the Wald test."""

_MAX_BETA = 30.0
_MAXITER = 250

Ask = Callable[..., Any]
"""Builds the round of a step from named public arrays (the algorithm adds its context)."""


def _mu(x: np.ndarray, sf: np.ndarray, beta: np.ndarray, min_mu: float) -> np.ndarray:
    return np.maximum(sf[:, None] * np.exp(x @ beta.T), min_mu)


def site_irls_sums(
    counts: np.ndarray,
    x: np.ndarray,
    sf: np.ndarray,
    beta: np.ndarray,
    disp: np.ndarray,
    min_mu: float,
) -> dict[str, np.ndarray]:
    """A site's IRLS sums at ``beta`` (k, p): ``nll`` (k,), ``xwx`` (k, q), ``xwz`` (k, p)."""
    mu = _mu(x, sf, beta, min_mu)
    w = mu / (1.0 + mu * disp)
    z = np.log(mu / sf[:, None]) + (counts - mu) / mu
    return {
        "nll": site_nll(counts, mu, disp),
        "xwx": weighted_gram(x, w),
        "xwz": np.ascontiguousarray((w * z).T @ x),
    }


def site_nb_gradient(
    counts: np.ndarray,
    x: np.ndarray,
    sf: np.ndarray,
    beta: np.ndarray,
    disp: np.ndarray,
    min_mu: float,
) -> dict[str, np.ndarray]:
    """A site's share of the likelihood and its gradient in ``beta`` (IRLS fallback)."""
    mu = _mu(x, sf, beta, min_mu)
    a1 = 1.0 / disp
    resid = -counts + (a1 + counts) * mu / (a1 + mu)
    return {"nll": site_nll(counts, mu, disp), "grad": np.ascontiguousarray(resid.T @ x)}


def fit_irls(
    ask: Ask,
    beta_init: np.ndarray,
    disp: np.ndarray,
    *,
    beta_tol: float,
) -> Generator[Any, Any, tuple[np.ndarray, np.ndarray]]:
    """Hub side: fit every gene's GLM; return ``(beta (k, p), converged (k,))``.

    ``ask(step, **arrays)`` builds a round; ``idx`` names the genes (positions in
    ``beta_init``) that a round covers.
    """
    k, p = beta_init.shape
    ridge = RIDGE * np.eye(p)
    beta = beta_init.copy()
    dev = np.full(k, 1000.0)
    iters = np.zeros(k, dtype=np.int64)
    converged = np.ones(k, dtype=bool)
    active = np.arange(k)
    fallback: list[np.ndarray] = []
    first = True
    while active.size:
        sums = yield ask("irls", idx=active, beta=beta[active], disp=disp[active])
        if first:
            done = np.zeros(active.size, dtype=bool)
        else:
            new_dev = -2.0 * sums["nll"]
            ratio = np.abs(new_dev - dev[active]) / (np.abs(new_dev) + 0.1)
            dev[active] = new_dev
            done = ratio <= beta_tol
        h = unpack(sums["xwx"], p) + ridge
        beta_hat = np.linalg.solve(h, sums["xwz"][:, :, None])[:, :, 0]
        iters[active] += 1
        bad = ~done & ((np.abs(beta_hat) > _MAX_BETA).any(axis=1) | (iters[active] >= _MAXITER))
        step = ~done & ~bad
        beta[active[step]] = beta_hat[step]
        fallback.append(active[bad])
        active = active[step]
        first = False
    fb = np.concatenate(fallback) if fallback else np.zeros(0, dtype=np.intp)
    if fb.size:
        fb.sort()
        opt = BatchLBFGSB(beta_init[fb], -_MAX_BETA, _MAX_BETA)
        while opt.pending.size:
            pts = opt.points()
            genes = fb[opt.pending]
            sums = yield ask("nbgrad", idx=genes, beta=pts, disp=disp[genes])
            f = sums["nll"] + 0.5 * (RIDGE * pts**2).sum(axis=1)
            g = sums["grad"] + RIDGE * pts
            opt.tell(f, g)
        beta[fb] = opt.x
        converged[fb] = opt.success
    return beta, converged
