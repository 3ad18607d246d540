"""``consortia node check``: configuration and data validated, catalogue printed, no hub."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from consortia.cli import main
from consortia.node import DatasetConfig, NodeConfig


def _config(tmp_path, *datasets):
    cfg = NodeConfig(
        name="hospital-a",
        hub="http://127.0.0.1:9",  # nothing listens: check must not need a hub
        data_dir=tmp_path / "state",
        datasets=datasets,
        fsync=False,
    )
    return cfg.write(tmp_path / "node.toml")


def test_check_prints_the_catalogue_and_no_values(tmp_path):
    csv = tmp_path / "cohort.csv"
    pd.DataFrame(
        {"time": [1.5 + i for i in range(23)], "event": [i % 2 for i in range(23)]}
    ).to_csv(csv, index=False)
    toml = _config(
        tmp_path, DatasetConfig(name="cohort", path=csv, schema={"time": "time", "event": "event"})
    )
    r = CliRunner().invoke(main, ["node", "check", "--config", str(toml)])
    assert r.exit_code == 0, r.output
    assert "configuration is valid" in r.output
    assert "dataset 'cohort': 20 rows" in r.output  # 23 rounded, as the hub sees it
    assert "column time: time, float" in r.output and "column event: event" in r.output
    assert "2.5" not in r.output and "23" not in r.output  # no value, no exact count
    r = CliRunner().invoke(main, ["node", "check", "--config", str(toml), "--json"])
    assert r.exit_code == 0
    assert json.loads(r.output)["cohort"]["rows"] == 20
    assert not (tmp_path / "state").exists()  # a check leaves no state behind


def test_check_names_each_dataset_that_does_not_load_and_exits_1(tmp_path):
    csv = tmp_path / "cohort.csv"
    pd.DataFrame({"x": [1.0] * 12}).to_csv(csv, index=False)
    toml = _config(
        tmp_path,
        DatasetConfig(name="fine", path=csv),
        DatasetConfig(name="broken", path=csv, schema={"time": "no_such_column"}),
        DatasetConfig(name="gone", path=tmp_path / "missing.csv"),
    )
    r = CliRunner().invoke(main, ["node", "check", "--config", str(toml)])
    assert r.exit_code == 1
    assert "dataset 'broken': does not load: SchemaError" in r.output
    assert "no_such_column" in r.output  # the owner is told which column, at their own node
    assert "dataset 'gone': does not load" in r.output
    assert "2 of 3 datasets do not load: broken, gone" in r.output
    assert "dataset 'fine': 10 rows" in r.output


def test_init_drafts_a_valid_configuration_that_check_accepts(tmp_path):
    csv = tmp_path / "cohort.csv"
    pd.DataFrame(
        {
            "pid": [f"p{i:03d}" for i in range(30)],
            "time": [float(i) for i in range(30)],
            "event": [i % 2 for i in range(30)],
            "age": [50.0 + i for i in range(30)],
        }
    ).to_csv(csv, index=False)
    out = tmp_path / "node.toml"
    args = ["node", "init", "--name", "hospital-a", "--hub", "http://127.0.0.1:9"]
    args += ["--data", str(csv), "--id", "pid", "--time", "time", "--event", "event"]
    r = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert '"id" = "pid"' in text and '"time" = "time"' in text and '"age" = "float"' in text
    r = CliRunner().invoke(main, ["node", "check", "--config", str(out)])
    assert r.exit_code == 0, r.output
    assert "column pid: id" in r.output and "column age: covariate, float" in r.output
    r = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert r.exit_code == 1 and "exists" in r.output
    r = CliRunner().invoke(main, [*args[:-6], "--data", str(csv), "--time", "nope", "--out", "x"])
    assert r.exit_code == 1 and "'nope' is missing" in r.output
