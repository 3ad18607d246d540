"""Differentially private descriptive statistics (distributed discrete Gaussian noise).

Each algorithm here makes **one** release: a single round whose integer arrays are
declared in :attr:`Contribution.noise <consortia.protocol.Contribution.noise>`.
The runtime, not the algorithm, makes every site add its share of discrete
Gaussian noise before the secure sum (:mod:`consortia.privacy.dp`), so only the
noisy sum is ever seen.  The whole study costs ``(epsilon, delta)`` at each site's
dataset (:meth:`~consortia.protocol.Algorithm.privacy_cost`).

:class:`DPCount`, :class:`DPHistogram` and :class:`DPCrossTab` live here;
:class:`DPMean` lives in :mod:`consortia.stats.dp_mean` and is re-exported.  Each
exposes ``sensitivity``, ``cell_sensitivity()``, ``sigma`` and ``noise()``, so that
a node can check the noise a contribution declares against its ``privacy_cost()``.

Calibration
-----------
Neighbouring datasets differ by **one patient added or removed** at one site.  An
algorithm releases arrays ``a`` whose cells move by at most ``c_a`` each when one
patient is added or removed ("cell sensitivity"), and it gives array ``a`` noise of
standard deviation ``sigma * c_a``.  The release is then a Gaussian mechanism of
noise multiplier ``sigma / S`` where ``S`` is the exact L2 sensitivity of the
normalised release ``(a / c_a for every array a)``, stated in each class's
docstring, and ``sigma = sigma_for(epsilon, delta, sensitivity=S)``.

Noise actually carried
----------------------
A site's share has variance ``max(sigma**2 / n, 1)`` with ``n`` participating
sites, so the released sum carries noise of standard deviation
``max(sigma, sqrt(n))`` for a cell of sensitivity 1 (more noise, never less privacy).
Each site contributes a ``sites`` array (``[1]``) so that the result states the
noise it really carries (``noise_sd``).

Post-processing
---------------
Results clamp noisy counts at 0 (``*_raw`` attributes keep the unbiased, unclamped
values) and noisy means into ``[lower, upper]``; post-processing costs no privacy.
Counts are never suppressed: the noise, not the small-cell rule, protects them, so
they are not declared as count arrays (the node's cohort rule still applies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import SchemaError, ValidationError
from consortia.protocol import Contribution, Coordination, Round, register
from consortia.results import Result
from consortia.stats._dp_base import Z95, DPAlgorithm, carried_sd, int_counts
from consortia.stats._validate import (
    category_codes,
    check_bool,
    check_categories,
    check_columns_param,
    check_edges,
    numeric_rows,
    used_rows,
)
from consortia.stats.dp_mean import MEAN_LEVELS, DPMean, DPMeanResult

__all__ = [
    "MEAN_LEVELS",
    "DPCount",
    "DPCountResult",
    "DPCrossTab",
    "DPCrossTabResult",
    "DPHistogram",
    "DPHistogramResult",
    "DPMean",
    "DPMeanResult",
]


# --------------------------------------------------------------------------- count


@dataclass(frozen=True)
class DPCountResult(Result):
    """Differentially private row count and non-missing counts.

    Attributes
    ----------
    n
        Noisy number of rows pooled over all sites, clamped at 0.
    columns
        The columns whose non-missing values were counted.
    non_missing
        Noisy number of non-missing values per column, clamped at 0.
    n_raw, non_missing_raw
        The same before clamping (unbiased: exact value plus zero-mean noise).
    noise_sd
        Standard deviation of the noise of each released count.
    epsilon, delta
        The privacy cost of the release.
    """

    n: int
    columns: tuple[str, ...]
    non_missing: np.ndarray
    n_raw: int
    non_missing_raw: np.ndarray
    noise_sd: float
    epsilon: float
    delta: float

    @property
    def margin(self) -> float:
        """Half-width of a 95% interval around each raw count (``1.96 * noise_sd``)."""
        return Z95 * self.noise_sd

    @property
    def summary(self) -> pd.DataFrame:
        """One row per released count: value, raw value and 95% interval."""
        raw = np.concatenate([[self.n_raw], self.non_missing_raw]).astype(float)
        return pd.DataFrame(
            {
                "count": np.concatenate([[self.n], self.non_missing]),
                "raw": raw,
                "ci_low": np.maximum(raw - self.margin, 0.0),
                "ci_high": raw + self.margin,
            },
            index=pd.Index(["rows", *self.columns], name="released"),
        )


@register
@dataclass(frozen=True, kw_only=True)
class DPCount(DPAlgorithm):
    """Differentially private count of rows and of non-missing values per column.

    Releases ``n`` (rows) and, for each of ``columns``, its number of non-missing
    values, each with noise of standard deviation ``sigma``.

    Sensitivity: adding or removing one patient moves ``n`` by 1 and each
    non-missing count by 0 or 1, so the release has L2 sensitivity
    ``sqrt(1 + len(columns))`` (reached by a patient with no missing value).

    Parameters
    ----------
    columns
        Columns whose non-missing values are counted; may be empty.
    epsilon, delta
        The privacy cost of the study (``epsilon > 0``, ``0 < delta < 1``).
    """

    name = "stats.dp_count"
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        cols = check_columns_param(self.columns, param="columns", allow_empty=True)
        object.__setattr__(self, "columns", cols)

    def cell_sensitivity(self) -> dict[str, float]:
        return {"n": 1.0, **({"non_missing": 1.0} if self.columns else {})}

    @property
    def sensitivity(self) -> float:
        return math.sqrt(1 + len(self.columns))

    def coordinate(self) -> Coordination:
        sums = yield Round("count")
        n_raw = int(int_counts(sums["n"])[0])
        nm_raw = int_counts(sums["non_missing"]) if self.columns else np.zeros(0, np.int64)
        return DPCountResult(
            n=max(n_raw, 0),
            columns=self.columns,
            non_missing=np.maximum(nm_raw, 0),
            n_raw=n_raw,
            non_missing_raw=nm_raw,
            noise_sd=carried_sd(self.sigma, sums["sites"][0]),
            epsilon=self.epsilon,
            delta=self.delta,
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        self._check_step(step, "count")
        frame = data.frame
        absent = [c for c in self.columns if c not in frame.columns]
        if absent:
            raise SchemaError(f"column(s) {absent} not found in the site's data")
        arrays: dict[str, Any] = {"n": [float(len(frame))]}
        if self.columns:
            arrays["non_missing"] = frame[list(self.columns)].notna().sum().to_numpy(np.float64)
        return self._contribution(arrays, cohort=len(frame), rows=None)


# --------------------------------------------------------------------------- histogram


@dataclass(frozen=True)
class DPHistogramResult(Result):
    """Differentially private histogram on public bin edges.

    Attributes
    ----------
    column
        The column counted.
    edges
        Bin edges; bin ``i`` is ``[edges[i], edges[i+1])``, the last bin is closed
        (as :func:`numpy.histogram`).
    counts
        Noisy count of each bin, clamped at 0.
    underflow, overflow
        Noisy counts of the values below the first and above the last edge, clamped at 0.
    counts_raw, underflow_raw, overflow_raw
        The same before clamping (unbiased).
    n
        Noisy number of values counted (sum of the raw cells, clamped at 0); its noise
        has standard deviation ``sqrt(len(edges) + 1) * noise_sd``.
    noise_sd
        Standard deviation of the noise of each released cell.
    epsilon, delta
        The privacy cost of the release.
    """

    column: str
    edges: np.ndarray
    counts: np.ndarray
    underflow: int
    overflow: int
    counts_raw: np.ndarray
    underflow_raw: int
    overflow_raw: int
    n: int
    noise_sd: float
    epsilon: float
    delta: float

    @property
    def margin(self) -> float:
        """Half-width of a 95% interval around each raw cell (``1.96 * noise_sd``)."""
        return Z95 * self.noise_sd

    @property
    def ci_low(self) -> np.ndarray:
        """Lower end of each bin's 95% interval (at least 0)."""
        return np.maximum(self.counts_raw - self.margin, 0.0)

    @property
    def ci_high(self) -> np.ndarray:
        """Upper end of each bin's 95% interval."""
        return self.counts_raw + self.margin

    @property
    def summary(self) -> pd.DataFrame:
        """One row per bin: edges, count (clamped), raw count and 95% interval."""
        return pd.DataFrame(
            {
                "lower": self.edges[:-1],
                "upper": self.edges[1:],
                "count": self.counts,
                "raw": self.counts_raw,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
            },
            index=pd.RangeIndex(len(self.counts), name="bin"),
        )


