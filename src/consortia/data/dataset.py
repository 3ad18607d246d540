"""The object an algorithm's site side receives: a site's private data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from consortia.errors import SchemaError, ValidationError

__all__ = ["MODALITIES", "Dataset", "as_dataset"]

MODALITIES = ("expression", "tiles")
"""Names of the optional modalities a :class:`Dataset` can carry besides its clinical table."""


@dataclass
class Dataset:
    """A site's private dataset.

    Attributes
    ----------
    frame
        One row per patient (clinical table; other modalities joined by patient id).
    name
        The dataset's name in the node's catalogue.
    schema
        The declared column roles and types, when the dataset was registered with one
        (a :class:`~consortia.data.Schema`).
    site
        The name of the site holding it (set by the runtime).
    expression
        Optional modality: raw gene-expression counts, a DataFrame of patients x genes
        whose index holds patient ids of the clinical table (non-negative integers).
    tiles
        Optional modality: patient id -> 2-D float array (n_tiles x dim) of histology
        tile embeddings; every array has the same ``dim``.

    Notes
    -----
    Modalities need a schema that declares the patient-id column.  Every patient of a
    modality must be in the clinical table; a clinical patient may lack a modality.
    Ids are checked on construction; a mismatch raises :class:`SchemaError` naming the
    modality.
    """

    frame: pd.DataFrame
    name: str = "data"
    schema: Any = None
    site: str | None = None
    expression: pd.DataFrame | None = None
    tiles: Mapping[Any, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.expression is None and self.tiles is None:
            return
        ids = self._clinical_ids("expression" if self.expression is not None else "tiles")
        if self.expression is not None:
            _check_expression(self.expression, ids)
        if self.tiles is not None:
            self.tiles = _check_tiles(self.tiles, ids)

    @property
    def n_rows(self) -> int:
        """Number of rows (patients)."""
        return len(self.frame)

    @property
    def id_column(self) -> str | None:
        """Name of the patient-id column (from the schema), if declared."""
        return getattr(self.schema, "id", None)

    @property
    def modalities(self) -> dict[str, tuple[int, ...]]:
        """Modalities present -> shape: expression (patients, genes); tiles (patients,
        total tiles, dim)."""
        out: dict[str, tuple[int, ...]] = {}
        if self.expression is not None:
            out["expression"] = tuple(self.expression.shape)
        if self.tiles is not None:
            arrays = list(self.tiles.values())
            dim = arrays[0].shape[1] if arrays else 0
            out["tiles"] = (len(arrays), sum(a.shape[0] for a in arrays), dim)
        return out

    def _clinical_ids(self, modality: str) -> set[Any]:
        col = self.id_column
        if col is None:
            raise SchemaError(
                f"modality {modality!r} needs a schema that declares the patient id column"
            )
        if col not in self.frame.columns:
            raise SchemaError(f"column {col!r} (patient id) is missing from the clinical table")
        return set(self.frame[col])


def _check_expression(expr: Any, ids: set[Any]) -> None:
    label = "modality 'expression'"
    if not isinstance(expr, pd.DataFrame):
        raise SchemaError(f"{label} must be a pandas DataFrame of patients x genes")
    if expr.index.duplicated().any():
        raise SchemaError(f"{label} has duplicate patient ids in its index")
    if expr.columns.duplicated().any():
        raise SchemaError(f"{label} has duplicate gene names")
    if not set(expr.index) <= ids:
        raise SchemaError(f"{label} has patient ids absent from the clinical table")
    dtypes = set(expr.dtypes)
    if not all(
        pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d) for d in dtypes
    ):
        raise SchemaError(f"{label} must hold raw counts: it has non-numeric columns")
    if expr.size == 0:
        return
    if all(isinstance(d, np.dtype) and d.kind in "iu" for d in dtypes):
        values = expr.to_numpy()  # plain integers: no NaN possible, no copy for one block
    else:
        values = expr.to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(values).all():
            raise SchemaError(f"{label} must hold raw counts: it has missing or infinite values")
        if (values != np.floor(values)).any():
            raise SchemaError(f"{label} must hold raw counts: it has non-integer values")
    if values.min() < 0:
        raise SchemaError(f"{label} must hold raw counts: it has negative values")


def _check_tiles(tiles: Any, ids: set[Any]) -> dict[Any, np.ndarray]:
    label = "modality 'tiles'"
    if not isinstance(tiles, Mapping):
        raise SchemaError(f"{label} must be a mapping of patient id -> 2-D array")
    if not set(tiles) <= ids:
        raise SchemaError(f"{label} has patient ids absent from the clinical table")
    out: dict[Any, np.ndarray] = {}
    dim = None
    for pid, arr in tiles.items():
        a = np.asarray(arr)
        if a.ndim != 2 or a.shape[0] < 1 or not np.issubdtype(a.dtype, np.floating):
            raise SchemaError(f"{label}: every entry must be a 2-D float array (n_tiles x dim)")
        if dim is None:
            dim = a.shape[1]
        elif a.shape[1] != dim:
            raise SchemaError(f"{label}: the arrays have different embedding dimensions")
        if not np.isfinite(a).all():
            raise SchemaError(f"{label} has missing or infinite values")
        out[pid] = a
    return out


def as_dataset(obj: Dataset | pd.DataFrame, *, name: str = "data") -> Dataset:
    """Wrap a DataFrame as a :class:`Dataset`; pass a Dataset through."""
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, pd.DataFrame):
        return Dataset(frame=obj, name=name)
    raise ValidationError(
        f"site data must be a pandas DataFrame or a consortia Dataset, not {type(obj).__name__}"
    )
