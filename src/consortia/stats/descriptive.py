"""Descriptive statistics: counts, means, variances, histograms, cross-tabulations.

Every algorithm here releases sums only.  Float sums travel as two-word sums
(:mod:`consortia.stats._glm`), so means and variances match a pooled pandas
computation to about 1e-12 relative error.  Counts of patients (cells of a
histogram or a table, missing-value counts) are declared as count arrays, so each
node's ``min_cell_count`` rule refuses a site with a small non-zero cell before
anything leaves it.  Histograms and tables additionally suppress, in the pooled
result, the cells whose pooled count is non-zero but below ``suppress_below``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, SchemaError, ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.stats._descriptive_results import (
    CountResult,
    CrossTabResult,
    HistogramResult,
    MeanResult,
    VarianceResult,
)
from consortia.stats._glm import join, split
from consortia.stats._validate import (
    category_codes,
    check_bool,
    check_categories,
    check_columns_param,
    check_edges,
    numeric_rows,
    used_rows,
)

__all__ = [
    "Count",
    "CountResult",
    "CrossTab",
    "CrossTabResult",
    "Histogram",
    "HistogramResult",
    "Mean",
    "MeanResult",
    "Variance",
    "VarianceResult",
]


def _check_threshold(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("suppress_below must be a non-negative integer")


def _suppress(counts: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled counts as float with NaN where ``0 < count < threshold``, and the mask."""
    counts = np.rint(np.asarray(counts, dtype=np.float64))
    mask = (counts > 0) & (counts < threshold)
    return np.where(mask, np.nan, counts), mask


def _step_error(algo: Algorithm, step: str) -> AlgorithmError:
    return AlgorithmError(f"unknown step {step!r} for {algo.name}")


# --------------------------------------------------------------------------- counts


@register
@dataclass(frozen=True, kw_only=True)
class Count(Algorithm):
    """Count rows and, per column, missing values (both declared as counts).

    Parameters
    ----------
    columns
        Columns whose missing values (NaN, None, NaT) are counted; may be empty.
    """

    name = "stats.count"
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        cols = check_columns_param(self.columns, param="columns", allow_empty=True)
        object.__setattr__(self, "columns", cols)

    def coordinate(self) -> Coordination:
        sums = yield Round("count")
        missing = np.rint(sums["missing"]).astype(int) if self.columns else np.zeros(0, int)
        return CountResult(n=int(round(sums["n"][0])), columns=self.columns, missing=missing)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step != "count":
            raise _step_error(self, step)
        frame = data.frame
        absent = [c for c in self.columns if c not in frame.columns]
        if absent:
            raise SchemaError(f"column(s) {absent} not found in the site's data")
        arrays = {"n": [len(frame)]}
        if self.columns:
            arrays["missing"] = frame[list(self.columns)].isna().sum().to_numpy(np.float64)
        return Contribution(arrays, cohort=len(frame), count_arrays=frozenset(arrays))


# --------------------------------------------------------------------------- moments


@register
@dataclass(frozen=True, kw_only=True)
class Mean(Algorithm):
    """Pooled mean of numeric columns (rows with a missing value are refused).

    Parameters
    ----------
    columns
        Numeric columns to average.
    dropna
        If True, rows with a missing value in any of ``columns`` are dropped at
        each site; otherwise a missing value is a :class:`~consortia.errors.SchemaError`.
    """

    name = "stats.mean"
    columns: tuple[str, ...]
    dropna: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", check_columns_param(self.columns, param="columns"))
        check_bool(self.dropna, "dropna")

    def coordinate(self) -> Coordination:
        sums = yield Round("moments")
        n = int(round(sums["n"][0]))
        if n == 0:
            raise AlgorithmError("no rows to average over all sites")
        return MeanResult(columns=self.columns, mean=join(sums, "total") / n, n=n)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step != "moments":
            raise _step_error(self, step)
        x, kept = numeric_rows(data.frame, self.columns, dropna=self.dropna, return_mask=True)
        return Contribution(
            {"n": [len(x)], **split("total", x.sum(axis=0))},
            cohort=len(x),
            rows=used_rows(kept),
        )


@register
@dataclass(frozen=True, kw_only=True)
class Variance(Algorithm):
    """Pooled mean and variance of numeric columns, in two rounds.

    Round ``moments`` gives the pooled means; round ``centred`` sums the squared
    deviations from them, which avoids the cancellation of ``sum(x**2) - n*mean**2``.

    Parameters
    ----------
    columns
        Numeric columns.
    ddof
        Delta degrees of freedom: the divisor is ``n - ddof`` (1: sample variance,
        as ``pandas.DataFrame.var``; 0: population variance).
    dropna
        If True, rows with a missing value in any of ``columns`` are dropped at
        each site; otherwise a missing value is a :class:`~consortia.errors.SchemaError`.
    """

    name = "stats.variance"
    columns: tuple[str, ...]
    ddof: int = 1
    dropna: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", check_columns_param(self.columns, param="columns"))
        if isinstance(self.ddof, bool) or not isinstance(self.ddof, int) or self.ddof < 0:
            raise ValidationError("ddof must be a non-negative integer")
        check_bool(self.dropna, "dropna")

    def coordinate(self) -> Coordination:
        sums = yield Round("moments")
        n = int(round(sums["n"][0]))
        if n - self.ddof <= 0:
            raise AlgorithmError(
                f"a variance with ddof={self.ddof} needs more than {self.ddof} rows"
            )
        centre = join(sums, "total") / n
        sums = yield Round("centred", {"centre": centre})
        dev, dev_sq = join(sums, "dev"), join(sums, "dev_sq")
        mean = centre + dev / n
        variance = np.maximum(dev_sq - dev**2 / n, 0.0) / (n - self.ddof)
        return VarianceResult(self.columns, mean, variance, n, self.ddof)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        x, kept = numeric_rows(data.frame, self.columns, dropna=self.dropna, return_mask=True)
        if step == "moments":
            arrays = {"n": [len(x)], **split("total", x.sum(axis=0))}
        elif step == "centred":
            d = x - public["centre"]
            arrays = {**split("dev", d.sum(axis=0)), **split("dev_sq", (d * d).sum(axis=0))}
        else:
            raise _step_error(self, step)
        return Contribution(arrays, cohort=len(x), rows=used_rows(kept))


