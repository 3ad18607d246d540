"""Input validation shared by the statistics algorithms (one place, clear messages)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from consortia.errors import SchemaError, ValidationError

__all__ = [
    "category_codes",
    "check_bool",
    "check_categories",
    "check_columns_param",
    "check_edges",
    "numeric_columns",
    "numeric_rows",
    "used_rows",
]


def numeric_columns(
    frame: pd.DataFrame, columns: Sequence[str], *, allow_nan: bool = False
) -> np.ndarray:
    """Return ``frame[columns]`` as a float matrix, or raise naming the column and rule.

    Raises
    ------
    SchemaError
        If a column is missing, not numeric, or holds NaN when ``allow_nan`` is False.
    """
    columns = list(columns)
    if not frame.columns.is_unique:
        dups = set(frame.columns[frame.columns.duplicated()])
        twice = [c for c in columns if c in dups]
        if twice:
            raise SchemaError(f"column(s) {twice} appear more than once in the site's data")
        frame = frame.loc[:, ~frame.columns.isin(list(dups))]
    index = frame.columns.get_indexer(columns)
    if (index < 0).any():
        missing = [c for c, i in zip(columns, index, strict=True) if i < 0]
        raise SchemaError(f"column(s) {missing} not found in the site's data")
    sub = frame.take(index, axis=1)
    dtypes = sub.dtypes.to_numpy()
    for dt in set(dtypes):  # usually one or two distinct dtypes
        if not (isinstance(dt, np.dtype) and dt.kind in "biuf") and not (
            pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)
        ):
            c = columns[next(i for i, d in enumerate(dtypes) if d == dt)]
            raise SchemaError(f"column {c!r} must be numeric (it is {dt})")
    try:
        x = sub.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise SchemaError(f"columns {columns} cannot be read as numbers") from None
    if not allow_nan:
        bad = ~np.isfinite(x)
        if bad.any():
            col = columns[int(np.where(bad.any(axis=0))[0][0])]
            raise SchemaError(
                f"column {col!r} contains missing or infinite values "
                "(drop or impute them, or pass dropna=True where the algorithm offers it)"
            )
    return x


def numeric_rows(
    frame: pd.DataFrame, columns: Sequence[str], *, dropna: bool, return_mask: bool = False
) -> Any:
    """Numeric matrix of ``columns``; with ``dropna`` rows holding a NaN are dropped.

    Infinite values are always refused.  With ``return_mask`` the result is the pair
    ``(x, kept)`` where ``kept`` is the boolean mask of the frame's rows that ``x``
    holds (all True without ``dropna``); :func:`used_rows` turns it into
    :attr:`Contribution.rows <consortia.protocol.Contribution.rows>`.

    Raises
    ------
    SchemaError
        If a column is missing or not numeric, holds an infinite value, or holds a
        missing value while ``dropna`` is False.
    """
    x = numeric_columns(frame, columns, allow_nan=dropna)
    kept = np.ones(len(x), dtype=bool)
    if dropna:
        inf = np.isinf(x)
        if inf.any():
            col = columns[int(np.where(inf.any(axis=0))[0][0])]
            raise SchemaError(f"column {col!r} contains infinite values")
        kept = ~np.isnan(x).any(axis=1)
        if not kept.all():
            x = x[kept]
    return (x, kept) if return_mask else x


def used_rows(kept: np.ndarray) -> np.ndarray | None:
    """``Contribution.rows`` for a mask of used rows: their positions, or None when all are used."""
    kept = np.asarray(kept, dtype=bool)
    return None if kept.all() else np.flatnonzero(kept)


def check_bool(value: Any, param: str) -> None:
    """Raise :class:`ValidationError` naming ``param`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValidationError(f"{param} must be True or False")


def check_categories(value: Any, param: str) -> tuple:
    """Normalise a declared (public) list of categories, or raise naming ``param``."""
    if isinstance(value, str):
        raise ValidationError(f"{param} must be a sequence of categories, not one string")
    try:
        cats = tuple(value)
    except TypeError:
        raise ValidationError(f"{param} must be a sequence of categories") from None
    if not cats:
        raise ValidationError(f"{param} must declare at least one category")
    for c in cats:
        if not isinstance(c, (str, int, float, bool)) or (isinstance(c, float) and np.isnan(c)):
            raise ValidationError(f"{param} must hold strings, numbers or booleans (not NaN)")
    if len(set(cats)) != len(cats):
        raise ValidationError(f"{param} declares a category more than once")
    return cats


def category_codes(frame: pd.DataFrame, col: str, cats: Sequence, *, dropna: bool) -> np.ndarray:
    """Category codes of ``col`` (-1 for a missing value, kept only with ``dropna``).

    Raises
    ------
    SchemaError
        If the column is missing, holds a missing value while ``dropna`` is False, or
        holds a value outside ``cats`` (never echoed).
    """
    if col not in frame.columns:
        raise SchemaError(f"column(s) {[col]} not found in the site's data")
    series = frame[col]
    na = series.isna().to_numpy()
    if na.any() and not dropna:
        raise SchemaError(
            f"column {col!r} contains missing values (drop them, or pass dropna=True)"
        )
    codes = np.asarray(pd.Categorical(series, categories=list(cats)).codes, dtype=np.int64)
    if np.any((codes < 0) & ~na):
        raise SchemaError(f"column {col!r} holds values outside its declared categories")
    return codes


def check_edges(value: Any, param: str = "edges") -> tuple[float, ...]:
    """Normalise public histogram bin edges (finite, strictly increasing, at least two)."""
    try:
        edges = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError(f"{param} must be a sequence of numbers") from None
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)):
        raise ValidationError(f"{param} must hold at least two finite numbers")
    if not np.all(np.diff(edges) > 0):
        raise ValidationError(f"{param} must be strictly increasing")
    return tuple(float(e) for e in edges)


def check_columns_param(value: Any, *, param: str, allow_empty: bool = False) -> tuple[str, ...]:
    """Normalise a tuple-of-column-names parameter, or raise naming ``param``.

    Raises
    ------
    ValidationError
        If ``value`` is a bare string, holds non-strings or duplicates, or is
        empty while ``allow_empty`` is False.
    """
    if isinstance(value, str):
        raise ValidationError(f"{param} must be a sequence of column names, not one string")
    try:
        cols = tuple(value)
    except TypeError:
        raise ValidationError(f"{param} must be a sequence of column names") from None
    if not all(isinstance(c, str) and c for c in cols):
        raise ValidationError(f"{param} must hold non-empty column names (strings)")
    if len(set(cols)) != len(cols):
        raise ValidationError(f"{param} names a column more than once")
    if not cols and not allow_empty:
        raise ValidationError(f"{param} must name at least one column")
    return cols
