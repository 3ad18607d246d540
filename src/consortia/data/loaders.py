"""Load a dataset from CSV, Parquet or a DataFrame, validated against its schema.

Expression counts may also come from an AnnData ``.h5ad`` file (:mod:`consortia.data.h5ad`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.data.h5ad import read_h5ad_counts
from consortia.data.schema import ColumnType, Schema
from consortia.errors import SchemaError, ValidationError

__all__ = ["load_dataset", "load_expression", "load_tiles", "read_table"]

_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_TSV = (".tsv", ".tsv.gz", ".txt")
_PARQUET = (".parquet", ".pq")
_H5AD = ".h5ad"

Source: TypeAlias = "str | os.PathLike[str] | pd.DataFrame"


def _kind(path: Path, what: str) -> str:
    name = path.name.lower()
    for kind, suffixes in (("csv", _CSV), ("tsv", _TSV), ("parquet", _PARQUET)):
        if name.endswith(suffixes):
            return kind
    extra = ", .h5ad (AnnData)" if what == "expression" else ""
    raise ValidationError(
        f"{what} file {str(path)!r} has an unsupported type {''.join(path.suffixes)!r}; "
        f"use {', '.join(_CSV[:1] + _TSV[:1] + _PARQUET)}{extra} (CSV may be compressed: "
        ".csv.gz)"
    )


def _existing(source: str | os.PathLike[str], what: str) -> Path:
    path = Path(source)
    if not path.exists():
        raise ValidationError(f"{what} file {str(path)!r} does not exist")
    if not path.is_file():
        raise ValidationError(f"{what} path {str(path)!r} is not a file")
    return path


def read_table(
    source: str | os.PathLike[str], *, schema: Schema | None = None, what: str = "dataset"
) -> pd.DataFrame:
    """Read a CSV/TSV or Parquet file into a DataFrame (no validation).

    With a schema, CSV columns declared as str or category are read as text so that
    ids such as ``"007"`` keep their leading zeros.

    Raises
    ------
    ValidationError
        If the file is missing, of an unknown type, or cannot be parsed.
    """
    path = _existing(source, what)
    kind = _kind(path, what)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        dtype: dict[str, Any] = {}
        if schema is not None:
            for c in schema.columns:
                text_levels = c.levels is None or all(isinstance(v, str) for v in c.levels)
                if c.type is ColumnType.STR or (c.type is ColumnType.CATEGORY and text_levels):
                    dtype[c.name] = str
        return pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=dtype or None)
    except (OSError, ValueError, ImportError) as exc:  # pandas/pyarrow parse errors
        raise ValidationError(
            f"{what} file {str(path)!r} could not be read as {kind}: {type(exc).__name__}"
        ) from None


def _as_schema(schema: Schema | Mapping[str, Any] | None) -> Schema | None:
    if schema is None or isinstance(schema, Schema):
        return schema
    if isinstance(schema, Mapping):
        return Schema.from_mapping(schema)
    raise ValidationError("schema must be a Schema, a mapping (TOML table) or None")


def load_expression(
    source: Source,
    *,
    layer: str | None = None,
    patient_id: str | None = None,
    gene_id: str | None = None,
) -> pd.DataFrame:
    """Read an expression count matrix: patients x genes, first column = patient id.

    Parameters
    ----------
    source
        A CSV/TSV/Parquet path whose first column holds patient ids (for Parquet, the
        stored index if it has one, else the first column), an AnnData ``.h5ad`` file
        (samples in ``obs``, genes in ``var``; see :func:`consortia.data.h5ad.read_h5ad_counts`),
        or a DataFrame already indexed by patient id.
    layer, patient_id, gene_id
        For ``.h5ad`` only: the layer holding the raw counts (default ``X``), the
        ``obs`` column of patient ids (default the ``obs`` index), the ``var`` column
        of gene ids (default the ``var`` index).
    """
    if isinstance(source, pd.DataFrame):
        return source
    if str(source).lower().endswith(_H5AD):
        return read_h5ad_counts(source, layer=layer, patient_id=patient_id, gene_id=gene_id)[0]
    if layer is not None or patient_id is not None or gene_id is not None:
        raise ValidationError(
            "expression layer, patient_id and gene_id are options of .h5ad files only"
        )
    path = _existing(source, "expression")
    kind = _kind(path, "expression")
    if kind == "parquet":
        df = read_table(path, what="expression")
        if isinstance(df.index, pd.RangeIndex):
            df = df.set_index(df.columns[0])
        return df
    sep = "," if kind == "csv" else "\t"
    try:
        first = pd.read_csv(path, sep=sep, nrows=0).columns[0]
        # Ids are read as text (keeping leading zeros); load_dataset maps them back to
        # integers when the clinical ids are integers.
        return pd.read_csv(path, sep=sep, index_col=0, dtype={first: str})
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"expression file {str(path)!r} could not be read as {kind}: {type(exc).__name__}"
        ) from None


def load_tiles(
    source: str | os.PathLike[str] | Mapping[Any, np.ndarray],
) -> dict[Any, np.ndarray]:
    """Read tile embeddings: an ``.npz`` file whose array names are patient ids, or a mapping."""
    if isinstance(source, Mapping):
        return dict(source)
    path = _existing(source, "tiles")
    if not path.name.lower().endswith(".npz"):
        raise ValidationError(
            f"tiles file {str(path)!r} has an unsupported type {''.join(path.suffixes)!r}; "
            "use .npz (one array per patient id)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"tiles file {str(path)!r} could not be read: {type(exc).__name__}"
        ) from None


def load_dataset(
    source: Source,
    *,
    schema: Schema | Mapping[str, Any] | None = None,
    name: str | None = None,
    expression: Source | None = None,
    tiles: str | os.PathLike[str] | Mapping[Any, np.ndarray] | None = None,
    expression_layer: str | None = None,
    expression_patient_id: str | None = None,
    expression_gene_id: str | None = None,
    expression_obs: Sequence[str] = (),
) -> Dataset:
    """Load a clinical table (and optional modalities) as a validated :class:`Dataset`.

    Parameters
    ----------
    source
        A CSV (``.csv``, optionally compressed ``.csv.gz``), TSV (``.tsv``) or Parquet
        (``.parquet``/``.pq``) path, or a pandas DataFrame (copied, never modified).
    schema
        A :class:`Schema` or its mapping form (see :meth:`Schema.from_mapping`).  When
        given, the table is validated and typed; without it the table is taken as is.
    name
        The dataset's name in the catalogue (default: the file name without suffix, or
        ``"data"`` for a DataFrame).
    expression
        Optional raw-count matrix (see :func:`load_expression`), for example an
        AnnData ``.h5ad`` file.
    tiles
        Optional tile embeddings (see :func:`load_tiles`).
    expression_layer, expression_patient_id, expression_gene_id
        For an ``.h5ad`` file: the layer of raw counts (default ``X``), the ``obs``
        column of patient ids (default the ``obs`` index), the ``var`` column of gene
        ids (default the ``var`` index).
    expression_obs
        For an ``.h5ad`` file: ``obs`` columns (sample covariates) joined to the
        clinical table by patient id (missing for a patient without a sample); a
        name the clinical table already has is an error.

    Returns
    -------
    Dataset

    Raises
    ------
    ValidationError
        Missing file, unsupported file type, unreadable file.
    SchemaError
        The table or a modality breaks the schema (the message names the column or
        modality and the rule).
    """
    sch = _as_schema(schema)
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
        default_name = "data"
    elif isinstance(source, str | os.PathLike):
        frame = read_table(source, schema=sch)
        default_name = Path(source).name.split(".")[0] or "data"
    else:
        raise ValidationError(
            f"source must be a file path or a pandas DataFrame, not {type(source).__name__}"
        )
    if sch is not None:
        frame = sch.validate(frame)
    if (expression is not None or tiles is not None) and (sch is None or sch.id is None):
        raise SchemaError("modalities need a schema that declares the patient id column")
    options = (expression_layer, expression_patient_id, expression_gene_id)
    if expression is None and (any(o is not None for o in options) or expression_obs):
        raise ValidationError("expression_* options need an expression file")
    obs = None
    h5ad = isinstance(expression, str | os.PathLike) and str(expression).lower().endswith(_H5AD)
    if h5ad:
        assert expression is not None and not isinstance(expression, pd.DataFrame)
        expr, obs = read_h5ad_counts(
            expression,
            layer=expression_layer,
            patient_id=expression_patient_id,
            gene_id=expression_gene_id,
            obs_columns=tuple(expression_obs),
        )
    elif expression_obs:
        raise ValidationError("expression_obs is an option of .h5ad expression files only")
    else:
        expr = (
            None
            if expression is None
            else load_expression(
                expression,
                layer=expression_layer,
                patient_id=expression_patient_id,
                gene_id=expression_gene_id,
            )
        )
    if expr is not None and sch is not None and sch.id is not None:
        expr = _match_id_type(expr, frame[sch.id])
        if obs is not None and len(obs.columns):
            obs.index = expr.index
            frame = _join_obs(frame, obs, sch.id)
    tile_map = None if tiles is None else load_tiles(tiles)
    if tile_map is not None and sch is not None and sch.id is not None:
        tile_map = _match_tile_ids(tile_map, frame[sch.id])
    return Dataset(
        frame=frame,
        name=name if name is not None else default_name,
        schema=sch,
        expression=expr,
        tiles=tile_map,
    )


def _match_id_type(expr: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """Align the type of ids read from a file (text) with the clinical ids."""
    index = expr.index
    if pd.api.types.is_integer_dtype(ids.dtype) and index.dtype == object:
        try:
            index = index.astype(np.int64)
        except (TypeError, ValueError):
            return expr
    elif ids.dtype == object and index.dtype != object:
        index = index.astype(str)
    else:
        return expr
    expr = expr.copy(deep=False)  # the counts are shared, not copied
    expr.index = index
    return expr


def _join_obs(frame: pd.DataFrame, obs: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """The clinical table with the samples' ``obs`` columns, joined by patient id."""
    clash = [c for c in obs.columns if c in frame.columns]
    if clash:
        raise SchemaError(
            f"expression_obs column(s) {clash} are already columns of the clinical table"
        )
    joined = obs.reindex(pd.Index(frame[id_col])).set_axis(frame.index, axis=0)
    return pd.concat([frame, joined], axis=1)


def _match_tile_ids(tiles: dict[Any, np.ndarray], ids: pd.Series) -> dict[Any, np.ndarray]:
    """``.npz`` names are text: map them back to integer ids when the clinical ids are ints."""
    if pd.api.types.is_integer_dtype(ids.dtype) and all(isinstance(k, str) for k in tiles):
        try:
            return {int(k): v for k, v in tiles.items()}
        except ValueError:
            return tiles
    return tiles