# --------------------------------------------------------------------------- histogram


@register
@dataclass(frozen=True, kw_only=True)
class Histogram(Algorithm):
    """Histogram of a numeric column on public bin edges, with small-cell suppression.

    Each site's bin counts (and its underflow/overflow counts) are declared as
    count arrays, so its node refuses to release them if any is non-zero and
    below its ``min_cell_count``.

    Parameters
    ----------
    column
        Numeric column.
    edges
        Strictly increasing, finite bin edges (at least two).
    suppress_below
        Pooled bins with a count in ``[1, suppress_below)`` are reported as NaN
        (0 disables the suppression).
    dropna
        If True, missing values are left out; otherwise they are a
        :class:`~consortia.errors.SchemaError`.
    """

    name = "stats.histogram"
    column: str
    edges: tuple[float, ...]
    suppress_below: int = 5
    dropna: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise ValidationError("column must be a column name (a non-empty string)")
        object.__setattr__(self, "edges", check_edges(self.edges))
        _check_threshold(self.suppress_below)
        check_bool(self.dropna, "dropna")

    def coordinate(self) -> Coordination:
        sums = yield Round("histogram")
        raw = np.concatenate([sums["counts"], sums["underflow"], sums["overflow"]])
        shown, mask = _suppress(raw, self.suppress_below)
        k = len(self.edges) - 1
        return HistogramResult(
            column=self.column,
            edges=np.array(self.edges),
            counts=shown[:k],
            underflow=float(shown[k]),
            overflow=float(shown[k + 1]),
            suppressed=mask[:k],
            threshold=self.suppress_below,
            n=int(round(raw.sum())),
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step != "histogram":
            raise _step_error(self, step)
        x, kept = numeric_rows(data.frame, (self.column,), dropna=self.dropna, return_mask=True)
        x = x[:, 0]
        edges = np.asarray(self.edges)
        counts, _ = np.histogram(x, bins=edges)
        arrays = {
            "counts": counts.astype(np.float64),
            "underflow": [float(np.sum(x < edges[0]))],
            "overflow": [float(np.sum(x > edges[-1]))],
        }
        return Contribution(
            arrays,
            cohort=len(x),
            count_arrays=frozenset(arrays),
            rows=used_rows(kept),
            bins={self.column: edges},  # shifted edges on the same cohort difference
        )


# --------------------------------------------------------------------------- cross-tab


@register
@dataclass(frozen=True, kw_only=True)
class CrossTab(Algorithm):
    """Cross-tabulation of two categorical columns with declared (public) categories.

    Each site's table is declared as a count array, so its node refuses to
    release it if a cell is non-zero and below its ``min_cell_count``.  In the
    pooled result, cells with a count in ``[1, suppress_below)`` are reported as
    NaN (primary suppression only: no margins are returned, and a user who also
    knows the pooled total may recover a single suppressed cell).

    Parameters
    ----------
    row, column
        The two (different) columns.
    row_categories, column_categories
        Every value each column may take (strings, numbers or booleans); a value
        outside them is a :class:`~consortia.errors.SchemaError` at the site.
    suppress_below
        Pooled suppression threshold (0 disables it).
    dropna
        If True, rows with a missing value in either column are left out;
        otherwise a missing value is a :class:`~consortia.errors.SchemaError`.
    """

    name = "stats.crosstab"
    row: str
    column: str
    row_categories: tuple
    column_categories: tuple
    suppress_below: int = 5
    dropna: bool = False

    def __post_init__(self) -> None:
        for param in ("row", "column"):
            if not isinstance(getattr(self, param), str) or not getattr(self, param):
                raise ValidationError(f"{param} must be a column name (a non-empty string)")
        if self.row == self.column:
            raise ValidationError("row and column must be two different columns")
        for param in ("row_categories", "column_categories"):
            object.__setattr__(self, param, check_categories(getattr(self, param), param))
        _check_threshold(self.suppress_below)
        check_bool(self.dropna, "dropna")

    def coordinate(self) -> Coordination:
        sums = yield Round("table")
        shown, mask = _suppress(sums["counts"], self.suppress_below)
        return CrossTabResult(
            row=self.row,
            column=self.column,
            row_categories=self.row_categories,
            column_categories=self.column_categories,
            counts=shown,
            suppressed=mask,
            threshold=self.suppress_below,
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step != "table":
            raise _step_error(self, step)
        frame = data.frame
        absent = [c for c in (self.row, self.column) if c not in frame.columns]
        if absent:
            raise SchemaError(f"column(s) {absent} not found in the site's data")
        r = category_codes(frame, self.row, self.row_categories, dropna=self.dropna)
        c = category_codes(frame, self.column, self.column_categories, dropna=self.dropna)
        keep = (r >= 0) & (c >= 0)
        nr, nc = len(self.row_categories), len(self.column_categories)
        flat = np.bincount(r[keep] * nc + c[keep], minlength=nr * nc)
        counts = flat.reshape(nr, nc).astype(np.float64)
        return Contribution(
            {"counts": counts},
            cohort=int(keep.sum()),
            count_arrays=frozenset({"counts"}),
            rows=used_rows(keep),
        )
