"""One summary schema for every study result: statistics, tables, text and JSON.

Every result class of consortia (``MeanResult``, ``CoxPHResult``, ``LogRankResult``,
...) derives from :class:`Result`, a base without fields or state that gives it

``statistics()``
    The model's or test's facts, in order: sizes (``n``, ``events``), fit
    quantities (``log_likelihood``), test statistics with their ``df`` and ``p``,
    error bounds and privacy costs.  Keys are ``snake_case`` and the same across
    result types (``n``, ``events``, ``chi2``, ``df``, ``p``, ``epsilon``, ...).
``tables(full=False)``
    Named :class:`pandas.DataFrame` tables; ``"summary"`` first where there is
    one.  ``full=True`` adds the long tables (every grid point of a survival
    curve, a baseline hazard) that the text summary leaves out.
``print_summary()`` / ``summary_text()``
    A lifelines-style text block: a title, the statistics as ``name = value``
    lines, then the tables.  Lines are never wrapped, whatever their width.
``to_dict()`` / ``to_json()``
    A JSON-ready dictionary: ``{"type", "statistics", "tables", "fields"}``
    where ``tables`` holds every table of ``tables(full=True)`` as records
    (the index first) and ``fields`` every dataclass field.

Coefficient tables (linear, logistic and Cox regression) share one scheme, that of
lifelines' ``CoxPHFitter.summary``: index ``covariate``; columns ``coef``,
``exp(coef)`` (logistic: the odds ratio; Cox: the hazard ratio; absent for a
linear model), ``se(coef)``, ``coef lower 95%``, ``coef upper 95%``,
``exp(coef) lower 95%``, ``exp(coef) upper 95%`` (logistic and Cox), then ``z``
(``t`` for a linear model) and ``p``.  The level in the interval names follows
the model's confidence level (a Cox model with ``alpha=0.1`` writes ``90%``).
See :func:`coefficient_table`.

JSON values: numpy arrays become (nested) lists, numpy scalars Python numbers,
NaN becomes ``null``, plus and minus infinity the strings ``"inf"`` and ``"-inf"``
(a median survival that is not reached is ``"inf"``), tuples and sets lists,
mapping keys strings, nested dataclasses dictionaries of their fields and pandas
tables lists of records.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Result", "coefficient_table", "format_number", "jsonable", "table_records"]


class Result:
    """Base of the study results (no fields, no state): summary schema, text, JSON.

    Subclasses are frozen dataclasses; they override :meth:`statistics` and
    :meth:`tables` where the defaults (every scalar field; the ``summary``
    property) do not say what matters.
    """

    __slots__ = ()

    def statistics(self) -> dict[str, Any]:
        """The result's facts, in order (``name -> number, string or bool``).

        The default lists the dataclass fields that hold a number, a string or a
        bool; subclasses list the sizes, fit quantities, test statistics and
        error bounds that belong to them.
        """
        import numpy as np

        out: dict[str, Any] = {}
        for f in _fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (bool, int, float, str, np.number, np.bool_)):
                out[f.name] = v
        return out

    def tables(self, *, full: bool = False) -> dict[str, pd.DataFrame]:
        """Named tables; ``"summary"`` first where there is one.

        Parameters
        ----------
        full
            Also the long tables that :meth:`print_summary` leaves out (every
            grid point of a curve, a baseline hazard).
        """
        summary = getattr(self, "summary", None)
        return {} if summary is None else {"summary": summary}

    def summary_text(self, *, decimals: int = 4) -> str:
        """The text that :meth:`print_summary` prints."""
        return _summary_text(self, decimals)

    def print_summary(self, *, decimals: int = 4, file: TextIO | None = None) -> None:
        """Print the statistics, then the tables (lifelines' ``print_summary``).

        Parameters
        ----------
        decimals
            Digits after the decimal point (numbers below 0.001 in scientific notation).
        file
            Where to write (default: standard output).
        """
        out = sys.stdout if file is None else file
        out.write(self.summary_text(decimals=decimals))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: ``{"type", "statistics", "tables", "fields"}``."""
        cls = type(self)
        return {
            "type": f"{cls.__module__}:{cls.__qualname__}",
            "statistics": jsonable(self.statistics()),
            "tables": {k: table_records(v) for k, v in self.tables(full=True).items()},
            "fields": {f.name: jsonable(getattr(self, f.name)) for f in _fields(self)},
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as strict JSON text (no NaN or Infinity tokens)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _fields(obj: Any) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(obj) if dataclasses.is_dataclass(obj) else ()


# --------------------------------------------------------------------------- tables


def coefficient_table(
    terms: tuple[str, ...] | list[str],
    coef: np.ndarray,
    se: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    statistic: np.ndarray,
    p: np.ndarray,
    *,
    statistic_name: str = "z",
    exponentiate: bool = False,
    level: float = 0.95,
) -> pd.DataFrame:
    """The coefficient table shared by the regression results (lifelines' column names).

    Parameters
    ----------
    terms
        Row labels (the ``covariate`` index).
    coef, se, lower, upper, statistic, p
        Estimates, standard errors, interval ends, test statistics, p-values.
    statistic_name
        ``"z"`` (Wald) or ``"t"``.
    exponentiate
        Add ``exp(coef)`` and its interval (odds or hazard ratios).
    level
        Confidence level of the interval, written in the column names.

    Returns
    -------
    pandas.DataFrame
        Columns ``coef``, [``exp(coef)``], ``se(coef)``, ``coef lower L``,
        ``coef upper L``, [``exp(coef) lower L``, ``exp(coef) upper L``],
        ``z`` or ``t``, ``p`` (``L`` as ``95%``).
    """
    import numpy as np
    import pandas as pd

    pct = f"{100 * level:g}%"
    df = pd.DataFrame(index=pd.Index(list(terms), name="covariate"))
    df["coef"] = np.asarray(coef, dtype=float)
    if exponentiate:
        df["exp(coef)"] = np.exp(df["coef"])
    df["se(coef)"] = np.asarray(se, dtype=float)
    df[f"coef lower {pct}"] = np.asarray(lower, dtype=float)
    df[f"coef upper {pct}"] = np.asarray(upper, dtype=float)
    if exponentiate:
        df[f"exp(coef) lower {pct}"] = np.exp(df[f"coef lower {pct}"])
        df[f"exp(coef) upper {pct}"] = np.exp(df[f"coef upper {pct}"])
    df[statistic_name] = np.asarray(statistic, dtype=float)
    df["p"] = np.asarray(p, dtype=float)
    return df


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as JSON-ready records, its index (or index levels) first.

    An unnamed index is called ``index``; column labels become strings.
    """
    frame = table.copy()
    frame.columns = [str(c) for c in frame.columns]
    names = [n if n is not None else ("index" if i == 0 else f"index_{i}")
             for i, n in enumerate(frame.index.names)]  # fmt: skip
    frame.index = frame.index.set_names([str(n) for n in names])
    frame = frame.reset_index()
    cols = [str(c) for c in frame.columns]
    columns = [_column(frame.iloc[:, i].to_numpy()) for i in range(len(cols))]
    return [dict(zip(cols, row, strict=True)) for row in zip(*columns, strict=True)]


def _column(values: np.ndarray) -> list[Any]:
    """A column as JSON-ready values (vectorised for numeric columns)."""
    import numpy as np

    if values.dtype.kind in "iub":
        out: list[Any] = values.tolist()
        return out
    if values.dtype.kind == "f":
        out = values.tolist()
        return out if np.isfinite(values).all() else [_float(v) for v in out]
    return [jsonable(v) for v in values]


# --------------------------------------------------------------------------- JSON


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready Python (see the module notes for the mapping)."""
    import numpy as np
    import pandas as pd

    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _float(float(value))
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub" or (value.dtype.kind == "f" and np.isfinite(value).all()):
            return value.tolist()
        return _nested(value.tolist())
    if isinstance(value, pd.DataFrame):
        return table_records(value)
    if isinstance(value, pd.Series):
        return table_records(value.to_frame(name=value.name if value.name is not None else "value"))
    if isinstance(value, pd.Index):
        return jsonable(value.to_numpy())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in sorted(value, key=repr)]
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    return str(value)


def _float(v: float) -> float | str | None:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _nested(items: Any) -> Any:
    if isinstance(items, list):
        return [_nested(v) for v in items]
    return jsonable(items)


def _key(k: Any) -> str:
    j = jsonable(k)
    return j if isinstance(j, str) else json.dumps(j)


# --------------------------------------------------------------------------- text


def format_number(value: Any, decimals: int = 4, *, whole_floats_as_decimals: bool = False) -> str:
    """A number as the summaries print it.

    Integers as they are; floats with ``decimals`` digits after the point, or in
    scientific notation below 0.001 in magnitude (a p-value of ``3.2e-05`` stays
    readable); NaN as ``NaN``.  A float holding a whole number prints as an
    integer (a pooled count) unless ``whole_floats_as_decimals``.
    """
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == round(v) and abs(v) < 1e15 and not whole_floats_as_decimals:
            return str(int(v))
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.{max(decimals - 1, 1)}e}"
        return f"{v:.{decimals}f}"
    if isinstance(value, (tuple, list)):
        return ", ".join(format_number(v, decimals) for v in value)
    return str(value)


