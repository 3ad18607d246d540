"""Dataset schemas: column roles and types, declared in a node's config, checked on load.

A schema names the columns a dataset must have, the *role* each plays (patient id,
survival time, event indicator, group, covariate, or other) and its *type* (float, int,
bool, category, str).  :meth:`Schema.validate` checks a DataFrame against it and returns
a typed copy; every breach raises :class:`~consortia.errors.SchemaError` whose message
names the column and the rule, never a patient value.

The mapping form (what a node's TOML file holds) is documented in :meth:`Schema.from_mapping`
and ``docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from consortia.errors import SchemaError

__all__ = ["Column", "ColumnType", "Role", "Schema", "infer_type"]


class Role(StrEnum):
    """The part a column plays in a study."""

    ID = "id"
    TIME = "time"
    EVENT = "event"
    GROUP = "group"
    COVARIATE = "covariate"
    OTHER = "other"


class ColumnType(StrEnum):
    """The type a column's values must have."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORY = "category"
    STR = "str"


_SINGLE_ROLES = (Role.ID, Role.TIME, Role.EVENT, Role.GROUP)
_DEFAULT_TYPE = {
    Role.ID: ColumnType.STR,
    Role.TIME: ColumnType.FLOAT,
    Role.EVENT: ColumnType.INT,
    Role.GROUP: ColumnType.CATEGORY,
}
_ALLOWED_TYPES = {
    Role.ID: {ColumnType.STR, ColumnType.INT},
    Role.TIME: {ColumnType.FLOAT, ColumnType.INT},
    Role.EVENT: {ColumnType.INT, ColumnType.BOOL},
    Role.GROUP: {ColumnType.CATEGORY, ColumnType.STR, ColumnType.INT, ColumnType.BOOL},
}
_NEVER_NULL = (Role.ID, Role.TIME, Role.EVENT)
_EXTRA = ("keep", "drop", "error")
_ROLE_LABEL = {
    Role.ID: "patient id",
    Role.TIME: "time",
    Role.EVENT: "event",
    Role.GROUP: "group",
    Role.COVARIATE: "covariate",
    Role.OTHER: "other",
}


@dataclass(frozen=True)
class Column:
    """One declared column.

    Attributes
    ----------
    name
        Column name in the data.
    role
        Its :class:`Role`.
    type
        Its :class:`ColumnType`.
    nullable
        Whether missing values are allowed (never for id, time and event).
    levels
        For a category column, the allowed levels in order (``None``: any level).
    """

    name: str
    role: Role
    type: ColumnType
    nullable: bool = False
    levels: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError("a column name must be a non-empty string")
        try:
            object.__setattr__(self, "role", Role(self.role))
        except ValueError:
            raise SchemaError(
                f"column {self.name!r}: unknown role {self.role!r}; "
                f"use one of {[r.value for r in Role]}"
            ) from None
        try:
            object.__setattr__(self, "type", ColumnType(self.type))
        except ValueError:
            raise SchemaError(
                f"column {self.name!r}: unknown type {self.type!r}; "
                f"use one of {[t.value for t in ColumnType]}"
            ) from None
        allowed = _ALLOWED_TYPES.get(self.role)
        if allowed is not None and self.type not in allowed:
            raise SchemaError(
                f"column {self.name!r}: a {_ROLE_LABEL[self.role]} column cannot have type "
                f"{self.type.value!r}; use one of {sorted(t.value for t in allowed)}"
            )
        if self.nullable and self.role in _NEVER_NULL:
            raise SchemaError(
                f"column {self.name!r}: a {_ROLE_LABEL[self.role]} column cannot be nullable"
            )
        if self.levels is not None:
            if self.type is not ColumnType.CATEGORY:
                raise SchemaError(f"column {self.name!r}: levels are only for category columns")
            levels = tuple(self.levels)
            if not levels or len(set(levels)) != len(levels):
                raise SchemaError(f"column {self.name!r}: levels must be non-empty and distinct")
            object.__setattr__(self, "levels", levels)

    @property
    def label(self) -> str:
        """``column 'name' (role)``: how messages refer to this column."""
        return f"column {self.name!r} ({_ROLE_LABEL[self.role]})"

    def to_spec(self) -> str | dict[str, Any]:
        """The compact mapping form: the type alone, or a table when it carries options."""
        if not self.nullable and self.levels is None:
            return self.type.value
        spec: dict[str, Any] = {"type": self.type.value}
        if self.nullable:
            spec["nullable"] = True
        if self.levels is not None:
            spec["levels"] = list(self.levels)
        return spec


