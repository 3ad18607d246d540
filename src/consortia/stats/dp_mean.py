"""Differentially private means of clipped columns (see :mod:`consortia.stats.dp`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import ValidationError
from consortia.protocol import Contribution, Coordination, Round, register
from consortia.results import Result
from consortia.stats._dp_base import Z95, DPAlgorithm, carried_sd, int_counts
from consortia.stats._validate import check_bool, check_columns_param, numeric_rows, used_rows

__all__ = ["MEAN_LEVELS", "DPMean", "DPMeanResult"]

MEAN_LEVELS = 2**12
""":class:`DPMean` rounds each clipped value to ``2 * MEAN_LEVELS + 1`` grid points."""


@dataclass(frozen=True)
class DPMeanResult(Result):
    """Differentially private means of clipped columns.

    Attributes
    ----------
    columns
        Column names, in order.
    mean
        Noisy mean of each column's clipped values, clamped into ``[lower, upper]``;
        NaN when the noisy count is below 1.
    ci_low, ci_high
        Approximate 95% interval of each mean: ``mean -/+ (1.96 * noise_sd +
        resolution / 2)``, clamped into ``[lower, upper]``.
    noise_sd
        Approximate standard deviation of each mean's noise (delta method on the
        ratio of the noisy total to the noisy count).
    n, n_raw
        Noisy number of rows used (clamped at 0, and raw).
    n_noise_sd
        Standard deviation of the noise of ``n_raw``.
    centred_total
        Noisy sum over the rows of ``clip(x) - centre`` (original units, unbiased up
        to the rounding), with ``centre = (lower + upper) / 2``.
    total_noise_sd
        Standard deviation of the noise of each ``centred_total``.
    lower, upper
        The public clipping bounds.
    resolution
        The grid step of the fixed-point values: ``(upper - lower) / (2 * MEAN_LEVELS)``.
        Rounding moves a mean by at most half of it.
    epsilon, delta
        The privacy cost of the release.
    """

    columns: tuple[str, ...]
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    noise_sd: np.ndarray
    n: int
    n_raw: int
    n_noise_sd: float
    centred_total: np.ndarray
    total_noise_sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    resolution: np.ndarray
    epsilon: float
    delta: float

    @property
    def summary(self) -> pd.DataFrame:
        """One row per column: mean, noise_sd, ci_low, ci_high, lower, upper."""
        return pd.DataFrame(
            {
                "mean": self.mean,
                "noise_sd": self.noise_sd,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "lower": self.lower,
                "upper": self.upper,
            },
            index=pd.Index(self.columns, name="column"),
        )


def _bounds(value: Any, param: str, k: int) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * k
    if isinstance(value, str):
        raise ValidationError(f"{param} must be a number or one number per column")
    try:
        out = tuple(value)
    except TypeError:
        raise ValidationError(f"{param} must be a number or one number per column") from None
    if len(out) != k:
        raise ValidationError(f"{param} must give one bound per column ({k}), not {len(out)}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValidationError(f"{param} must hold finite numbers")
    return tuple(float(v) for v in out)


@register
@dataclass(frozen=True, kw_only=True)
class DPMean(DPAlgorithm):
    """Differentially private means of numeric columns clipped to public bounds.

    At each site every value is clipped into ``[lower, upper]`` (public, per column),
    centred at ``centre = (lower + upper) / 2`` and rounded to the fixed-point grid
    of step ``resolution = (upper - lower) / (2 * MEAN_LEVELS)``: the integer
    ``q = rint((clip(x) - centre) / resolution)`` lies in ``[-L, L]`` with
    ``L = MEAN_LEVELS = 4096``.  The study releases the noisy row count ``n`` and the
    noisy integer totals ``sum(q)`` per column; the mean is
    ``centre + resolution * total / n`` (the mean of the clipped values, to within
    ``resolution / 2`` plus the noise).

    Sensitivity: adding or removing one patient moves ``n`` by 1 and each total by
    at most ``L`` (reached at a bound).  ``n`` gets noise ``sigma`` and each total
    ``sigma * L``, so the normalised release ``(n, total / L)`` has L2 sensitivity
    ``sqrt(1 + len(columns))``.

    A site's totals must stay within the fixed-point range: about
    ``2**39 / (n_sites * L)`` rows per site (1.3e7 rows with 10 sites).

    Parameters
    ----------
    columns
        Numeric columns.
    lower, upper
        Public clipping bounds: one number for every column, or one per column;
        ``lower < upper``.  Values outside them are clipped (not refused).
    dropna
        If True, rows with a missing value in any of ``columns`` are left out
        (``Contribution.rows`` names the rows used); otherwise a missing value is a
        :class:`~consortia.errors.SchemaError`.
    epsilon, delta
        The privacy cost of the study.
    """

    name = "stats.dp_mean"
    columns: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    dropna: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        cols = check_columns_param(self.columns, param="columns")
        object.__setattr__(self, "columns", cols)
        lower = _bounds(self.lower, "lower", len(cols))
        upper = _bounds(self.upper, "upper", len(cols))
        if not all(lo < hi for lo, hi in zip(lower, upper, strict=True)):
            raise ValidationError("lower must be below upper for every column")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        check_bool(self.dropna, "dropna")

    @property
    def centre(self) -> np.ndarray:
        """Midpoint of each column's bounds."""
        return (np.array(self.lower) + np.array(self.upper)) / 2

    @property
    def resolution(self) -> np.ndarray:
        """Step of each column's fixed-point grid."""
        return (np.array(self.upper) - np.array(self.lower)) / (2 * MEAN_LEVELS)

    def cell_sensitivity(self) -> dict[str, float]:
        return {"n": 1.0, "total": float(MEAN_LEVELS)}

    @property
    def sensitivity(self) -> float:
        return math.sqrt(1 + len(self.columns))

    def scaled(self, x: np.ndarray) -> np.ndarray:
        """The integers ``q`` a site sums: clipped, centred values on the grid."""
        lo, hi = np.array(self.lower), np.array(self.upper)
        q = np.rint((np.clip(x, lo, hi) - self.centre) / self.resolution)
        return np.clip(q, -MEAN_LEVELS, MEAN_LEVELS)

    def coordinate(self) -> Coordination:
        sums = yield Round("sums")
        n_raw = int(int_counts(sums["n"])[0])
        n_sd = carried_sd(self.sigma, sums["sites"][0])
        total_sd = carried_sd(self.sigma * MEAN_LEVELS, sums["sites"][0])
        step = self.resolution
        total = int_counts(sums["total"]) * step  # original units
        lo, hi = np.array(self.lower), np.array(self.upper)
        if n_raw >= 1:
            offset = total / n_raw
            mean = np.clip(self.centre + offset, lo, hi)
            sd = np.sqrt((total_sd * step) ** 2 + offset**2 * n_sd**2) / n_raw
            margin = Z95 * sd + step / 2
            ci = np.clip(mean - margin, lo, hi), np.clip(mean + margin, lo, hi)
        else:
            mean, sd = np.full(len(self.columns), np.nan), np.full(len(self.columns), np.nan)
            ci = (mean.copy(), mean.copy())
        return DPMeanResult(
            columns=self.columns,
            mean=mean,
            ci_low=ci[0],
            ci_high=ci[1],
            noise_sd=sd,
            n=max(n_raw, 0),
            n_raw=n_raw,
            n_noise_sd=n_sd,
            centred_total=total,
            total_noise_sd=total_sd * step,
            lower=lo,
            upper=hi,
            resolution=step,
            epsilon=self.epsilon,
            delta=self.delta,
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        self._check_step(step, "sums")
        x, kept = numeric_rows(data.frame, self.columns, dropna=self.dropna, return_mask=True)
        arrays = {"n": [float(len(x))], "total": self.scaled(x).sum(axis=0)}
        return self._contribution(arrays, cohort=len(x), rows=used_rows(kept))