@register
@dataclass(frozen=True, kw_only=True)
class DPHistogram(DPAlgorithm):
    """Differentially private histogram of a numeric column on public bin edges.

    Releases the count of every bin and of the values below and above the edges.

    Sensitivity: every counted patient falls in exactly one of these
    ``len(edges) + 1`` cells, so adding or removing one patient moves one cell by 1:
    L2 sensitivity 1.

    Parameters
    ----------
    column
        Numeric column.
    edges
        Public, strictly increasing, finite bin edges (at least two).
    dropna
        If True, missing values are left out (``Contribution.rows`` names the rows
        used); otherwise they are a :class:`~consortia.errors.SchemaError`.
    epsilon, delta
        The privacy cost of the study.
    """

    name = "stats.dp_histogram"
    column: str
    edges: tuple[float, ...]
    dropna: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.column, str) or not self.column:
            raise ValidationError("column must be a column name (a non-empty string)")
        object.__setattr__(self, "edges", check_edges(self.edges))
        check_bool(self.dropna, "dropna")

    def cell_sensitivity(self) -> dict[str, float]:
        return {"counts": 1.0, "underflow": 1.0, "overflow": 1.0}

    @property
    def sensitivity(self) -> float:
        return 1.0

    def coordinate(self) -> Coordination:
        sums = yield Round("histogram")
        counts = int_counts(sums["counts"])
        under, over = int(int_counts(sums["underflow"])[0]), int(int_counts(sums["overflow"])[0])
        return DPHistogramResult(
            column=self.column,
            edges=np.array(self.edges),
            counts=np.maximum(counts, 0),
            underflow=max(under, 0),
            overflow=max(over, 0),
            counts_raw=counts,
            underflow_raw=under,
            overflow_raw=over,
            n=max(int(counts.sum()) + under + over, 0),
            noise_sd=carried_sd(self.sigma, sums["sites"][0]),
            epsilon=self.epsilon,
            delta=self.delta,
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        self._check_step(step, "histogram")
        x, kept = numeric_rows(data.frame, (self.column,), dropna=self.dropna, return_mask=True)
        x = x[:, 0]
        edges = np.asarray(self.edges)
        counts, _ = np.histogram(x, bins=edges)
        arrays = {
            "counts": counts.astype(np.float64),
            "underflow": [float(np.sum(x < edges[0]))],
            "overflow": [float(np.sum(x > edges[-1]))],
        }
        return self._contribution(arrays, cohort=len(x), rows=used_rows(kept))


# --------------------------------------------------------------------------- cross-tab


@dataclass(frozen=True)
class DPCrossTabResult(Result):
    """Differentially private contingency table of two categorical columns.

    Attributes
    ----------
    row, column
        The two columns.
    row_categories, column_categories
        Their declared categories (table order).
    counts
        Noisy cell counts, clamped at 0, shape
        ``(len(row_categories), len(column_categories))``.
    counts_raw
        The same before clamping (unbiased).
    n
        Noisy number of rows tabulated (sum of the raw cells, clamped at 0); its
        noise has standard deviation ``sqrt(counts.size) * noise_sd``.
    noise_sd
        Standard deviation of the noise of each cell.
    epsilon, delta
        The privacy cost of the release.
    """

    row: str
    column: str
    row_categories: tuple
    column_categories: tuple
    counts: np.ndarray
    counts_raw: np.ndarray
    n: int
    noise_sd: float
    epsilon: float
    delta: float

    @property
    def margin(self) -> float:
        """Half-width of a 95% interval around each raw cell (``1.96 * noise_sd``)."""
        return Z95 * self.noise_sd

    @property
    def table(self) -> pd.DataFrame:
        """The clamped counts as a DataFrame (rows: ``row`` categories)."""
        return pd.DataFrame(
            self.counts,
            index=pd.Index(list(self.row_categories), name=self.row),
            columns=pd.Index(list(self.column_categories), name=self.column),
        )

    def tables(self, *, full: bool = False) -> dict[str, pd.DataFrame]:
        """``counts``: the clamped noisy table; with ``full``, ``counts_raw`` too."""
        out = {"counts": self.table}
        if full:
            out["counts_raw"] = pd.DataFrame(
                self.counts_raw, index=self.table.index, columns=self.table.columns
            )
        return out


@register
@dataclass(frozen=True, kw_only=True)
class DPCrossTab(DPAlgorithm):
    """Differentially private cross-tabulation on declared (public) categories.

    Sensitivity: a patient falls in exactly one cell, so adding or removing one
    moves one cell by 1: L2 sensitivity 1.  Empty categories are released like any
    other cell (noise around 0).

    Parameters
    ----------
    row, column
        The two (different) categorical columns.
    row_categories, column_categories
        Every value each column may take; a value outside them is a
        :class:`~consortia.errors.SchemaError` at the site (never echoed).
    dropna
        If True, rows with a missing value in either column are left out
        (``Contribution.rows`` names the rows used); otherwise a missing value is a
        :class:`~consortia.errors.SchemaError`.
    epsilon, delta
        The privacy cost of the study.
    """

    name = "stats.dp_crosstab"
    row: str
    column: str
    row_categories: tuple
    column_categories: tuple
    dropna: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for param in ("row", "column"):
            if not isinstance(getattr(self, param), str) or not getattr(self, param):
                raise ValidationError(f"{param} must be a column name (a non-empty string)")
        if self.row == self.column:
            raise ValidationError("row and column must be two different columns")
        for param in ("row_categories", "column_categories"):
            object.__setattr__(self, param, check_categories(getattr(self, param), param))
        check_bool(self.dropna, "dropna")

    def cell_sensitivity(self) -> dict[str, float]:
        return {"counts": 1.0}

    @property
    def sensitivity(self) -> float:
        return 1.0

    def coordinate(self) -> Coordination:
        sums = yield Round("table")
        raw = int_counts(sums["counts"])
        return DPCrossTabResult(
            row=self.row,
            column=self.column,
            row_categories=self.row_categories,
            column_categories=self.column_categories,
            counts=np.maximum(raw, 0),
            counts_raw=raw,
            n=max(int(raw.sum()), 0),
            noise_sd=carried_sd(self.sigma, sums["sites"][0]),
            epsilon=self.epsilon,
            delta=self.delta,
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        self._check_step(step, "table")
        frame = data.frame
        r = category_codes(frame, self.row, self.row_categories, dropna=self.dropna)
        c = category_codes(frame, self.column, self.column_categories, dropna=self.dropna)
        keep = (r >= 0) & (c >= 0)
        nr, nc = len(self.row_categories), len(self.column_categories)
        flat = np.bincount(r[keep] * nc + c[keep], minlength=nr * nc)
        counts = flat.reshape(nr, nc).astype(np.float64)
        return self._contribution({"counts": counts}, cohort=int(keep.sum()), rows=used_rows(keep))