@dataclass(frozen=True)
class Schema:
    """The declared columns of a dataset.

    Parameters
    ----------
    columns
        The declared :class:`Column` objects; at most one each of id, time, event
        and group.
    extra
        What :meth:`validate` does with undeclared columns: ``"keep"`` (default, kept
        as they are), ``"drop"`` or ``"error"``.
    """

    columns: tuple[Column, ...]
    extra: str = "keep"
    _by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cols = tuple(self.columns)
        object.__setattr__(self, "columns", cols)
        if not all(isinstance(c, Column) for c in cols):
            raise SchemaError("schema columns must be Column objects")
        by_name: dict[str, Column] = {}
        for c in cols:
            if c.name in by_name:
                raise SchemaError(f"column {c.name!r} is declared more than once")
            by_name[c.name] = c
        for role in _SINGLE_ROLES:
            named = [c.name for c in cols if c.role is role]
            if len(named) > 1:
                raise SchemaError(f"at most one {_ROLE_LABEL[role]} column may be declared")
        if self.extra not in _EXTRA:
            raise SchemaError(f"schema 'extra' must be one of {list(_EXTRA)}")
        object.__setattr__(self, "_by_name", by_name)

    # --- accessors ---------------------------------------------------------------------------

    def _single(self, role: Role) -> str | None:
        for c in self.columns:
            if c.role is role:
                return c.name
        return None

    @property
    def id(self) -> str | None:
        """Name of the patient-id column, if declared."""
        return self._single(Role.ID)

    @property
    def time(self) -> str | None:
        """Name of the time column, if declared."""
        return self._single(Role.TIME)

    @property
    def event(self) -> str | None:
        """Name of the event column, if declared."""
        return self._single(Role.EVENT)

    @property
    def group(self) -> str | None:
        """Name of the group column, if declared."""
        return self._single(Role.GROUP)

    @property
    def covariates(self) -> tuple[str, ...]:
        """Names of the covariate columns, in declaration order."""
        return tuple(c.name for c in self.columns if c.role is Role.COVARIATE)

    @property
    def names(self) -> tuple[str, ...]:
        """All declared column names, in declaration order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The declared column called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"column {name!r} is not declared in the schema") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    # --- mapping form ------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Schema:
        """Build a schema from its mapping form (a node's TOML table).

        Keys (all optional, but at least one column)::

            id         = "pid"                       # column name, or a table (below)
            time       = "T"                         # default type float
            event      = "E"                         # default type int (0/1)
            group      = "arm"                       # default type category
            covariates = {age = "float", stage = {type = "category",
                          levels = ["I", "II", "III", "IV"]}, ecog = {type = "int",
                          nullable = true}}
            other      = {centre = "str"}            # carried along, not analysed
            extra      = "keep"                      # undeclared columns: keep|drop|error

        A single-role entry (id, time, event, group) is a column name, or a table
        ``{name = ..., type = ..., nullable = ..., levels = [...]}``.  A covariate or
        other entry maps a column name to its type, or to a table
        ``{type = ..., nullable = ..., levels = [...]}``.  Types: float, int, bool,
        category, str.  Id, time and event can never be nullable.

        Raises
        ------
        SchemaError
            Naming the key or column that is malformed.
        """
        if not isinstance(mapping, Mapping):
            raise SchemaError("a schema mapping must be a mapping (a TOML table)")
        known = {r.value for r in _SINGLE_ROLES} | {"covariates", "other", "extra"}
        unknown = sorted(set(map(str, mapping)) - known)
        if unknown:
            raise SchemaError(f"unknown schema key(s) {unknown}; use {sorted(known)}")
        columns: list[Column] = []
        for role in _SINGLE_ROLES:
            if role.value in mapping and mapping[role.value] is not None:
                columns.append(_single_from_spec(role, mapping[role.value]))
        for key, role in (("covariates", Role.COVARIATE), ("other", Role.OTHER)):
            table = mapping.get(key)
            if table is None:
                continue
            if not isinstance(table, Mapping):
                raise SchemaError(f"schema key {key!r} must map column names to types")
            for name, spec in table.items():
                columns.append(_column_from_spec(str(name), role, spec))
        if not columns:
            raise SchemaError("a schema must declare at least one column")
        return cls(columns=tuple(columns), extra=str(mapping.get("extra", "keep")))

    def to_mapping(self) -> dict[str, Any]:
        """The mapping form accepted by :meth:`from_mapping` (JSON/TOML-serialisable)."""
        out: dict[str, Any] = {}
        for c in self.columns:
            if c.role in _SINGLE_ROLES:
                if c.type is _DEFAULT_TYPE[c.role] and not c.nullable and c.levels is None:
                    out[c.role.value] = c.name
                else:
                    spec = c.to_spec()
                    table = {"type": spec} if isinstance(spec, str) else spec
                    out[c.role.value] = {"name": c.name, **table}
            else:
                key = "covariates" if c.role is Role.COVARIATE else "other"
                out.setdefault(key, {})[c.name] = c.to_spec()
        if self.extra != "keep":
            out["extra"] = self.extra
        return out

    # --- inference and validation ------------------------------------------------------------

    @classmethod
    def infer(
        cls,
        frame: pd.DataFrame,
        *,
        id: str | None = None,
        time: str | None = None,
        event: str | None = None,
        group: str | None = None,
        covariates: Sequence[str] | None = None,
    ) -> Schema:
        """A schema for ``frame`` with types inferred from its dtypes.

        The named columns get their roles; the remaining columns are covariates when
        ``covariates`` is None, otherwise "other".  Columns holding missing values are
        declared nullable (except id, time and event).
        """
        if not isinstance(frame, pd.DataFrame):
            raise SchemaError("Schema.infer needs a pandas DataFrame")
        roles = {id: Role.ID, time: Role.TIME, event: Role.EVENT, group: Role.GROUP}
        roles.pop(None, None)
        cov = None if covariates is None else set(covariates)
        columns = []
        for name in map(str, frame.columns):
            role = roles.get(name)
            if role is None:
                role = Role.COVARIATE if cov is None or name in cov else Role.OTHER
            kind = infer_type(frame[name])
            if role in _ALLOWED_TYPES and kind not in _ALLOWED_TYPES[role]:
                kind = _DEFAULT_TYPE[role]
            nullable = role not in _NEVER_NULL and bool(frame[name].isna().any())
            columns.append(Column(name, role, kind, nullable=nullable))
        missing = [n for n in roles if n not in frame.columns]
        if missing:
            raise SchemaError(f"column {missing[0]!r} is missing")
        return cls(columns=tuple(columns))

    def validate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Check ``frame`` against this schema and return a typed copy.

        Checks, column by column: presence; no missing values unless nullable; type
        (float: numeric and finite; int: integer-valued; bool: True/False or 0/1;
        category: within the declared levels; str: text); time >= 0; event 0/1; patient
        ids unique.  Float columns become float64, int columns int64 (``Int64`` when
        nullable with gaps), bool columns bool (``boolean``), category columns pandas
        categoricals with the declared levels, str columns object.

        Raises
        ------
        SchemaError
            Naming the column and the rule it breaks; never a value.
        """
        if not isinstance(frame, pd.DataFrame):
            raise SchemaError(f"a dataset must be a pandas DataFrame, not {type(frame).__name__}")
        if frame.columns.duplicated().any():
            dup = str(frame.columns[frame.columns.duplicated()][0])
            raise SchemaError(f"column {dup!r} appears more than once in the data")
        for c in self.columns:
            if c.name not in frame.columns:
                raise SchemaError(f"{c.label} is missing")
        undeclared = [str(n) for n in frame.columns if n not in self._by_name]
        if undeclared and self.extra == "error":
            raise SchemaError(f"column {undeclared[0]!r} is not declared in the schema")
        out = frame.drop(columns=undeclared) if self.extra == "drop" else frame.copy()
        for c in self.columns:
            out[c.name] = _check_column(c, frame[c.name])
        return out


# --- helpers ---------------------------------------------------------------------------------


def _single_from_spec(role: Role, spec: Any) -> Column:
    if isinstance(spec, str):
        return Column(spec, role, _DEFAULT_TYPE[role])
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise SchemaError(f"schema key {role.value!r}: a table needs a 'name'")
        rest = {k: v for k, v in spec.items() if k != "name"}
        rest.setdefault("type", _DEFAULT_TYPE[role].value)
        return _column_from_spec(str(spec["name"]), role, rest)
    raise SchemaError(f"schema key {role.value!r} must be a column name or a table")


def _column_from_spec(name: str, role: Role, spec: Any) -> Column:
    if isinstance(spec, str):
        return Column(name, role, spec)  # type: ignore[arg-type]
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"type", "nullable", "levels"})
        if unknown:
            raise SchemaError(f"column {name!r}: unknown option(s) {unknown}")
        if "type" not in spec:
            raise SchemaError(f"column {name!r}: a table needs a 'type'")
        nullable = spec.get("nullable", False)
        if not isinstance(nullable, bool):
            raise SchemaError(f"column {name!r}: 'nullable' must be true or false")
        levels = spec.get("levels")
        if levels is not None and (isinstance(levels, str) or not isinstance(levels, Sequence)):
            raise SchemaError(f"column {name!r}: 'levels' must be a list")
        return Column(
            name,
            role,
            spec["type"],
            nullable=nullable,
            levels=None if levels is None else tuple(levels),
        )
    raise SchemaError(f"column {name!r}: the type must be a string or a table")


