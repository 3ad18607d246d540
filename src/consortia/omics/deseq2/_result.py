"""The result of a federated DESeq2 study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from consortia.results import Result

__all__ = ["DESeq2Result"]

RESULT_COLUMNS = ("baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj")


@dataclass(frozen=True)
class DESeq2Result(Result):
    """Per-gene differential-expression results, as PyDESeq2's ``results_df``.

    Every attribute is an aggregate over the whole consortium (no site's, no
    sample's value): per-gene statistics, the dispersion trend and prior.

    Attributes
    ----------
    genes
        Gene names (the study's ``genes``, or the sites' expression columns).
    base_mean, log2_fold_change, lfc_se, stat, pvalue, padj
        PyDESeq2's ``results_df`` columns (NaN for genes with only zero counts;
        ``padj`` NaN where independent filtering removed the gene).
    coefficients
        Natural-log coefficients per gene and design column (genes x columns).
    design_columns
        Names of the design matrix columns.
    contrast_vector
        The contrast applied to ``coefficients``.
    genewise_dispersions, fitted_dispersions, dispersions
        Gene-wise (Cox-Reid) estimates, the trend at each gene, the final (MAP or
        gene-wise for dispersion outliers) values.
    converged
        Whether each gene's final IRLS converged (PyDESeq2's ``_LFC_converged``).
    trend_type, trend_coeffs
        ``"parametric"`` with ``(a0, a1)``, or ``"mean"`` with ``(mean,)``.
    prior_disp_var
        The prior variance of log dispersions.
    n_samples
        Samples pooled over all sites.
    rounds
        Federated rounds used.
    """

    genes: tuple[str, ...]
    base_mean: np.ndarray
    log2_fold_change: np.ndarray
    lfc_se: np.ndarray
    stat: np.ndarray
    pvalue: np.ndarray
    padj: np.ndarray
    coefficients: np.ndarray
    design_columns: tuple[str, ...]
    contrast_vector: np.ndarray
    genewise_dispersions: np.ndarray
    fitted_dispersions: np.ndarray
    dispersions: np.ndarray
    converged: np.ndarray
    trend_type: str
    trend_coeffs: np.ndarray
    prior_disp_var: float
    n_samples: int
    rounds: int

    @property
    def results_df(self) -> pd.DataFrame:
        """One row per gene: baseMean, log2FoldChange, lfcSE, stat, pvalue, padj."""
        cols = (self.base_mean, self.log2_fold_change, self.lfc_se, self.stat)
        data = dict(zip(RESULT_COLUMNS, (*cols, self.pvalue, self.padj)))
        return pd.DataFrame(data, index=pd.Index(list(self.genes), name="gene"))

    @property
    def summary(self) -> pd.DataFrame:
        """Same as :attr:`results_df`."""
        return self.results_df

    def significant(self, alpha: float = 0.1) -> pd.Index:
        """Genes with ``padj < alpha``."""
        df = self.results_df
        return df.index[df["padj"] < alpha]

    def to_csv(self, path: str | Path) -> None:
        """Write :attr:`results_df` as CSV (gene names in the first column)."""
        self.results_df.to_csv(path)

    def to_parquet(self, path: str | Path) -> None:
        """Write :attr:`results_df` as Parquet (pyarrow)."""
        self.results_df.to_parquet(path)