def _title(obj: Any) -> str:
    doc = (type(obj).__doc__ or "").strip().splitlines()
    first = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc[0]).rstrip(".") if doc else ""
    name = type(obj).__name__
    return f"<{name}: {first}>" if first else f"<{name}>"


def _summary_text(obj: Result, decimals: int) -> str:
    buf = io.StringIO()
    buf.write(_title(obj) + "\n")
    stats = obj.statistics()
    if stats:
        width = max(len(k) for k in stats)
        for k, v in stats.items():
            buf.write(f"{k:>{width}} = {format_number(v, decimals)}\n")
    for name, table in obj.tables().items():
        buf.write(f"---\n{name}\n")
        buf.write(render_table(table, decimals) + "\n")
    return buf.getvalue()


def render_table(table: pd.DataFrame, decimals: int = 4) -> str:
    """A table as plain text, every row on one line (never wrapped).

    Float columns that hold only whole numbers (pooled counts) print without decimals.
    """
    import numpy as np

    formatters = {}
    for i, col in enumerate(table.columns):
        values = table.iloc[:, i]
        if values.dtype.kind == "f":
            v = values.to_numpy()
            finite = v[np.isfinite(v)]
            if finite.size and np.all(finite == np.round(finite)) and np.all(abs(finite) < 1e15):
                formatters[col] = _whole
    text: str = table.to_string(
        formatters=formatters or None,
        float_format=lambda v: format_number(v, decimals, whole_floats_as_decimals=True),
        na_rep="NaN",
        line_width=None,
    )
    return text


def _whole(v: Any) -> str:
    return format_number(int(v)) if math.isfinite(v) else format_number(v)