def infer_type(series: pd.Series) -> ColumnType:
    """The :class:`ColumnType` that best describes ``series``'s dtype."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return ColumnType.BOOL
    if isinstance(dtype, pd.CategoricalDtype):
        return ColumnType.CATEGORY
    if pd.api.types.is_integer_dtype(dtype):
        return ColumnType.INT
    if pd.api.types.is_numeric_dtype(dtype):
        return ColumnType.FLOAT
    return ColumnType.STR


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _check_column(c: Column, s: pd.Series) -> pd.Series:
    missing = s.isna()
    has_missing = bool(missing.any())
    if has_missing and not c.nullable:
        raise SchemaError(f"{c.label} has missing values (NaN), which its schema does not allow")
    present = s[~missing] if has_missing else s
    if c.type is ColumnType.FLOAT:
        if not _is_numeric(s):
            raise SchemaError(f"{c.label} must be float: it holds non-numeric values")
        out = s.astype(np.float64)
        if np.isinf(out.to_numpy()).any():
            raise SchemaError(f"{c.label} has infinite values, which are not allowed")
    elif c.type is ColumnType.INT:
        if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_integer_dtype(s.dtype):
            out = s.astype("Int64" if has_missing else np.int64)
        elif _is_numeric(s):
            v = present.to_numpy(dtype=np.float64)
            if not np.isfinite(v).all() or (v != np.round(v)).any():
                raise SchemaError(f"{c.label} must be int: it holds non-integer values")
            out = s.astype("Int64" if has_missing else np.int64)
        else:
            raise SchemaError(f"{c.label} must be int: it holds non-numeric values")
    elif c.type is ColumnType.BOOL:
        ok = (
            pd.api.types.is_bool_dtype(s.dtype)
            or (_is_numeric(s) and bool(present.isin([0, 1]).all()))
            or (s.dtype == object and all(isinstance(v, bool | np.bool_) for v in present))
        )
        if ok:
            out = s.astype("boolean" if has_missing else bool)
        else:
            raise SchemaError(f"{c.label} must be bool: it holds values other than True/False/0/1")
    elif c.type is ColumnType.CATEGORY:
        if c.levels is not None:
            if not present.isin(c.levels).all():
                raise SchemaError(f"{c.label} has values outside its declared levels")
            out = pd.Series(
                pd.Categorical(s, categories=list(c.levels)), index=s.index, name=s.name
            )
        else:
            out = s.astype("category")
    else:  # STR
        if isinstance(s.dtype, pd.StringDtype):
            out = s.astype(object)
        elif s.dtype == object and all(isinstance(v, str) for v in present):
            out = s
        else:
            raise SchemaError(f"{c.label} must be str: it holds non-text values")
    if c.role is Role.TIME and (present.to_numpy(dtype=np.float64) < 0).any():
        raise SchemaError(f"{c.label} has negative values; times must be >= 0")
    if c.role is Role.EVENT:
        v = out.to_numpy(dtype=np.int64) if c.type is ColumnType.BOOL else out.to_numpy()
        if not np.isin(v, (0, 1)).all():
            raise SchemaError(f"{c.label} must be 0/1 (1 = event, 0 = censored)")
    if c.role is Role.ID and present.duplicated().any():
        raise SchemaError(f"{c.label} has duplicate patient ids; ids must be unique")
    return out
