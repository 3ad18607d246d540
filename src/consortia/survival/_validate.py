"""Validation of survival inputs at a site: one place, clear messages, no patient values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from consortia.errors import SchemaError, ValidationError

__all__ = ["check_levels", "level_codes", "survival_columns"]

Level = str | int | float | bool


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"column(s) {missing} not found in the site's data")


def survival_columns(frame: pd.DataFrame, time: str, event: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the time and event columns as arrays, or raise naming the column and rule.

    Parameters
    ----------
    frame
        The site's data.
    time
        Column of follow-up times (numeric, finite, non-negative).
    event
        Column of event indicators (1 = event, 0 = censored; booleans allowed).

    Returns
    -------
    times : numpy.ndarray
        float64 times.
    events : numpy.ndarray
        int64 indicators, 0 or 1.

    Raises
    ------
    SchemaError
        If a column is missing or not numeric, a time is missing, infinite or
        negative, or an event indicator is not 0 or 1.
    """
    _require(frame, [time, event])
    tcol, ecol = frame[time], frame[event]
    if not pd.api.types.is_numeric_dtype(tcol) or pd.api.types.is_bool_dtype(tcol):
        raise SchemaError(f"time column {time!r} must be numeric (it is {tcol.dtype})")
    t = tcol.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.all(np.isfinite(t)):
        raise SchemaError(f"time column {time!r} contains missing or infinite times")
    if np.any(t < 0):
        raise SchemaError(f"time column {time!r} contains negative times")
    if not (pd.api.types.is_numeric_dtype(ecol) or pd.api.types.is_bool_dtype(ecol)):
        raise SchemaError(f"event column {event!r} must hold 0 (censored) or 1 (event)")
    e = ecol.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.all((e == 0) | (e == 1)):
        raise SchemaError(f"event column {event!r} must hold 0 (censored) or 1 (event) only")
    return t, e.astype(np.int64)


def check_levels(levels: Sequence[Level] | None, *, name: str) -> tuple[Level, ...]:
    """Validate declared public levels (of a group or stratum column) and return them.

    Raises
    ------
    ValidationError
        If the levels are empty, not scalars, or repeated.
    """
    if levels is None or isinstance(levels, (str, bytes)):
        raise ValidationError(f"{name} must be a tuple of level values (str, int, float or bool)")
    out = tuple(levels)
    if not out:
        raise ValidationError(f"{name} must declare at least one level")
    if not all(isinstance(v, (str, int, float, bool)) for v in out):
        raise ValidationError(f"{name} must hold str, int, float or bool values")
    if len({repr(v) if isinstance(v, bool) else v for v in out}) != len(out):
        raise ValidationError(f"{name} must not repeat a level")
    return out


def level_codes(frame: pd.DataFrame, column: str, levels: Sequence[Level]) -> np.ndarray:
    """Map each row's value of ``column`` to the index of its declared level.

    Levels are public (declared in the study), so that every site releases
    arrays of the same layout.  A level absent at a site simply gets no rows.

    Raises
    ------
    SchemaError
        If the column is missing, holds a missing value, or holds a value that
        is not one of the declared levels (the value itself is not shown).
    """
    _require(frame, [column])
    col = frame[column]
    if col.isna().any():
        raise SchemaError(f"column {column!r} contains missing values")
    codes = np.full(len(col), -1, dtype=np.int64)
    values = col.to_numpy()
    for i, level in enumerate(levels):
        try:
            mask = np.asarray(values == level, dtype=bool)
        except (TypeError, ValueError):  # pragma: no cover - exotic dtypes
            mask = np.array([v == level for v in values], dtype=bool)
        codes[mask & (codes < 0)] = i
    if np.any(codes < 0):
        raise SchemaError(
            f"column {column!r} holds values outside its declared levels; "
            "declare every level in the study parameters"
        )
    return codes
