"""Per-gene linear models with limma's moderated t-statistics, in one round of secure sums.

:class:`ModeratedT` fits, for every gene ``g`` of a public gene list, the linear
model ``y_g = X b_g + e_g`` of the gene's log-expression on a design shared by all
genes (an intercept and numeric clinical covariates), then moderates the genes'
residual variances by limma's empirical Bayes (:mod:`consortia.omics._ebayes`).
Least squares decomposes into sums, so one round is exact: every site releases

* ``n``, ``X'X`` (packed), ``X'Y`` (``p x genes``), ``sum_i y_ig^2`` and
  ``sum_i y_ig`` (genes)

and the hub computes ``b = (X'X)^{-1} X'Y``, the residual sums of squares
``Y'Y - b'X'Y``, ``s2_g`` on ``n - p`` degrees of freedom, the prior ``(s0^2,
d0)``, the moderated t of the tested coefficient, its p-value and the
Benjamini-Hochberg FDR.  The result equals limma's ``lmFit`` + ``eBayes`` on the
pooled data (tested against InMoose).

With ``adjust_for_site=True`` every site first centres its covariates and
expression on its own means: by the Frisch-Waugh-Lovell theorem the sums then
give the pooled model with one intercept per site (site fixed effects: batch
effects absorbed), on ``n - sites - p`` degrees of freedom, without any
per-site value travelling.

Per-gene values as in :mod:`consortia.omics.screen` (``log2cpm`` of the
``expression`` modality's counts by default, or clinical columns).  Every
contribution declares ``n_parameters = p`` (one gene model's parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from consortia.data.dataset import Dataset
from consortia.errors import ValidationError
from consortia.omics import _features
from consortia.omics._ebayes import squeeze_var
from consortia.omics._screen_result import fdr_bh
from consortia.precision import join, split
from consortia.protocol import Algorithm, Contribution, Coordination, Requirements, Round, register
from consortia.results import Result
from consortia.stats._validate import numeric_columns
from consortia.survival._cox_math import pack, unpack

__all__ = ["ModeratedT", "ModeratedTResult"]


@dataclass(frozen=True)
class ModeratedTResult(Result):
    """limma-style results for the tested coefficient, one row per gene.

    Attributes
    ----------
    genes
        The genes, in the study's order.
    coefficient
        The tested design column.
    log_fc, ave_expr
        The coefficient (change in the gene's value per unit of the covariate, for
        example log2 fold change for a 0/1 group) and the gene's mean value.
    t, pvalue, fdr
        Moderated t, its two-sided p-value on ``df_total`` degrees of freedom, and
        the Benjamini-Hochberg FDR (``scipy.stats.false_discovery_control``).
    s2, s2_post
        Residual and posterior (moderated) variances per gene.
    stdev_unscaled
        ``sqrt((X'X)^{-1}_jj)`` of the tested coefficient.
    df_residual, df_prior, s2_prior, df_total
        Residual degrees of freedom, the prior's degrees of freedom and scale
        (limma's ``df.prior``, ``s2.prior``), and ``min(df_residual + df_prior,
        genes * df_residual)``.
    n, rounds
        Samples over all sites; rounds of the study.
    adjusted_for_site
        Whether each site had its own intercept.
    """

    genes: tuple[str, ...]
    coefficient: str
    log_fc: np.ndarray
    ave_expr: np.ndarray
    t: np.ndarray
    pvalue: np.ndarray
    fdr: np.ndarray
    s2: np.ndarray
    s2_post: np.ndarray
    stdev_unscaled: float
    df_residual: float
    df_prior: float
    s2_prior: float
    df_total: float
    n: int
    rounds: int
    adjusted_for_site: bool

    @property
    def summary(self) -> pd.DataFrame:
        """A table like limma's ``topTable`` (genes in the study's order)."""
        return pd.DataFrame(
            {
                "logFC": self.log_fc,
                "AveExpr": self.ave_expr,
                "t": self.t,
                "P.Value": self.pvalue,
                "adj.P.Val": self.fdr,
            },
            index=pd.Index(list(self.genes), name="gene"),
        )

    def significant(self, fdr: float = 0.1) -> tuple[str, ...]:
        """The genes with an FDR below ``fdr``, most significant first."""
        if not 0 < fdr <= 1:
            raise ValidationError("fdr must lie in (0, 1]")
        hit = np.flatnonzero(np.nan_to_num(self.fdr, nan=2.0) < fdr)
        order = hit[np.argsort(self.pvalue[hit], kind="stable")]
        return tuple(self.genes[i] for i in order)


@register
@dataclass(frozen=True, kw_only=True)
class ModeratedT(Algorithm):
    """Federated per-gene linear models with limma's empirical-Bayes moderated t.

    Parameters
    ----------
    genes
        The public list of genes (expression modality columns, or clinical
        columns with ``source="columns"``).
    covariates
        Numeric clinical columns of the design (an intercept is added, unless
        ``adjust_for_site``, where each site's intercept is absorbed).
    test
        The covariate whose coefficient is tested (default: the first).
    source, transform
        As for :class:`~consortia.omics.screen.CoxScreen`.
    adjust_for_site
        One intercept per site (site fixed effects).
    """

    name = "omics.moderated_t"
    genes: tuple[str, ...]
    covariates: tuple[str, ...]
    test: str | None = None
    source: str = "expression"
    transform: str | None = None
    adjust_for_site: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", _features.check_genes(self.genes))
        covs = (self.covariates,) if isinstance(self.covariates, str) else tuple(self.covariates)
        if not covs or not all(isinstance(c, str) and c for c in covs):
            raise ValidationError("covariates must be a non-empty tuple of column names")
        if len(set(covs)) != len(covs):
            raise ValidationError("covariates must not repeat a column")
        object.__setattr__(self, "covariates", covs)
        test = covs[0] if self.test is None else self.test
        if test not in covs:
            raise ValidationError(f"test {test!r} must be one of the covariates")
        object.__setattr__(self, "test", test)
        if self.source == "columns" and set(self.genes) & set(covs):
            raise ValidationError("a column cannot be both a gene and a covariate")
        object.__setattr__(
            self, "transform", _features.resolve_transform(self.source, self.transform)
        )

    @property
    def _p(self) -> int:
        return len(self.covariates) + (0 if self.adjust_for_site else 1)

    def requirements(self, step: str) -> Requirements:
        """One gene model's parameters (with a site's own intercept when adjusted for site)."""
        cols = self.covariates + (self.genes if self.source == "columns" else ())
        return Requirements(n_parameters=len(self.covariates) + 1, columns=cols)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step != "moments":
            raise ValidationError(f"unknown step {step!r} for {self.name}")
        feats = _features.features(
            data, self.genes, source=self.source, transform=str(self.transform)
        )
        frame = data.frame.iloc[feats.rows]
        x = numeric_columns(frame, self.covariates)
        y = feats.values
        n = len(y)
        arrays: dict[str, np.ndarray] = {"n": np.array([n], float)}
        arrays.update(split("y_sum", y.sum(axis=0)))
        if self.adjust_for_site:
            if n:
                x = x - x.mean(axis=0)
                y = y - y.mean(axis=0)
            arrays["sites"] = np.array([1.0])
        else:
            x = np.hstack([np.ones((n, 1)), x])
        arrays.update(split("xtx", pack(x.T @ x)))
        arrays.update(split("xty", x.T @ y))
        arrays.update(split("yty", np.einsum("ij,ij->j", y, y)))
        return Contribution(
            arrays, cohort=n, n_parameters=len(self.covariates) + 1, rows=feats.rows
        )

    def coordinate(self) -> Coordination:
        sums = yield Round("moments")
        p = self._p
        n = int(round(float(sums["n"][0])))
        sites = int(round(float(sums["sites"][0]))) if self.adjust_for_site else 0
        df = n - p - sites
        if df < 1:
            raise ValidationError(
                f"the design has {p + sites} parameters for {n} samples: no residual "
                "degrees of freedom"
            )
        xtx = unpack(join(sums, "xtx"), p)
        eig = np.linalg.eigvalsh(xtx)
        if not eig[0] > 1e-10 * max(eig[-1], 1e-300):
            raise ValidationError(
                f"the design of covariates {list(self.covariates)} is singular (a constant "
                "or collinear covariate)"
            )
        inv = np.linalg.inv(xtx)
        xty = join(sums, "xty").reshape(p, len(self.genes))
        beta = inv @ xty
        rss = np.maximum(join(sums, "yty") - np.einsum("pg,pg->g", beta, xty), 0.0)
        s2 = rss / df
        s2_post, s2_prior, df_prior = squeeze_var(s2, float(df))
        j = self.covariates.index(str(self.test)) + (0 if self.adjust_for_site else 1)
        stdev = float(np.sqrt(inv[j, j]))
        df_total = float(min(df + df_prior, len(self.genes) * df))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = beta[j] / (stdev * np.sqrt(s2_post))
        pvalue = 2 * stats.t.sf(np.abs(t), df_total)
        return ModeratedTResult(
            genes=self.genes,
            coefficient=str(self.test),
            log_fc=beta[j],
            ave_expr=join(sums, "y_sum") / n,
            t=t,
            pvalue=pvalue,
            fdr=fdr_bh(pvalue),
            s2=s2,
            s2_post=s2_post,
            stdev_unscaled=stdev,
            df_residual=float(df),
            df_prior=float(df_prior),
            s2_prior=float(s2_prior),
            df_total=df_total,
            n=n,
            rounds=1,
            adjusted_for_site=self.adjust_for_site,
        )
