"""Schema: mapping form, validation rules and their messages (never a patient value)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia.data import Column, ColumnType, Role, Schema
from consortia.errors import SchemaError

MAPPING = {
    "id": "pid",
    "time": "T",
    "event": "E",
    "group": "arm",
    "covariates": {
        "age": "float",
        "stage": {"type": "category", "levels": ["I", "II", "III", "IV"]},
        "ecog": {"type": "int", "nullable": True},
        "smoker": "bool",
    },
    "other": {"centre": "str"},
}


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pid": ["p01", "p02", "p03", "p04"],
            "T": [10.0, 250.5, 3.0, 0.0],
            "E": [1, 0, 1, 0],
            "arm": ["a", "b", "a", "b"],
            "age": [61.5, 70.25, 55.0, 48.0],
            "stage": ["I", "III", "IV", "II"],
            "ecog": [0.0, np.nan, 2.0, 1.0],
            "smoker": [0, 1, 1, 0],
            "centre": ["x", "y", "x", "y"],
        }
    )


@pytest.fixture
def schema() -> Schema:
    return Schema.from_mapping(MAPPING)


def test_from_mapping_roles_and_types(schema: Schema) -> None:
    assert (schema.id, schema.time, schema.event, schema.group) == ("pid", "T", "E", "arm")
    assert schema.covariates == ("age", "stage", "ecog", "smoker")
    assert schema.column("stage").levels == ("I", "II", "III", "IV")
    assert schema.column("ecog").nullable
    assert schema.column("centre").role is Role.OTHER
    assert schema.column("T").type is ColumnType.FLOAT
    assert schema.column("pid").type is ColumnType.STR
    assert schema.column("E").type is ColumnType.INT


def test_mapping_round_trip(schema: Schema) -> None:
    again = Schema.from_mapping(schema.to_mapping())
    assert again == schema
    full = Schema.from_mapping(
        {"id": {"name": "n", "type": "int"}, "time": {"name": "t", "type": "int"}, "extra": "drop"}
    )
    assert Schema.from_mapping(full.to_mapping()) == full
    assert full.to_mapping()["id"] == {"name": "n", "type": "int"}


def test_validate_types_the_frame(schema: Schema, frame: pd.DataFrame) -> None:
    out = schema.validate(frame)
    assert out["T"].dtype == np.float64
    assert out["E"].dtype == np.int64
    assert out["smoker"].dtype == bool
    assert out["ecog"].dtype == "Int64"
    assert list(out["stage"].cat.categories) == ["I", "II", "III", "IV"]
    assert out["arm"].dtype == "category"
    assert list(out.columns) == list(frame.columns)
    assert frame["stage"].dtype == object  # the input is not modified


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda f: f.drop(columns="T"), r"column 'T' \(time\) is missing"),
        (lambda f: f.drop(columns="stage"), r"column 'stage' \(covariate\) is missing"),
        (lambda f: f.assign(age=["a", "b", "c", "d"]), r"column 'age' .* must be float"),
        (lambda f: f.assign(smoker=[0, 2, 1, 0]), r"column 'smoker' .* must be bool"),
        (lambda f: f.assign(E=[1.0, 0.5, 1.0, 0.0]), r"column 'E' \(event\) must be int"),
        (lambda f: f.assign(pid=[1, 2, 3, 4]), r"column 'pid' \(patient id\) must be str"),
        (lambda f: f.assign(age=[61.0, np.nan, 50.0, 1.0]), r"column 'age' .*missing values"),
        (lambda f: f.assign(T=[1.0, np.nan, 5.0, 1.0]), r"column 'T' \(time\) has missing"),
        (lambda f: f.assign(age=[61.0, np.inf, 50.0, 1.0]), r"column 'age' .*infinite"),
        (lambda f: f.assign(T=[1.0, -2.0, 5.0, 1.0]), r"column 'T' \(time\) has negative"),
        (lambda f: f.assign(E=[1, 2, 0, 0]), r"column 'E' \(event\) must be 0/1"),
        (lambda f: f.assign(pid=["a", "b", "a", "c"]), r"column 'pid' \(patient id\) has dup"),
        (lambda f: f.assign(stage=["I", "V", "I", "I"]), r"column 'stage' .*declared levels"),
        (lambda f: f.assign(ecog=[0.5, 1.0, 2.0, 1.0]), r"column 'ecog' .* must be int"),
    ],
)
def test_each_rule_names_the_column(
    schema: Schema, frame: pd.DataFrame, mutate, pattern: str
) -> None:
    bad = mutate(frame.copy())
    with pytest.raises(SchemaError, match=pattern) as err:
        schema.validate(bad)
    # The message carries names and rules only, never a patient value.
    message = str(err.value)
    for value in ["p01", "p02", "-2", "250.5", "61.5", "0.5", "'V'"]:
        assert value not in message


def test_time_may_be_int_and_event_bool(frame: pd.DataFrame) -> None:
    s = Schema.from_mapping(
        {"id": "pid", "time": {"name": "T", "type": "int"}, "event": {"name": "E", "type": "bool"}}
    )
    with pytest.raises(SchemaError, match=r"column 'T' \(time\) must be int"):
        s.validate(frame)
    out = s.validate(frame.assign(T=[1, 2, 3, 4]))
    assert out["E"].dtype == bool and out["T"].dtype == np.int64


def test_extra_columns(frame: pd.DataFrame) -> None:
    keep = Schema.from_mapping({"id": "pid"})
    assert list(keep.validate(frame).columns) == list(frame.columns)
    drop = Schema.from_mapping({"id": "pid", "extra": "drop"})
    assert list(drop.validate(frame).columns) == ["pid"]
    strict = Schema.from_mapping({"id": "pid", "extra": "error"})
    with pytest.raises(SchemaError, match=r"column 'T' is not declared"):
        strict.validate(frame)


@pytest.mark.parametrize(
    ("mapping", "pattern"),
    [
        ({}, "at least one column"),
        ({"ids": "pid"}, r"unknown schema key\(s\) \['ids'\]"),
        ({"id": "pid", "covariates": {"age": "double"}}, r"column 'age': unknown type 'double'"),
        ({"time": {"name": "T", "type": "str"}}, r"column 'T': a time column cannot have type"),
        ({"event": {"name": "E", "nullable": True}}, r"column 'E': an? event column cannot be"),
        ({"id": "pid", "covariates": {"pid": "float"}}, r"column 'pid' is declared more than"),
        ({"id": "pid", "covariates": ["age"]}, r"'covariates' must map column names"),
        ({"covariates": {"age": {"type": "float", "lvl": 1}}}, r"column 'age': unknown option"),
        ({"covariates": {"age": {"type": "float", "levels": ["a"]}}}, r"'age': levels are only"),
        ({"covariates": {"s": {"type": "category", "levels": ["a", "a"]}}}, r"'s': levels must"),
        ({"id": {"type": "str"}}, r"schema key 'id': a table needs a 'name'"),
        ({"id": "pid", "extra": "ignore"}, r"'extra' must be one of"),
        ({"covariates": {"age": {"type": "float", "nullable": "yes"}}}, r"'nullable' must be"),
    ],
)
def test_bad_mappings(mapping: dict, pattern: str) -> None:
    with pytest.raises(SchemaError, match=pattern):
        Schema.from_mapping(mapping)


def test_validate_rejects_non_frames_and_duplicate_columns(schema: Schema) -> None:
    with pytest.raises(SchemaError, match="must be a pandas DataFrame"):
        schema.validate([1, 2, 3])  # type: ignore[arg-type]
    dup = pd.DataFrame([[1, 2]], columns=["pid", "pid"])
    with pytest.raises(SchemaError, match=r"column 'pid' appears more than once"):
        schema.validate(dup)


def test_nullable_bool_and_category_keep_gaps() -> None:
    s = Schema(
        columns=(
            Column("flag", Role.COVARIATE, ColumnType.BOOL, nullable=True),
            Column("grp", Role.GROUP, ColumnType.CATEGORY),
        )
    )
    out = s.validate(pd.DataFrame({"flag": [True, None, False], "grp": ["a", "b", "a"]}))
    assert out["flag"].dtype == "boolean" and out["flag"].isna().sum() == 1
    with pytest.raises(SchemaError, match=r"column 'grp' \(group\) has missing values"):
        s.validate(pd.DataFrame({"flag": [True, False], "grp": ["a", None]}))


def test_infer(frame: pd.DataFrame) -> None:
    s = Schema.infer(frame, id="pid", time="T", event="E", group="arm")
    assert s.column("age").type is ColumnType.FLOAT and s.column("age").role is Role.COVARIATE
    assert s.column("ecog").nullable
    assert s.column("smoker").type is ColumnType.INT
    assert s.column("arm").type is ColumnType.STR
    s.validate(frame)  # an inferred schema accepts its own frame
    with pytest.raises(SchemaError, match="column 'nope' is missing"):
        Schema.infer(frame, id="nope")
