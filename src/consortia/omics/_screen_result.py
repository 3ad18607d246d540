"""The result of a genome-wide Cox screen: one Cox model per gene, with FDR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from consortia.errors import ValidationError
from consortia.results import Result

__all__ = ["CoxScreenResult", "fdr_bh"]

SUMMARY_COLUMNS = (
    "coef",
    "exp(coef)",
    "se(coef)",
    "coef lower",
    "coef upper",
    "z",
    "p",
    "fdr",
    "converged",
)


def fdr_bh(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the finite entries (NaN stays NaN).

    Uses :func:`scipy.stats.false_discovery_control` (``method="bh"``).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


@dataclass(frozen=True)
class CoxScreenResult(Result):
    """Per-gene Cox models: the gene's log hazard ratio, its Wald test and the FDR.

    Attributes
    ----------
    genes
        The screened genes, in the study's order.
    coef, se
        Per gene: log hazard ratio per unit of the gene's value (after the
        study's transform, for example per log2 CPM) and its standard error,
        from the model ``gene + covariates`` (NaN where not estimated).
    z, pvalue
        Wald statistic ``coef / se`` and its two-sided p-value.
    fdr
        Benjamini-Hochberg adjusted p-values over the genes with a p-value
        (:func:`scipy.stats.false_discovery_control`).
    converged
        Per gene: Newton-Raphson met its tolerance.  A gene that did not (a
        monotone likelihood, a singular information matrix) has NaN estimates
        and is left out of the FDR.
    tested
        Per gene: the gene varies over the pooled patients (a gene constant
        everywhere has no model: NaN, not tested).
    covariates
        The adjustment covariates of every gene's model.
    n, n_events
        Patients and events over all sites.
    rounds, iterations
        Secure-aggregation rounds of the study; Newton-Raphson rounds among them.
    ties, alpha
        The tie method; confidence intervals are at level ``1 - alpha``.
    stratified_by_site
        Whether every site had its own baseline hazard.
    transform
        How the per-gene values were derived from the data (``log2cpm``, ``log2``, ``none``).
    """

    genes: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    z: np.ndarray
    pvalue: np.ndarray
    fdr: np.ndarray
    converged: np.ndarray
    tested: np.ndarray
    covariates: tuple[str, ...]
    n: int
    n_events: int
    rounds: int
    iterations: int
    ties: str
    alpha: float
    stratified_by_site: bool
    transform: str

    @property
    def summary(self) -> pd.DataFrame:
        """One row per gene: coef, exp(coef), se(coef), CI bounds, z, p, fdr, converged."""
        q = float(stats.norm.ppf(1 - self.alpha / 2))
        frame = pd.DataFrame(
            {
                "coef": self.coef,
                "exp(coef)": np.exp(self.coef),
                "se(coef)": self.se,
                "coef lower": self.coef - q * self.se,
                "coef upper": self.coef + q * self.se,
                "z": self.z,
                "p": self.pvalue,
                "fdr": self.fdr,
                "converged": self.converged,
            },
            index=pd.Index(list(self.genes), name="gene"),
        )
        return frame

    def significant(self, fdr: float = 0.1) -> tuple[str, ...]:
        """The genes with an FDR below ``fdr``, most significant first."""
        if not 0 < fdr <= 1:
            raise ValidationError("fdr must lie in (0, 1]")
        hit = np.flatnonzero(np.nan_to_num(self.fdr, nan=2.0) < fdr)
        order = hit[np.argsort(self.pvalue[hit], kind="stable")]
        return tuple(self.genes[i] for i in order)
