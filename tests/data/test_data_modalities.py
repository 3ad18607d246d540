"""Dataset modalities: expression counts and tile bags, joined by patient id at the node."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from consortia.data import Dataset, Schema, as_dataset
from consortia.errors import SchemaError, ValidationError

SCHEMA = Schema.from_mapping({"id": "pid", "time": "T", "event": "E"})


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"pid": ["a", "b", "c"], "T": [1.0, 2.0, 3.0], "E": [1, 0, 1]})


def _expr(ids=("a", "b", "c"), values=None) -> pd.DataFrame:
    values = np.arange(len(ids) * 2).reshape(len(ids), 2) if values is None else values
    return pd.DataFrame(values, index=list(ids), columns=["g1", "g2"])


def test_valid_modalities(frame: pd.DataFrame) -> None:
    tiles = {"a": np.zeros((3, 4)), "c": np.ones((5, 4), dtype=np.float32)}
    ds = Dataset(frame, schema=SCHEMA, expression=_expr(("c", "a")), tiles=tiles)
    assert ds.modalities == {"expression": (2, 2), "tiles": (2, 8, 4)}
    assert ds.id_column == "pid"
    # The runtime copies datasets with dataclasses.replace: modalities travel along.
    copy = dataclasses.replace(ds, site="s1")
    assert copy.site == "s1" and copy.expression is ds.expression
    assert as_dataset(ds) is ds
    assert Dataset(frame).modalities == {}
    float_counts = _expr(values=np.array([[1.0, 2.0], [0.0, 3.0], [4.0, 5.0]]))
    Dataset(frame, schema=SCHEMA, expression=float_counts)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"expression": _expr(("a", "z"))}, "modality 'expression' has patient ids absent"),
        ({"expression": _expr(("a", "a"))}, "modality 'expression' has duplicate patient ids"),
        ({"expression": _expr().set_axis(["g", "g"], axis=1)}, "'expression' has duplicate gene"),
        ({"expression": _expr(values=-np.ones((3, 2)))}, "'expression' .*negative values"),
        ({"expression": _expr(values=np.full((3, 2), 0.5))}, "'expression' .*non-integer"),
        ({"expression": _expr(values=np.full((3, 2), np.nan))}, "'expression' .*missing or inf"),
        ({"expression": _expr().astype(str)}, "'expression' .*non-numeric"),
        (
            {"expression": _expr().astype("Int64").where(lambda d: d > 0)},
            "'expression' .*missing or infinite",
        ),
        ({"expression": np.ones((3, 2))}, "modality 'expression' must be a pandas DataFrame"),
        ({"tiles": {"z": np.zeros((2, 3))}}, "modality 'tiles' has patient ids absent"),
        ({"tiles": {"a": np.zeros(3)}}, r"modality 'tiles': every entry must be a 2-D float"),
        ({"tiles": {"a": np.zeros((2, 3), dtype=int)}}, r"'tiles': every entry must be a 2-D"),
        ({"tiles": {"a": np.zeros((0, 3))}}, r"'tiles': every entry must be a 2-D"),
        ({"tiles": {"a": np.zeros((2, 3)), "b": np.zeros((2, 4))}}, "different embedding dim"),
        ({"tiles": {"a": np.full((2, 3), np.inf)}}, "modality 'tiles' has missing or infinite"),
        ({"tiles": [np.zeros((2, 3))]}, "modality 'tiles' must be a mapping"),
    ],
)
def test_modality_errors_name_the_modality(frame: pd.DataFrame, kwargs, pattern: str) -> None:
    with pytest.raises(SchemaError, match=pattern):
        Dataset(frame, schema=SCHEMA, **kwargs)


def test_modalities_need_an_id_column(frame: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match="modality 'expression' needs a schema that declares"):
        Dataset(frame, expression=_expr())
    with pytest.raises(SchemaError, match=r"column 'pid' \(patient id\) is missing"):
        Dataset(frame.drop(columns="pid"), schema=SCHEMA, tiles={"a": np.zeros((1, 2))})


def test_as_dataset_rejects_other_objects() -> None:
    with pytest.raises(ValidationError, match="must be a pandas DataFrame or a consortia Dataset"):
        as_dataset([1, 2])  # type: ignore[arg-type]
