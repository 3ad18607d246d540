"""``consortia node enrol``: the token stays out of `ps`; a data error spends nothing."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from consortia.cli import main
from consortia.hub.process import HubProcess
from consortia.node import DatasetConfig, NodeConfig


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    with HubProcess(root / "hub.sqlite", log=root / "hub.log") as h:
        h.start()
        yield h


def _config(tmp_path, hub_url: str, columns: dict[str, list[float]]):
    csv = tmp_path / "cohort.csv"
    pd.DataFrame(columns).to_csv(csv, index=False)
    cfg = NodeConfig(
        name="hospital-a",
        hub=hub_url,
        data_dir=tmp_path / "state",
        datasets=(DatasetConfig(name="cohort", path=csv, schema={"time": "time"}),),
        fsync=False,
    )
    return csv, cfg.write(tmp_path / "node.toml")


def _enrol(*args, env=None):
    return CliRunner().invoke(main, ["node", "enrol", *map(str, args)], env=env)


def test_a_dataset_that_does_not_load_is_named_and_the_token_is_not_spent(hub, tmp_path):
    csv, toml = _config(tmp_path, hub.url, {"x": [1.0] * 20})  # no "time" column
    token_file = tmp_path / "enrol.token"
    token_file.write_text(hub.create_token("enrolment", "hospital-a") + "\n")
    r = _enrol("--config", toml, "--token-file", token_file)
    assert r.exit_code == 1, r.output
    assert "'cohort' (SchemaError) does not load" in r.output and "token was not used" in r.output
    assert "Traceback" not in r.output
    pd.DataFrame({"time": [1.0] * 20}).to_csv(csv, index=False)  # the owner fixes the data
    r = _enrol("--config", toml, "--token-file", token_file)
    assert r.exit_code == 0, r.output
    assert "identity fingerprint:" in r.output


def test_the_token_comes_from_the_environment_or_a_file_once(tmp_path):
    _, toml = _config(tmp_path, "http://127.0.0.1:9", {"time": [1.0] * 20})
    r = _enrol("--config", toml)
    assert r.exit_code == 2 and "an enrolment token is needed" in r.output
    token_file = tmp_path / "t"
    token_file.write_text("   \n")
    r = _enrol("--config", toml, "--token-file", token_file)
    assert r.exit_code == 2 and "is empty" in r.output
    r = _enrol("--config", toml, "--token-file", token_file, "--token", "x")
    assert r.exit_code == 2 and "not both" in r.output
    # the variable is read: the command gets as far as the (unreachable) hub
    r = _enrol("--config", toml, env={"CONSORTIA_ENROL_TOKEN": "cen_x"})
    assert r.exit_code == 1 and "token is needed" not in r.output, r.output
