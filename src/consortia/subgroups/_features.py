"""The feature matrix a subgroup algorithm reads at a site: clinical columns or expression.

Shared by :mod:`~consortia.subgroups.pca`, :mod:`~consortia.subgroups.kmeans` and
:mod:`~consortia.subgroups.choose_k`.  A site reads either numeric columns of its
clinical table or its gene-expression modality (raw counts, transformed at the site
patient by patient: ``log2(1 + count)`` or ``log2(1 + counts per million)``).  Nothing
here is released: the algorithms release sums computed from this matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import SchemaError, ValidationError
from consortia.stats._validate import check_bool, numeric_rows, used_rows

__all__ = ["TRANSFORMS", "FeatureParams", "SiteMatrix"]

TRANSFORMS = ("log2cpm", "log2", "none")
"""Transforms of raw expression counts (applied at the site, per patient)."""


@dataclass(frozen=True)
class SiteMatrix:
    """A site's feature matrix (private) and the rows of ``data.frame`` it holds.

    Attributes
    ----------
    x
        Patients x features, float64.
    rows
        Positions in ``data.frame`` of the rows of ``x`` (``None``: every row, in order).
    index
        The patient ids (or row positions) of the rows of ``x``.
    features
        The feature names, in column order.
    """

    x: np.ndarray
    rows: np.ndarray | None
    index: np.ndarray
    features: tuple[str, ...]


def _check_names(value: Any, param: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(c, str) and c for c in names):
        raise ValidationError(f"{param} must be a tuple of names (non-empty strings)")
    if len(set(names)) != len(names):
        raise ValidationError(f"{param} names a feature more than once")
    return names


@dataclass(frozen=True, kw_only=True)
class FeatureParams:
    """Where the features come from (parameters shared by the subgroup algorithms).

    Parameters
    ----------
    columns
        Numeric columns of the clinical table (used when ``expression`` is False).
    expression
        Use the gene-expression modality instead of columns.
    genes
        With ``expression``: the genes to use; empty (default) uses every gene of the
        modality, sorted by name (every site must then hold the same genes).
    transform
        With ``expression``: ``"log2cpm"`` (default: ``log2(1 + counts per million)``),
        ``"log2"`` (``log2(1 + count)``) or ``"none"`` (raw counts).
    standardize
        Scale every feature to unit pooled variance after centring (a correlation
        PCA, clustering on z-scores).  Centring always happens for PCA.
    dropna
        With ``columns``: drop, at each site, rows with a missing value
        (complete-case); otherwise a missing value is a :class:`SchemaError`.
    """

    columns: tuple[str, ...] = ()
    expression: bool = False
    genes: tuple[str, ...] = ()
    transform: str = "log2cpm"
    standardize: bool = True
    dropna: bool = False

    def _check_features(self) -> None:
        object.__setattr__(self, "columns", _check_names(self.columns, "columns"))
        object.__setattr__(self, "genes", _check_names(self.genes, "genes"))
        for p in ("expression", "standardize", "dropna"):
            check_bool(getattr(self, p), p)
        if self.expression and self.columns:
            raise ValidationError("give either columns or expression=True, not both")
        if not self.expression and not self.columns:
            raise ValidationError("columns must name at least one numeric column")
        if self.genes and not self.expression:
            raise ValidationError("genes needs expression=True")
        if self.transform not in TRANSFORMS:
            raise ValidationError(f"transform must be one of {TRANSFORMS}")

    def feature_params(self) -> dict[str, Any]:
        """The feature parameters alone (to build a sub-algorithm over the same features)."""
        return {
            "columns": self.columns,
            "expression": self.expression,
            "genes": self.genes,
            "transform": self.transform,
            "standardize": self.standardize,
            "dropna": self.dropna,
        }

    @property
    def n_features_declared(self) -> int | None:
        """The number of features, when the parameters fix it (``None``: all genes)."""
        if self.expression:
            return len(self.genes) or None
        return len(self.columns)

    def read_features(self, data: Dataset) -> SiteMatrix:
        """The site's feature matrix (cached per algorithm instance and dataset)."""
        cached = self.__dict__.get("_site_matrix")
        if cached is not None and cached[0] is data.frame:
            return cached[1]
        m = self._expression(data) if self.expression else self._columns(data)
        m.x.setflags(write=False)
        object.__setattr__(self, "_site_matrix", (data.frame, m))
        return m

    def _columns(self, data: Dataset) -> SiteMatrix:
        x, kept = numeric_rows(data.frame, self.columns, dropna=self.dropna, return_mask=True)
        rows = used_rows(kept)
        idcol = data.id_column
        ids = (
            data.frame[idcol].to_numpy()
            if idcol is not None and idcol in data.frame.columns
            else np.arange(len(data.frame))
        )
        return SiteMatrix(
            x=np.ascontiguousarray(x, dtype=np.float64),
            rows=rows,
            index=ids[kept],
            features=self.columns,
        )

    def _expression(self, data: Dataset) -> SiteMatrix:
        expr = data.expression
        if expr is None:
            raise SchemaError("the dataset has no 'expression' modality")
        idcol = data.id_column
        if idcol is None or idcol not in data.frame.columns:
            raise SchemaError("modality 'expression' needs the patient id column")
        genes = self.genes or tuple(sorted(str(g) for g in expr.columns))
        missing = [g for g in genes if g not in expr.columns]
        if missing:
            raise SchemaError(f"gene(s) {missing[:5]} not found in the modality 'expression'")
        ids = data.frame[idcol].to_numpy()
        have = np.isin(ids, expr.index.to_numpy())
        pos = np.flatnonzero(have)
        counts = expr.loc[ids[pos], list(genes)].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(counts)) or (counts < 0).any():
            raise SchemaError("modality 'expression' must hold finite, non-negative counts")
        if self.transform == "log2cpm":
            lib = counts.sum(axis=1, keepdims=True)
            lib[lib == 0] = 1.0
            counts = np.log2(1.0 + counts * (1e6 / lib))
        elif self.transform == "log2":
            counts = np.log2(1.0 + counts)
        return SiteMatrix(
            x=np.ascontiguousarray(counts),
            rows=None if have.all() else pos,
            index=ids[pos],
            features=genes,
        )
