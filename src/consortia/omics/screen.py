"""Genome-wide survival screening: one Cox model per gene, all genes in each round.

:class:`CoxScreen` fits, for every gene ``g`` of a public gene list, the Cox
model ``h(t) = h0(t) exp(b_g x_g + c'covariates)`` by Newton-Raphson, every gene's
model side by side: each round the sites release per-gene sums and the hub takes
one Newton step for every gene that has not converged.  The kernels are the
federated Cox model's (:mod:`consortia.survival._cox_math`), evaluated for a
batch of models at once; each gene's estimate equals the pooled per-gene fit of
lifelines' ``CoxPHFitter`` (Efron) or statsmodels' ``PHReg`` (Breslow).

Two modes, as for :class:`~consortia.survival.cox.CoxPH`:

* **Pooled** (``time_grid``): per grid time carrying a pooled event, the sites
  release the sums ``S0, S1, S2`` of every gene's model (and Efron's tie sums):
  ``K x genes x (1 + p + p(p+1)/2)`` numbers a round, ``p = 1 + len(covariates)``;
  the summary round releases the event counts per grid time (minimum-cell rule).
* **Stratified by site** (``stratify_by_site=True``): each site evaluates every
  gene's partial likelihood, gradient and Hessian on its own patients; only their
  sums travel, ``genes x (2 + p + p(p+1)/2)`` numbers a round: no grid, no
  per-time counts.  Runs under the default policy.

Rounds: ``summary`` (patients, events, per-gene sums and sums of squares of the
values for the pooled standardisation, the events' per-gene sums; pooled mode:
event counts per grid time), then ``newton`` rounds until every gene has
converged or ``max_iter``.  Every contribution declares ``n_parameters = p``
(one gene model's parameters), checked by the node's parameters-per-sample rule
before anything is computed.  Float sums travel as two fixed-point words
(:func:`consortia.precision.split`).

Per-gene values: raw counts of the ``expression`` modality transformed per sample
(``log2cpm``: ``log2(count / library size * 1e6 + 1)``, default; ``log2``;
``none``), or numeric clinical columns (``source="columns"``, for expression
already on a continuous scale).  A gene constant over all patients is reported
untested (NaN); a gene whose model does not converge (monotone likelihood,
singular information) is reported with NaN estimates and ``converged=False``;
both are left out of the FDR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import ValidationError
from consortia.omics import _features
from consortia.omics._screen_fit import coordinate_screen
from consortia.omics._screen_result import CoxScreenResult
from consortia.precision import split
from consortia.protocol import Algorithm, Contribution, Coordination, Requirements, register
from consortia.stats._validate import numeric_columns
from consortia.survival import _cox_math as cm
from consortia.survival._grid import binned_on, grid_map, grid_param
from consortia.survival._validate import survival_columns

__all__ = ["CoxScreen", "CoxScreenResult"]

_TIES = ("efron", "breslow")
_CHUNK_VALUES = 4_000_000
"""Site-side memory bound: genes are processed in chunks of about this many values per moment."""


@dataclass
class _SiteRows:
    t: np.ndarray
    e: np.ndarray
    x: np.ndarray
    g: np.ndarray
    rows: np.ndarray


@register
@dataclass(frozen=True, kw_only=True)
class CoxScreen(Algorithm):
    """Federated genome-wide Cox screen: per-gene Cox models, Wald tests and FDR.

    Parameters
    ----------
    time, event
        Columns of follow-up times (non-negative) and event indicators (0/1).
    genes
        The public list of genes to screen (ids of the expression modality's
        columns, or clinical column names with ``source="columns"``).
    covariates
        Numeric clinical columns every gene's model is adjusted for (default none:
        univariate models).
    source
        ``"expression"`` (the dataset's expression modality, joined by patient id)
        or ``"columns"`` (clinical columns).
    transform
        ``"log2cpm"`` (default for counts), ``"log2"`` or ``"none"`` (default for
        columns).
    stratify_by_site
        Give every site its own baseline hazard (no grid, no per-time releases).
    time_grid
        Public time grid of the pooled (unstratified) mode (see
        :mod:`consortia.survival._grid`): times are rounded up to it.
    ties
        ``"efron"`` (lifelines) or ``"breslow"``.
    alpha
        Confidence intervals at level ``1 - alpha``.
    max_iter
        Largest number of Newton-Raphson rounds.
    tol
        A gene's model has converged when its largest Newton step on the
        standardised scale is below ``tol``.
    """

    name = "omics.cox_screen"
    time: str
    event: str
    genes: tuple[str, ...]
    covariates: tuple[str, ...] = ()
    source: str = "expression"
    transform: str | None = None
    stratify_by_site: bool = False
    time_grid: tuple[float, ...] | None = None
    ties: str = "efron"
    alpha: float = 0.05
    max_iter: int = 30
    tol: float = 1e-9

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", _features.check_genes(self.genes))
        covs = (self.covariates,) if isinstance(self.covariates, str) else tuple(self.covariates)
        if not all(isinstance(c, str) and c for c in covs) or len(set(covs)) != len(covs):
            raise ValidationError("covariates must be a tuple of distinct column names")
        object.__setattr__(self, "covariates", covs)
        clash = sorted(set(covs) & {self.time, self.event})
        if clash:
            raise ValidationError(f"column(s) {clash} cannot be both a covariate and a role column")
        if self.source == "columns":
            both = sorted(set(self.genes) & {*covs, self.time, self.event})
            if both:
                raise ValidationError(f"column(s) {both} cannot be both a gene and another column")
        object.__setattr__(
            self, "transform", _features.resolve_transform(self.source, self.transform)
        )
        if self.ties not in _TIES:
            raise ValidationError(f"ties must be one of {_TIES}")
        if self.time_grid is not None:
            object.__setattr__(self, "time_grid", grid_param(self.time_grid))
        elif not self.stratify_by_site:
            raise ValidationError(
                "time_grid is required unless stratify_by_site=True (the pooled model needs "
                "a public time grid)"
            )
        if not 0 < self.alpha < 1:
            raise ValidationError("alpha must lie strictly between 0 and 1")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int):
            raise ValidationError("max_iter must be a positive integer")
        if self.max_iter < 1:
            raise ValidationError("max_iter must be a positive integer")
        if not self.tol > 0:
            raise ValidationError("tol must be positive")

    @property
    def n_parameters(self) -> int:
        """Parameters of one gene's model: the gene and the covariates."""
        return 1 + len(self.covariates)

    def requirements(self, step: str) -> Requirements:
        """Every step: one gene model's parameters; the clinical columns it reads."""
        cols = (self.time, self.event, *self.covariates)
        if self.source == "columns":
            cols = (*cols, *self.genes)
        return Requirements(n_parameters=self.n_parameters, columns=cols)

    # ------------------------------------------------------------------ site side

    def _rows(self, data: Dataset) -> _SiteRows:
        feats = _features.features(
            data, self.genes, source=self.source, transform=str(self.transform)
        )
        frame = data.frame.iloc[feats.rows] if len(feats.rows) < len(data.frame) else data.frame
        t, e = survival_columns(frame, self.time, self.event)
        x = numeric_columns(frame, self.covariates) if self.covariates else np.zeros((len(t), 0))
        if self.time_grid is not None and not self.stratify_by_site:
            grid = np.asarray(self.time_grid)
            idx, e = grid_map(t, e, grid, column=self.time)
            t = grid[idx]
        return _SiteRows(t=t, e=e, x=x, g=feats.values, rows=feats.rows)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step not in ("summary", "newton"):
            raise ValidationError(f"unknown step {step!r} for {self.name}")
        site = self._rows(data)
        n = len(site.t)
        kw: dict[str, Any] = {"cohort": n, "n_parameters": self.n_parameters, "rows": site.rows}
        if step == "summary":
            arrays: dict[str, np.ndarray] = {"n": np.array([n], float)}
            arrays["n_events"] = np.array([site.e.sum()], float)
            ev = site.e.astype(np.float64)
            for key, v in (("gene", site.g), ("cov", site.x)):
                arrays.update(split(f"{key}_sum", v.sum(axis=0)))
                arrays.update(split(f"{key}_sq", np.einsum("ij,ij->j", v, v)))
                arrays.update(split(f"{key}_xe", ev @ v))
            if self.stratify_by_site:
                return Contribution(arrays, **kw)
            grid = np.asarray(self.time_grid)
            idx = np.searchsorted(grid, site.t)
            arrays["events"] = np.bincount(idx, weights=site.e, minlength=grid.size)
            return Contribution(
                arrays, count_arrays=frozenset({"events"}), **binned_on(self.time, grid), **kw
            )
        return Contribution(self._newton(site, public), **kw)

    def _newton(self, site: _SiteRows, public: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n_genes, p = len(self.genes), self.n_parameters
        beta = np.asarray(public["beta"]).reshape(n_genes, p)
        offset = np.asarray(public["offset"])
        zc = (site.x - public["cov_mean"]) / public["cov_sd"]
        if self.stratify_by_site:
            ev = site.e == 1
            ev_t = np.unique(site.t[ev])
            ev_c = np.zeros(len(ev_t), np.int64)
        else:
            ev_t = np.asarray(self.time_grid)[public["event_index"].astype(np.int64)]
            ev_c = np.zeros(len(ev_t), np.int64)
        codes = np.zeros(len(site.t), np.int64)
        bins = cm.last_at_risk(site.t, codes, ev_t, ev_c)
        if self.stratify_by_site:
            d = np.bincount(bins[site.e == 1], minlength=len(ev_t)).astype(float)
            tie_rows = np.flatnonzero(d >= 2) if self.ties == "efron" else None
        else:
            tie_rows = public["tie_rows"].astype(np.int64) if self.ties == "efron" else None
        q = 1 + p + p * (p + 1) // 2
        total = np.empty(n_genes)
        if self.stratify_by_site:
            out = {"loglik": np.empty(n_genes), "grad": np.empty((n_genes, p))}
            out["hess"] = np.empty((n_genes, p * (p + 1) // 2))
        else:
            out = {"risk": np.empty((len(ev_t), n_genes, q))}
            if tie_rows is not None and tie_rows.size:
                out["ties"] = np.empty((tie_rows.size, n_genes, q))
        n = max(len(site.t), 1)
        step = max(1, _CHUNK_VALUES // (n * q))
        for lo in range(0, n_genes, step):
            sl = slice(lo, min(lo + step, n_genes))
            b = beta[sl]
            zg = (site.g[:, sl] - public["gene_mean"][sl]) / public["gene_sd"][sl]
            z = np.empty((len(site.t), zg.shape[1], p))
            z[..., 0] = zg
            z[..., 1:] = zc[:, None, :]
            phi = np.exp(zg * b[:, 0] + zc @ b[:, 1:].T - offset[sl])
            total[sl] = phi.sum(axis=0)
            risk, ties = cm.risk_sums(bins, site.e, z, phi, ev_c, tie_rows)
            if self.stratify_by_site:
                xe = np.einsum("n,nbp->bp", site.e.astype(np.float64), z)
                ll, g, h = cm.partial_likelihood_batch(
                    risk, ties, tie_rows, d, d, xe, b, offset[sl]
                )
                out["loglik"][sl], out["grad"][sl], out["hess"][sl] = ll, g, cm.pack(h)
            else:
                out["risk"][:, sl] = risk
                if "ties" in out and ties is not None:
                    out["ties"][:, sl] = ties
        arrays: dict[str, np.ndarray] = {}
        for key, v in out.items():
            arrays.update(split(key, v))
        arrays.update(split("total", total))
        return arrays

    # ------------------------------------------------------------------ hub side

    def coordinate(self) -> Coordination:
        return (yield from coordinate_screen(self))
