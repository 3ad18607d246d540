"""limma's empirical-Bayes variance moderation, re-derived (hub side, per-gene aggregates only).

Smyth (2004, *Stat. Appl. Genet. Mol. Biol.* 3:3) models each gene's residual
variance ``s2_g`` on ``d`` degrees of freedom as a draw from a scaled
F-distribution: ``s2_g ~ s0^2 F(d, d0)``, the prior ``sigma_g^2 ~ s0^2 d0 /
chi2(d0)``.  :func:`fit_f_dist` estimates ``(s0^2, d0)`` by the method of
moments on the log scale (limma's ``fitFDist`` without a covariate): with
``e_g = log s2_g - digamma(d/2) + log(d/2)``,

* ``E[e] = log s0^2 - digamma(d0/2) + log(d0/2)``,
* ``Var[e] = trigamma(d/2) + trigamma(d0/2)``,

so ``d0 = 2 trigamma^{-1}(var(e) - mean(trigamma(d/2)))`` (infinite when that
is not positive) and ``s0^2 = exp(mean(e) + digamma(d0/2) - log(d0/2))``
(the mean of the variances, their pooled estimate, when ``d0`` is infinite).
Variances are first bounded below by ``1e-5`` times their median (limma's
offset of exact zeros).

:func:`squeeze_var` gives the posterior variances ``(d s2 + d0 s0^2) / (d + d0)``
(``s0^2`` when ``d0`` is infinite).  The moderated t of a coefficient is
``beta / (stdev_unscaled * sqrt(s2_post))`` on ``min(d + d0, sum of d)`` degrees
of freedom, as limma's ``eBayes`` computes it.  Tested against InMoose's limma
(``inmoose.limma.lmFit`` + ``eBayes``) on pooled data.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, polygamma

__all__ = ["fit_f_dist", "squeeze_var", "trigamma_inverse"]


def trigamma_inverse(x: float) -> float:
    """The ``y`` with ``trigamma(y) = x`` (limma's Newton iteration, x > 0)."""
    if x > 1e7:
        return float(1 / np.sqrt(x))
    if x < 1e-6:
        return float(1 / x)
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(polygamma(1, y))
        dif = tri * (1 - tri / x) / float(polygamma(2, y))
        y += dif
        if -dif / y < 1e-8:
            break
    return float(y)


def fit_f_dist(x: np.ndarray, df1: float) -> tuple[float, float]:
    """``(scale, df2)``: moment estimates of a scaled F(df1, df2) sample ``x`` (finite, >= 0)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x) & (x > -1e-15)
    x = np.maximum(x[ok], 0.0)
    n = x.size
    if n == 0 or not df1 > 1e-15:
        return float("nan"), float("nan")
    if n == 1:
        return float(x[0]), 0.0
    m = float(np.median(x))
    x = np.maximum(x, 1e-5 * (m if m > 0 else 1.0))
    e = np.log(x) - digamma(df1 / 2) + np.log(df1 / 2)
    emean = float(e.mean())
    evar = float(np.sum((e - emean) ** 2) / (n - 1)) - float(polygamma(1, df1 / 2))
    if evar > 0:
        df2 = 2 * trigamma_inverse(evar)
        scale = float(np.exp(emean + digamma(df2 / 2) - np.log(df2 / 2)))
    else:  # the pooled variance: the scale's MLE when df2 is infinite (limma since 2017)
        df2 = float("inf")
        scale = float(x.mean())
    return scale, df2


def squeeze_var(var: np.ndarray, df: float) -> tuple[np.ndarray, float, float]:
    """Posterior variances, prior variance and prior degrees of freedom (limma's ``squeezeVar``)."""
    var = np.asarray(var, dtype=np.float64)
    var_prior, df_prior = fit_f_dist(var, df)
    if not np.isfinite(df_prior):
        return np.full(var.shape, var_prior), var_prior, df_prior
    return (df * var + df_prior * var_prior) / (df + df_prior), var_prior, df_prior
