"""What a node publishes about a dataset: names, types, roles and rounded counts, never values."""

from __future__ import annotations

from typing import Any

from consortia.data.dataset import Dataset, as_dataset
from consortia.data.schema import Schema
from consortia.errors import ValidationError

__all__ = ["catalogue", "rounded_count"]


def rounded_count(n: int, grain: int = 10) -> int | str:
    """A count as the catalogue shows it.

    Counts below ``grain`` are shown as the string ``"<grain"`` (for example ``"<10"``);
    larger counts are rounded to the nearest multiple of ``grain`` (halves up), never
    below ``grain``.  ``rounded_count(0)`` is ``"<10"`` too, so an empty dataset is not
    distinguished from a small one.
    """
    if isinstance(grain, bool) or not isinstance(grain, int) or grain < 1:
        raise ValidationError("grain must be a positive integer")
    n = int(n)
    if n < grain:
        return f"<{grain}"
    return max(grain, ((n + grain // 2) // grain) * grain)


def catalogue(dataset: Dataset | Any, *, grain: int = 10) -> dict[str, Any]:
    """Describe ``dataset`` for the hub: JSON-serialisable, free of patient values.

    Parameters
    ----------
    dataset
        A :class:`Dataset` (or a DataFrame, described with inferred types).
    grain
        Counts are rounded to multiples of this; counts below it show as ``"<grain"``.

    Returns
    -------
    dict
        ``name``; ``rows`` (rounded); ``grain``; ``columns``: a list of
        ``{"name", "role", "type", "nullable"}`` (plus ``"levels"`` for a category column
        whose levels the node *declared* in its schema; levels found in the data are never
        listed); ``modalities``: for ``expression`` ``{"patients" (rounded), "genes"}``,
        for ``tiles`` ``{"patients" (rounded), "tiles" (rounded), "dim"}``.

    Notes
    -----
    Undeclared columns kept beside a schema are listed with role ``"other"`` and an
    inferred type.  Gene names, patient ids, levels seen in the data and summary
    statistics are never included.
    """
    ds = as_dataset(dataset)
    rounded_count(0, grain)  # validates grain
    schema = ds.schema if isinstance(ds.schema, Schema) else None
    if schema is None:
        schema = Schema.infer(ds.frame, covariates=())
    columns: list[dict[str, Any]] = []
    for c in schema.columns:
        entry: dict[str, Any] = {
            "name": c.name,
            "role": c.role.value,
            "type": c.type.value,
            "nullable": c.nullable,
        }
        if c.levels is not None and ds.schema is schema:
            entry["levels"] = [_plain(v) for v in c.levels]
        columns.append(entry)
    if ds.schema is schema:
        extra = [n for n in map(str, ds.frame.columns) if n not in schema]
        if extra:
            inferred = Schema.infer(ds.frame[extra], covariates=())
            for c in inferred.columns:
                columns.append(
                    {"name": c.name, "role": "other", "type": c.type.value, "nullable": c.nullable}
                )
    modalities: dict[str, Any] = {}
    if ds.expression is not None:
        modalities["expression"] = {
            "patients": rounded_count(ds.expression.shape[0], grain),
            "genes": int(ds.expression.shape[1]),
        }
    if ds.tiles is not None:
        arrays = list(ds.tiles.values())
        modalities["tiles"] = {
            "patients": rounded_count(len(arrays), grain),
            "tiles": rounded_count(sum(int(a.shape[0]) for a in arrays), grain),
            "dim": int(arrays[0].shape[1]) if arrays else 0,
        }
    return {
        "name": str(ds.name),
        "rows": rounded_count(ds.n_rows, grain),
        "grain": grain,
        "columns": columns,
        "modalities": modalities,
    }


def _plain(v: Any) -> Any:
    """A declared level as a JSON scalar (numpy scalars become Python scalars)."""
    return v.item() if hasattr(v, "item") else v
