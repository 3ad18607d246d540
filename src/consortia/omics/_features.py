"""A site's per-gene feature matrix for screening: from its expression modality or its columns.

Runs at the site only.  The matrix is patients x genes (float64), in the order of
the study's public gene list, for the clinical rows that have the features; the
rows used are returned too (the node records the cohort).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import SchemaError, ValidationError
from consortia.stats._validate import numeric_columns

__all__ = ["SOURCES", "TRANSFORMS", "Features", "check_genes", "features", "resolve_transform"]

SOURCES = ("expression", "columns")
"""Where the per-gene values come from: the expression modality, or clinical columns."""

TRANSFORMS = ("log2cpm", "log2", "none")
"""How raw counts become per-gene values: ``log2(CPM + 1)``, ``log2(count + 1)``, as they are."""

_CPM = 1e6


@dataclass(frozen=True)
class Features:
    """A site's feature matrix and the clinical rows it belongs to."""

    values: np.ndarray
    """``(n, n_genes)`` float64, genes in the study's order."""
    rows: np.ndarray
    """Positions in ``data.frame`` of the ``n`` rows, in the same order."""


def check_genes(genes: Sequence[str] | str) -> tuple[str, ...]:
    """The study's public gene list, checked: a non-empty tuple of distinct names."""
    if isinstance(genes, str):
        genes = (genes,)
    out = tuple(genes)
    if not out or not all(isinstance(g, str) and g for g in out):
        raise ValidationError("genes must be a non-empty tuple of gene ids")
    if len(set(out)) != len(out):
        raise ValidationError("genes must not repeat a gene id")
    return out


def resolve_transform(source: str, transform: str | None) -> str:
    """The transform to apply: the default is ``log2cpm`` for counts, ``none`` for columns."""
    if source not in SOURCES:
        raise ValidationError(f"source must be one of {SOURCES}")
    if transform is None:
        return "log2cpm" if source == "expression" else "none"
    if transform not in TRANSFORMS:
        raise ValidationError(f"transform must be one of {TRANSFORMS}")
    return transform


def features(data: Dataset, genes: tuple[str, ...], *, source: str, transform: str) -> Features:
    """The site's ``(patients, genes)`` matrix for the study's genes.

    With ``source="expression"`` the counts of ``data.expression`` (patients x
    genes, indexed by patient id) are taken for the clinical rows whose patient
    id has expression (the others are left out), transformed per sample
    (``log2cpm`` uses the library size over *all* the modality's genes).  With
    ``source="columns"`` the values are the clinical columns named by ``genes``.

    Raises
    ------
    SchemaError
        The modality is absent, a gene is missing, a sample has no counts at all
        (``log2cpm``), or a column is not numeric or holds missing values.
    """
    frame = data.frame
    if source == "columns":
        x = numeric_columns(frame, genes)
        if transform == "log2":
            if np.any(x < 0):
                raise SchemaError("transform 'log2' needs non-negative gene columns")
            x = np.log2(x + 1.0)
        elif transform == "log2cpm":
            raise ValidationError("transform 'log2cpm' is for the expression modality only")
        return Features(values=x, rows=np.arange(len(frame)))
    expr = data.expression
    if expr is None:
        raise SchemaError(
            "the dataset has no 'expression' modality (use source='columns' for gene columns "
            "of the clinical table)"
        )
    id_col = data.id_column
    if id_col is None or id_col not in frame.columns:
        raise SchemaError(
            "the expression modality needs the patient id column in the clinical table"
        )
    gene_idx = expr.columns.get_indexer(pd.Index(genes))
    if (gene_idx < 0).any():
        missing = int((gene_idx < 0).sum())
        first = genes[int(np.flatnonzero(gene_idx < 0)[0])]
        raise SchemaError(
            f"modality 'expression' lacks {missing} of the study's genes (first: {first!r})"
        )
    sample_idx = expr.index.get_indexer(pd.Index(frame[id_col]))
    rows = np.flatnonzero(sample_idx >= 0)
    sample_idx = sample_idx[rows]
    counts = expr.to_numpy()  # one block: a view, no copy
    x = np.asarray(counts[np.ix_(sample_idx, gene_idx)], dtype=np.float64)
    if transform == "log2cpm":
        lib = counts.sum(axis=1, dtype=np.float64)[sample_idx]
        if np.any(lib <= 0):
            raise SchemaError(
                "modality 'expression' has a sample with no counts at all: log2cpm "
                "(counts per million) is undefined for it"
            )
        x *= (_CPM / lib)[:, None]
        np.log2(x + 1.0, out=x)
    elif transform == "log2":
        np.log2(x + 1.0, out=x)
    return Features(values=x, rows=rows)
