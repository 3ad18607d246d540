"""Input validation shared by the statistics algorithms (one place, clear messages)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from consortia.errors import SchemaError

__all__ = ["numeric_columns"]


def numeric_columns(
    frame: pd.DataFrame, columns: Sequence[str], *, allow_nan: bool = False
) -> np.ndarray:
    """Return ``frame[columns]`` as a float matrix, or raise naming the column and rule.

    Raises
    ------
    SchemaError
        If a column is missing, not numeric, or holds NaN when ``allow_nan`` is False.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"column(s) {missing} not found in the site's data")
    for c in columns:
        col = frame[c]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise SchemaError(f"column {c!r} must be numeric (it is {col.dtype})")
    x = frame[list(columns)].to_numpy(dtype=np.float64)
    if not allow_nan:
        bad = ~np.isfinite(x)
        if bad.any():
            col = columns[int(np.where(bad.any(axis=0))[0][0])]
            raise SchemaError(f"column {col!r} contains missing or infinite values")
    return x
