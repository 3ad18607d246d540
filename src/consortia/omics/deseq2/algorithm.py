"""Federated DESeq2: PyDESeq2 0.5.4's defaults, step by step, over secure sums."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.omics.deseq2._design import Design, parse_formula
from consortia.omics.deseq2._dispersion import (
    fit_alpha,
    fit_trend,
    map_outliers,
    moments_dispersions,
    prior_variance,
    trend_values,
)
from consortia.omics.deseq2._irls import fit_irls
from consortia.omics.deseq2._nb import unpack
from consortia.omics.deseq2._result import DESeq2Result
from consortia.omics.deseq2._site import SiteData, load_site, site_step
from consortia.omics.deseq2._wald import bh_adjust, independent_filtering, wald_test
from consortia.precision import join, split
from consortia.protocol import Algorithm, Contribution, Coordination, Requirements, Round, register

__all__ = ["DESeq2"]

# arrays released as exact small integers (one word); every other array is two-word
_PLAIN = frozenset({"n", "sites", "fp", "fp2", "cells", "anyzero", "anypos"})
_COUNTS = frozenset({"n", "cells"})


def _joining(gen: Any) -> Any:
    """Drive a step's sub-coroutine, handing it the recombined (two-word) sums."""
    try:
        rnd = next(gen)
        while True:
            raw = yield rnd
            rnd = gen.send(_joined(raw))
    except StopIteration as stop:
        return stop.value


