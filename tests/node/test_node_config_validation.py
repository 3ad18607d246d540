"""The node's TOML validated by pydantic: unknown keys, wrong types, missing keys,
paths resolved exactly once, typed errors that never echo a value."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pydantic
import pytest

import consortia.node.config as config_module
from consortia.errors import ValidationError
from consortia.node import DatasetConfig, NodeConfig, load_config
from consortia.privacy.policy import Policy

NODE = "[node]\nname = 'a'\nhub = 'http://h'\ndata_dir = 's'\n"
DATA = "[datasets.d]\npath = 'x.csv'\n"


def _error(tmp_path: Path, text: str) -> ValidationError:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        load_config(path)
    exc = info.value
    # typed, not pydantic's, and no pydantic traceback chained under it
    assert not isinstance(exc, pydantic.ValidationError)
    assert exc.__cause__ is None and exc.__suppress_context__
    assert str(exc).startswith(f"{path}: ")
    return exc


def _docstring_example() -> str:
    doc = config_module.__doc__ or ""
    block = doc.split("Example (every path may be relative to the TOML file's folder)::\n")[1]
    return textwrap.dedent(block)


def test_docstring_example_round_trip(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "node.toml").write_text(_docstring_example())
    cfg = load_config(folder / "node.toml")
    assert cfg.name == "hospital-a" and cfg.hub == "https://hub.example.org:8443"
    assert cfg.ca == folder / "ca.pem" and cfg.data_dir == folder / "state"
    assert cfg.audit_key_file == folder / "audit.key"
    assert (cfg.poll_wait, cfg.fsync, cfg.trust_on_first_use) == (20.0, True, False)
    assert cfg.max_tasks == 4
    assert cfg.approval == "manual" and cfg.auto_approve == ("stats.count", "stats.mean")
    assert cfg.peers == {"hospital-b": "3f1c9a0d" * 8}
    (ds,) = cfg.datasets
    assert ds.name == "cohort" and ds.path == Path("/data/cohort.csv")
    assert ds.schema == {
        "id": "patient_id",
        "time": "time",
        "event": "event",
        "covariates": {"age": "float", "stage": "int"},
    }
    assert ds.policy == Policy(
        allowed_algorithms=("stats.*", "survival.*"), min_cohort_size=10, min_sites=3
    )
    # written elsewhere (absolute paths), read back identical
    elsewhere = tmp_path / "other" / "copy.toml"
    elsewhere.parent.mkdir()
    assert load_config(cfg.write(elsewhere)) == cfg


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            NODE + "poll_wiat = 3\n" + DATA,
            r"\[node\] poll_wiat: unknown key \(did you mean 'poll_wait'\?\)",
        ),
        (
            NODE + DATA + "schme = {}\n",
            r"\[datasets\.d\] schme: unknown key \(did you mean 'schema'\?\)",
        ),
        (
            NODE + DATA + "[datasets.d.policy]\nmin_site = 3\n",
            r"\[datasets\.d\.policy\] min_site: unknown key \(did you mean 'min_sites'\?\)",
        ),
        ("colour = 1\n" + NODE + DATA, r"unknown section or key 'colour' at the top level"),
        (NODE + DATA + "[nodes]\nname = 'b'\n", r"unknown section or key 'nodes' at the top level"),
        (
            NODE + DATA + "[datasets.d.schema]\nid = 'pid'\n[datasets.d.extra]\nx = 1\n",
            r"\[datasets\.d\] extra: unknown key",
        ),
    ],
)
def test_unknown_keys_are_errors_naming_key_and_table(tmp_path, text, match):
    assert re.search(match, str(_error(tmp_path, text)))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            NODE + "poll_wait = '20'\n" + DATA,
            r"\[node\] poll_wait: must be a number of seconds, not a string",
        ),
        (
            NODE + "poll_wait = true\n" + DATA,
            r"\[node\] poll_wait: must be a number of seconds, not a boolean",
        ),
        (
            NODE + "poll_wait = 61\n" + DATA,
            r"\[node\] poll_wait: must be a number of seconds in \(0, 60\]",
        ),
        (NODE + "fsync = 1\n" + DATA, r"\[node\] fsync: must be true or false, not an integer"),
        (
            NODE + "max_tasks = 0\n" + DATA,
            r"\[node\] max_tasks: must be a whole number of tasks in \[1, 256\]",
        ),
        (
            NODE + "max_tasks = 2.5\n" + DATA,
            r"\[node\] max_tasks: must be a whole number of tasks, not a number",
        ),
        (
            NODE + "trust_on_first_use = 'yes'\n" + DATA,
            r"\[node\] trust_on_first_use: must be true or false, not a string",
        ),
        (
            NODE.replace("name = 'a'", "name = 3") + DATA,
            r"\[node\] name: must be a non-empty string, not an integer",
        ),
        (
            NODE.replace("data_dir = 's'", "data_dir = ['s']") + DATA,
            r"\[node\] data_dir: must be a path .*not an array",
        ),
        (
            NODE + "auto_approve = [1]\n" + DATA,
            r"\[node\] auto_approve: must be a list of algorithm-name patterns",
        ),
        (NODE + "approval = 1\n" + DATA, r"\[node\] approval: must be one of \['auto', 'manual'\]"),
        ("peers = 'b'\n" + NODE + DATA, r"\[peers\]: must be a table, not a string"),
        ("node = 3\n" + DATA, r"\[node\]: must be a table, not an integer"),
        (NODE + "[datasets]\nd = 3\n", r"\[datasets\.d\]: must be a table, not an integer"),
        (NODE + DATA + "tiles = 5\n", r"\[datasets\.d\] tiles: must be a path .*not an integer"),
        (NODE + DATA + "schema = 'id'\n", r"\[datasets\.d\] schema: must be a table"),
        (NODE + DATA + "policy = 4\n", r"\[datasets\.d\] policy: must be a table"),
        (
            NODE + DATA + "[datasets.d.policy]\nmin_sites = '3'\n",
            r"\[datasets\.d\.policy\] min_sites: must be a non-negative integer",
        ),
        (
            NODE + DATA + "[datasets.d.policy]\nmin_sites = 3\ndelta_budget = 2.0\n",
            r"\[datasets\.d\.policy\] delta_budget: must be below 1",
        ),
        (
            NODE
            + "[datasets.'my set']\npath = 'x'\n[datasets.'my set'.policy]\nallow_per_site = 1\n",
            r'\[datasets\."my set"\.policy\] allow_per_site: must be true or false',
        ),
    ],
)
def test_wrong_types_name_key_and_expected_type(tmp_path, text, match):
    assert re.search(match, str(_error(tmp_path, text)))


def test_missing_required_keys_are_all_named(tmp_path):
    message = str(_error(tmp_path, "[node]\nhub = 'http://h'\n[datasets.d]\nschema = {}\n"))
    for key in (r"\[node\] name", r"\[node\] data_dir", r"\[datasets\.d\] path"):
        assert re.search(key + r": missing \(a required key\)", message)
    assert "[node] hub" not in message
    assert "needs a [node] table" in str(_error(tmp_path, DATA))
    assert "declares no [datasets.<name>] table" in str(_error(tmp_path, NODE + "[datasets]\n"))


def test_errors_never_echo_values(tmp_path):
    secret = "hunter2-s3cr3t"
    texts = [
        NODE.replace("http://h", f"ftp://user:{secret}@h") + DATA,
        NODE + f"poll_wait = '{secret}'\n" + DATA,
        NODE + f"token = '{secret}'\n" + DATA,
        NODE + f"approval = '{secret}'\n" + DATA,
        f"[peers]\nb = '{secret}'\n" + NODE + DATA,
        NODE + DATA + f"[datasets.d.policy]\nmin_sites = '{secret}'\n",
        NODE + DATA + f"[datasets.d.policy]\nallowed_algorithms = [1, '{secret}']\n",
    ]
    for text in texts:
        assert secret not in str(_error(tmp_path, text))


def test_relative_paths_are_resolved_once_against_the_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "node.toml").write_text(
        NODE.replace("'s'", "'../state'") + "[datasets.d]\npath = 'data/d.csv'\ntiles = 't'\n"
    )
    monkeypatch.chdir(tmp_path / "conf")
    first = load_config("node.toml")
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)  # the current directory plays no part
    cfg = load_config(conf / "node.toml")
    assert cfg == first
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.datasets[0].path == conf / "data" / "d.csv"
    assert cfg.datasets[0].tiles == conf / "t"
    # rebuilt (dataclasses.replace re-validates) and re-read: never re-resolved
    assert dataclasses.replace(cfg, poll_wait=5).data_dir == tmp_path / "state"
    sub = tmp_path / "deeper" / "still"
    sub.mkdir(parents=True)
    assert load_config(cfg.write(sub / "n.toml")) == cfg


def test_absolute_paths_are_kept_as_written(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    written = tmp_path / "link" / "state"
    (tmp_path / "node.toml").write_text(
        NODE.replace("'s'", repr(str(written))) + f"[datasets.d]\npath = {str(written)!r}\n"
    )
    cfg = load_config(tmp_path / "node.toml")
    assert cfg.data_dir == written and cfg.datasets[0].path == written  # not real/state


def test_python_built_config_resolves_against_cwd_once(tmp_path, monkeypatch):
    """docs/deployment.md section 5: NodeConfig(data_dir="work/a") written to work/a.toml."""
    monkeypatch.chdir(tmp_path)
    cfg = NodeConfig(
        name="a",
        hub="http://127.0.0.1:1/",
        data_dir="work/a",  # type: ignore[arg-type]
        datasets=(DatasetConfig(name="cohort", path="a.csv", policy=Policy()),),  # type: ignore[arg-type]
        peers={"b": "AB" * 32},
        poll_wait=10,
    )
    assert cfg.data_dir == tmp_path / "work" / "a"  # not work/work/a
    assert cfg.datasets[0].path == tmp_path / "a.csv"
    assert cfg.hub == "http://127.0.0.1:1" and cfg.peers == {"b": "ab" * 32}
    (tmp_path / "work").mkdir()
    path = cfg.write("work/a.toml").resolve()
    monkeypatch.chdir(tmp_path / "work")
    assert load_config(path) == cfg
    assert load_config(tmp_path / "work" / "a.toml").data_dir == tmp_path / "work" / "a"


def test_python_built_config_is_validated_like_the_file(tmp_path):
    ds = DatasetConfig(name="d", path=tmp_path / "x.csv")
    cfg = NodeConfig(name="a", hub="http://h", data_dir=tmp_path, datasets=(ds,))
    with pytest.raises(ValidationError, match=r"^NodeConfig: poll_wait: must be a number"):
        dataclasses.replace(cfg, poll_wait=0)
    with pytest.raises(ValidationError, match=r"^NodeConfig: approval: must be one of"):
        dataclasses.replace(cfg, approval="maybe")
    with pytest.raises(ValidationError, match=r"^NodeConfig: peers\.b: must be a 64-hex"):
        dataclasses.replace(cfg, peers={"b": "xy"})
    with pytest.raises(ValidationError, match=r"^NodeConfig: datasets: must be a tuple"):
        dataclasses.replace(cfg, datasets=("d",))
    with pytest.raises(ValidationError, match=r"^DatasetConfig: name: must be a non-empty"):
        DatasetConfig(name="", path=tmp_path)
    with pytest.raises(ValidationError, match=r"^DatasetConfig: policy\.min_site: unknown key"):
        DatasetConfig(name="d", path=tmp_path, policy={"min_site": 1})  # type: ignore[arg-type]
    assert dataclasses.replace(cfg, datasets=[ds]).datasets == (ds,)  # type: ignore[arg-type]
