"""The hub side of the Cox screen: standardisation, then Newton-Raphson for every gene at once.

:meth:`consortia.omics.screen.CoxScreen.coordinate` delegates here; see
:mod:`consortia.omics.screen` for the rounds and what they release.

Each gene's model is standardised as lifelines does (pooled mean and SD of the
gene's values and of each covariate), started at 0 and iterated with full
Newton steps, halved for a gene whose log-likelihood went down.  A gene stops
when its largest step is below ``tol`` (the step is applied: the estimate is
then converged to about ``tol**2``); its standard error is from the information
matrix of its last evaluation.  Genes keep their place in every round (a
converged gene's coefficients stay fixed), so each round's arrays have one
shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from consortia.errors import ValidationError
from consortia.omics._screen_result import CoxScreenResult, fdr_bh
from consortia.precision import join
from consortia.protocol import Coordination, Round
from consortia.survival import _cox_math as cm

if TYPE_CHECKING:
    from consortia.omics.screen import CoxScreen

__all__ = ["coordinate_screen"]

_MAX_STD_COEF = 30.0
"""A standardised coefficient beyond this is a monotone likelihood (separation): the gene fails."""


def _moments(sums: Any, key: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    mean = join(sums, f"{key}_sum") / n
    var = (join(sums, f"{key}_sq") - n * mean**2) / (n - 1)
    return mean, np.sqrt(np.maximum(var, 0.0))


def coordinate_screen(alg: CoxScreen) -> Coordination:
    """The hub side of :meth:`CoxScreen.coordinate`."""
    n_genes, p = len(alg.genes), alg.n_parameters
    sums = yield Round("summary")
    n = int(round(float(sums["n"][0])))
    n_events = int(round(float(sums["n_events"][0])))
    if n_events == 0:
        raise ValidationError(
            f"event column {alg.event!r} has no events at any site (all censored): "
            "no Cox model can be fitted"
        )
    if n < 2:
        raise ValidationError("a Cox screen needs at least two patients")
    g_mean, g_sd = _moments(sums, "gene", n)
    c_mean, c_sd = _moments(sums, "cov", n)
    flat_cov = c_sd <= 1e-12 * np.maximum(1.0, np.abs(c_mean))
    if np.any(flat_cov):
        cols = [c for c, f in zip(alg.covariates, flat_cov) if f]
        raise ValidationError(
            f"covariate(s) {cols} have zero variance over all sites; drop them from covariates"
        )
    tested = g_sd > 1e-12 * np.maximum(1.0, np.abs(g_mean))
    g_sd = np.where(tested, g_sd, 1.0)
    xe = np.empty((n_genes, p))
    xe[:, 0] = (join(sums, "gene_xe") - g_mean * n_events) / g_sd
    xe[:, 1:] = (join(sums, "cov_xe") - c_mean * n_events) / c_sd
    pub: dict[str, Any] = {"gene_mean": g_mean, "gene_sd": g_sd, "cov_mean": c_mean, "cov_sd": c_sd}
    d = dw = tie_rows = None
    if not alg.stratify_by_site:
        events = np.asarray(sums["events"])
        idx = np.flatnonzero(events > 0.5)
        d = dw = np.rint(events[idx])
        tie_rows = np.flatnonzero(d >= 2)
        pub.update(event_index=idx, tie_rows=tie_rows)

    beta = np.zeros((n_genes, p))
    offset = np.full(n_genes, float(np.log(n)))
    step = np.zeros((n_genes, p))
    prev_ll = np.full(n_genes, -np.inf)
    prev_beta = beta.copy()
    h_last = np.zeros((n_genes, p, p))
    done = ~tested  # a gene leaves the iteration once converged (or failed)
    converged = np.zeros(n_genes, bool)
    failed = np.zeros(n_genes, bool)
    rounds = iterations = 0
    while True:
        sums = yield Round("newton", {**pub, "beta": beta, "offset": offset})
        rounds += 1
        iterations += 1
        total = join(sums, "total")
        if alg.stratify_by_site:
            ll = join(sums, "loglik")
            g = join(sums, "grad")
            h = cm.unpack(join(sums, "hess"), p)
        else:
            assert d is not None and dw is not None
            risk = join(sums, "risk")
            ties = join(sums, "ties") if "ties" in sums else None
            rows = tie_rows if ties is not None else None
            ll, g, h = cm.partial_likelihood_batch(risk, ties, rows, d, dw, xe, beta, offset)
        active = ~done
        bad = active & ~(np.isfinite(ll) & np.all(np.isfinite(g), axis=1))
        failed |= bad
        active &= ~bad
        worse = active & (ll < prev_ll - 1e-10 * np.abs(prev_ll)) & (iterations < alg.max_iter)
        step[worse] /= 2  # the full step overshot: halve it and evaluate again
        beta[worse] = prev_beta[worse] + step[worse]
        ok = np.flatnonzero(active & ~worse)
        if ok.size:
            info = -h[ok]
            eig = np.linalg.eigvalsh(info)
            singular = ~(eig[:, 0] > 1e-10 * np.maximum(eig[:, -1], 1e-300))
            failed[ok[singular]] = True
            ok = ok[~singular]
            step[ok] = np.linalg.solve(-h[ok], g[ok][..., None])[..., 0]
            prev_ll[ok], prev_beta[ok], h_last[ok] = ll[ok], beta[ok], h[ok]
            small = np.max(np.abs(step[ok]), axis=1) < alg.tol
            converged[ok[small]] = True
            beta[ok] += step[ok]
            failed |= np.max(np.abs(beta), axis=1) > _MAX_STD_COEF
        done = ~tested | converged | failed
        beta[failed] = 0.0  # keeps every released sum finite
        offset = offset + np.log(np.where(total > 0, total, 1.0))
        if done.all() or iterations >= alg.max_iter:
            break

    good = converged & ~failed
    coef = np.full(n_genes, np.nan)
    se = np.full(n_genes, np.nan)
    if good.any():
        var_std = np.linalg.inv(-h_last[good])[:, 0, 0]
        coef[good] = beta[good, 0] / g_sd[good]
        se[good] = np.sqrt(var_std) / g_sd[good]
    z = coef / se
    pvalue = stats.chi2.sf(z**2, 1)
    return CoxScreenResult(
        genes=alg.genes,
        coef=coef,
        se=se,
        z=z,
        pvalue=pvalue,
        fdr=fdr_bh(pvalue),
        converged=good,
        tested=tested,
        covariates=alg.covariates,
        n=n,
        n_events=n_events,
        rounds=rounds + 1,
        iterations=iterations,
        ties=alg.ties,
        alpha=alg.alpha,
        stratified_by_site=alg.stratify_by_site,
        transform=str(alg.transform),
    )
