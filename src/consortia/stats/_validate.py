"""Input validation shared by the statistics algorithms (one place, clear messages)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from consortia.errors import SchemaError, ValidationError

__all__ = ["check_columns_param", "numeric_columns", "numeric_rows"]


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


def numeric_rows(frame: pd.DataFrame, columns: Sequence[str], *, dropna: bool) -> np.ndarray:
    """Numeric matrix of ``columns``; with ``dropna`` rows holding a NaN are dropped.

    Infinite values are always refused.

    Raises
    ------
    SchemaError
        If a column is missing or not numeric, holds an infinite value, or holds a
        missing value while ``dropna`` is False.
    """
    x = numeric_columns(frame, columns, allow_nan=dropna)
    if dropna:
        inf = np.isinf(x)
        if inf.any():
            col = columns[int(np.where(inf.any(axis=0))[0][0])]
            raise SchemaError(f"column {col!r} contains infinite values")
        x = x[~np.isnan(x).any(axis=1)]
    return x


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
