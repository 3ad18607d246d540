"""The design of a federated DESeq2 study: formula, levels, design matrix, contrast.

Every site builds the same design matrix columns from public parameters (the
formula and each factor's levels), so a site that holds only some levels of a
factor (one donor, one arm) still contributes to every coefficient.  Columns and
their order follow PyDESeq2 0.5.4 (formulaic, treatment coding): ``Intercept``,
then for each term of the formula, ``factor[T.level]`` for every level but the
reference (the first listed), or the column itself for a numeric covariate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.errors import SchemaError, ValidationError

__all__ = ["Design", "parse_formula"]

_TERM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def parse_formula(formula: str) -> tuple[str, ...]:
    """The terms of a main-effects formula ``"~a + b"`` (no interactions, no transforms)."""
    if not isinstance(formula, str) or not formula.strip():
        raise ValidationError("design must be a formula such as '~cell + dex'")
    body = formula.strip()
    body = body[1:] if body.startswith("~") else body
    terms = tuple(t.strip() for t in body.split("+"))
    if not terms or not all(_TERM.match(t) for t in terms):
        raise ValidationError(
            f"design {formula!r}: only main effects of named columns are supported "
            "(for example '~cell + dex'); no interactions or transforms"
        )
    if len(set(terms)) != len(terms):
        raise ValidationError(f"design {formula!r} names a column twice")
    return terms


def _level_key(value: object) -> str:
    return str(value)


@dataclass(frozen=True)
class Design:
    """The public description of a design: terms, factor levels, contrast.

    Parameters
    ----------
    terms
        Column names of the clinical table, in formula order.
    levels
        Factor -> its levels (reference first).  A term without levels is a numeric
        covariate.
    """

    terms: tuple[str, ...]
    levels: Mapping[str, tuple[str, ...]]

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the design matrix columns, PyDESeq2's (formulaic's) names."""
        cols = ["Intercept"]
        for t in self.terms:
            if t in self.levels:
                cols.extend(f"{t}[T.{lv}]" for lv in self.levels[t][1:])
            else:
                cols.append(t)
        return tuple(cols)

    @property
    def n_cells(self) -> int:
        """The number of combinations of factor levels (the design's cells)."""
        return int(np.prod([len(self.levels[t]) for t in self.terms if t in self.levels]))

    @property
    def categorical(self) -> bool:
        """True when every term is a factor (then the cells are the distinct design rows)."""
        return all(t in self.levels for t in self.terms)

    def matrix(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The design matrix of ``frame``'s rows and each row's cell index.

        Raises
        ------
        SchemaError
            A design column is missing, holds a missing value, a level not among the
            declared ones, or (numeric covariate) a non-numeric value.
        """
        n = len(frame)
        blocks = [np.ones((n, 1))]
        cell = np.zeros(n, dtype=np.int64)
        for t in self.terms:
            if t not in frame.columns:
                raise SchemaError(f"design column {t!r} is missing from the clinical table")
            col = frame[t]
            if col.isna().any():
                raise SchemaError(f"design column {t!r} contains missing values")
            if t in self.levels:
                lv = self.levels[t]
                codes = pd.Index(lv).get_indexer(col.map(_level_key))
                if (codes < 0).any():
                    raise SchemaError(
                        f"design column {t!r} holds a level that is not among its declared "
                        f"levels {list(lv)}"
                    )
                block = np.zeros((n, len(lv) - 1))
                rows = np.nonzero(codes > 0)[0]
                block[rows, codes[rows] - 1] = 1.0
                blocks.append(block)
                cell = cell * len(lv) + codes
            else:
                if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                    raise SchemaError(
                        f"design column {t!r} is not numeric: declare its levels to use it "
                        "as a factor"
                    )
                blocks.append(col.to_numpy(dtype=np.float64)[:, None])
        return np.hstack(blocks), cell

    def contrast_vector(self, contrast: Sequence[str]) -> np.ndarray:
        """PyDESeq2's contrast vector for ``(factor, tested level, reference level)``."""
        if len(contrast) != 3:
            raise ValidationError("contrast must be (factor, tested level, reference level)")
        factor, tested, ref = (str(c) for c in contrast)
        if factor not in self.levels:
            raise ValidationError(f"contrast factor {factor!r} is not a factor of the design")
        lv = self.levels[factor]
        for name, value in (("tested", tested), ("reference", ref)):
            if value not in lv:
                raise ValidationError(
                    f"contrast {name} level {value!r} is not a level of {factor!r}: {list(lv)}"
                )
        if tested == ref:
            raise ValidationError("contrast compares a level with itself")
        cols = self.columns
        vec = np.zeros(len(cols))
        for value, sign in ((tested, 1.0), (ref, -1.0)):
            if value != lv[0]:
                vec[cols.index(f"{factor}[T.{value}]")] += sign
        return vec