def _joined(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name in sums:
        if name.endswith("_lo"):
            continue
        out[name] = join(sums, name) if f"{name}_lo" in sums else np.asarray(sums[name])
    return out


@register
@dataclass(frozen=True, kw_only=True)
class DESeq2(Algorithm):
    """Differential expression on raw counts, as PyDESeq2 0.5.4 with its defaults.

    The steps are PyDESeq2's: median-of-ratios size factors, method-of-moments
    start, Cox-Reid gene-wise dispersions (the same L-BFGS-B, each evaluation a
    round of per-gene sums), parametric trend, MAP dispersions, the negative
    binomial GLM by IRLS, Wald tests, independent filtering and Benjamini-Hochberg.
    What a site releases is always a per-gene sum over its samples (or a count of
    samples per design cell); see ``docs/omics.md``.

    Parameters
    ----------
    design
        Main-effects formula over clinical columns, e.g. ``"~cell + dex"``.
    levels
        Factor -> its levels, the reference level first.  PyDESeq2's default
        reference is the first level in sorted order: list the levels sorted to
        reproduce its coefficients.  A term without levels is a numeric covariate.
    contrast
        ``(factor, tested level, reference level)``.
    genes
        The genes to test (columns of each site's expression table).  ``None``:
        every column, which must then be the same, in the same order, at every site;
        the result then labels genes by their position (``"0"``, ``"1"``, ...).
    alpha
        Significance level of independent filtering (PyDESeq2: 0.05).
    min_mu, min_disp, max_disp, beta_tol
        PyDESeq2's constants (``max_disp`` is raised to the number of samples).
    independent_filter
        Adjust p-values with independent filtering (else plain Benjamini-Hochberg).
    cooks_filter
        PyDESeq2's Cook's-distance filter of p-values.  It only acts on design cells
        with 3 or more samples; with such cells it is not federated yet, and the
        study stops with an :class:`~consortia.errors.AlgorithmError` unless this
        is False.
    refit_cooks, min_replicates
        PyDESeq2's replacement of outliers in cells of at least ``min_replicates``
        samples; with such cells it is not federated yet (as ``cooks_filter``).
    """

    name = "omics.deseq2"
    design: str
    levels: Mapping[str, tuple[str, ...]]
    contrast: tuple[str, str, str]
    genes: tuple[str, ...] | None = None
    alpha: float = 0.05
    min_mu: float = 0.5
    min_disp: float = 1e-8
    max_disp: float = 10.0
    beta_tol: float = 1e-8
    independent_filter: bool = True
    cooks_filter: bool = True
    refit_cooks: bool = True
    min_replicates: int = 7

    def __post_init__(self) -> None:
        terms = parse_formula(self.design)
        if not isinstance(self.levels, Mapping):
            raise ValidationError("levels must map each factor to its levels")
        levels = {}
        for factor, lv in self.levels.items():
            if factor not in terms:
                raise ValidationError(f"levels names {factor!r}, which is not in the design")
            lv = tuple(str(v) for v in (lv if isinstance(lv, (tuple, list)) else (lv,)))
            if len(lv) < 2 or len(set(lv)) != len(lv):
                raise ValidationError(f"levels of {factor!r} must be at least 2 distinct values")
            levels[str(factor)] = lv
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "contrast", tuple(str(c) for c in self.contrast))
        if self.genes is not None:
            genes = tuple(str(g) for g in self.genes)
            if not genes or len(set(genes)) != len(genes):
                raise ValidationError("genes must be distinct gene names")
            object.__setattr__(self, "genes", genes)
        for name in ("alpha", "min_mu", "min_disp", "max_disp", "beta_tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValidationError(f"{name} must be a positive number")
        if not 0 < self.alpha < 1:
            raise ValidationError("alpha must be in (0, 1)")
        if not isinstance(self.min_replicates, int) or self.min_replicates < 1:
            raise ValidationError("min_replicates must be a positive integer")
        self._design_obj.contrast_vector(self.contrast)  # checks the contrast

    @property
    def _design_obj(self) -> Design:
        return Design(terms=parse_formula(self.design), levels=self.levels)

    @property
    def design_columns(self) -> tuple[str, ...]:
        """Names of the design matrix columns."""
        return self._design_obj.columns

    def requirements(self, step: str) -> Requirements:
        """Every step: one GLM per gene with ``len(design_columns)`` parameters."""
        return Requirements(
            n_parameters=len(self.design_columns), columns=parse_formula(self.design)
        )

    # ------------------------------------------------------------------ site side
    def _site(self, data: Dataset) -> SiteData:
        cached = self.__dict__.get("_site_data")
        if cached is not None and cached[0] is data.frame and cached[1] is data.expression:
            site: SiteData = cached[2]
            return site
        site = load_site(data, self._design_obj, self.genes)
        object.__setattr__(self, "_site_data", (data.frame, data.expression, site))
        return site

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        site = self._site(data)
        design = self._design_obj
        try:
            raw = site_step(step, public, site, design, self.min_mu)
        except KeyError:
            raise AlgorithmError(f"unknown step {step!r} for {self.name}") from None
        arrays: dict[str, np.ndarray] = {}
        for name, value in raw.items():
            if name in _PLAIN:
                arrays[name] = value
            else:
                arrays.update(split(name, value))
        return Contribution(
            arrays,
            cohort=site.counts.shape[0],
            count_arrays=_COUNTS & set(arrays),
            n_parameters=len(design.columns),
            rows=site.rows,
        )

    # ------------------------------------------------------------------ hub side
    def coordinate(self) -> Coordination:
        design = self._design_obj
        p = len(design.columns)
        cvec = design.contrast_vector(self.contrast)
        ctx: dict[str, np.ndarray] = {}
        rounds = 0

        def ask(step: str, **arrays: Any) -> Round:
            nonlocal rounds
            rounds += 1
            return Round(step, {**ctx, **arrays})

        s = _joined((yield ask("totals")))
        n = int(round(float(s["n"][0])))
        n_sites = float(s["sites"][0])
        if np.any(n_sites * s["fp2"] != s["fp"] ** 2):
            raise AlgorithmError(
                "the sites' expression tables do not have the same genes in the same "
                "order: pass genes=... to the study"
            )
        present_cells = self._check_design(s, n, p)
        max_disp = max(self.max_disp, float(n))
        any_zero = s["anyzero"] > 0.5
        nonzero = np.nonzero(s["anypos"] > 0.5)[0]
        if any_zero.all():
            raise AlgorithmError(
                "every gene has a zero count in some sample: median-of-ratios size factors "
                "are undefined (PyDESeq2 would switch to iterative size factors, which are "
                "not federated)"
            )
        filt = np.nonzero(~any_zero)[0]
        n_genes = any_zero.size
        ctx.update(lm=s["logsum"][filt] / n, filt=filt, nz=nonzero)
        xtx = unpack(s["xtx"][None, :], p)[0]

        s_mom = _joined((yield ask("moments")))
        mean = s_mom["ysum"] / n
        beta_rough = np.linalg.solve(xtx, s_mom["xty"].T).T
        beta_init = np.linalg.solve(xtx, s_mom["xtly"].T).T
        s = _joined((yield ask("spread", beta=beta_rough, mean=mean)))
        mom = moments_dispersions(
            n=n,
            p=p,
            rough_sum=s["rough"],
            mean=mean,
            sq_dev=s["sqdev"],
            inv_sf_mean=float(s_mom["invsf"][0] / n),
            min_disp=self.min_disp,
            max_disp=max_disp,
        )
        linear_mu = bool(design.categorical and present_cells == p)
        if linear_mu:
            beta_mu = beta_rough
        else:
            beta_mu, _ = yield from _joining(fit_irls(ask, beta_init, mom, beta_tol=self.beta_tol))
        common = dict(linear_mu=linear_mu, p=p, min_disp=self.min_disp, max_disp=max_disp)
        genewise, _ = yield from _joining(fit_alpha(ask, beta_mu, mom, **common))  # type: ignore[arg-type]
        kind, coeffs = fit_trend(genewise, mean, self.min_disp)
        fitted = trend_values(kind, coeffs, mean)
        sq_logres, prior_var = prior_variance(genewise, fitted, n=n, p=p, min_disp=self.min_disp)
        map_disp, _ = yield from _joining(
            fit_alpha(ask, beta_mu, fitted, prior_var=prior_var, **common)  # type: ignore[arg-type]
        )
        disp = np.where(map_outliers(genewise, fitted, sq_logres), genewise, map_disp)
        beta, converged = yield from _joining(
            fit_irls(ask, beta_init, disp, beta_tol=self.beta_tol)
        )
        s = _joined((yield ask("wald", beta=beta, disp=disp)))
        pval, stat, se = wald_test(s["xwx"], beta, cvec)

        def full(values: np.ndarray, fill: float = np.nan) -> np.ndarray:
            out = np.full((n_genes, *values.shape[1:]), fill)
            out[nonzero] = values
            return out

        base_mean = full(mean, 0.0)
        pvalue = full(pval)
        if self.independent_filter:
            padj = independent_filtering(base_mean, pvalue, self.alpha)
        else:
            padj = bh_adjust(pvalue)
        genes = self.genes if self.genes is not None else tuple(str(i) for i in range(n_genes))
        return DESeq2Result(
            genes=genes,
            base_mean=base_mean,
            log2_fold_change=full(beta @ cvec / np.log(2)),
            lfc_se=full(se / np.log(2)),
            stat=full(stat),
            pvalue=pvalue,
            padj=padj,
            coefficients=full(beta),
            design_columns=design.columns,
            contrast_vector=cvec,
            genewise_dispersions=full(genewise),
            fitted_dispersions=full(fitted),
            dispersions=full(disp),
            converged=full(converged.astype(np.float64)) == 1.0,
            trend_type=kind,
            trend_coeffs=coeffs,
            prior_disp_var=prior_var,
            n_samples=n,
            rounds=rounds,
        )

    def _check_design(self, s: Mapping[str, np.ndarray], n: int, p: int) -> int:
        """Check the pooled design; return the number of design cells with samples."""
        design = self._design_obj
        cells = s["cells"]
        if n <= p:
            raise AlgorithmError(
                f"DESeq2 needs more samples than design columns ({p}) to estimate "
                "dispersions; the sites hold too few"
            )
        xtx = unpack(s["xtx"][None, :], p)[0]
        d = np.sqrt(np.clip(np.diag(xtx), 1e-300, None))
        eig = np.linalg.eigvalsh(xtx / np.outer(d, d))
        if eig[0] <= 1e-10 * max(eig[-1], 1.0):
            raise AlgorithmError(
                f"the design {self.design!r} is not of full rank over the pooled samples "
                f"(a level absent from every site, or collinear columns among "
                f"{list(design.columns)})"
            )
        if design.categorical:
            if self.cooks_filter and (cells >= 3).any():
                raise AlgorithmError(
                    "Cook's distance filtering of design cells with 3 or more samples is "
                    "not federated yet: run with cooks_filter=False and refit_cooks=False"
                )
            if self.refit_cooks and (cells >= self.min_replicates).any():
                raise AlgorithmError(
                    "refitting Cook's outliers (design cells with at least min_replicates "
                    "samples) is not federated yet: run with refit_cooks=False"
                )
        elif self.cooks_filter or self.refit_cooks:
            raise AlgorithmError(
                "Cook's distance filtering with numeric covariates is not federated yet: "
                "run with cooks_filter=False and refit_cooks=False"
            )
        return int((cells > 0.5).sum())
