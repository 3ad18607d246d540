"""A site's side of federated DESeq2: its counts and design, and its per-step sums.

Nothing here leaves the site but per-gene sums over the site's samples (and
design-cell counts); size factors, means and residuals of single samples stay
at the site.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import SchemaError
from consortia.omics.deseq2._design import Design
from consortia.omics.deseq2._irls import site_irls_sums, site_nb_gradient
from consortia.omics.deseq2._nb import site_dispersion_sums, weighted_gram

__all__ = ["SiteData", "load_site", "site_step"]


@dataclass
class SiteData:
    """One site's counts (samples x genes), design matrix and design cells."""

    counts: np.ndarray
    x: np.ndarray
    cells: np.ndarray
    rows: np.ndarray
    fingerprint: int
    _norm_key: bytes = b""
    _sf: np.ndarray | None = None
    _counts_nz: np.ndarray | None = None

    def normalised(self, public: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(counts of non-zero genes, size factors)`` for the round's public context."""
        lm, filt, nz = public["lm"], public["filt"], public["nz"]
        key = hashlib.blake2b(lm.tobytes() + filt.tobytes() + nz.tobytes()).digest()
        if key != self._norm_key or self._sf is None or self._counts_nz is None:
            with np.errstate(divide="ignore"):
                logc = np.log(self.counts[:, filt.astype(np.intp)])
            self._sf = np.exp(np.median(logc - lm, axis=1))
            self._counts_nz = np.ascontiguousarray(self.counts[:, nz.astype(np.intp)])
            self._norm_key = key
        return self._counts_nz, self._sf


def load_site(data: Dataset, design: Design, genes: tuple[str, ...] | None) -> SiteData:
    """Read and check a site's expression counts and design.

    Raises
    ------
    SchemaError
        No expression modality, a gene of the study missing, counts that are not
        non-negative integers, or a design column that breaks its rule.
    """
    expr = data.expression
    if expr is None:
        raise SchemaError("DESeq2 needs the modality 'expression' (raw counts) at every site")
    if genes is not None:
        missing = pd.Index(genes).difference(expr.columns)
        if len(missing):
            raise SchemaError(f"modality 'expression' lacks {len(missing)} of the study's genes")
        expr = expr.loc[:, list(genes)]
    counts = expr.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(counts).all():
        raise SchemaError("modality 'expression' must hold raw counts: missing or infinite values")
    if (counts != np.floor(counts)).any():
        raise SchemaError("modality 'expression' must hold raw counts: non-integer values")
    if (counts < 0).any():
        raise SchemaError("modality 'expression' must hold raw counts: negative values")
    col = data.id_column
    frame = data.frame
    if col is None or col not in frame.columns:
        raise SchemaError("modality 'expression' needs the patient id column in the clinical table")
    pos = pd.Index(frame[col]).get_indexer(expr.index)
    if (pos < 0).any():
        raise SchemaError("modality 'expression' has patient ids absent from the clinical table")
    x, cells = design.matrix(frame.iloc[pos])
    fp = zlib.crc32("\x1f".join(map(str, expr.columns)).encode())
    return SiteData(counts=counts, x=x, cells=cells, rows=pos, fingerprint=fp)


def site_step(
    step: str, public: Mapping[str, np.ndarray], site: SiteData, design: Design, min_mu: float
) -> dict[str, np.ndarray]:
    """The per-gene sums of ``step`` over this site's samples."""
    x = site.x
    if step == "totals":
        c = site.counts
        with np.errstate(divide="ignore"):
            logc = np.where(c > 0, np.log(np.where(c > 0, c, 1.0)), 0.0)
        fp = np.array([site.fingerprint >> 16, site.fingerprint & 0xFFFF], dtype=np.float64)
        return {
            "n": np.array([float(c.shape[0])]),
            "sites": np.ones(1),
            "fp": fp,
            "fp2": fp**2,
            "cells": np.bincount(site.cells, minlength=design.n_cells).astype(np.float64),
            "anyzero": (c == 0).any(axis=0).astype(np.float64),
            "anypos": (c > 0).any(axis=0).astype(np.float64),
            "logsum": logc.sum(axis=0),
            "xtx": weighted_gram(x, np.ones((x.shape[0], 1)))[0],
        }
    counts, sf = site.normalised(public)
    if step == "moments":
        y = counts / sf[:, None]
        return {
            "ysum": y.sum(axis=0),
            "xty": np.ascontiguousarray(y.T @ x),
            "xtly": np.ascontiguousarray(np.log(y + 0.1).T @ x),
            "invsf": np.array([(1.0 / sf).sum()]),
        }
    if step == "spread":
        y = counts / sf[:, None]
        yhat = np.maximum(x @ public["beta"].T, 1.0)
        mean = public["mean"]
        return {
            "rough": (((y - yhat) ** 2 - yhat) / yhat**2).sum(axis=0),
            "sqdev": (((y - mean) / mean) ** 2).sum(axis=0),
        }
    if step == "wald":
        mu = sf[:, None] * np.exp(x @ public["beta"].T)
        w = mu / (1.0 + mu * public["disp"])
        return {"xwx": weighted_gram(x, w)}
    idx = public["idx"].astype(np.intp)
    y = counts[:, idx]
    if step == "irls":
        return site_irls_sums(y, x, sf, public["beta"], public["disp"], min_mu)
    if step == "nbgrad":
        return site_nb_gradient(y, x, sf, public["beta"], public["disp"], min_mu)
    if step == "disp":
        if public["lin"][0] > 0.5:  # PyDESeq2's lin_reg_mu
            mu = np.maximum(sf[:, None] * (x @ public["beta"].T), min_mu)
        else:  # the IRLS means (unbounded)
            mu = sf[:, None] * np.exp(x @ public["beta"].T)
        return site_dispersion_sums(y, mu, x, public["alpha"])
    raise KeyError(step)
