"""The results of the descriptive statistics: pooled counts, moments, histograms, tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.results import Result

__all__ = ["CountResult", "CrossTabResult", "HistogramResult", "MeanResult", "VarianceResult"]


@dataclass(frozen=True)
class CountResult(Result):
    """Pooled row count and missing-value counts.

    Attributes
    ----------
    n
        Number of rows pooled over all sites.
    columns
        The columns whose missing values were counted.
    missing
        Number of missing values in each column.
    """

    n: int
    columns: tuple[str, ...]
    missing: np.ndarray

    @property
    def non_missing(self) -> np.ndarray:
        """Number of non-missing values in each column."""
        return self.n - self.missing

    @property
    def summary(self) -> pd.DataFrame:
        """One row per column: missing and non-missing values."""
        return pd.DataFrame(
            {"missing": self.missing, "non_missing": self.non_missing},
            index=pd.Index(self.columns, name="column"),
        )


@dataclass(frozen=True)
class MeanResult(Result):
    """Pooled means of columns.

    Attributes
    ----------
    columns
        Column names, in order.
    mean
        Pooled mean of each column.
    n
        Number of rows pooled over all sites.
    """

    columns: tuple[str, ...]
    mean: np.ndarray
    n: int

    @property
    def summary(self) -> pd.DataFrame:
        """One row per column: its mean."""
        return pd.DataFrame({"mean": self.mean}, index=pd.Index(self.columns, name="column"))


@dataclass(frozen=True)
class VarianceResult(Result):
    """Pooled means and sample variances of columns.

    Attributes
    ----------
    columns
        Column names, in order.
    mean
        Pooled mean of each column.
    variance
        Pooled variance with ``ddof`` delta degrees of freedom (1 by default, as pandas).
    n
        Number of rows pooled over all sites.
    ddof
        Delta degrees of freedom used.
    """

    columns: tuple[str, ...]
    mean: np.ndarray
    variance: np.ndarray
    n: int
    ddof: int

    @property
    def std(self) -> np.ndarray:
        """Standard deviation, ``sqrt(variance)``."""
        return np.sqrt(self.variance)

    @property
    def summary(self) -> pd.DataFrame:
        """One row per column: n, mean, variance, std."""
        return pd.DataFrame(
            {"n": self.n, "mean": self.mean, "variance": self.variance, "std": self.std},
            index=pd.Index(self.columns, name="column"),
        )


@dataclass(frozen=True)
class HistogramResult(Result):
    """Pooled histogram on fixed, public bin edges.

    Attributes
    ----------
    column
        The column counted.
    edges
        Bin edges; bin ``i`` is ``[edges[i], edges[i+1])``, the last bin is closed
        (as :func:`numpy.histogram`).
    counts
        Pooled count of each bin, NaN where suppressed.
    underflow, overflow
        Pooled counts of values below the first and above the last edge (NaN if
        suppressed).
    suppressed
        Which bins were suppressed (pooled count non-zero and below ``threshold``).
    threshold
        The ``suppress_below`` parameter.
    n
        Number of values pooled (all bins, underflow and overflow).
    """

    column: str
    edges: np.ndarray
    counts: np.ndarray
    underflow: float
    overflow: float
    suppressed: np.ndarray
    threshold: int
    n: int

    @property
    def summary(self) -> pd.DataFrame:
        """One row per bin: its edges, count (NaN where suppressed) and whether suppressed."""
        return pd.DataFrame(
            {
                "lower": self.edges[:-1],
                "upper": self.edges[1:],
                "count": self.counts,
                "suppressed": np.asarray(self.suppressed, dtype=bool),
            },
            index=pd.RangeIndex(len(self.counts), name="bin"),
        )

    def statistics(self) -> dict[str, object]:
        """Column, values counted, underflow and overflow, suppression."""
        return {
            "column": self.column,
            "n": self.n,
            "bins": len(self.counts),
            "underflow": self.underflow,
            "overflow": self.overflow,
            "suppressed_bins": int(np.count_nonzero(self.suppressed)),
            "suppress_below": self.threshold,
        }


@dataclass(frozen=True)
class CrossTabResult(Result):
    """Pooled contingency table of two categorical columns, small cells suppressed.

    Attributes
    ----------
    row, column
        The two columns.
    row_categories, column_categories
        Their declared categories (table order).
    counts
        Pooled cell counts, shape ``(len(row_categories), len(column_categories))``,
        NaN where suppressed.
    suppressed
        Which cells were suppressed (pooled count non-zero and below ``threshold``).
    threshold
        The ``suppress_below`` parameter.
    """

    row: str
    column: str
    row_categories: tuple
    column_categories: tuple
    counts: np.ndarray
    suppressed: np.ndarray
    threshold: int

    @property
    def table(self) -> pd.DataFrame:
        """The counts as a DataFrame (rows: ``row`` categories, columns: ``column`` ones)."""
        return pd.DataFrame(
            self.counts,
            index=pd.Index(list(self.row_categories), name=self.row),
            columns=pd.Index(list(self.column_categories), name=self.column),
        )

    def statistics(self) -> dict[str, object]:
        """The two columns, the rows tabulated and the suppression."""
        return {
            "row": self.row,
            "column": self.column,
            "cells": int(self.counts.size),
            "suppressed_cells": int(np.count_nonzero(self.suppressed)),
            "suppress_below": self.threshold,
        }

    def tables(self, *, full: bool = False) -> dict[str, pd.DataFrame]:
        """``counts``: the contingency table."""
        return {"counts": self.table}


# The result codec records a result's type as "module:qualname" (and the SDK's verify=True
# compares encodings byte for byte): these keep consortia.stats.descriptive, their public
# home, which re-exports them.  Set after @dataclass, which resolves annotations there.
for _cls in (CountResult, MeanResult, VarianceResult, HistogramResult, CrossTabResult):
    _cls.__module__ = "consortia.stats.descriptive"
del _cls
