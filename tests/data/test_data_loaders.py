"""Loaders: CSV / Parquet / DataFrame round trips, modalities, clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consortia.data import Dataset, Schema, load_dataset, load_expression, load_tiles
from consortia.errors import SchemaError, ValidationError

MAPPING = {
    "id": "pid",
    "time": {"name": "T", "type": "int"},
    "event": "E",
    "group": "arm",
    "covariates": {
        "age": "float",
        "stage": {"type": "category", "levels": ["I", "II", "III"]},
        "ecog": {"type": "int", "nullable": True},
        "smoker": "bool",
    },
}


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 40
    return pd.DataFrame(
        {
            "pid": [f"{i:03d}" for i in range(n)],  # leading zeros must survive a CSV
            "T": rng.integers(1, 2000, n),
            "E": rng.integers(0, 2, n),
            "arm": rng.choice(["a", "b"], n),
            "age": rng.normal(60, 10, n).round(3),
            "stage": rng.choice(["I", "II", "III"], n),
            "ecog": np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 3, n)),
            "smoker": rng.random(n) < 0.3,
        }
    )


def _check_round_trip(ds: Dataset, frame: pd.DataFrame) -> None:
    expected = Schema.from_mapping(MAPPING).validate(frame)
    pd.testing.assert_frame_equal(ds.frame.reset_index(drop=True), expected)
    assert ds.frame["pid"].iloc[0] == "000"
    assert ds.schema == Schema.from_mapping(MAPPING)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".parquet"])
def test_file_round_trip(tmp_path: Path, frame: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"cohort{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    ds = load_dataset(path, schema=MAPPING)
    _check_round_trip(ds, frame)
    assert ds.name == "cohort"
    assert load_dataset(str(path), schema=MAPPING, name="x").name == "x"


def test_dataframe_source_is_copied(frame: pd.DataFrame) -> None:
    before = frame.copy()
    ds = load_dataset(frame, schema=Schema.from_mapping(MAPPING))
    _check_round_trip(ds, frame)
    pd.testing.assert_frame_equal(frame, before)
    assert ds.name == "data"
    raw = load_dataset(frame)  # no schema: taken as is
    assert raw.schema is None and raw.n_rows == len(frame)


def test_validation_on_load(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "bad.csv"
    frame.assign(T=-frame["T"]).to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"column 'T' \(time\) has negative values"):
        load_dataset(path, schema=MAPPING)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"dataset file .*nope\.csv' does not exist"):
        load_dataset(tmp_path / "nope.csv")
    xlsx = tmp_path / "cohort.xlsx"
    xlsx.write_bytes(b"not a spreadsheet")
    with pytest.raises(ValidationError, match=r"unsupported type '\.xlsx'; use \.csv"):
        load_dataset(xlsx)
    with pytest.raises(ValidationError, match="is not a file"):
        load_dataset(tmp_path)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"garbage")
    with pytest.raises(ValidationError, match=r"could not be read as parquet"):
        load_dataset(broken)
    with pytest.raises(ValidationError, match="source must be a file path or a pandas"):
        load_dataset(42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="schema must be a Schema"):
        load_dataset(pd.DataFrame({"a": [1]}), schema=["a"])  # type: ignore[arg-type]


def _modalities(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    ids = frame["pid"].tolist()
    expr = pd.DataFrame(
        rng.poisson(20, (len(ids), 6)), index=pd.Index(ids, name="pid"), columns=list("ABCDEF")
    )
    tiles = {p: rng.normal(size=(int(rng.integers(2, 5)), 8)) for p in ids[:-3]}
    return expr, tiles


def test_modalities_from_files(tmp_path: Path, frame: pd.DataFrame) -> None:
    expr, tiles = _modalities(frame)
    expr.to_csv(tmp_path / "expr.csv")
    expr.to_parquet(tmp_path / "expr.parquet")
    np.savez(tmp_path / "tiles.npz", **tiles)
    for name in ("expr.csv", "expr.parquet"):
        ds = load_dataset(
            frame, schema=MAPPING, expression=tmp_path / name, tiles=tmp_path / "tiles.npz"
        )
        pd.testing.assert_frame_equal(ds.expression, expr, check_dtype=False)
        assert set(ds.tiles) == set(tiles)
        np.testing.assert_array_equal(ds.tiles["005"], tiles["005"])
        assert ds.modalities == {
            "expression": (40, 6),
            "tiles": (37, sum(len(a) for a in tiles.values()), 8),
        }
    assert load_expression(expr) is expr
    assert load_tiles(tiles) == tiles


def test_modality_file_errors(tmp_path: Path, frame: pd.DataFrame) -> None:
    with pytest.raises(ValidationError, match=r"expression file .* does not exist"):
        load_dataset(frame, schema=MAPPING, expression=tmp_path / "e.csv")
    (tmp_path / "t.pkl").write_bytes(b"x")
    with pytest.raises(ValidationError, match=r"tiles file .* use \.npz"):
        load_dataset(frame, schema=MAPPING, tiles=tmp_path / "t.pkl")
    expr, _ = _modalities(frame)
    with pytest.raises(SchemaError, match="modalities need a schema that declares the patient"):
        load_dataset(frame, expression=expr)


def test_integer_ids_round_trip_through_npz(tmp_path: Path) -> None:
    frame = pd.DataFrame({"pid": [1, 2, 3], "T": [1.0, 2.0, 3.0]})
    schema = {"id": {"name": "pid", "type": "int"}, "time": "T"}
    np.savez(tmp_path / "t.npz", **{"1": np.ones((2, 3)), "3": np.zeros((1, 3))})
    ds = load_dataset(frame, schema=schema, tiles=tmp_path / "t.npz")
    assert set(ds.tiles) == {1, 3}
    expr = pd.DataFrame({"g1": [5, 6], "g2": [0, 1]}, index=pd.Index(["3", "1"], name="pid"))
    expr.to_csv(tmp_path / "e.csv")
    ds = load_dataset(frame, schema=schema, expression=tmp_path / "e.csv")
    assert ds.expression.index.tolist() == [3, 1]


def test_tcga_brca_validates_and_catalogues(shared_data: Path) -> None:
    """The real Fed-TCGA-BRCA table loads under a declared schema, region by region."""
    from consortia.data import catalogue
    from consortia.data.tcga import load_tcga_brca

    tcga = load_tcga_brca(shared_data / "tcga_brca")
    covariates = {c: "float" if c == "age_at_index" else "int" for c in tcga.covariates}
    mapping = {"id": "pid", "time": "T", "event": "E", "covariates": covariates}
    raw = load_dataset(shared_data / "tcga_brca" / "brca.csv", schema=mapping)
    assert raw.name == "brca" and raw.n_rows == 1096
    assert raw.schema.covariates == tcga.covariates
    rows = {}
    for region, frame in tcga.sites().items():
        ds = load_dataset(frame, schema=mapping, name="tcga_brca")
        rows[region] = catalogue(ds)["rows"]
    assert rows == {
        "Northeast": 310,
        "South": 200,
        "West": 210,
        "Midwest": 160,
        "Europe": 160,
        "Canada": 50,
    }
    bad = tcga.pooled().assign(E=tcga.pooled()["E"] * 2)
    with pytest.raises(SchemaError, match=r"column 'E' \(event\) must be 0/1"):
        load_dataset(bad, schema=mapping)
