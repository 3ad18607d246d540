"""Descriptive statistics: counts, means, variances, histograms, cross-tabulations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from consortia.data.dataset import Dataset
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.stats._validate import numeric_columns

__all__ = ["Mean", "MeanResult"]


@dataclass(frozen=True)
class MeanResult:
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


@register
@dataclass(frozen=True, kw_only=True)
class Mean(Algorithm):
    """Pooled mean of numeric columns (rows with a missing value are refused).

    Parameters
    ----------
    columns
        Numeric columns to average.
    """

    name = "stats.mean"
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))

    def coordinate(self) -> Coordination:
        sums = yield Round("moments")
        n = int(round(sums["n"][0]))
        return MeanResult(columns=self.columns, mean=sums["total"] / n, n=n)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        x = numeric_columns(data.frame, self.columns)
        return Contribution({"n": [len(x)], "total": x.sum(axis=0)}, cohort=len(x))
