"""The catalogue a node publishes: names, types, roles, rounded counts; never values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from consortia.data import Dataset, Schema, catalogue, load_dataset, rounded_count
from consortia.errors import ValidationError

MAPPING = {
    "id": "pid",
    "time": "T",
    "event": "E",
    "covariates": {"age": "float", "stage": {"type": "category", "levels": ["I", "II"]}},
}


def _dataset(n: int, *, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pids = [f"PAT-{i:04d}-X" for i in range(n)]
    frame = pd.DataFrame(
        {
            "pid": pids,
            "T": rng.uniform(1, 1000, n).round(4),
            "E": rng.integers(0, 2, n),
            "age": rng.uniform(30, 90, n).round(4),
            "stage": rng.choice(["I", "II"], n),
            "note": [f"free text {i}" for i in range(n)],  # undeclared: kept, never shown
        }
    )
    expr = pd.DataFrame(
        rng.poisson(7, (n, 12)), index=pids, columns=[f"GENE{j}" for j in range(12)]
    )
    tiles = {p: rng.normal(size=(3, 16)) for p in pids[: n - 1]}
    return load_dataset(frame, schema=MAPPING, name="cohort", expression=expr, tiles=tiles)


@pytest.mark.parametrize(
    ("n", "shown"), [(0, "<10"), (3, "<10"), (9, "<10"), (10, 10), (14, 10), (15, 20), (137, 140)]
)
def test_rounded_count(n: int, shown) -> None:
    assert rounded_count(n) == shown


def test_rounded_count_grain() -> None:
    assert rounded_count(24, 25) == "<25"
    assert rounded_count(1234, 100) == 1200
    with pytest.raises(ValidationError, match="grain must be a positive integer"):
        rounded_count(5, 0)


def test_catalogue_shape_and_rounding() -> None:
    ds = _dataset(137)
    cat = catalogue(ds)
    assert json.loads(json.dumps(cat)) == cat  # JSON-serialisable as is
    assert cat["name"] == "cohort" and cat["rows"] == 140 and cat["grain"] == 10
    cols = {c["name"]: c for c in cat["columns"]}
    assert cols["pid"] == {"name": "pid", "role": "id", "type": "str", "nullable": False}
    assert cols["T"]["role"] == "time" and cols["E"]["role"] == "event"
    assert cols["stage"]["levels"] == ["I", "II"]  # declared by the node, not read from data
    assert cols["note"] == {"name": "note", "role": "other", "type": "str", "nullable": False}
    assert cat["modalities"] == {
        "expression": {"patients": 140, "genes": 12},
        "tiles": {"patients": 140, "tiles": 410, "dim": 16},
    }
    assert catalogue(ds, grain=50)["rows"] == 150


def test_small_counts_are_hidden() -> None:
    cat = catalogue(_dataset(7))
    assert cat["rows"] == "<10"
    assert cat["modalities"]["expression"]["patients"] == "<10"
    assert cat["modalities"]["tiles"]["patients"] == "<10"
    assert "7" not in json.dumps(cat)


def test_catalogue_never_contains_values() -> None:
    ds = _dataset(60, seed=1)
    text = json.dumps(catalogue(ds))
    f = ds.frame
    values = [*f["pid"], *f["T"].astype(str), *f["age"].astype(str), *f["note"]]
    assert not [v for v in values if v in text]
    assert "GENE" not in text  # gene names are not published either


def test_catalogue_of_a_plain_frame() -> None:
    frame = pd.DataFrame({"x": [1.5] * 12, "flag": [True] * 12, "k": list(range(12))})
    cat = catalogue(frame)
    assert cat["rows"] == 10 and cat["modalities"] == {}
    assert [(c["name"], c["role"], c["type"]) for c in cat["columns"]] == [
        ("x", "other", "float"),
        ("flag", "other", "bool"),
        ("k", "other", "int"),
    ]
    # An inferred schema never lists levels, even for a categorical column.
    cat2 = catalogue(Dataset(pd.DataFrame({"c": pd.Categorical(["secret"] * 10)})))
    assert "secret" not in json.dumps(cat2)
    assert Schema.infer(frame).covariates == ("x", "flag", "k")
